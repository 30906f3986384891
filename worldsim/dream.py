"""`worldsim dream`: drive the world model and its MuJoCo twin with the same actions.

Both start from the same live MuJoCo reset: the first `context` real frames seed
the dream, then every action goes to both. The video shows MuJoCo | dream |
absolute difference; per-step PSNR (whole frame and foreground) is printed.
With reground=true the reasoner reads every dreamed frame; when its estimate is
physically impossible (worldsim.drift) the dream restarts from the twin's last
real frames, and the number of restarts is reported.
"""

from __future__ import annotations

from collections import deque
from importlib import resources
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from worldsim.checkpoint import CheckpointError, load_model
from worldsim.datasets.policies import make_policy
from worldsim.drift import DriftGuard, DriftLimits, roundtrip_error
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.metrics import psnr, side_by_side
from worldsim.keyboard import KeyScriptPolicy, default_script, parse_script
from worldsim.model.dynamics import build_dynamics
from worldsim.model.tokenizer import build_tokenizer
from worldsim.mujoco_sim import MujocoSim
from worldsim.threads import apply as apply_threads

DRIVERS = ("random", "expert", "keyboard-script")


def checkpoint_dir(task: str, override: str | None) -> Path:
    if override:
        return Path(override)
    return Path(str(resources.files("worldsim") / "checkpoints" / task))


def load_world_model(task, folder: Path, device: str = "cpu"):
    """(tokenizer, dynamics) for a task; errors say how to train what is missing."""
    found = {}
    for kind, build in (("tokenizer", build_tokenizer), ("dynamics", build_dynamics)):
        path = folder / f"{kind}.safetensors"
        if not path.exists():
            raise CheckpointError(
                f"no {kind} checkpoint at {path}. Train one with: worldsim train {kind} "
                f"task={task.name} (then pass checkpoint=<run folder>), see README"
            )
        found[kind], _ = load_model(path, kind, build, expect={"task": task.name})
    tok, dyn = found["tokenizer"], found["dynamics"]
    if dyn.cfg.latent_dim != tok.cfg.latent_dim or dyn.cfg.grid != tok.cfg.grid:
        raise CheckpointError(
            f"{folder}: dynamics expects {dyn.cfg.grid}^2 x {dyn.cfg.latent_dim}"
            f" latents, tokenizer gives {tok.cfg.grid}^2 x {tok.cfg.latent_dim}"
        )
    from worldsim.neuron import torch_device

    device = torch_device(device)  # "neuron" -> torch-neuronx's XLA device
    return tok.to(device), dyn.to(device)


def make_driver(cfg: DictConfig, sim: MujocoSim):
    low, high = sim.action_space.low, sim.action_space.high
    if cfg.policy == "keyboard-script":
        script = (
            parse_script(Path(cfg.script).read_text()) if cfg.script else default_script(cfg.task)
        )
        return KeyScriptPolicy(cfg.task, script, low.shape[0], low, high)
    if cfg.policy in ("random", "expert"):
        data = DictConfig({"noise_theta": 0.15, "noise_sigma": 0.3})
        return make_policy(cfg.policy, sim, data, np.random.default_rng(cfg.seed))
    raise ValueError(f"unknown policy {cfg.policy!r}; choose one of {list(DRIVERS)}")


