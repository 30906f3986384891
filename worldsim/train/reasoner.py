"""`worldsim train reasoner`: scene state and question answering from frozen-tokenizer latents.

A sample is a chain of consecutive frames of one episode: the first is read with
no previous estimate, each next one with the estimate before it (as at run
time), and the last also answers one question drawn from the task's forms, with
the true answer computed from MuJoCo's state. Latents get a little noise so the
reasoner also reads the dynamics model's imperfect tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from worldsim.checkpoint import load_model
from worldsim.drift import DriftLimits, roundtrip_error
from worldsim.model.position_reader import PositionReader
from worldsim.model.reasoner import Reasoner, build_reasoner, qa_loss
from worldsim.model.tokenizer import Tokenizer
from worldsim.reasoner_text import TaskText, encode
from worldsim.scene import SceneLayout
from worldsim.state_filter import StateFilter, filter_episodes
from worldsim.train.dynamics import training_latents
from worldsim.train.harness import Trainer, fit
from worldsim.train.position_reader import load_position_reader


def qa_batch(
    text: TaskText, states: np.ndarray, rng: np.random.Generator, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random question per state: ids (B, L) of 'question answer\\n' (padded with '\\n')
    and the mask of answer characters."""
    forms = text.questions()
    pairs = []
    for s in states:
        q = forms[rng.integers(len(forms))]
        pairs.append((encode(q + " "), encode(text.answer(q, s) + "\n")))
    width = min(length, max(len(p) + len(a) for p, a in pairs))  # pad to the longest only
    ids = np.zeros((len(states), width), np.int64)
    mask = np.zeros((len(states), width), bool)
    for i, (prompt, answer) in enumerate(pairs):
        seq = (prompt + answer)[:width]
        ids[i, : len(seq)] = seq
        mask[i, len(prompt) : len(seq)] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)


@torch.no_grad()
def read_episodes(
    reasoner: Reasoner, latents: np.ndarray, bounds: list[tuple[int, int]]
) -> np.ndarray:
    """Features of every row of the given episodes, each read recurrently from its start."""
    out = np.zeros((len(latents), reasoner.cfg.feature_dim), np.float32)
    for a, b in bounds:
        prev = None
        for t in range(a, b):
            prev = reasoner.read(torch.from_numpy(latents[t : t + 1]), prev)
            out[t] = prev[0].numpy()
    return out


def tracked_state(
    filt: StateFilter,
    layout: SceneLayout,
    readings: np.ndarray,
    latents: np.ndarray,
    store,
    bounds: list[tuple[int, int]],
    positions: tuple[PositionReader, Tokenizer] | None = None,
) -> np.ndarray:
    """The tracked state (values) of every row of the given episodes: the reasoner's
    readings (values) from each episode's start through the state filter, static
    quantities averaged. positions: a position reader (and the tokenizer whose decoding
    it reads) whose readings replace the reasoner's positions before tracking."""
    if positions is not None:
        reader, tok = positions
        rows = np.concatenate([np.arange(a, b) for a, b in bounds])
        readings = readings.copy()
        readings[rows] = reader.put(layout, readings[rows], reader.read_latents(tok, latents[rows]))
    actions = store.read("action", 0, store.num_rows)
    return filter_episodes(filt, readings, actions, bounds)


@torch.no_grad()
def tracked_features(
    reasoner: Reasoner,
    filt: StateFilter,
    layout: SceneLayout,
    latents: np.ndarray,
    store,
    bounds: list[tuple[int, int]],
    positions: tuple[PositionReader, Tokenizer] | None = None,
) -> np.ndarray:
    """Features of `tracked_state` from the reasoner's readings of the given episodes, in
    fp32 even when called under autocast, as at run time."""
    with torch.autocast("cpu", enabled=False):
        readings = layout.from_features(read_episodes(reasoner, latents, bounds))
    state = tracked_state(filt, layout, readings, latents, store, bounds, positions)
    return layout.to_features(state).astype(np.float32)


