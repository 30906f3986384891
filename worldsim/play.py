"""`worldsim play`: drive the dreamed robot from the keyboard and watch it answer.

One dreamed frame per tick at `fps`. A key change does not wait for the tick: the
next frame starts at once, so a key shows within one frame's compute (what
`bench/play.py` measures), and pacing resumes from there. Held keys map to actions
through the task's keyboard map (worldsim.keyboard), the map `policy=keyboard-script`
uses too. Headless mode (SDL's dummy video driver) plays a key script as real key
events, so tests and benchmarks take the same path as a person at the keyboard.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import DictConfig

from worldsim.dream import checkpoint_dir, load_world_model, make_driver
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.keyboard import key_action, parse_script
from worldsim.mujoco_sim import MujocoSim
from worldsim.reasoner_text import TaskText
from worldsim.scene import task_observation
from worldsim.threads import apply as apply_threads

CONTROLS = {
    "r": "reset from a new MuJoCo start",
    "space": "pause / resume",
    ".": "one step while paused",
    "m": "switch human / policy (keys override the policy)",
    "g": "re-ground the dream from the twin",
    "f5": "start / stop recording",
    "h": "this help",
    "escape": "quit",
    "q": "quit",
}
HUD_LINES = 5
LINE_PX = 16


class PlayError(RuntimeError):
    """The session cannot start; the message says what to do instead."""


def import_pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as e:
        raise PlayError("worldsim play needs pygame: pip install 'worldsim[play]'") from e
    return pygame


NO_DISPLAY_HINT = (
    "Run without a window: worldsim play headless=true script=FILE record=out.mp4, or write "
    "a video with worldsim dream"
)
INVISIBLE_DRIVERS = ("dummy", "offscreen")  # SDL drivers that draw nowhere


def open_window(pygame, size: tuple[int, int], headless: bool):
    if headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    # The window shows a small image blitted each frame: a software framebuffer is enough.
    # SDL's accelerated one makes a GL context on the X display, after which MuJoCo's EGL
    # context failed with EGL_BAD_ACCESS under Xvfb (tests/test_play.py).
    os.environ.setdefault("SDL_FRAMEBUFFER_ACCELERATION", "0")
    try:
        pygame.display.init()
        pygame.font.init()
        screen = pygame.display.set_mode(size)
    except pygame.error as e:
        pygame.display.quit()
        raise PlayError(f"no display available ({e}). {NO_DISPLAY_HINT}") from e
    driver = pygame.display.get_driver()
    if not headless and driver in INVISIBLE_DRIVERS:
        pygame.display.quit()
        raise PlayError(
            f"no display available: SDL fell back to its {driver!r} video driver, so a window "
            f"would show nothing (DISPLAY={os.environ.get('DISPLAY')!r}). {NO_DISPLAY_HINT}"
        )
    pygame.display.set_caption("worldsim play")
    return screen


def check_keyboard(pygame, task) -> None:
    """Every key of the task's map is a real key name and none shadows a control."""
    for name in task.keyboard:
        try:
            pygame.key.key_code(name)
        except ValueError as e:
            raise PlayError(f"task {task.name!r}: keyboard key {name!r} is not a key name") from e
        if name in CONTROLS:
            raise PlayError(
                f"task {task.name!r}: keyboard key {name!r} is taken by the control "
                f"'{CONTROLS[name]}'"
            )


class ScriptedKeys:
    """A key script (`KEY[+KEY] FRAMES` lines) posted as key events, frame by frame;
    each event carries `sent`, the time it was posted, for the latency figures."""

    def __init__(self, pygame, path: str) -> None:
        script = parse_script(Path(path).read_text())
        self.frames = [keys for keys, count in script for _ in range(count)]
        self.pg, self.held = pygame, frozenset()
        for keys in set(self.frames):
            for k in keys:
                try:
                    pygame.key.key_code(k)
                except ValueError as e:
                    raise PlayError(f"key script {path}: {k!r} is not a key name") from e

    def __len__(self) -> int:
        return len(self.frames)

    def post(self, frame: int) -> None:
        want = self.frames[frame] if frame < len(self.frames) else frozenset()
        pg, now = self.pg, time.perf_counter()
        for kind, keys in ((pg.KEYUP, self.held - want), (pg.KEYDOWN, want - self.held)):
            for k in sorted(keys):
                pg.event.post(pg.event.Event(kind, key=pg.key.key_code(k), sent=now))
        self.held = want