@torch.no_grad()
def dream(cfg: DictConfig, progress: bool = True) -> dict:
    if cfg.context < 1 or cfg.steps < 1:
        raise ValueError(f"context and steps must be >= 1, got {cfg.context}, {cfg.steps}")
    folder = checkpoint_dir(cfg.task.name, cfg.checkpoint)
    tok, dyn = load_world_model(cfg.task, folder, cfg.device)
    sim = MujocoSim(cfg.task)
    obs = sim.reset(seed=int(cfg.seed))
    driver = make_driver(cfg, sim)
    frames, segs, states, actions = [obs.frame], [obs.seg], [obs.state], []
    for _ in range(cfg.context - 1):  # real context: MuJoCo steps under the same driver
        actions.append(driver.act())
        obs = sim.step(actions[-1])[0]
        frames.append(obs.frame)
        segs.append(obs.seg)
        states.append(obs.state)
    guard, reasoner = None, None
    if cfg.reground:
        if not cfg.twin:
            raise ValueError("reground=true needs twin=true: the twin's frames re-ground the dream")
        reasoner, guard = load_drift_guard(cfg.task, folder)
    apply_threads(cfg.engine.threads)
    engine = FrameEngine(
        tok,
        dyn,
        1,
        EngineConfig(**cfg.engine),
        cfg.device,
        sim.action_space.low,
        sim.action_space.high,
        reasoner=reasoner,
    )
    engine.seed(int(cfg.engine.seed))
    acts = np.asarray(actions, np.float32).reshape(1, -1, sim.action_space.shape[0])

    def context_states(found) -> np.ndarray:  # (1, K, dim): what the engine starts from
        return np.stack([engine.layout.values(s) for s in found])[None]

    engine.reset(np.stack(frames)[None], acts, states=context_states(states))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    scores = {"psnr": [], "psnr_fg": [], "copy_psnr_fg": []}
    last_real = frames[-1]
    real_frames, real_actions = deque(frames, cfg.context), deque(actions, cfg.context - 1)
    real_states = deque(states, cfg.context)
    reasons: list[str] = []
    with imageio.get_writer(
        tmp, fps=sim.unwrapped.metadata.get("render_fps", 25), macro_block_size=1
    ) as video:
        for _ in tqdm(range(cfg.steps), disable=not progress, desc="dream", unit="frame"):
            a = driver.act()
            step = engine.step(a[None])
            d = step.frames[0].cpu().numpy()
            real = None
            if cfg.twin:
                obs = sim.step(a)[0]
                real = obs.frame
                real_frames.append(real)
                real_states.append(obs.state)
                real_actions.append(a)
                t, fg = torch.from_numpy(real)[None], torch.from_numpy(obs.seg > 0)[None]
                scores["psnr"].append(psnr(torch.from_numpy(d)[None], t))
                scores["psnr_fg"].append(psnr(torch.from_numpy(d)[None], t, fg))
                scores["copy_psnr_fg"].append(psnr(torch.from_numpy(last_real)[None], t, fg))
            video.append_data(side_by_side(real, d, cfg.scale))
            if guard is not None:
                state = guard.layout.from_features(step.scene.result().cpu().numpy())
                flags, why = guard.check(state, roundtrip_error(tok, step.latents))
                if flags[0]:  # restart the dream from the twin's last real frames
                    reasons.append(f"frame {len(scores['psnr'])}: {', '.join(why[0])}")
                    acts = np.asarray(real_actions, np.float32)[None]
                    engine.reset(
                        np.stack(real_frames)[None],
                        acts if acts.size else None,
                        states=context_states(real_states),
                    )
                    guard.reset()
    tmp.replace(out)
    sim.close()
    engine.close()
    summary = {k: float(np.nanmean(v)) for k, v in scores.items() if v}
    if guard is not None:
        summary.update(reground_fires=guard.fired, reground_first=reasons[:5])
    return {"out": str(out), "frames": int(cfg.steps), **summary}


def load_drift_guard(task, folder: Path):
    """(reasoner, DriftGuard) from a checkpoint folder; errors say how to make them."""
    from worldsim.train.reasoner import load_reasoner

    path, limits = folder / "reasoner.safetensors", folder / "drift_limits.json"
    for p in (path, limits):
        if not p.exists():
            raise CheckpointError(
                f"reground=true needs {p}; train one with: worldsim train reasoner "
                f"task={task.name} (it writes both files to its run_dir)"
            )
    reasoner, layout, _ = load_reasoner(path, task)
    return reasoner, DriftGuard(layout, DriftLimits.load(limits))
