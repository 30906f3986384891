"""Joint state filter: the reasoner's per-frame readings fused with the robot's motion model.

Joint velocity is barely visible in one 64x64 frame: at Reacher's 50 frames/s one
pixel of motion is 2-4 rad/s, and the reasoner's velocity reading of a dreamed
frame is 2-3 rad/s off. A velocity-damped controller acting on that reading
whips the arm around. Yet the robot's own joints are close to linear between
frames (Reacher: v' = 0.980 v + 3.96 u, residual 0.003 rad/s away from the joint
limits), so a Kalman filter over (joint position, joint velocity) that predicts
with the actions taken and corrects with each frame's reading keeps a velocity
estimate that the frames alone cannot give.

Everything is fitted on data, nothing is written per task: the motion model by
least squares on a grounding store's transitions (position change and next
velocity from velocity, action and a constant; positions are left out so that an
unlimited joint's angle can wrap), refitted without its outliers (a joint stopping
at its limit); its noise from the robust spread of the residuals; the reading
noise from the reasoner's errors on real frames. The dream's motion is not
MuJoCo's, so the process noise is widened by `process_scale` to let the readings
pull the estimate back, and where the model does not hold (a joint predicted past
the positions its fit covered, i.e. at a limit) the filter leans on the reading.
Joints are the scene quantities stored from `qpos` paired with those from `qvel`
at the same index.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from worldsim.checkpoint import save_json
from worldsim.scene import SceneLayout, wrap_angle


def _robust_std(x: np.ndarray) -> np.ndarray:
    """Per column 1.4826 x median absolute deviation: the std of the bulk, not the outliers."""
    return 1.4826 * np.median(np.abs(x - np.median(x, axis=0)), axis=0) + 1e-6


def joint_columns(layout: SceneLayout) -> tuple[list[int], list[int], list[bool]]:
    """(position columns, velocity columns, position is an angle) of the layout's joints:
    each qpos index that some quantity also reads from qvel."""
    vel = {}
    for q in layout.quantities:
        if q.array == "qvel":
            start = layout.slices[q.name].start
            vel.update({idx: start + k for k, idx in enumerate(q.index)})
    pos, velocity, angle = [], [], []
    for q in layout.quantities:
        if q.array != "qpos":
            continue
        start = layout.slices[q.name].start
        for k, idx in enumerate(q.index):
            if idx in vel:
                pos.append(start + k)
                velocity.append(vel[idx])
                angle.append(q.angle)
    return pos, velocity, angle


@dataclass
class StateFilter:
    positions: list[int]
    """Layout columns of the joint positions."""
    velocities: list[int]
    """Layout columns of the joint velocities, in the same joint order."""
    angles: list[bool]
    """Positions that wrap (angles)."""
    transition: list[list[float]]
    """x' = transition @ x + control @ u + offset, x = (positions, velocities)."""
    control: list[list[float]]
    offset: list[float]
    process_std: list[float]
    """Per element of x: the std of the motion model's one-step error."""
    reading_std: list[float]
    """Per element of x: the std of the reasoner's reading error on real frames."""
    action_low: list[float]
    action_high: list[float]
    free_low: list[float | None]
    """Per joint: the positions between which the motion model holds (a limited joint
    stops at its limit; None: no limit)."""
    free_high: list[float | None]

    @classmethod
    def fit(
        cls,
        layout: SceneLayout,
        values: np.ndarray,
        actions: np.ndarray,
        episode_ends: np.ndarray,
        readings: np.ndarray,
        truth: np.ndarray,
        action_low: np.ndarray,
        action_high: np.ndarray,
        process_scale: float = 10.0,
    ) -> StateFilter:
        """values (rows, dim) true states and actions (rows, A) of a store, rows aligned as
        stored (row t's action leads to row t + 1 within an episode); readings and truth
        (n, dim): the reasoner's estimates of real frames and their true values."""
        pos, vel, angle = joint_columns(layout)
        if not pos:
            raise ValueError(
                f"scene {[q.name for q in layout.quantities]} has no joint read from both qpos "
                "and qvel at the same index; a state filter has nothing to track"
            )
        p = len(pos)
        last = np.zeros(len(values), bool)
        last[np.asarray(episode_ends) - 1] = True  # an episode's last row starts no transition
        t = np.flatnonzero(~last[:-1])
        u = np.clip(actions[t], action_low, action_high)
        x_in = np.concatenate([values[t][:, vel], u, np.ones((len(t), 1))], 1)
        step = values[t + 1][:, pos] - values[t][:, pos]
        step[:, angle] = wrap_angle(step[:, angle])
        target = np.concatenate([step, values[t + 1][:, vel]], 1)
        x_in, target = x_in.astype(np.float64), target.astype(np.float64)
        inlier = np.ones(len(t), bool)
        for _ in range(10):  # trimmed least squares: contacts (joint limits) are not the model
            w, *_ = np.linalg.lstsq(x_in[inlier], target[inlier], rcond=None)
            residual = target - x_in @ w
            inlier = (np.abs(residual) < 4 * _robust_std(residual[inlier])).all(1)
        # where the linear model holds: the positions its inliers start from (an angle that
        # turns a full circle and more has no limit)
        low, high = np.quantile(values[t[inlier]][:, pos], [0.001, 0.999], axis=0)
        limited = ~np.asarray(angle) | (high - low < 2 * np.pi)
        low, high = np.where(limited, low, -np.inf), np.where(limited, high, np.inf)
        a = np.zeros((2 * p, 2 * p))
        a[:p, :p] = np.eye(p)
        a[:, p:] = w[:p].T  # both position change and next velocity come from velocity
        n_act = u.shape[1]
        err = readings - truth
        err_x = np.concatenate([err[:, pos], err[:, vel]], 1)
        err_x[:, :p][:, angle] = wrap_angle(err_x[:, :p][:, angle])
        return cls(
            positions=pos,
            velocities=vel,
            angles=angle,
            transition=a.tolist(),
            control=w[p : p + n_act].T.tolist(),
            offset=w[-1].tolist(),
            process_std=(process_scale * _robust_std(residual)).tolist(),
            reading_std=_robust_std(err_x).tolist(),
            action_low=np.asarray(action_low, float).tolist(),
            action_high=np.asarray(action_high, float).tolist(),
            free_low=[None if np.isinf(v) else float(v) for v in low],
            free_high=[None if np.isinf(v) else float(v) for v in high],
        )

    def save(self, path: str | Path) -> None:
        save_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> StateFilter:
        return cls(**json.loads(Path(path).read_text()))


