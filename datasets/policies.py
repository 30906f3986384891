"""Collection policies: what the world model gets to see.

A model trained only on random flailing cannot imagine success, and one trained
only on an expert never sees the rest of the workspace. So there are four:
uniform random, temporally correlated (Ornstein-Uhlenbeck) noise that sweeps the
workspace, scripted experts that use privileged MuJoCo state, and a per-episode
mixture of noisy expert and correlated noise.
"""

from __future__ import annotations

from collections.abc import Callable

import mujoco
import numpy as np

from worldsim.mujoco_sim import MujocoSim

POLICIES = ("random", "noise", "expert", "mix")


class Policy:
    """Acts on the privileged simulator; one instance per episode."""

    name = "policy"

    def __init__(self, sim: MujocoSim, rng: np.random.Generator) -> None:
        self.sim = sim
        self.rng = rng
        self.low = sim.action_space.low.astype(np.float64)
        self.high = sim.action_space.high.astype(np.float64)

    def act(self) -> np.ndarray:
        raise NotImplementedError

    def clip(self, a: np.ndarray) -> np.ndarray:
        return np.clip(a, self.low, self.high).astype(np.float32)


class RandomPolicy(Policy):
    name = "random"

    def act(self) -> np.ndarray:
        return self.clip(self.rng.uniform(self.low, self.high))


class CorrelatedNoisePolicy(Policy):
    """Ornstein-Uhlenbeck noise: smooth sweeps instead of jitter in place."""

    name = "noise"

    def __init__(self, sim, rng, theta: float = 0.15, sigma: float = 0.3) -> None:
        super().__init__(sim, rng)
        self.theta, self.sigma = theta, sigma
        self.x = rng.uniform(-0.5, 0.5, size=self.low.shape)

    def act(self) -> np.ndarray:
        self.x += -self.theta * self.x + self.sigma * self.rng.standard_normal(self.x.shape)
        mid, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        return self.clip(mid + half * np.clip(self.x, -1, 1))


# -- scripted experts (privileged state) -----------------------------------------
class ReacherExpert(Policy):
    """Analytic two-link IK to the target, then joint-space PD."""

    name = "expert"
    l1, l2 = 0.1, 0.11  # body1 offset and fingertip offset in reacher.xml

    def act(self) -> np.ndarray:
        d = self.sim.data
        q, qd = d.qpos[:2], d.qvel[:2]
        tx, ty = d.qpos[2:4]  # target slide joints = target xy
        r2 = tx * tx + ty * ty
        c = np.clip((r2 - self.l1**2 - self.l2**2) / (2 * self.l1 * self.l2), -1, 1)
        best = None
        for elbow in (np.arccos(c), -np.arccos(c)):  # pick the elbow branch nearest to now
            shoulder = np.arctan2(ty, tx) - np.arctan2(
                self.l2 * np.sin(elbow), self.l1 + self.l2 * np.cos(elbow)
            )
            err = np.array([_wrap(shoulder - q[0]), elbow - q[1]])
            if best is None or np.abs(err).sum() < np.abs(best).sum():
                best = err
        return self.clip(2.0 * best - 0.15 * qd)


class InvertedPendulumExpert(Policy):
    """LQR around the upright pose, from MuJoCo's finite-difference linearisation."""

    name = "expert"

    def __init__(self, sim, rng) -> None:
        super().__init__(sim, rng)
        self.k = _balance_gain(sim.model, sim.unwrapped.frame_skip)

    def act(self) -> np.ndarray:
        d = self.sim.data
        x = np.concatenate([d.qpos, d.qvel])
        return self.clip(-self.k @ x)


