"""`worldsim train state_filter`: fit the joint state filter of a checkpoint's reasoner.

Seconds of work: a least-squares motion model on the training store's states and
actions, and the reasoner's reading noise on half of the held-out episodes; the
other half measures what the filter buys (errors of the joints and the static
quantities, raw reading vs tracked). A checkpoint without a reasoner gets the motion
model alone: the linear baseline simulator's, nothing to track with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.scene import SceneLayout
from worldsim.state_filter import StateFilter, filter_episodes
from worldsim.train.latent_set import encode_frames
from worldsim.train.reasoner import load_reasoner, read_episodes


def tracked_errors(
    filt: StateFilter, layout: SceneLayout, pred: np.ndarray, true: np.ndarray
) -> dict[str, float]:
    """Median absolute error of the quantities the filter tracks (joints, static ones)."""
    errs = layout.abs_error(pred, true)
    cols = set(filt.positions + filt.velocities + filt.static)
    tracked = {n for n, s in layout.slices.items() if cols & set(range(s.start, s.stop))}
    return {k: float(np.median(v)) for k, v in errs.items() if k in tracked}


def train_state_filter(cfg: DictConfig, progress: bool = True) -> dict:
    folder = checkpoint_dir(cfg.task.name, cfg.checkpoint)
    store = EpisodeStore.open_for_task(cfg.data_path, cfg.task.name)
    actions = store.read("action", 0, store.num_rows)
    space = store.attrs["action_space"]
    held = readings = truth = bounds = fit_readings = fit_truth = None
    layout = SceneLayout.from_task(cfg.task)
    if (folder / "reasoner.safetensors").exists():
        tok, _ = load_world_model(cfg.task, folder, "cpu")
        reasoner, layout, _ = load_reasoner(folder / "reasoner.safetensors", cfg.task)
        held = EpisodeStore.open_for_task(cfg.heldout_path, cfg.task.name)
        n = min(int(cfg.episodes), held.num_episodes)
        if n < 2:
            raise ValueError(f"{cfg.heldout_path}: {held.num_episodes} episodes, need at least 2")
        bounds = [held.episode_bounds(e) for e in range(n)]
        latents = encode_frames(tok, held, progress=progress)
        readings = layout.from_features(read_episodes(reasoner, latents, bounds))
        truth = layout.read(held, 0, held.num_rows)
        fit_rows = np.concatenate([np.arange(a, b) for a, b in bounds[0::2]])
        fit_readings, fit_truth = readings[fit_rows], truth[fit_rows]
    values = layout.read(store, 0, store.num_rows)
    filt = StateFilter.fit(
        layout,
        values,
        actions,
        store.episode_ends,
        fit_readings,
        fit_truth,
        np.asarray(space["low"]),
        np.asarray(space["high"]),
        float(cfg.process_scale),
    )
    out = Path(cfg.out)
    filt.save(out)
    report = {
        "filter": str(out),
        "fitted_on": {
            "store": str(cfg.data_path),
            "transitions": len(values) - len(store.episode_ends),
        },
    }
    if held is None:
        report["reading_noise"] = (
            f"none: {folder} has no reasoner (a motion model only, for the linear baseline)"
        )
    else:
        check = bounds[1::2]
        rows = np.concatenate([np.arange(a, b) for a, b in check])
        held_actions = held.read("action", 0, held.num_rows)
        filtered = filter_episodes(filt, readings, held_actions, check)
        report |= {
            "measured_on": {
                "store": str(cfg.heldout_path),
                "episodes": len(check),
                "rows": len(rows),
            },
            "median_error_reading": tracked_errors(filt, layout, readings[rows], truth[rows]),
            "median_error_filtered": tracked_errors(filt, layout, filtered[rows], truth[rows]),
        }
    out.with_name(out.stem + "_report.json").write_text(json.dumps(report, indent=2))
    return report