class StateTracker:
    """One filter per world of a batch: `start` worlds from a reading, `advance` them by
    an action and the next reading, read `values` with the joints filtered."""

    def __init__(self, filt: StateFilter, num_worlds: int) -> None:
        self.f = filt
        self.pos, self.vel = filt.positions, filt.velocities
        self.wraps = np.concatenate([filt.angles, np.zeros(len(filt.angles), bool)])
        self.A = np.asarray(filt.transition)
        self.B = np.asarray(filt.control)
        self.c = np.asarray(filt.offset)
        self.Q = np.diag(np.square(filt.process_std))
        self.R = np.diag(np.square(filt.reading_std))
        n = 2 * len(self.pos)
        self.low = np.array([-np.inf if v is None else v for v in filt.free_low])
        self.high = np.array([np.inf if v is None else v for v in filt.free_high])
        self.x = np.zeros((num_worlds, n))
        self.P = np.tile(self.R, (num_worlds, 1, 1))

    def _reading(self, values: np.ndarray) -> np.ndarray:
        return np.concatenate([values[:, self.pos], values[:, self.vel]], 1).astype(np.float64)

    def start(self, values: np.ndarray, mask: np.ndarray) -> None:
        """Worlds in mask start over from their reading (values (N, dim))."""
        self.x[mask] = self._reading(values)[mask]
        self.P[mask] = self.R

    def advance(self, actions: np.ndarray, values: np.ndarray, mask: np.ndarray) -> None:
        """Worlds in mask: predict under the actions (N, A) taken, then correct with the
        reading of the frame those actions led to."""
        if not mask.any():
            return
        x, P = self.x[mask], self.P[mask]
        u = np.clip(actions[mask], self.f.action_low, self.f.action_high)
        x = x @ self.A.T + u @ self.B.T + self.c
        P = self.A @ P @ self.A.T + self.Q
        y = self._reading(values)[mask] - x
        y[:, self.wraps] = wrap_angle(y[:, self.wraps])
        pos = x[:, : len(self.pos)]
        stopped = ((pos < self.low) | (pos > self.high)).any(1)
        P[stopped] += self.R  # at a joint limit the motion model breaks: lean on the reading
        gain = np.linalg.solve(P + self.R, P).transpose(0, 2, 1)  # P (P + R)^-1, both symmetric
        self.x[mask] = x + (gain @ y[..., None])[..., 0]
        self.P[mask] = P - gain @ P

    def values(self, values: np.ndarray) -> np.ndarray:
        """values (N, dim) with the joint positions and velocities replaced by the filter's."""
        out = np.array(values, dtype=np.float32)
        p = len(self.pos)
        pos = self.x[:, :p].copy()
        pos[:, self.f.angles] = wrap_angle(pos[:, self.f.angles])
        out[:, self.pos], out[:, self.vel] = pos, self.x[:, p:]
        return out
