"""Stable-Baselines3 VecEnv over WorldVectorEnv, keeping the batch.

SB3 steps all environments through one `step_wait` and expects same-step
autoreset (a finished world's returned observation is already the new episode's,
the last one goes in `info["terminal_observation"]`), so the adapter resets
finished worlds right away instead of on the next step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from worldsim.envs.vector_env import WorldVectorEnv


class SB3VecEnv(VecEnv):
    def __init__(self, env: WorldVectorEnv) -> None:
        self.env = env
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
        for key, values in info.items():
            for i in range(self.num_envs):
                infos[i][key] = values[i]
        obs = self.env.reset_done(obs)
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
