"""A native Gymnasium VectorEnv backed by the world model: N worlds, one batched forward pass.

Each world spawns from a live MuJoCo reset (its first frames and their scene
state are real), then every `step` generates the next frame and state of all N
worlds at once in the FrameEngine. The `state` observation, the reward and
`info["is_success"]` all come from the world model's own state: the observation in
the MuJoCo task's layout (task `observation`), the reward by the task's own formula
(task `reward`; `reward_source="head"` takes the dynamics model's reward head
instead). Nothing fitted outside the world model is in the loop. With
`spawn="dataset"` worlds start from windows of a stored episode
(`spawn_data=PATH`) instead of MuJoCo resets. Autoreset follows Gymnasium's default
next-step mode: the step after an episode ends resets that world (its observation
is the new first frame, reward 0) while the others step on. Pixels are decoded
only when an observation mode or `render()` needs them; `state` and `latent` never
run the decoder. Frames are generated only when something reads them: with `state` or
`proprio` observations, the task's reward formula and no render mode, every step is
the world model's learned state transition alone (`FrameEngine.step_state`: the same
states, bit for bit, as the full step, which the transition never reads frames for),
and spawns render nothing (`generate_frames=True` runs the frame model anyway).
`threads=N` sets torch's intra-op threads (default: the cores other
processes leave idle when the env is made; see worldsim.threads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.mujoco_sim import MujocoSim
from worldsim.reasoner_text import TaskText
from worldsim.scene import task_observation, task_reward, task_terminated
from worldsim.threads import apply as apply_threads

OBS_MODES = ("pixels", "latent", "state", "proprio")
MAX_WORLDS = 4096
"""Most worlds one env steps (4,096 64x64 frames are 48 MB a step; beyond, a typo)."""
REWARD_SOURCES = ("state", "head")
SPAWNS = ("mujoco", "dataset")


def parse_obs_mode(obs_mode: str) -> list[str]:
    """'pixels', 'state', 'latent', 'proprio' (the task's `proprioception`: the arm's
    encoders, no target) or a '+'-joined combination (a Dict observation)."""
    modes = obs_mode.split("+")
    bad = [m for m in modes if m not in OBS_MODES]
    if bad or not modes or len(set(modes)) != len(modes):
        raise ValueError(
            f"unknown obs_mode {obs_mode!r}; choose from {list(OBS_MODES)} or a '+'-joined "
            "combination such as 'pixels+state'"
        )
    return modes


def world_seeds(seed: int | list[int], num_envs: int) -> list[int]:
    """One seed per world: seed + i for an int (Gymnasium's convention), or a list of
    num_envs seeds as given."""
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs or not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(
            f"seed must be an int or a list of {num_envs} ints (one per world), got {seed!r}"
        )
    return [int(s) for s in seeds]


def task_config(task: str, engine: str = "fast"):
    """The composed task and engine configs of a task name (error lists the choices)."""
    from worldsim.cli import compose_config

    cfg = compose_config("dream", [f"task={task}", f"engine={engine}"])
    return cfg.task, cfg.engine


class WorldVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str = "reacher",
        num_envs: int = 1,
        obs_mode: str = "pixels",
        checkpoint: str | None = None,
        engine: str = "fast",
        context: int = 4,
        device: str = "cpu",
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        reward_source: str = "state",
        spawn: str = "mujoco",
        spawn_data: str | None = None,
        threads: int | None = None,
        generate_frames: bool | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not (1 <= num_envs <= MAX_WORLDS and 1 <= context <= 64):
            raise ValueError(
                f"num_envs must be 1..{MAX_WORLDS} and context 1..64, got {num_envs}, {context}"
            )
        self.modes = parse_obs_mode(obs_mode)
        if reward_source not in REWARD_SOURCES:
            raise ValueError(
                f"unknown reward_source {reward_source!r}; choose from {REWARD_SOURCES} "
                "(state: the task's reward formula on the world model's state)"
            )
        self.reward_source = reward_source
        reads_frames = bool({"pixels", "latent"} & set(self.modes)) or reward_source == "head"
        self.generate_frames = (
            reads_frames or render_mode is not None if generate_frames is None else generate_frames
        )
        if reads_frames and not self.generate_frames:
            raise ValueError(
                f"generate_frames=False, but obs_mode={obs_mode!r} / reward_source="
                f"{reward_source!r} read the generated frames"
            )
        self.task, engine_cfg = task_config(task, engine)
        self._spawn_windows = self._open_spawn_data(spawn, spawn_data, context)
        folder = checkpoint_dir(self.task.name, checkpoint)
        tok, dyn = load_world_model(self.task, folder, device)
        self.text = TaskText.from_task(self.task)
        self.layout = self.text.layout
        if reward_source == "state" and self.task.get("reward") is None:
            raise ValueError(
                f"reward_source=state: task {self.task.name!r} has no reward formula "
                "(task `reward`); use reward_source=head"
            )
        self.sim = MujocoSim(self.task)  # spawns: one renderer serves every world's reset
        self.num_envs, self.context, self.render_mode = num_envs, context, render_mode
        self.max_episode_steps = int(max_episode_steps or self.task.max_episode_steps)
        engine_cfg = EngineConfig(
            **{**engine_cfg, **({} if threads is None else {"threads": threads})}
        )
        apply_threads(engine_cfg.threads)
        self.engine = FrameEngine(
            tok,
            dyn,
            num_envs,
            engine_cfg,
            device,
            self.sim.action_space.low,
            self.sim.action_space.high,
        )
        self.single_action_space = self.sim.action_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = self._observation_space(tok, dyn)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._frames: np.ndarray | None = None
        self._elapsed = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)
        self._has_reset = False  # Gymnasium's order: reset() before the first step()
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._spawn_seeds: dict[int, int] = {}
        self.spawn_frames: np.ndarray | None = None

    def _open_spawn_data(self, spawn: str, path: str | None, context: int):
        """(store, window starts) to spawn from with spawn='dataset'; None for 'mujoco'."""
        if spawn not in SPAWNS:
            raise ValueError(f"unknown spawn {spawn!r}; choose from {SPAWNS}")
        if spawn == "mujoco":
            return None
        if path is None:
            raise ValueError("spawn='dataset' needs spawn_data=PATH (an episode store)")
        from worldsim.datasets.store import EpisodeStore

        store = EpisodeStore.open_for_task(path, self.task.name)
        starts = store.window_starts(context)
        if not len(starts):
            raise ValueError(f"{path}: no episode holds {context} frames")
        return store, starts

    def _observation_space(self, tok, dyn) -> spaces.Space:
        s = self.task.image_size
        tokens = (dyn.cfg.grid**2, dyn.cfg.latent_dim)
        parts = {
            "pixels": spaces.Box(0, 255, (s, s, 3), np.uint8),
            "latent": spaces.Box(-np.inf, np.inf, tokens, np.float32),
        }
        zero = np.zeros((1, self.layout.dim), np.float32)
        for m in ("state", "proprio"):
            dim = self._vector(m, zero).shape[1]
            parts[m] = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        if len(self.modes) == 1:
            return parts[self.modes[0]]
        return spaces.Dict({m: parts[m] for m in self.modes})

    # -- spawning ---------------------------------------------------------------------
    def _spawn(self, worlds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Real context of len(worlds) worlds: frames (n, K, H, W, 3), the K-1 actions
        between them and their scene states (n, K, dim); from fresh MuJoCo resets, held
        at rest, or (spawn='dataset') K consecutive rows of a stored episode.

        World i draws its reset seeds or windows from its own stream (seeded seed + i),
        unless `reset(options={"spawn_seeds": [...]})` named its next MuJoCo reset seed."""
        if self._spawn_windows is not None:
            store, starts = self._spawn_windows
            wins = [
                store.window(int(starts[self._rngs[w].integers(len(starts))]), self.context, 0)
                for w in worlds
            ]
            frames = np.stack([win["frame"] for win in wins])
            actions = np.stack([win["action"][: self.context - 1] for win in wins])
            states = np.stack([self.layout.values(win) for win in wins])
            return frames, actions.astype(np.float32), states
        size = self.task.image_size
        frames = np.zeros((len(worlds), self.context, size, size, 3), np.uint8)
        states = np.zeros((len(worlds), self.context, self.layout.dim), np.float32)
        zero = np.zeros(self.single_action_space.shape, np.float32)
        sim = self.sim.env  # physics only: frames are rendered where needed
        for i, w in enumerate(worlds):
            seed = self._spawn_seeds.pop(int(w), None)
            sim.reset(seed=int(self._rngs[w].integers(2**31)) if seed is None else seed)
            for t in range(self.context):
                if t:
                    sim.step(zero)
                states[i, t] = self.layout.values(self.sim.state())
                if self.generate_frames:
                    frames[i, t] = self.sim.render()
        actions = np.zeros((len(worlds), self.context - 1, *self.single_action_space.shape))
        return frames, actions.astype(np.float32), states

    def _reset_worlds(self, mask: np.ndarray):
        """Spawn the worlds in mask; returns the engine's reset output (all worlds)."""
        frames, actions, states = self._spawn(np.flatnonzero(mask))
        self.spawn_frames = frames  # the real context of the worlds just spawned, in order
        full = np.zeros((self.num_envs, self.context, *frames.shape[2:]), np.uint8)
        full_a = np.zeros((self.num_envs, self.context - 1, *actions.shape[2:]), np.float32)
        full_s = np.zeros((self.num_envs, self.context, states.shape[2]), np.float32)
        full[mask], full_a[mask], full_s[mask] = frames, actions, states
        if not self.generate_frames:
            self.spawn_frames = None
            out = self.engine.reset_state(full_s[:, -1], mask)
        else:
            out = self.engine.reset(
                full, full_a if self.context > 1 else None, mask, decode=True, states=full_s
            )
        self._elapsed[mask] = 0
        return out

    # -- Gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = None if seed is None else world_seeds(seed, self.num_envs)
        super().reset(seed=None if seeds is None else seeds[0])  # the env's own np_random
        self._spawn_seeds = self._parse_spawn_seeds(options)
        if seeds is not None:  # world i behaves like a single env reset with seed + i
            self._rngs = [np.random.default_rng(s) for s in seeds]
            self.engine.seed(seeds)
        everyone = np.ones(self.num_envs, bool)
        out = self._reset_worlds(everyone)
        self._done[:] = False
        self._has_reset = True
        self._frames = None if out.frames is None else out.frames.numpy()
        return self._observe(out), {}

    def _parse_spawn_seeds(self, options: dict | None) -> dict[int, int]:
        """options["spawn_seeds"]: one MuJoCo reset seed per world for this reset, so that
        an evaluation starts the dream from the same frames as a MuJoCo episode."""
        seeds = (options or {}).get("spawn_seeds")
        if seeds is None:
            return {}
        if self._spawn_windows is not None:
            raise ValueError("spawn_seeds are MuJoCo reset seeds; this env has spawn='dataset'")
        if len(seeds) != self.num_envs:
            raise ValueError(
                f"spawn_seeds needs one seed per world ({self.num_envs}), got {len(seeds)}"
            )
        return {i: int(s) for i, s in enumerate(seeds)}

    def step(self, actions):
        if not self._has_reset:
            raise ResetNeeded("Cannot call env.step() before calling env.reset()")
        if np.iscomplexobj(actions):
            raise ValueError(f"actions must be real numbers, got dtype {np.asarray(actions).dtype}")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != self.action_space.shape:
            raise ValueError(
                f"actions must have shape {self.action_space.shape}, got {actions.shape}"
            )
        if not np.isfinite(actions).all():
            raise ValueError("actions contain NaN or inf")
        # as the MuJoCo task does (its actuators clamp to ctrlrange): clip, and say so
        low, high = self.single_action_space.low, self.single_action_space.high
        clipped = ((actions < low) | (actions > high)).sum(axis=1)
        actions = np.clip(actions, low, high)
        restart = self._done.copy()
        if self.generate_frames:
            out = self.engine.step(actions, decode=self._needs_pixels(), active=~restart)
        else:
            out = self.engine.step_state(actions)
        state = out.state.numpy()
        if self.reward_source == "state":  # the task's own formula and rule on the state
            reward = task_reward(self.task, self.layout, state, actions)
            terminated = task_terminated(self.task, self.layout, state)
        else:
            reward = out.reward.numpy().astype(np.float64)
            terminated = out.terminated.numpy().copy()
        self._elapsed += 1
        if restart.any():  # next-step autoreset: these worlds start over instead
            reset = self._reset_worlds(restart)
            if out.latents is not None:
                out.latents[restart] = reset.latents[restart]
            out.state[restart] = reset.state[restart]
            if out.frames is not None:
                out.frames[restart] = reset.frames[restart]
            reward[restart], terminated[restart] = 0.0, False
        truncated = (self._elapsed >= self.max_episode_steps) & ~terminated & ~restart
        self._done = terminated | truncated
        self._frames = out.frames.numpy() if out.frames is not None else None
        everyone = np.ones(self.num_envs, bool)
        info: dict[str, Any] = {"clipped_actions": clipped, "_clipped_actions": everyone}
        if self.text.pair is not None:
            info["is_success"] = np.array([self.text.success(s) for s in state])
            info["_is_success"] = everyone
        return self._observe(out), reward, terminated, truncated, info

    def reset_finished(self):
        """Reset the worlds whose episode just ended now rather than on the next step
        (same-step autoreset, as Stable-Baselines3 expects): (mask of those worlds, the
        observation batch whose masked rows are their new first observations), or
        (mask, None) when no world ended."""
        mask = self._done.copy()
        if not mask.any():
            return mask, None
        fresh = self._observe(self._reset_worlds(mask))
        self._done[:] = False
        return mask, fresh

    # -- sub-env attribute access: every world shares this env's attributes --------
    def get_attr(self, name: str) -> tuple:
        return (getattr(self, name),) * self.num_envs

    def set_attr(self, name: str, values) -> None:
        values = values if isinstance(values, (list, tuple)) else [values] * self.num_envs
        if len(set(map(repr, values))) > 1:
            raise ValueError(f"{name}: worlds of one WorldVectorEnv share attributes")
        setattr(self, name, values[0])

    def call(self, name: str, *args, **kwargs) -> tuple:
        attr = getattr(self, name)
        result = attr(*args, **kwargs) if callable(attr) else attr
        return (result,) * self.num_envs

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._frames is None:
            self._frames = (
                self.engine.tok.decode_uint8(self.engine.latents, self.engine.state).cpu().numpy()
            )
        return tuple(self._frames)

    def close_extras(self, **kwargs) -> None:
        self.engine.close()
        self.sim.close()

    # -- observations -----------------------------------------------------------------
    def _needs_pixels(self) -> bool:
        return "pixels" in self.modes or self.render_mode == "rgb_array"

    def _vector(self, mode: str, values: np.ndarray) -> np.ndarray:
        """Scene values -> the `state` (task `observation`) or `proprio` (task
        `proprioception`) observation."""
        return task_observation(self.task, mode, self.layout, values)

    def _observe(self, out):
        parts = {}
        for m in self.modes:
            if m == "pixels":
                parts[m] = out.frames.numpy()
            elif m == "latent":
                parts[m] = out.latents.cpu().numpy().astype(np.float32)
            else:
                parts[m] = self._vector(m, out.state.numpy())
        return parts[self.modes[0]] if len(self.modes) == 1 else parts
