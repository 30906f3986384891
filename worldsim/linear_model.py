"""The baseline a world model must beat: the scene state moved on by a fitted linear joint
model alone (no frames, no network).

Its joints move by the motion model of a checkpoint's `state_filter.json` (per joint
v' = a v + b u + c and q' = q + a' v + b' u, fitted by least squares on the grounding
store; a joint stops at the limits the fit covered); every other scene quantity comes
from MuJoCo's kinematics of those joints (geometry only, no dynamics), the rest of
MuJoCo's qpos (Reacher's target) held where the episode started. Rolled out from a true
state under the true actions it is the "linear model" row beside the world model's own
state errors (`worldsim eval fidelity`), and it is the simulator behind the baseline
policies (worldsim.policies.linear_sim).
"""

from __future__ import annotations

import mujoco
import numpy as np

from worldsim.mujoco_sim import MujocoSim
from worldsim.scene import SceneLayout, wrap_angle
from worldsim.state_filter import StateFilter


class LinearSceneModel:
    def __init__(self, filt: StateFilter, layout: SceneLayout, sim: MujocoSim) -> None:
        self.layout, self.sim = layout, sim
        self.pos, self.vel, self.angles = filt.positions, filt.velocities, np.asarray(filt.angles)
        self.A, self.B = np.asarray(filt.transition), np.asarray(filt.control)
        self.c = np.asarray(filt.offset)
        self.low = np.array([-np.inf if v is None else v for v in filt.free_low])
        self.high = np.array([np.inf if v is None else v for v in filt.free_high])
        self.action_low, self.action_high = filt.action_low, filt.action_high
        self._kin = mujoco.MjData(sim.model)

    def step(self, values: np.ndarray, qpos: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """States (N, dim) one frame on under actions (N, A); qpos (N, nq) is MuJoCo's full
        qpos behind each state (updated in place: its joints follow the model)."""
        u = np.clip(np.asarray(actions, np.float64), self.action_low, self.action_high)
        x = np.concatenate([values[:, self.pos], values[:, self.vel]], 1).astype(np.float64)
        x = x @ self.A.T + u @ self.B.T + self.c
        p = len(self.pos)
        stopped = (x[:, :p] < self.low) | (x[:, :p] > self.high)
        x[:, :p] = np.clip(x[:, :p], self.low, self.high)
        x[:, p:][stopped] = 0.0  # a joint at its limit stops
        x[:, :p][:, self.angles] = wrap_angle(x[:, :p][:, self.angles])
        out = np.array(values, np.float32)
        out[:, self.pos], out[:, self.vel] = x[:, :p], x[:, p:]
        return self.kinematics(out, qpos)

    def kinematics(self, values: np.ndarray, qpos: np.ndarray) -> np.ndarray:
        """values with every quantity that is not MuJoCo's own joint state recomputed
        from the joints by MuJoCo's kinematics."""
        layout, out = self.layout, np.array(values, np.float32)
        joints = [q for q in layout.quantities if q.array == "qpos"]
        others = [q for q in layout.quantities if q.array not in ("qpos", "qvel")]
        for w in range(len(out)):
            for q in joints:
                qpos[w, list(q.index)] = out[w, layout.slices[q.name]]
            self._kin.qpos[:] = qpos[w]
            mujoco.mj_kinematics(self.sim.model, self._kin)
            arrays = {"qpos": self._kin.qpos, "qvel": np.zeros(self.sim.model.nv)}
            arrays |= {n: self._kin.xpos[b] for n, b in self.sim.body_ids.items()}
            fresh = layout.values(arrays)
            for q in others:
                out[w, layout.slices[q.name]] = fresh[layout.slices[q.name]]
        return out