class Recorder:
    """The window as a video; each start writes a new file, each stop commits it atomically."""

    def __init__(self, path: str | None, fps: float) -> None:
        self.path, self.fps, self.writer, self.tmp, self.done = path, fps, None, None, []

    def out_path(self) -> Path:
        p = Path(self.path or "play.mp4")
        return p if not self.done else p.with_name(f"{p.stem}-{len(self.done) + 1}{p.suffix}")

    def toggle(self) -> None:
        self.stop() if self.writer else self.start()

    def start(self) -> None:
        out = self.out_path()
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
        self.writer = imageio.get_writer(self.tmp, fps=self.fps, macro_block_size=1)
        self.target = out

    def add(self, image: np.ndarray) -> None:
        self.writer.append_data(image)

    def stop(self) -> None:
        if self.writer:
            self.writer.close()
            self.tmp.replace(self.target)
            self.done.append(str(self.target))
            self.writer = None


class Session:
    """One world: the dream (and its MuJoCo twin), reset, stepped and re-grounded."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        folder = checkpoint_dir(cfg.task.name, cfg.checkpoint)
        tok, dyn = load_world_model(cfg.task, folder, cfg.device)
        self.sim = MujocoSim(cfg.task)
        self.low, self.high = self.sim.action_space.low, self.sim.action_space.high
        self.text = TaskText.from_task(cfg.task)
        self.policy = None
        if cfg.policy in ("random", "expert"):
            if cfg.policy == "expert" and not cfg.twin:
                raise ValueError("policy=expert reads MuJoCo's state: it needs twin=true")
            self.policy = make_driver(cfg, self.sim)
        elif cfg.policy:
            self.policy = PolicyDriver(self, cfg.policy)
        apply_threads(cfg.engine.threads)
        self.engine = FrameEngine(
            tok, dyn, 1, EngineConfig(**cfg.engine), cfg.device, self.low, self.high
        )
        self.engine.seed(int(cfg.engine.seed))
        self.resets = 0
        self.starts = 0  # dream starts (resets and re-groundings) so far
        self.frames_since_start = 0
        self.last_action: np.ndarray | None = None  # the action that led to this frame

    def reset(self) -> None:
        """A new MuJoCo start (seed + resets); its first `context` frames start the dream."""
        obs = self.sim.reset(seed=int(self.cfg.seed) + self.resets)
        self.resets += 1
        zero = np.zeros_like(self.low, dtype=np.float32)
        frames, states, actions = [obs.frame], [obs.state], []
        for _ in range(self.cfg.context - 1):
            actions.append(zero)
            obs = self.sim.step(zero)[0]
            frames.append(obs.frame)
            states.append(obs.state)
        self.real = deque(frames, self.cfg.context)
        self.real_states = deque(states, self.cfg.context)
        self.real_actions = deque(actions, self.cfg.context - 1)
        self.reground()
        self.twin_frame = frames[-1]

    def reground(self) -> None:
        """Restart the dream from the twin's last real frames."""
        acts = np.asarray(self.real_actions, np.float32).reshape(1, -1, self.low.shape[0])
        states = np.stack([self.engine.layout.values(s) for s in self.real_states])[None]
        out = self.engine.reset(
            np.stack(self.real)[None], acts if acts.size else None, decode=True, states=states
        )
        self.frame, self.latents, self.reward = out.frames[0].numpy(), out.latents, 0.0
        self.state = out.state[0].numpy()
        self.starts, self.frames_since_start, self.last_action = self.starts + 1, 0, None

    def step(self, action: np.ndarray) -> None:
        out = self.engine.step(action[None])
        self.frame, self.latents, self.state = (
            out.frames[0].numpy(),
            out.latents,
            out.state[0].numpy(),
        )
        self.reward = float(out.reward[0])
        self.frames_since_start += 1
        self.last_action = np.asarray(action, np.float32)
        if self.cfg.twin:
            obs = self.sim.step(action)[0]
            self.twin_frame = obs.frame
            self.real.append(obs.frame)
            self.real_states.append(obs.state)
            self.real_actions.append(action)

    def read_state(self) -> np.ndarray:
        """The world model's own scene state of the current frame (dim,)."""
        return self.state

    def read_scene(self) -> tuple[np.ndarray, str]:
        """The state and its caption, worded by the task's templates from it (the reasoner's
        language model takes ~140 ms a sentence here)."""
        return self.state, self.text.describe(self.state)

    def close(self) -> None:
        self.engine.close()
        self.sim.close()


