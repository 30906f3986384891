"""`worldsim train decoder`: teach the tokenizer's decoder to draw the frame its state
describes.

Why: read back by the position reader, 2.35% of the frames of the latents-only model's
10,000-frame held-key dream were drawn > 1 cm from the model's own state, mostly the
target smeared or doubled where the arm swings past it: the generated latents blend the
context frame with the new pose, and a decoder that sees only latents paints the blend.
Five continuations of the dynamics model (more steps, oversampled fast arrivals, jump
windows, rebalanced windows) left 1.96-2.13%.

So the decoder gets the state too (added to every token, worldsim.model.tokenizer) and
is fine-tuned, its encoder frozen (latents, dynamics model and reasoner unchanged), on
inputs that disagree with the real frame the way dreamed latents do: the dynamics
model's own one-step predictions (a share from older context, a bigger jump), latents of
another moment of the same episode (the arm elsewhere) or of any episode (the target
elsewhere too), each against the real frame and its true state. A share is decoded
without a state from noised true latents, the case of a real frame's round trip (drift
guard), which thus keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.checkpoint import load_model
from worldsim.model.dynamics import Dynamics, build_dynamics
from worldsim.model.tokenizer import Tokenizer, build_tokenizer, reconstruction_loss
from worldsim.scene import SceneLayout
from worldsim.train.dynamics import (
    rollout_fields,
    rollout_psnr,
    training_latents,
    window_batch,
    window_data,
)
from worldsim.train.harness import Trainer, fit

ENCODER = ("patch_in", "pos_enc", "enc.", "to_latent")
"""Tokenizer parameters that stay frozen (the latents everything else was trained on)."""


@torch.no_grad()
def generated_latents(
    dyn: Dynamics,
    data: dict,
    rows: np.ndarray,
    context: np.ndarray,
    tau_ctx: float,
    seed: int,
    progress: bool = True,
) -> np.ndarray:
    """(len(rows), N, C): the dynamics model's one-step prediction of each row (the
    engine's `fast` path) from the two rows at `context` written as context at tau_ctx,
    with the row's true state and the action into it."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in tqdm(range(0, len(rows), 256), disable=not progress, desc="generated latents"):
        b = window_batch(data, rows[i : i + 256] - 2, 3, context=context[i : i + 256])
        z = b["z"]
        noise = torch.randn(z.shape, generator=gen)
        z_in = torch.cat([tau_ctx * z[:, :2] + (1 - tau_ctx) * noise[:, :2], noise[:, 2:]], 1)
        tau = torch.tensor([tau_ctx, tau_ctx, 0.0]).expand(len(z), 3)
        clean, _, _ = dyn(z_in, tau, b["prev_action"], b["has_action"], b["state"])
        out.append(clean[:, -1].clamp(-1, 1).numpy())
    return np.concatenate(out)