@torch.no_grad()
def qa_exact_match(
    reasoner: Reasoner,
    text: TaskText,
    latents: np.ndarray,
    states: np.ndarray,
    rows,
    estimate: torch.Tensor | None = None,
    seed: int = 0,
) -> float:
    """Fraction of exact answers, one random question per row (previous estimate: none;
    the language model reads `estimate` (rows, F) where given)."""
    rng = np.random.default_rng(seed)
    forms = text.questions()
    qs = [forms[rng.integers(len(forms))] for _ in rows]
    h, _ = reasoner.encode(torch.from_numpy(latents[rows]), None, estimate)
    answers = reasoner.generate(h, [encode(q + " ") for q in qs])
    truth = [text.answer(q, states[r]) for q, r in zip(qs, rows, strict=True)]
    return float(np.mean([a == t for a, t in zip(answers, truth, strict=True)]))


def state_errors(layout: SceneLayout, pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Median absolute error per quantity, in its unit."""
    return {f"err_{k}": float(np.median(v)) for k, v in layout.abs_error(pred, true).items()}


def train_reasoner(cfg: DictConfig, progress: bool = True) -> dict:
    if not (cfg.qa_weight or cfg.state_weight):
        raise ValueError("qa_weight=0 and state_weight=0 leave nothing to train; set one above 0")
    if cfg.lm_state_filter and (cfg.state_weight or not cfg.qa_weight):
        raise ValueError(
            f"lm_state_filter={cfg.lm_state_filter} trains the language model on the tracked "
            f"state of a fixed reader: it needs state_weight=0 and qa_weight > 0 (got "
            f"{cfg.state_weight} and {cfg.qa_weight})"
        )
    tc = cfg.train
    torch.manual_seed(tc.seed)
    lset, tok, store = training_latents(cfg, progress)
    if store is None:
        raise FileNotFoundError(f"the reasoner learns MuJoCo state from data_path={cfg.data_path}")
    latents = lset.latents
    layout, text = SceneLayout.from_task(cfg.task), TaskText.from_task(cfg.task)
    n = store.num_rows
    values = layout.read(store, 0, n)
    feats = layout.to_features(values)
    train_ids, val_ids = store.split(int(tc.val_every))
    chain = int(cfg.chain)
    starts = store.window_starts(chain, train_ids)
    if not len(starts):
        raise ValueError(f"{cfg.data_path}: no episode holds {chain} frames")
    config = {
        "task": cfg.task.name,
        "latent_dim": tok.cfg.latent_dim,
        "grid": tok.cfg.grid,
        "feature_dim": layout.feature_dim,
        "scene": layout.to_dict(),
        **OmegaConf.to_container(cfg.model, resolve=True),
    }
    judged = config.get("judgments") and config["state_reader"] == "mlp"
    config["judgments"] = len(text.judgment_names()) if judged else 0
    config["judgment_chars"] = bool(judged and config.get("judgment_chars"))
    model = build_reasoner(config)
    model.task_text = text
    train_rows = np.concatenate([np.arange(*store.episode_bounds(e)) for e in train_ids])
    model.feat_mean.copy_(torch.from_numpy(feats[train_rows].mean(0)))
    model.feat_std.copy_(torch.from_numpy(feats[train_rows].std(0) + 1e-3))
    val_bounds = [store.episode_bounds(e) for e in (val_ids or train_ids[:2])[:20]]
    lm_filter = StateFilter.load(cfg.lm_state_filter) if cfg.lm_state_filter else None
    positions = None  # a position reader whose readings the tracked state holds
    if cfg.lm_position_reader:
        if lm_filter is None:
            raise ValueError(
                "lm_position_reader= reads positions into the tracked state: set lm_state_filter="
            )
        positions = (load_position_reader(cfg.lm_position_reader, cfg.task), tok)
    tracked: list[np.ndarray] = []  # features of every row, once the weights are loaded

    def lm_estimate(m: Reasoner, rows: np.ndarray, device) -> torch.Tensor | None:
        """The tracked state the language model reads at rows (None: its own reading)."""
        if lm_filter is None:
            return None
        if not tracked:
            bounds = [store.episode_bounds(e) for e in range(store.num_episodes)]
            tracked.append(
                tracked_features(m, lm_filter, layout, latents, store, bounds, positions)
            )
        return torch.from_numpy(tracked[0][rows]).to(device)

    def batch_loss(net, rng, gen, rank_slice, device):
        pick = starts[rng.integers(0, len(starts), tc.batch_size)][rank_slice]
        z = torch.from_numpy(latents[pick[:, None] + np.arange(chain)]).to(device)
        z = z + tc.latent_noise * torch.randn(z.shape, generator=gen).to(device)
        target = torch.from_numpy(feats[pick[:, None] + np.arange(chain)]).to(device)
        m = net.module if hasattr(net, "module") else net
        ids = mask = estimate = None
        if cfg.qa_weight:  # the first qa_batch chains' last frames also answer a question
            # (the language model costs far more per frame than the MLP reader, which
            # learns from the whole batch)
            q = slice(0, cfg.qa_batch or None)
            ids, mask = qa_batch(text, values[pick[q] + chain - 1], rng, m.cfg.text_len)
            ids, mask = ids.to(device), mask.to(device)
            estimate = lm_estimate(m, pick[q] + chain - 1, device)
        states, logits = net(z, ids, estimate)
        loss_state = F.mse_loss(
            (states - m.feat_mean) / m.feat_std, (target - m.feat_mean) / m.feat_std
        )
        if ids is None:  # the state reader alone (e.g. training it on longer)
            return loss_state, {"loss_state": loss_state.item(), "loss_qa": 0.0}
        loss_qa = qa_loss(logits, ids, mask)
        loss = cfg.qa_weight * loss_qa
        if cfg.state_weight:  # else no gradient (not even weight decay) reaches the reader
            loss = loss + cfg.state_weight * loss_state
        return loss, {
            "loss_state": loss_state.item(),
            "loss_qa": loss_qa.item(),
        }

    def evaluate(model, step):
        pred = read_episodes(model, latents, val_bounds)
        rows = np.concatenate([np.arange(a, b) for a, b in val_bounds])
        errs = state_errors(layout, layout.from_features(pred[rows]), values[rows])
        qa_rows = rows[:: max(1, len(rows) // 100)]
        est = lm_estimate(model, qa_rows, "cpu")
        return {**errs, "qa_exact": qa_exact_match(model, text, latents, values, qa_rows, est)}

    fields = ["loss_state", "loss_qa", *[f"err_{q.name}" for q in layout.quantities], "qa_exact"]
    # with qa_weight=0 the language model (and an MLP reader's encoder) gets no gradient,
    # with state_weight=0 the MLP reader
    unused = not (cfg.qa_weight and cfg.state_weight)
    trainer = Trainer(
        "reasoner", model, config, batch_loss, evaluate, fields, unused_parameters=unused
    )
    info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "samples": len(starts),
        "tokenizer": str(cfg.tokenizer),
    }
    result = fit(trainer, tc, Path(cfg.run_dir), info, progress)
    fit_drift_limits(model, tok, layout, latents, store, train_ids).save(
        Path(cfg.run_dir) / "drift_limits.json"
    )
    return result


def fit_drift_limits(
    model: Reasoner,
    tok,
    layout: SceneLayout,
    latents: np.ndarray,
    store,
    episodes: list[int],
) -> DriftLimits:
    """Drift limits from the reasoner's own readings of real frames (up to 200 episodes)
    and from the tokenizer's round trip of those frames."""
    bounds = [store.episode_bounds(e) for e in episodes[:200]]
    rows = np.concatenate([np.arange(a, b) for a, b in bounds])
    est = layout.from_features(read_episodes(model.eval(), latents, bounds)[rows])
    ends = np.cumsum([b - a for a, b in bounds])
    limits = DriftLimits.fit(layout, est, ends)
    z = torch.from_numpy(latents[rows])
    errors = np.concatenate([roundtrip_error(tok, z[i : i + 512]) for i in range(0, len(z), 512)])
    limits.max_roundtrip = DriftLimits.fit_roundtrip(errors)
    return limits


def load_reasoner(path: str | Path, task) -> tuple[Reasoner, SceneLayout, TaskText]:
    model, meta = load_model(path, "reasoner", build_reasoner, expect={"task": task.name})
    layout, text = SceneLayout.from_dict(meta["config"]["scene"]), TaskText.from_task(task)
    if layout.to_dict() != text.layout.to_dict():
        raise ValueError(
            f"{path} reads scene {layout.to_dict()}, task {task.name!r} now defines "
            f"{text.layout.to_dict()}; retrain with worldsim train reasoner task={task.name}"
        )
    model.task_text = text
    return model.eval(), layout, text
