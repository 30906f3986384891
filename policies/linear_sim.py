"""Baseline simulator: the fitted linear joint model alone, no frames, no network.

The bar a world model must clear before its policy results say anything about it: a
vector env over worldsim.linear_model (the checkpoint's `state_filter.json` motion model
for the joints, MuJoCo's kinematics for the rest), the reward the task's own formula on
its state. Episodes start from the same MuJoCo resets as the dream's (reset, then K-1
zero-action steps). On Reacher it trained PPO policies that transfer to MuJoCo as well
as the first world model's did, because a reaching controller needs only the first ~10
steps of its episodes to be right.

Used by `worldsim policy train where=linear` and as the baseline row of `worldsim
policy transfer`; never by the world model's own envs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldsim.dream import checkpoint_dir
from worldsim.envs.vector_env import task_config, world_seeds
from worldsim.linear_model import LinearSceneModel
from worldsim.mujoco_sim import MujocoSim
from worldsim.reasoner_text import TaskText
from worldsim.scene import task_reward, task_terminated
from worldsim.state_filter import StateFilter


class LinearModelVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        task: str = "reacher",
        num_envs: int = 1,
        checkpoint: str | None = None,
        context: int = 4,
        max_episode_steps: int | None = None,
    ) -> None:
        self.task, _ = task_config(task)
        path = checkpoint_dir(self.task.name, checkpoint) / "state_filter.json"
        if not path.exists():
            raise FileNotFoundError(
                f"the linear-model baseline needs {path}: worldsim train state_filter "
                f"task={self.task.name}, then copy its state_filter.json there"
            )
        self.text = TaskText.from_task(self.task)
        self.layout = self.text.layout
        self.sim = MujocoSim(self.task)
        self.model = LinearSceneModel(StateFilter.load(path), self.layout, self.sim)
        self.terms = list(self.task.get("observation") or [])
        self.num_envs, self.context = num_envs, context
        self.max_episode_steps = int(max_episode_steps or self.task.max_episode_steps)
        self.single_action_space = self.sim.action_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        dim = self.layout.observation(np.zeros((1, self.layout.dim)), self.terms).shape[1]
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.state = np.zeros((num_envs, self.layout.dim), np.float32)
        self.qpos = np.zeros((num_envs, self.sim.model.nq))  # MuJoCo's qpos behind each world
        self._elapsed = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._spawn_seeds: dict[int, int] = {}

    def _spawn(self, worlds: np.ndarray) -> None:
        zero = np.zeros(self.single_action_space.shape, np.float32)
        for w in worlds:
            seed = self._spawn_seeds.pop(int(w), None)
            obs = self.sim.reset(seed=int(self._rngs[w].integers(2**31)) if seed is None else seed)
            for _ in range(self.context - 1):
                obs = self.sim.step(zero)[0]
            self.state[w] = self.layout.values(obs.state)
            self.qpos[w] = obs.state["qpos"]
        self._elapsed[worlds] = 0

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = None if seed is None else world_seeds(seed, self.num_envs)
        super().reset(seed=None if seeds is None else seeds[0])
        if seeds is not None:
            self._rngs = [np.random.default_rng(s) for s in seeds]
        self._spawn_seeds = {
            i: int(s) for i, s in enumerate((options or {}).get("spawn_seeds") or [])
        }
        self._spawn(np.arange(self.num_envs))
        self._done[:] = False
        return self._observe(), {}

    def step(self, actions):
        actions = np.asarray(actions, np.float64)
        if actions.shape != self.action_space.shape or not np.isfinite(actions).all():
            raise ValueError(
                f"actions must be finite with shape {self.action_space.shape}, got {actions.shape}"
            )
        u = np.clip(actions, self.single_action_space.low, self.single_action_space.high)
        restart = self._done.copy()
        self.state = self.model.step(self.state, self.qpos, u)
        self._elapsed += 1
        reward = task_reward(self.task, self.layout, self.state, u)
        terminated = task_terminated(self.task, self.layout, self.state)
        if restart.any():
            self._spawn(np.flatnonzero(restart))
            reward[restart], terminated[restart] = 0.0, False
        truncated = (self._elapsed >= self.max_episode_steps) & ~terminated & ~restart
        self._done = terminated | truncated
        info: dict[str, Any] = {}
        if self.text.pair is not None:
            info["is_success"] = np.array([self.text.success(s) for s in self.state])
        return self._observe(), reward, terminated, truncated, info

    def reset_finished(self):
        """Same-step autoreset for Stable-Baselines3, as WorldVectorEnv.reset_finished."""
        mask = self._done.copy()
        if not mask.any():
            return mask, None
        self._spawn(np.flatnonzero(mask))
        self._done[:] = False
        return mask, self._observe()

    def _observe(self) -> np.ndarray:
        return self.layout.observation(self.state, self.terms)

    def close_extras(self, **kwargs) -> None:
        self.sim.close()
