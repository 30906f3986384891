"""`worldsim eval fidelity`: how closely the dream follows MuJoCo, per horizon step.

From K real context frames of held-out episodes and the true actions, the model
generates H frames. For each horizon step: PSNR and SSIM on the whole frame and
PSNR on foreground pixels (robot, object or goal in the ground truth or in the
last context frame), next to copy-last-frame and the tokenizer's reconstruction
of the true frame (the ceiling). Whole-frame PSNR alone flatters copy-last: little
of a frame moves. A long rollout checks stability: NaN, pixel statistics against
the dataset's range, time per frame early vs late, and memory.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.metrics import psnr_per_frame, ssim_per_frame
from worldsim.timing import alternating_times, relative_cost

METHODS = ("model", "copy_last", "tokenizer_ceiling")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def held_out_windows(
    store: EpisodeStore, val_every: int | None, length: int, limit: int
) -> list[int]:
    """Start rows of one window per held-out episode (episode start), at most `limit`.

    val_every None: the whole store is held out; N: the training split's held-out part."""
    val = range(store.num_episodes) if val_every is None else store.split(val_every)[1]
    starts = []
    for e in val:
        a, b = store.episode_bounds(e)
        if b - a >= length:
            starts.append(a)
    return starts[:limit]


@torch.no_grad()
def horizon_curves(
    tok,
    dyn,
    store: EpisodeStore,
    starts: list[int],
    context: int,
    horizon: int,
    engine_cfg: EngineConfig,
    batch: int = 16,
    progress: bool = True,
) -> dict[str, dict[str, list[float]]]:
    """Mean over windows of each metric at horizon steps 1..H, per method."""
    sums = {m: {k: np.zeros(horizon) for k in ("psnr", "ssim", "psnr_fg")} for m in METHODS}
    counts = {m: {k: np.zeros(horizon) for k in ("psnr", "ssim", "psnr_fg")} for m in METHODS}
    for i in tqdm(range(0, len(starts), batch), disable=not progress, desc="fidelity"):
        wins = [store.window(s, context, horizon) for s in starts[i : i + batch]]
        frames = torch.from_numpy(np.stack([w["frame"] for w in wins]))
        seg = torch.from_numpy(np.stack([w["seg"] for w in wins]))
        actions = np.stack([w["action"] for w in wins]).astype(np.float32)
        engine = FrameEngine(tok, dyn, len(wins), engine_cfg)
        engine.reset(frames[:, :context], actions[:, : context - 1])
        last = frames[:, context - 1]
        for h in range(horizon):
            t = context + h
            truth = frames[:, t]
            fg = (seg[:, t] > 0) | (seg[:, context - 1] > 0)
            preds = {
                "model": engine.step(actions[:, t - 1]).frames,
                "copy_last": last,
                "tokenizer_ceiling": tok.decode_uint8(tok.encode(truth)),
            }
            for m, p in preds.items():
                for k, v in (
                    ("psnr", psnr_per_frame(p, truth)),
                    ("ssim", ssim_per_frame(p, truth)),
                    ("psnr_fg", psnr_per_frame(p, truth, fg)),
                ):
                    ok = torch.isfinite(v)
                    sums[m][k][h] += float(v[ok].sum())
                    counts[m][k][h] += int(ok.sum())
    return {
        m: {k: (sums[m][k] / np.maximum(counts[m][k], 1)).tolist() for k in sums[m]}
        for m in METHODS
    }


@torch.no_grad()
def long_rollout(
    tok,
    dyn,
    store: EpisodeStore,
    frames: int,
    context: int,
    engine_cfg: EngineConfig,
    progress: bool = True,
) -> dict:
    """One world for `frames` steps under the dataset's own actions (looped)."""
    start = store.episode_bounds(0)[0]
    w = store.window(start, context, 1)
    actions = store.read("action", 0, min(store.num_rows, 20000)).astype(np.float32)
    engine = FrameEngine(tok, dyn, 1, engine_cfg)
    engine.reset(torch.from_numpy(w["frame"][None, :context]), w["action"][None, : context - 1])
    means, stds, times = np.zeros(frames), np.zeros(frames), np.zeros(frames)
    nan = False
    mem = {}
    for t in tqdm(range(frames), disable=not progress, desc="long rollout"):
        t0 = time.perf_counter()
        out = engine.step(actions[t % len(actions)][None])
        times[t] = time.perf_counter() - t0
        f = out.frames.float()
        nan |= not bool(torch.isfinite(out.latents).all())
        means[t], stds[t] = float(f.mean()), float(f.std())
        if t + 1 in (100, frames):
            mem[t + 1] = rss_mib()
    paired = late_vs_early_step_time(engine, tok, dyn, engine_cfg, w, context, actions, frames)
    ref = store.read("frame", 0, min(store.num_rows, 5000)).reshape(-1, 64 * 64 * 3).mean(1)
    lo, hi = float(ref.min()), float(ref.max())

    def ms_around(t: int) -> float:
        a = max(0, t - 50)
        return float(np.median(times[a:t]) * 1000)

    late = frames
    return {
        "frames": frames,
        "nan": nan,
        "pixel_mean_range_dataset": [lo, hi],
        "pixel_mean_range_rollout": [float(means.min()), float(means.max())],
        "pixel_mean_inside_dataset_range": bool(means.min() >= lo - 1 and means.max() <= hi + 1),
        "ms_per_frame_at_100": ms_around(min(100, frames)),
        f"ms_per_frame_at_{late}": ms_around(late),
        "step_time_paired": paired,
        "rss_mib_at_100": mem.get(100, mem.get(frames)),
        f"rss_mib_at_{late}": mem.get(frames),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pixel_mean_every_100": means[::100].tolist(),
        "pixel_std_every_100": stds[::100].tolist(),
    }


