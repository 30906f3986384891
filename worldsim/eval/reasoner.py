"""`worldsim eval reasoner`: what the reasoner reads off real and dreamed frames vs MuJoCo.

Real frames: each held-out episode is read recurrently from its start; state
error per quantity in physical units, question-answering exact match per
question form, and precision/recall of the success judgment. Where the
checkpoint ships a state filter, also the errors of the tracked state (joints
filtered, static quantities averaged; positions read by the folder's position reader
off the decoded frame where it has one), the language model's answers reading it,
and the answers the task computes from it; and the language model's answers
reading MuJoCo's true state (what it would say given a perfect reader). Dreamed
frames: from K real frames and the true actions the world model generates H frames, the
reasoner reads the generated latents, and its estimate is compared with MuJoCo's
state under the same actions, per horizon step; questions about them are answered
reading that running estimate (its positions, too, from the position reader).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.model.reasoner import Reasoner
from worldsim.reasoner_text import TaskText, encode
from worldsim.scene import SceneLayout
from worldsim.state_filter import StateFilter
from worldsim.train.latent_set import encode_frames
from worldsim.train.position_reader import load_position_reader
from worldsim.train.reasoner import load_reasoner, read_episodes, tracked_state

QA_HORIZONS = (1, 4, 16, 64)
"""Horizon steps at which questions are asked about dreamed frames."""


def qa_from_state(text: TaskText, est: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Exact-match rate of every question form answered by the task's own answer function
    from state estimates est (n, dim) against true states (n, dim): what a state estimate
    supports with no language model in between."""
    pairs = list(zip(est, truth, strict=True))
    return {
        q: float(np.mean([text.answer(q, e) == text.answer(q, t) for e, t in pairs]))
        for q in text.questions()
    }


