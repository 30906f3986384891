"""Policies that act on a batch of observations, the same way in MuJoCo and in the dream.

A ladder needs policies of known, graded quality besides trained ones: uniform random,
doing nothing (the zero action, which on Reacher-v5 scores -11.9 against random's -43),
and a scripted expert that reads the task's observation (not privileged simulator state,
which the dream does not have) with Gaussian action noise of a chosen size. A policy
spec names one: `random`, `zero`, `expert`, `expert@0.5` (noise std as a fraction of the
action range's half-width), `shipped:NAME` (a policy file shipped with the task's world
model) or the path of a policy file.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from gymnasium import spaces

from worldsim.datasets.policies import balance_gain, reacher_reach
from worldsim.policies.policy_file import SB3Policy


def batch_of_one(obs):
    """A single env's observation (an array, or a dict of them) as a batch of one."""
    return {k: v[None] for k, v in obs.items()} if isinstance(obs, dict) else obs[None]


def batch_size(obs) -> int:
    """Rows of a batch of observations (an array, or a dict of arrays)."""
    return len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)


class RandomPolicy:
    name = "random"

    def __init__(self, action_space: spaces.Box) -> None:
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng()

    def check(self, observation_space, action_space) -> None:
        pass  # acts in any space it was built for

    def reset(self, n: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        n = batch_size(obs)
        return self.rng.uniform(self.low, self.high, (n, *self.low.shape)).astype(np.float32)


class ZeroPolicy(RandomPolicy):
    """The action at the middle of the range (zero torque on Reacher): doing nothing."""

    name = "zero"

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        mid = (self.low + self.high) / 2
        return np.broadcast_to(mid, (batch_size(obs), *mid.shape)).astype(np.float32)


def reacher_from_obs(obs: np.ndarray) -> np.ndarray:
    """Reacher-v5 observation rows (cos q, sin q, target xy, q dot, tip - target) -> torques."""
    q = np.arctan2(obs[:, 2:4], obs[:, 0:2])
    return np.stack([reacher_reach(q[i], obs[i, 6:8], obs[i, 4:6]) for i in range(len(obs))])


@functools.cache
def inverted_pendulum_gain() -> np.ndarray:
    """The data expert's LQR gain (1, 4), from InvertedPendulum-v5's MuJoCo model."""
    import gymnasium as gym

    env = gym.make("InvertedPendulum-v5")
    try:
        return balance_gain(env.unwrapped.model, env.unwrapped.frame_skip)
    finally:
        env.close()


def balance_from_obs(obs: np.ndarray) -> np.ndarray:
    """InvertedPendulum-v5 observation rows (cart, pole angle, then their velocities: qpos,
    qvel) -> force, the LQR the data's expert runs."""
    return -obs @ inverted_pendulum_gain().T


EXPERTS = {"reacher": (reacher_from_obs, 10), "inverted_pendulum": (balance_from_obs, 4)}
"""Task expert name -> (controller on observation rows, observation size it reads)."""


class ObsExpert(RandomPolicy):
    """The task's scripted expert on observations, plus N(0, noise * half-range) noise."""

    def __init__(self, task, action_space: spaces.Box, noise: float = 0.0) -> None:
        super().__init__(action_space)
        if task.get("expert") not in EXPERTS:
            raise ValueError(
                f"task {task.name!r} has no observation-driven expert; have {sorted(EXPERTS)}"
            )
        self.control, self.obs_dim = EXPERTS[task.expert]
        self.noise = float(noise)
        self.name = "expert" if noise == 0 else f"expert@{noise:g}"

    def check(self, observation_space, action_space) -> None:
        if observation_space.shape != (self.obs_dim,):
            raise ValueError(
                f"{self.name} reads the task's state observation of shape ({self.obs_dim},); "
                f"this env gives {observation_space} (use obs=state)"
            )

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        a = self.control(np.asarray(obs, np.float64))
        if self.noise:
            a = a + self.rng.normal(0.0, self.noise, a.shape) * (self.high - self.low) / 2
        return np.clip(a, self.low, self.high).astype(np.float32)


def task_action_space(task) -> spaces.Box:
    import gymnasium as gym

    env = gym.make(task.env_id, **dict(task.get("env_kwargs") or {}))
    try:
        return env.action_space
    finally:
        env.close()


def make_policy(spec: str, task, obs: str | None = None, device: str = "cpu"):
    """(policy, observation mode) from a policy spec; a policy file brings its own mode and
    refuses another. Spaces are checked where the policy meets an env. `shipped:NAME` is
    the policy file NAME shipped beside the task's world model (works after pip install)."""
    if spec.startswith("shipped:"):
        from worldsim.dream import checkpoint_dir

        folder = checkpoint_dir(task.name, None) / "policies"
        name = spec.partition(":")[2]
        if not (folder / f"{name}.json").is_file():
            shipped = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
            raise ValueError(f"policy {spec!r}: no shipped policy {name!r}; shipped: {shipped}")
        spec = str(folder / name)
    if Path(spec).with_suffix(".json").is_file():
        policy = SB3Policy(spec, device)
        if task is not None and policy.card.get("task") != task.name:
            raise ValueError(
                f"policy {spec} was trained for task={policy.card.get('task')!r}, not {task.name!r}"
            )
        trained = policy.card.get("obs", "state")
        if obs is not None and obs != trained:
            raise ValueError(f"policy {spec} was trained with obs={trained}, not obs={obs}")
        return policy, trained
    if spec in ("random", "zero"):
        kind = RandomPolicy if spec == "random" else ZeroPolicy
        return kind(task_action_space(task)), obs or "state"
    if spec == "expert" or spec.startswith("expert@"):
        noise = spec.partition("@")[2] or "0"
        try:
            noise_std = float(noise)
        except ValueError:
            raise ValueError(f"policy {spec!r}: noise {noise!r} is not a number") from None
        if not 0 <= noise_std < float("inf"):  # NaN fails too: it would reach MuJoCo
            raise ValueError(f"policy {spec!r}: noise must be a finite number >= 0")
        return ObsExpert(task, task_action_space(task), noise_std), obs or "state"
    raise ValueError(
        f"policy {spec!r} is neither random, zero, expert, expert@NOISE, shipped:NAME nor a "
        "policy file (PATH.json + PATH.safetensors)"
    )