class PolicyDriver:
    """A policy file (or expert@NOISE) driving the dream from what the dream shows: the
    decoded frame, or the world model's own state in the task's observation layout (as
    the envs give it), or both (pixels+proprio)."""

    def __init__(self, session: Session, spec: str) -> None:
        from gymnasium import spaces

        from worldsim.policies.zoo import make_policy

        self.session = session
        self.task = session.cfg.task
        self.policy, self.obs = make_policy(spec, self.task, device=session.cfg.device)
        size = int(self.task.image_size)
        frame = np.zeros((size, size, 3), np.uint8)
        zero = self._observe(frame, np.zeros(session.text.layout.dim, np.float32))
        parts = {
            k: spaces.Box(0, 255, (size, size, 3), np.uint8)
            if k == "pixels"
            else spaces.Box(-np.inf, np.inf, v.shape, np.float32)
            for k, v in zero.items()
        }
        space = parts[self.obs] if self.obs in parts else spaces.Dict(parts)
        self.policy.check(space, session.sim.action_space)
        self.policy.reset(1, int(session.cfg.seed))

    def _observe(self, frame: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
        """The observation's parts (one, or those of a '+'-joined mode) from a frame and
        the world model's scene state, as the envs build them."""
        layout = self.session.text.layout
        return {
            m: frame if m == "pixels" else task_observation(self.task, m, layout, state[None])[0]
            for m in self.obs.split("+")
        }

    def act(self) -> np.ndarray:
        from worldsim.policies.zoo import batch_of_one

        s = self.session
        parts = self._observe(s.frame, s.read_state())
        obs = parts[self.obs] if self.obs in parts else parts
        return self.policy.act(batch_of_one(obs))[0]


@dataclass
class Controls:
    """What the control keys have set; `press` applies one and returns the HUD note."""

    session: Session
    recorder: Recorder
    paused: bool = False
    help_on: bool = False
    use_policy: bool = False
    step_once: bool = False
    running: bool = True

    def press(self, name: str) -> str | None:
        s, twin = self.session, self.session.cfg.twin
        if name in ("escape", "q"):
            self.running = False
        elif name == "h":
            self.help_on = not self.help_on
        elif name == "space":
            self.paused = not self.paused
        elif name == ".":
            self.step_once = True
        elif name == "r":
            s.reset()
            return f"reset (MuJoCo seed {int(s.cfg.seed) + s.resets - 1})"
        elif name == "m":
            if s.policy is None:
                return "no policy: start with policy=random|expert|PATH"
            self.use_policy = not self.use_policy
            return "policy drives" if self.use_policy else "human drives"
        elif name == "g":
            if not twin:
                return "no twin to re-ground from: start with twin=true"
            s.reground()
            return "re-grounded from the twin"
        elif name == "f5":
            self.recorder.toggle()
            return "recording" if self.recorder.writer else f"saved {self.recorder.done[-1]}"
        return None


def state_line(text, state: np.ndarray) -> str:
    first, vals = next(iter(text.layout.named(state).items()))
    line = f"{first} " + ", ".join(f"{v:+.2f}" for v in vals)
    if text.pair is not None:
        line += f"  goal {text.distance_cm(state):.1f} cm, success {text.success(state)}"
    return line


def draw(pygame, screen, font, session: Session, scale: int, hud: list[str], help_on: bool):
    tiles = [session.twin_frame, session.frame] if session.cfg.twin else [session.frame]
    small = pygame.surfarray.make_surface(np.concatenate(tiles, 1).transpose(1, 0, 2))
    screen.fill((20, 20, 20))
    screen.blit(pygame.transform.scale(small, (small.get_width() * scale, 64 * scale)), (0, 0))
    labels = ["MuJoCo", "dream"] if session.cfg.twin else ["dream"]
    for i, label in enumerate(labels):
        screen.blit(font.render(label, True, (0, 0, 0)), (4 + i * 64 * scale, 2))
    y = 64 * scale + 2
    for i, line in enumerate(hud):
        color = (255, 110, 90) if i == 0 and "SLOW" in line else (230, 230, 230)
        screen.blit(font.render(line, True, color), (4, y + i * LINE_PX))
    if help_on:
        keymap = {
            k: f"action {v.index} = {v.value:+g}" for k, v in session.cfg.task.keyboard.items()
        }
        rows = [f"{k:>7}  {v}" for k, v in {**CONTROLS, **keymap}.items()]
        box = pygame.Surface((screen.get_width() - 16, LINE_PX * len(rows) + 8), pygame.SRCALPHA)
        box.fill((0, 0, 0, 200))
        for i, row in enumerate(rows):
            box.blit(font.render(row, True, (255, 255, 255)), (6, 4 + i * LINE_PX))
        screen.blit(box, (8, 8))
    pygame.display.flip()


@torch.no_grad()
def play(cfg: DictConfig) -> dict:
    """Run a session until quit, the end of the key script or `frames`; returns its figures."""
    if cfg.fps <= 0 or cfg.scale < 1 or cfg.context < 1:
        raise ValueError(
            f"need fps > 0, scale >= 1, context >= 1; got {cfg.fps}, {cfg.scale}, {cfg.context}"
        )
    if cfg.headless and not (cfg.script or cfg.frames):
        raise ValueError("headless=true needs script=FILE or frames=N, else it never ends")
    pygame = import_pygame()
    session = Session(cfg)
    scale = int(cfg.scale)
    size = (64 * scale * (2 if cfg.twin else 1), 64 * scale + HUD_LINES * LINE_PX + 4)
    try:
        screen = open_window(pygame, size, bool(cfg.headless))
        check_keyboard(pygame, cfg.task)
        script = ScriptedKeys(pygame, cfg.script) if cfg.script else None
        return _loop(pygame, screen, session, script, cfg)
    finally:
        session.close()
        pygame.display.quit()


def _loop(pygame, screen, session: Session, script: ScriptedKeys | None, cfg) -> dict:
    font = pygame.font.SysFont("monospace", 13)
    period = 1.0 / float(cfg.fps)
    ticks = len(script) if script else 0  # a key script counts loop ticks, paused ones too
    recorder = Recorder(cfg.record, cfg.fps)
    if cfg.record:
        recorder.start()
    held: set[str] = set()
    ctl = Controls(session, recorder)
    note = "H: help"
    latencies, frame_ms, slow = [], [], 0
    session.reset()
    state = state_start = session.read_state()
    frame, tick, due, shown_fps, last_shown = 0, 0, time.perf_counter(), float(cfg.fps), None
    while (
        ctl.running and not (cfg.frames and frame >= cfg.frames) and not (ticks and tick >= ticks)
    ):
        if script is not None:
            script.post(tick)
        tick += 1
        ctl.step_once, pending = False, []
        for ev in _wait(pygame, due):
            if ev.type == pygame.QUIT:
                ctl.running = False
            elif ev.type == pygame.KEYUP:
                held.discard(pygame.key.name(ev.key))
            elif ev.type == pygame.KEYDOWN:
                name = pygame.key.name(ev.key)
                if hasattr(ev, "sent"):
                    pending.append(ev.sent)
                if name in cfg.task.keyboard:
                    held.add(name)
                else:
                    note = ctl.press(name) or note
        if not ctl.running:
            break
        t0 = time.perf_counter()
        paused = ctl.paused
        if not paused or ctl.step_once:
            dim = session.low.shape[0]
            action = key_action(cfg.task, held, dim, session.low, session.high)
            if ctl.use_policy and not held:
                action = session.policy.act()
            session.step(action)
            frame += 1
        state, caption = session.read_scene()
        ms = (time.perf_counter() - t0) * 1000
        over = ms > period * 1000
        slow += over and not paused
        mode = "policy" if ctl.use_policy else "human"
        flags = " PAUSED" if paused else ""
        flags += " REC" if recorder.writer else ""
        flags += f"  SLOW: {ms:.0f} ms > {period * 1000:.0f} ms budget" if over else ""
        keys = "+".join(sorted(held)) or "-"
        hud = [
            f"{mode}  step {frame}  {shown_fps:4.1f} fps  frame {ms:5.1f} ms{flags}",
            f"keys {keys}  reward {session.reward:+.3f}",
            caption if cfg.caption else "",
            state_line(session.text, state) if cfg.caption else "",
            note,
        ]
        draw(pygame, screen, font, session, int(cfg.scale), hud, ctl.help_on)
        shown = time.perf_counter()
        latencies += [(shown - s) * 1000 for s in pending]
        if not paused:
            frame_ms.append((shown - t0) * 1000)
        if recorder.writer:
            recorder.add(pygame.surfarray.array3d(screen).transpose(1, 0, 2))
        if last_shown is not None and not paused:
            shown_fps = 0.9 * shown_fps + 0.1 / max(shown - last_shown, 1e-6)
        last_shown = shown
        due = max(t0 + period, shown)
    recorder.stop()
    state = session.read_state()
    if cfg.screenshot:
        Path(cfg.screenshot).parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(screen, str(cfg.screenshot))
    lat = np.asarray(latencies) if latencies else np.full(1, np.nan)
    return {
        "frames": frame,
        "frame_ms_p50": float(np.median(frame_ms)) if frame_ms else float("nan"),
        "frames_over_budget": int(slow),
        "key_latency_ms_p50": float(np.percentile(lat, 50)),
        "key_latency_ms_p99": float(np.percentile(lat, 99)),
        "key_events": len(latencies),
        "recordings": recorder.done,
        "state_start": session.text.layout.named(state_start),
        "state_end": session.text.layout.named(state),
    }


def _wait(pygame, due: float) -> list:
    """Events until the frame is due; a key change ends the wait early (shown at once)."""
    events = pygame.event.get()
    while not any(e.type in (pygame.KEYDOWN, pygame.KEYUP, pygame.QUIT) for e in events):
        left = due - time.perf_counter()
        if left <= 0:
            break
        ev = pygame.event.wait(max(1, int(left * 1000)))
        if ev.type != pygame.NOEVENT:
            events += [ev, *pygame.event.get()]
    return events
