"""The single-world Gymnasium Env: the vector env with one world, unbatched.

One implementation serves both, so `gym.make` and `gym.make_vec` cannot drift
apart: a single env stepped with the same seed and actions as world 0 of a
vector env sees the same frames.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.envs.vector_env import WorldVectorEnv


def _unbatch(x):
    return {k: v[0] for k, v in x.items()} if isinstance(x, dict) else x[0]


class WorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.vec = WorldVectorEnv(num_envs=1, render_mode=render_mode, **kwargs)
        self.render_mode = render_mode
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, _ = self.vec.reset(seed=seed, options=options)
        return _unbatch(obs), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape}, got {action.shape}"
            )
        obs, reward, terminated, truncated, info = self.vec.step(action[None])
        info = {k: v[0] for k, v in info.items()}
        return _unbatch(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self):
        frames = self.vec.render()
        return None if frames is None else frames[0]

    def close(self) -> None:
        self.vec.close()