class PusherExpert(Policy):
    """Tip to a point behind the object, then push it along the object->goal line.

    Operational-space control of the arm tip: torque = J^T (Kp e - Kd v) - D qd.
    """

    name = "expert"

    def __init__(self, sim, rng) -> None:
        super().__init__(sim, rng)
        m = sim.model
        self.tip = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "tips_arm")
        self.obj = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "object")
        self.goal = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "goal")
        self.jacp = np.zeros((3, m.nv))
        self.phase = "approach"

    def act(self) -> np.ndarray:
        m, d = self.sim.model, self.sim.data
        tip, obj, goal = d.xpos[self.tip], d.xpos[self.obj], d.xpos[self.goal]
        line = goal[:2] - obj[:2]
        line /= np.linalg.norm(line) + 1e-9
        behind = np.array([*(obj[:2] - 0.09 * line), obj[2]])
        if self.phase == "approach" and np.linalg.norm(tip[:2] - behind[:2]) < 0.03:
            self.phase = "push"
        if self.phase == "push" and np.linalg.norm(tip[:2] - behind[:2]) > 0.12:
            self.phase = "approach"  # lost the object: go around again
        if self.phase == "approach":
            # come in from above the table so the approach does not knock the object
            above = behind + np.array([0, 0, 0.06])
            waypoint = above if np.linalg.norm(tip[:2] - behind[:2]) > 0.06 else behind
        else:
            waypoint = np.array([*(goal[:2] + 0.02 * line), obj[2]])
        mujoco.mj_jacBody(m, d, self.jacp, None, self.tip)
        nq = 7
        jac = self.jacp[:, :nq]
        tip_vel = jac @ d.qvel[:nq]
        force = 8.0 * (waypoint - tip) - 1.0 * tip_vel
        tau = jac.T @ force - 0.3 * d.qvel[:nq]
        return self.clip(tau)


EXPERTS: dict[str, type[Policy]] = {
    "reacher": ReacherExpert,
    "inverted_pendulum": InvertedPendulumExpert,
    "pusher": PusherExpert,
}


class NoisyExpert(Policy):
    """Expert plus Gaussian noise, a fraction of the action range."""

    name = "expert"

    def __init__(self, sim, rng, expert: Policy, noise: float) -> None:
        super().__init__(sim, rng)
        self.expert, self.noise = expert, noise

    def act(self) -> np.ndarray:
        a = self.expert.act().astype(np.float64)
        a += self.noise * (self.high - self.low) / 2 * self.rng.standard_normal(a.shape)
        return self.clip(a)


def make_policy(name: str, sim: MujocoSim, data_cfg, rng: np.random.Generator) -> Policy:
    """The collection policy for one episode; `mix` draws which kind per episode."""
    if name not in POLICIES:
        raise ValueError(f"unknown collection policy {name!r}; choose one of {list(POLICIES)}")
    noise: Callable[[], Policy] = lambda: CorrelatedNoisePolicy(  # noqa: E731
        sim, rng, data_cfg.noise_theta, data_cfg.noise_sigma
    )
    if name == "random":
        return RandomPolicy(sim, rng)
    if name == "noise":
        return noise()
    expert_cls = EXPERTS.get(sim.task.expert)
    if expert_cls is None:
        raise ValueError(
            f"task {sim.task.name!r} names expert {sim.task.expert!r}; known: {sorted(EXPERTS)}"
        )
    if name == "expert":
        return expert_cls(sim, rng)
    if rng.random() < data_cfg.noise_fraction:
        return noise()
    return NoisyExpert(sim, rng, expert_cls(sim, rng), data_cfg.expert_noise)


# -- helpers --------------------------------------------------------------------
def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _balance_gain(model: mujoco.MjModel, frame_skip: int, iters: int = 500) -> np.ndarray:
    """Discrete LQR gain at the upright pose, from central differences of the env step.

    Differences are taken over the env's `frame_skip` physics steps with the control
    held, i.e. the same discrete system the policy acts on (mjd_transitionFD would
    be the tool, but it does not support the RK4 integrator this task uses).
    """
    data = mujoco.MjData(model)
    nv, nu = model.nv, model.nu

    def step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:], data.ctrl[:] = x[:nv], x[nv:], u
        for _ in range(frame_skip):
            mujoco.mj_step(model, data)
        return np.concatenate([data.qpos, data.qvel])

    x0, u0, eps = np.zeros(2 * nv), np.zeros(nu), 1e-5
    a = np.stack(
        [(step(x0 + e, u0) - step(x0 - e, u0)) / (2 * eps) for e in np.eye(2 * nv) * eps], axis=1
    )
    b = np.stack(
        [(step(x0, u0 + e) - step(x0, u0 - e)) / (2 * eps) for e in np.eye(nu) * eps], axis=1
    )
    q = np.diag([1.0, 10.0] + [0.1] * (2 * nv - 2))
    r = np.eye(nu) * 0.1
    p = q.copy()
    for _ in range(iters):
        k = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ k)
    return k
