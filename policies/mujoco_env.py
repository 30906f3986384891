"""The MuJoCo task as a policy sees it, started the way the dream starts.

The dream begins from K real frames: a MuJoCo reset and K-1 zero-action steps. Evaluating
in MuJoCo with `warmup=K-1` starts from exactly that state, so a policy faces the same
first observation in both places. Observations are the task's own (obs=state),
worldsim's 64x64 camera frame (obs=pixels), or that frame with the arm's encoders
(obs=pixels+proprio: the task's `proprioception`, no target), or the encoders alone
(obs=proprio: a policy blind to the target, the bar a pixel policy must clear), built from
the simulator's state with the dream's own code; the episode length is the task config's.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from worldsim.mujoco_sim import MujocoSim
from worldsim.scene import SceneLayout, task_observation

OBS = ("state", "pixels", "pixels+proprio", "proprio")


class MujocoTaskEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task, obs: str = "state", warmup: int = 0, render_mode=None) -> None:
        if obs not in OBS:
            raise ValueError(f"unknown obs {obs!r}; choose from {OBS}")
        self.task, self.obs, self.warmup, self.render_mode = task, obs, int(warmup), render_mode
        self.sim = MujocoSim(task)
        self.inner = self.sim.env.unwrapped  # no TimeLimit: the warm-up steps do not count
        self.action_space = self.sim.action_space
        size = int(task.image_size)
        native = self.sim.env.observation_space  # float64; the dream's is float32
        frame = spaces.Box(0, 255, (size, size, 3), np.uint8)
        if obs == "state":
            self.observation_space = spaces.Box(
                native.low.astype(np.float32), native.high.astype(np.float32)
            )
        elif obs == "pixels":
            self.observation_space = frame
        else:
            self.layout = SceneLayout.from_task(task)
            proprio = spaces.Box(-np.inf, np.inf, (len(self._proprio()),), np.float32)
            self.observation_space = (
                proprio if obs == "proprio" else spaces.Dict({"pixels": frame, "proprio": proprio})
            )
        self.max_steps = int(task.max_episode_steps)
        self.elapsed = 0

    def _obs(self, native: np.ndarray):
        if self.obs == "state":
            return native.astype(np.float32)
        if self.obs == "pixels":
            return self.render_frame()
        if self.obs == "proprio":
            return self._proprio()
        return {"pixels": self.render_frame(), "proprio": self._proprio()}

    def _proprio(self) -> np.ndarray:
        values = self.layout.values(self.sim.state())
        return task_observation(self.task, "proprio", self.layout, values)

    def render_frame(self) -> np.ndarray:
        return self.sim.render()

    def render(self):
        return self.render_frame() if self.render_mode == "rgb_array" else None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        native, info = self.sim.env.reset(seed=seed)
        zero = np.zeros(self.action_space.shape, self.action_space.dtype)
        for _ in range(self.warmup):
            native = self.inner.step(zero)[0]
        self.elapsed = 0
        return self._obs(native), {}

    def step(self, action):
        native, reward, terminated, _, info = self.inner.step(np.asarray(action, np.float32))
        self.elapsed += 1
        truncated = self.elapsed >= self.max_steps and not terminated
        info = {"is_success": self.sim.is_success(self.sim.state(), self.elapsed)}
        return self._obs(native), float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.sim.close()