def state_decoder(source: Tokenizer, task: str, layout: SceneLayout) -> tuple[Tokenizer, dict]:
    """A tokenizer with the source's weights whose decoder also takes `layout`'s state
    (the new parts start at zero: it decodes as the source until trained)."""
    config = {"task": task, **source.config_dict(), "scene": layout.to_dict()}
    tok = build_tokenizer(config)
    missing, unexpected = tok.load_state_dict(source.state_dict(), strict=False)
    new = ("state_in.", "no_state", "feature_mean", "feature_std", "to_grid.", "point_in.")
    if unexpected or any(not k.startswith(new) for k in missing):
        raise ValueError(
            f"tokenizer {source.source} does not fit a state decoder of its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, p in tok.named_parameters():
        p.requires_grad_(not name.startswith(ENCODER))
    return tok, config


def train_decoder(cfg: DictConfig, progress: bool = True) -> dict:
    tc, ic = cfg.train, cfg.inputs
    torch.manual_seed(tc.seed)
    shares = np.cumsum([ic.generated, ic.other_time, ic.other_episode])
    if shares[-1] > 1:
        raise ValueError(
            f"inputs.generated + other_time + other_episode = {shares[-1]:g}: expected <= 1"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train decoder runs in one process (a few minutes on 2 CPU cores)")
    lset, source, store = training_latents(cfg, progress)
    if store is None:
        raise FileNotFoundError(f"data_path={cfg.data_path}: the decoder trains on its frames")
    dyn, _ = load_model(cfg.dynamics, "dynamics", build_dynamics, expect={"task": cfg.task.name})
    layout = SceneLayout.from_dict(dyn.cfg.scene)
    tok, config = state_decoder(source, cfg.task.name, layout)
    tok.fit_state_statistics(lset.state)

    data = window_data(lset, 1.0)
    train_ids, val_ids = lset.split(int(tc.val_every))
    rng = np.random.default_rng(tc.seed)
    rows = lset.window_starts(3, train_ids) + 2  # rows with two predecessors
    rows = np.sort(rng.choice(rows, min(int(ic.rows), len(rows)), replace=False))
    episode = np.searchsorted(lset.episode_ends, rows, side="right")
    ep_first = np.concatenate([[0], lset.episode_ends])[episode]
    ep_len = lset.episode_ends[episode] - ep_first
    lag = np.where(rng.random(len(rows)) < ic.lagged, rng.integers(1, 7, len(rows)), 0)
    context = np.maximum(rows - 2 - lag, ep_first)
    generated = torch.from_numpy(
        generated_latents(dyn, data, rows, context, ic.tau_ctx, tc.seed, progress)
    )
    frames = store.read("frame", 0, store.num_rows)[rows]
    seg = store.read("seg", 0, store.num_rows)[rows]
    camera_px = tok.fit_camera(lset.state[rows], seg) if tok.points else None
    latents, state = torch.from_numpy(lset.latents), torch.from_numpy(lset.state)

    def batch_loss(net, rng, gen, rank_slice, device):
        idx = rng.integers(0, len(rows), tc.batch_size)[rank_slice]
        n = len(idx)
        # 0 generated, 1 same episode other moment, 2 any episode, 3 noised true latents
        kind = np.searchsorted(shares, rng.random(n), side="right")
        with_state = n - int(round(ic.no_state * n))
        kind[with_state:] = 3  # decoded without a state: a real frame's round trip
        source = np.where(
            kind == 1,
            ep_first[idx] + (rng.random(n) * ep_len[idx]).astype(int),
            rng.integers(0, len(latents), n),
        )
        true = latents[rows[idx]]
        level = torch.rand(n, 1, 1, generator=gen, device=gen.device).cpu()
        noise = torch.randn(true.shape, generator=gen, device=gen.device).cpu()
        z = torch.where(
            torch.from_numpy(kind == 0)[:, None, None],
            generated[idx],
            torch.where(
                torch.from_numpy(kind == 3)[:, None, None],
                true + tc.latent_noise * level * noise,
                latents[source],
            ),
        ).to(device)
        s = state[rows[idx[:with_state]]].to(device)
        recon = torch.cat([net.decode(z[:with_state], s), net.decode(z[with_state:])])
        # (one process: `net` is the tokenizer itself, decode is not its forward)
        target = torch.from_numpy(frames[idx]).to(device)
        loss = reconstruction_loss(
            recon, target, torch.from_numpy(seg[idx]).to(device), tc.fg_weight
        )
        return loss, {}

    def evaluate(model, step):
        video = Path(cfg.run_dir) / f"samples_{step:07d}.mp4"
        return rollout_psnr(model, dyn, store, val_ids[:16] or train_ids[:2], 4, 16, video=video)

    trainer = Trainer("tokenizer", tok, config, batch_loss, evaluate, rollout_fields(layout))
    info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "rows": len(rows),
        "camera_fit_rms_px": camera_px,
        "tokenizer": str(cfg.tokenizer),
        "dynamics": str(cfg.dynamics),
    }
    return fit(trainer, tc, Path(cfg.run_dir), info, progress)
