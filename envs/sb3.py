"""Stable-Baselines3 VecEnv over WorldVectorEnv, keeping the batch.

SB3 steps all environments through one `step_wait` and expects same-step
autoreset (a finished world's returned observation is already the new episode's,
the last one goes in `info["terminal_observation"]`), so the adapter resets
finished worlds right away instead of on the next step. The env may be wrapped in
Gymnasium vector wrappers: the new first observations then pass through each
observation wrapper on the way out, as a step's observations do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv, VectorObservationWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnv


def _innermost(env: VectorEnv) -> tuple[VectorEnv, list]:
    """(the env that can reset finished worlds at once, the wrappers around it, outermost
    first)."""
    wrappers = []
    while not hasattr(env, "reset_finished"):
        if not hasattr(env, "env"):
            raise TypeError(
                f"{type(env).__name__} has no reset_finished: SB3VecEnv needs a "
                "WorldVectorEnv (or LinearModelVectorEnv), wrapped or not"
            )
        wrappers.append(env)
        env = env.env
    return env, wrappers


def _world_info(info: dict, i: int) -> dict:
    """World i's entries of a Gymnasium vector info dict (arrays, nested dicts and the
    `_key` masks beside them) as one SB3 info dict."""
    out = {}
    for key, values in info.items():
        mask = info.get(f"_{key}")
        if key.startswith("_") or (mask is not None and not mask[i]):
            continue
        out[key] = _world_info(values, i) if isinstance(values, dict) else values[i]
    return out


def _merge(mask: np.ndarray, fresh, obs):
    """obs with the rows in mask taken from fresh (arrays or dicts of arrays)."""
    if isinstance(obs, dict):
        return {k: _merge(mask, fresh[k], v) for k, v in obs.items()}
    return np.where(mask.reshape(-1, *([1] * (obs.ndim - 1))), fresh, obs)


class SB3VecEnv(VecEnv):
    def __init__(self, env: VectorEnv) -> None:
        self.env = env
        self._worlds, self._wrappers = _innermost(env)
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self._seed: int | None = None

    def reset(self):
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def seed(self, seed: int | None = None):
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, np.float32)

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(done):
            last = {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]
            infos[i] = {"terminal_observation": last, "TimeLimit.truncated": bool(truncated[i])}
        for i in range(self.num_envs):
            infos[i].update(_world_info(info, i))
        mask, fresh = self._worlds.reset_finished()
        if fresh is not None:
            for w in reversed(self._wrappers):  # innermost first, as a step's obs went
                if isinstance(w, VectorObservationWrapper):
                    fresh = w.observations(fresh)
            obs = _merge(mask, fresh, obs)
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices=None) -> list:
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list:
        method = getattr(self.env, method_name)
        return [method(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self):
        frames = self.env.render()
        return list(frames) if frames is not None else [None] * self.num_envs