@torch.no_grad()
def qa_by_form(
    reasoner: Reasoner,
    text: TaskText,
    latents: np.ndarray,
    states: np.ndarray,
    rows,
    estimate: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Exact-match rate of every question form over the given rows (no previous estimate):
    the language model's answers (reading `estimate` (rows, F features) where given), and
    the answers from the reader's own state estimate."""
    lm_est = None if estimate is None else torch.from_numpy(estimate)
    h, est = reasoner.encode(torch.from_numpy(latents[rows]), None, lm_est)
    lm = {}
    for q in text.questions():
        answers = reasoner.generate(h, [encode(q + " ")] * len(rows))
        truth = [text.answer(q, states[r]) for r in rows]
        lm[q] = float(np.mean([a == t for a, t in zip(answers, truth, strict=True)]))
    return lm, qa_from_state(text, text.layout.from_features(est.float().numpy()), states[rows])


def success_precision_recall(text: TaskText, pred: np.ndarray, true: np.ndarray) -> dict:
    p = np.array([text.success(s) for s in pred])
    t = np.array([text.success(s) for s in true])
    tp = int((p & t).sum())
    return {
        "precision": tp / max(int(p.sum()), 1),
        "recall": tp / max(int(t.sum()), 1),
        "true_successes": int(t.sum()),
        "judged_successes": int(p.sum()),
    }


@torch.no_grad()
def dream_state_errors(
    tok,
    dyn,
    reasoner: Reasoner,
    layout: SceneLayout,
    store: EpisodeStore,
    starts: list[int],
    context: int,
    horizon: int,
    engine_cfg: EngineConfig,
    batch: int = 16,
    progress: bool = True,
    kept: dict[int, list] | None = None,
) -> dict[str, list[float]]:
    """Median state error per quantity at horizon steps 1..H of dreams under true actions.

    kept, when given, maps horizon steps to lists that receive (dreamed latents, the
    reasoner's running estimate in features, true state values) of every window at
    that step."""
    errs: dict[str, list[list[np.ndarray]]] = {q.name: [[] for _ in range(horizon)] for q in
                                               layout.quantities}  # fmt: skip
    for i in tqdm(range(0, len(starts), batch), disable=not progress, desc="dreamed state"):
        chunk = starts[i : i + batch]
        wins = [store.window(s, context, horizon) for s in chunk]
        frames = np.stack([w["frame"] for w in wins])
        actions = np.stack([w["action"] for w in wins]).astype(np.float32)
        true = np.stack([layout.read(store, s, s + context + horizon) for s in chunk])
        engine = FrameEngine(tok, dyn, len(wins), engine_cfg)
        states = np.stack([engine.layout.values(w) for w in wins])
        engine.reset(frames[:, :context], actions[:, : context - 1], states=states[:, :context])
        prev = None
        for t in range(context):  # the reasoner reads the real context first
            prev = reasoner.read(tok.encode(torch.from_numpy(frames[:, t])), prev)
        for h in range(horizon):
            z = engine.step(actions[:, context + h - 1], decode=False).latents
            prev = reasoner.read(z, prev)
            if kept is not None and h + 1 in kept:
                kept[h + 1].append((z.cpu().numpy(), prev.cpu().numpy(), true[:, context + h]))
            pred = layout.from_features(prev.numpy())
            for name, e in layout.abs_error(pred, true[:, context + h]).items():
                errs[name][h].append(e)
    return {
        name: [float(np.median(np.concatenate(per_h))) for per_h in curves]
        for name, curves in errs.items()
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["dreamed"]["median_error_per_horizon"]
    units = {q["name"]: q["unit"] for q in result["scene"]}
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.5))
    for ax, (name, c) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        ax.plot(np.arange(1, len(c) + 1), c, label="dreamed")
        ax.axhline(result["real"]["median_error"][name], color="k", ls="--", label="real frames")
        ax.set_title(f"{name} ({units[name]})")
        ax.set_xlabel("horizon step")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend()
    fig.suptitle(f"reasoner state error: {result['task']} (median)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_eval_reasoner(cfg: DictConfig, progress: bool = True) -> dict:
    folder = checkpoint_dir(cfg.task.name, cfg.checkpoint)
    tok, dyn = load_world_model(cfg.task, folder, cfg.device)
    reasoner, layout, text = load_reasoner(folder / "reasoner.safetensors", cfg.task)
    store = EpisodeStore.open_for_task(cfg.data_path, cfg.task.name)
    episodes = list(range(min(cfg.episodes, store.num_episodes)))
    bounds = [store.episode_bounds(e) for e in episodes]
    latents = encode_frames(tok, store, progress=progress)
    values = layout.read(store, 0, store.num_rows)
    rows = np.concatenate([np.arange(a, b) for a, b in bounds])
    readings = layout.from_features(read_episodes(reasoner, latents, bounds))
    pred = readings[rows]
    errors = layout.abs_error(pred, values[rows])
    qa_rows = rows[:: max(1, len(rows) // cfg.qa_frames)]
    qa, qa_state = qa_by_form(reasoner, text, latents, values, qa_rows)
    given = {}  # the language model reading a state it is given
    positions = None  # where the folder has one, a position reader's reading of them
    if (path := folder / "position_reader.safetensors").exists():
        positions = (load_position_reader(path, cfg.task), tok)
    path = folder / "state_filter.json"
    filt = StateFilter.load(path) if path.exists() else None
    if filt is not None and filt.reading_std:  # a motion model alone tracks nothing
        est = tracked_state(filt, layout, readings, latents, store, bounds, positions)
        feats = layout.to_features(est[qa_rows]).astype(np.float32)
        lm, _ = qa_by_form(reasoner, text, latents, values, qa_rows, feats)
        by_form = qa_from_state(text, est[qa_rows], values[qa_rows])
        given = {
            "tracked_positions_from": "reasoner" if positions is None else "position_reader",
            "median_error_tracked": {
                k: float(np.median(v)) for k, v in layout.abs_error(est[rows], values[rows]).items()
            },
            "qa_exact_match_tracked": float(np.mean(list(lm.values()))),
            "qa_exact_match_tracked_by_form": lm,
            "qa_exact_match_from_tracked_state": float(np.mean(list(by_form.values()))),
            "qa_exact_match_from_tracked_state_by_form": by_form,
        }
    if reasoner.cfg.state_reader == "mlp":  # the language model alone: reading MuJoCo's state
        truth = layout.to_features(values[qa_rows]).astype(np.float32)
        lm, _ = qa_by_form(reasoner, text, latents, values, qa_rows, truth)
        given |= {
            "qa_exact_match_reading_true_state": float(np.mean(list(lm.values()))),
            "qa_exact_match_reading_true_state_by_form": lm,
        }
    starts = [a for a, b in bounds if b - a >= cfg.context + cfg.horizon]
    engine_cfg = EngineConfig(**OmegaConf.to_container(cfg.engine, resolve=True))
    kept = {h: [] for h in QA_HORIZONS if h <= cfg.horizon}
    dreamed_errors = dream_state_errors(
        tok, dyn, reasoner, layout, store, starts, cfg.context, cfg.horizon, engine_cfg,
        progress=progress, kept=kept,
    )  # fmt: skip
    dreamed_qa = {}
    for h, parts in kept.items():  # questions about dreamed frames, answered against MuJoCo
        z, est, true = (np.concatenate(x) for x in zip(*parts, strict=True))
        if positions is not None:  # the running estimate, its positions off the decoding
            reader, _ = positions
            state = reader.put(layout, layout.from_features(est), reader.read_latents(tok, z))
            est = layout.to_features(state).astype(np.float32)
        if reasoner.cfg.state_reader != "mlp":  # an encoder reader reads only its own
            est = None
        dreamed_qa[h] = qa_by_form(reasoner, text, z, true, np.arange(len(z)), est)[0]
    result = {
        "task": cfg.task.name,
        "scene": layout.to_dict(),
        "real": {
            "frames": len(rows),
            "median_error": {k: float(np.median(v)) for k, v in errors.items()},
            "p90_error": {k: float(np.percentile(v, 90)) for k, v in errors.items()},
            "qa_exact_match": float(np.mean(list(qa.values()))),
            "qa_exact_match_by_form": qa,
            "qa_exact_match_from_state": float(np.mean(list(qa_state.values()))),
            "qa_exact_match_from_state_by_form": qa_state,
            **given,
            "qa_frames": len(qa_rows),
            "success": success_precision_recall(text, pred, values[rows]),
        },
        "dreamed": {
            "windows": len(starts),
            "context": cfg.context,
            "median_error_per_horizon": dreamed_errors,
            "qa_exact_match_per_horizon": {
                h: float(np.mean(list(qa.values()))) for h, qa in dreamed_qa.items()
            },
            "qa_exact_match_by_form_per_horizon": dreamed_qa,
        },
    }
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reasoner.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "reasoner.png")
    return result