def late_vs_early_step_time(
    old: FrameEngine, tok, dyn, engine_cfg, window, context, actions, frames: int
) -> dict:
    """The long rollout's step time against a world 100 frames old, the two alternating in
    blocks of 10 frames (one after the other, this machine's drift swamps a 10% check)."""
    young = FrameEngine(tok, dyn, 1, engine_cfg)
    young.reset(
        torch.from_numpy(window["frame"][None, :context]), window["action"][None, : context - 1]
    )
    for t in range(min(100, frames)):
        young.step(actions[t][None])
    i = itertools.count()
    ta, tb = alternating_times(
        lambda: young.step(actions[next(i) % len(actions)][None]),
        lambda: old.step(actions[next(i) % len(actions)][None]),
    )
    cost = relative_cost(ta, tb)
    return {
        "ms_per_frame_young": cost["ms_p50_a"],
        "ms_per_frame_long": cost["ms_p50_b"],
        "long_over_young": cost["b_over_a"],
        "long_over_young_median_of_blocks": cost["b_over_a_median_of_blocks"],
        "frames_each": cost["calls_each"],
        "within_10_percent": abs(cost["b_over_a"]) <= 0.10,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["horizon"]
    h = np.arange(1, len(curves["model"]["psnr"]) + 1)
    state = result.get("state_error_per_horizon")
    fig, axes = plt.subplots(1, 4 if state else 3, figsize=(20 if state else 15, 4))
    if state:  # positions the reasoner reads off the dreamed frames vs MuJoCo's
        for name, unit in state["units"].items():
            if unit == "m":
                axes[3].plot(h, 100 * np.asarray(state["median"][name]), label=name)
        axes[3].set_title("state error of dreamed frames (cm, median)")
        axes[3].set_xlabel("horizon step")
        axes[3].grid(alpha=0.3)
        axes[3].legend()
    for ax, key, title in zip(
        axes[:3],
        ("psnr_fg", "psnr", "ssim"),
        ("foreground PSNR (dB)", "whole-frame PSNR (dB)", "SSIM"),
        strict=True,
    ):
        for m in METHODS:
            ax.plot(h, curves[m][key], label=m.replace("_", " "))
        ax.set_xlabel("horizon step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"worldsim fidelity: {result['task']} ({result['windows']} held-out windows)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_fidelity(cfg: DictConfig, progress: bool = True) -> dict:
    tok, dyn = load_world_model(cfg.task, checkpoint_dir(cfg.task.name, cfg.checkpoint), cfg.device)
    if not Path(cfg.data_path).exists():
        raise FileNotFoundError(
            f"no held-out store at {cfg.data_path}; make one with episodes from other seeds "
            f"than the training data, e.g.: worldsim data generate task={cfg.task.name} "
            f"task.max_episode_steps=100 episodes=64 seed=1000000 data.keys_fraction=0 "
            f"out={cfg.data_path}"
        )
    store = EpisodeStore.open_for_task(cfg.data_path, cfg.task.name)
    engine_cfg = EngineConfig(**OmegaConf.to_container(cfg.engine, resolve=True))
    starts = held_out_windows(store, cfg.val_every, cfg.context + cfg.horizon, cfg.episodes)
    if not starts:
        raise ValueError(
            f"{cfg.data_path}: no held-out episode has {cfg.context + cfg.horizon} "
            "frames; lower horizon= or context="
        )
    result = {
        "task": cfg.task.name,
        "windows": len(starts),
        "context": cfg.context,
        "engine": OmegaConf.to_container(cfg.engine, resolve=True),
        "foreground": "robot/object/goal pixels in the true frame or the last context frame",
        "horizon": horizon_curves(
            tok, dyn, store, starts, cfg.context, cfg.horizon, engine_cfg, progress=progress
        ),
    }
    folder = checkpoint_dir(cfg.task.name, cfg.checkpoint)
    if (folder / "reasoner.safetensors").exists():  # state-grounded error per horizon
        from worldsim.eval.reasoner import dream_state_errors
        from worldsim.train.reasoner import load_reasoner

        reasoner, layout, _ = load_reasoner(folder / "reasoner.safetensors", cfg.task)
        result["state_error_per_horizon"] = {
            "units": {q.name: q.unit for q in layout.quantities},
            "median": dream_state_errors(
                tok,
                dyn,
                reasoner,
                layout,
                store,
                starts,
                cfg.context,
                cfg.horizon,
                engine_cfg,
                progress=progress,
            ),
        }
    if cfg.long_frames > 0:
        result["long_rollout"] = long_rollout(
            tok, dyn, store, cfg.long_frames, cfg.context, engine_cfg, progress
        )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "fidelity.png")
    return result


def summary(result: dict, steps=(1, 4, 16, 64)) -> str:
    c = result["horizon"]
    lines = ["horizon  fgPSNR model / copy-last / ceiling   PSNR model / copy-last   SSIM model"]
    for h in steps:
        if h <= len(c["model"]["psnr"]):
            i = h - 1
            lines.append(
                f"{h:>7}  {c['model']['psnr_fg'][i]:6.2f} / {c['copy_last']['psnr_fg'][i]:6.2f} / "
                f"{c['tokenizer_ceiling']['psnr_fg'][i]:6.2f}        "
                f"{c['model']['psnr'][i]:6.2f} / {c['copy_last']['psnr'][i]:6.2f}"
                f"        {c['model']['ssim'][i]:.3f}"
            )
    return "\n".join(lines)
