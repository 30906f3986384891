"""`worldsim train position_reader`: the scene's positions from decoded frames.

The frames are the frozen tokenizer's decoding of the training latents, what the reader
sees at run time (decoded once at the start: ~3 min and ~1.3 GB for 100k Reacher
frames); the targets are MuJoCo's positions in cm and angles as 100 (cos, sin) (smooth
L1). A decoder that draws the state draws a dream's frames with the model's state and a
real frame's round trip without one (its learned stand-in), so the reader learns from
both (`with_state`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.checkpoint import load_model
from worldsim.model.position_reader import (
    PositionReader,
    build_position_reader,
    position_quantities,
)
from worldsim.scene import SceneLayout, wrap_angle
from worldsim.train.dynamics import training_latents
from worldsim.train.harness import Trainer, fit


@torch.no_grad()
def decode_rows(
    tok,
    latents: np.ndarray,
    rows: np.ndarray,
    progress: bool = True,
    states: np.ndarray | None = None,
    with_state: np.ndarray | None = None,
) -> torch.Tensor:
    """uint8 frames (len(rows), H, W, 3): the tokenizer's decoding of latents[rows]; rows
    where `with_state` (len(rows) bools) is set are decoded with states[rows] (a decoder
    that draws the state), the others without a state."""
    parts = []
    for i in tqdm(range(0, len(rows), 512), disable=not progress, desc="decode", unit="batch"):
        part = rows[i : i + 512]
        z = torch.from_numpy(latents[part])
        frames = tok.decode_uint8(z)
        if with_state is not None and with_state[i : i + 512].any():
            pick = np.flatnonzero(with_state[i : i + 512])
            frames[pick] = tok.decode_uint8(z[pick], torch.from_numpy(states[part[pick]]))
        parts.append(frames)
    return torch.cat(parts)


def train_position_reader(cfg: DictConfig, progress: bool = True) -> dict:
    tc = cfg.train
    torch.manual_seed(tc.seed)
    lset, tok, store = training_latents(cfg, progress)
    if store is None:
        raise FileNotFoundError(f"positions are learned from MuJoCo state at {cfg.data_path}")
    layout = SceneLayout.from_task(cfg.task)
    names = position_quantities(layout, cfg.task.get("frame_readout"))
    if not names:
        raise ValueError(
            f"task {cfg.task.name!r} has no body position in its scene to read: name what a "
            "frame shows in its frame_readout (configs/task/)"
        )
    cols = np.concatenate([np.arange(layout.slices[n].start, layout.slices[n].stop) for n in names])
    truth = layout.read(store, 0, store.num_rows)[:, cols]
    train_ids, val_ids = store.split(int(tc.val_every))
    rows = np.concatenate([np.arange(*store.episode_bounds(e)) for e in train_ids])
    if cfg.frames:
        rows = rows[np.random.default_rng(tc.seed).permutation(len(rows))[: cfg.frames]]
    val = np.concatenate([np.arange(*store.episode_bounds(e)) for e in (val_ids or train_ids)[:20]])
    states = with_state = val_with_state = None
    if tok.cfg.scene is not None and cfg.with_state > 0:  # a decoder that draws the state
        states = SceneLayout.from_dict(tok.cfg.scene).read(store, 0, store.num_rows)
        rng = np.random.default_rng(tc.seed + 1)
        with_state = rng.random(len(rows)) < cfg.with_state
        val_with_state = np.arange(len(val)) % 2 == 0  # half and half
    frames = decode_rows(tok, lset.latents, rows, progress, states, with_state)
    val_frames = decode_rows(tok, lset.latents, val, False, states, val_with_state)
    angles = [n for n in names if layout.by_name[n].angle]
    sizes = [layout.by_name[n].size for n in names]
    config = {
        "task": cfg.task.name,
        "quantities": names,
        "outputs": PositionReader.outputs_for(names, angles, sizes),
        "angles": angles,
        "sizes": sizes,
        "image_size": int(frames.shape[1]),
        **OmegaConf.to_container(cfg.model, resolve=True),
    }
    model = build_position_reader(config)
    target = torch.from_numpy(model.targets(truth[rows]))
    with torch.no_grad():  # the head starts at the mean reading (an upright pole's cos is
        # 100 units from 0; started at 0, InvertedPendulum's reader stalled at 2.9 cm of
        # cart error, ~1 pixel, for 4,000 steps; started at the mean: 0.17 cm at 600)
        model.net[-1].bias.copy_(target.float().mean(0))

    def batch_loss(net, rng, gen, rank_slice, device):
        pick = torch.from_numpy(rng.integers(0, len(rows), tc.batch_size)[rank_slice])
        pred = net(frames[pick].to(device)).float()
        loss = F.smooth_l1_loss(pred, target[pick].to(device), beta=0.1)
        return loss, {}

    def evaluate(m: PositionReader, step: int) -> dict[str, float]:
        with torch.no_grad():
            pred = torch.cat([m(val_frames[i : i + 512]) for i in range(0, len(val), 512)])
        read = m.values(pred.numpy())
        out, i = {}, 0
        for name, width, key in zip(names, sizes, keys, strict=True):
            d = read[:, i : i + width] - truth[val, i : i + width]
            if name in angles:  # mean absolute angle difference, wrapped
                e = np.abs(wrap_angle(d)).mean(1)
            else:
                e = 100 * np.linalg.norm(d, axis=1)
            out[key] = float(np.median(e))
            if val_with_state is not None:
                out[f"{key}_with_state"] = float(np.median(e[val_with_state]))
            i += width
        return out

    keys = [f"err_{n}_rad" if n in angles else f"err_{n}_cm" for n in names]
    fields = list(keys)
    if with_state is not None:
        fields += [f"{k}_with_state" for k in keys]
    trainer = Trainer("position_reader", model, config, batch_loss, evaluate, fields)
    info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "frames": len(rows),
        "tokenizer": str(cfg.tokenizer),
    }
    return fit(trainer, tc, Path(cfg.run_dir), info, progress)


def load_position_reader(path: str | Path, task) -> PositionReader:
    model, meta = load_model(path, "position_reader", build_position_reader, {"task": task.name})
    layout = SceneLayout.from_task(task)
    missing = [n for n in model.cfg.quantities if n not in layout.slices]
    if missing:
        raise ValueError(f"{path} reads {missing}, which task {task.name!r} does not define")
    return model.eval()
