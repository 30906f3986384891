"""`worldsim train dynamics`: fit the block-causal flow model on frozen-tokenizer latents.

Every frame of the store is encoded once by the frozen tokenizer. A training
sample is a window of W + 1 consecutive frames of one episode with the actions
between them; each frame gets its own flow time tau (diffusion forcing), half of
them near-clean like the context at sampling time. The model predicts each
frame's clean latents as a residual on the previous frame's.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.checkpoint import load_model
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import side_by_side
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.metrics import psnr
from worldsim.model.dynamics import Dynamics, build_dynamics
from worldsim.model.tokenizer import Tokenizer, build_tokenizer
from worldsim.train.harness import Trainer, fit
from worldsim.train.tokenizer import open_store


@torch.no_grad()
def encode_store(
    tok: Tokenizer, store: EpisodeStore, batch: int = 512, progress: bool = True
) -> np.ndarray:
    """Latents (rows, N, C) float32 for every committed row of the store."""
    out = []
    steps = range(0, store.num_rows, batch)
    for i in tqdm(steps, desc="encoding frames", unit="batch", disable=not progress):
        frames = store.read("frame", i, min(i + batch, store.num_rows))
        out.append(tok.encode(torch.from_numpy(frames)).numpy())
    return np.concatenate(out)


def token_weights(seg: np.ndarray, patch: int, fg_weight: float) -> np.ndarray:
    """(rows, H, W) classes -> (rows, N) weights: patches holding foreground weigh more."""
    r, h, w = seg.shape
    fg = (seg > 0).reshape(r, h // patch, patch, w // patch, patch).any(axis=(2, 4))
    return (1 + (fg_weight - 1) * fg.reshape(r, -1)).astype(np.float32)


def window_batch(data: dict, starts: np.ndarray, length: int) -> dict[str, torch.Tensor]:
    rows = starts[:, None] + np.arange(length)
    prev = np.concatenate([np.zeros_like(rows[:, :1]), rows[:, :-1]], 1)
    has = np.ones(rows.shape, bool)
    has[:, 0] = False
    return {
        "z": torch.from_numpy(data["latents"][rows]),
        "w": torch.from_numpy(data["weights"][rows]),
        "prev_action": torch.from_numpy(data["action"][prev]),
        "has_action": torch.from_numpy(has),
        # targets of frame t's heads: the transition into it, i.e. row t - 1
        "reward": torch.from_numpy(data["reward"][prev]),
        "terminated": torch.from_numpy(data["terminated"][prev].astype(np.float32)),
    }


def sample_tau(shape, flow, gen: torch.Generator) -> torch.Tensor:
    tau = torch.rand(shape, generator=gen)
    ctx = torch.rand(shape, generator=gen) < flow.ctx_prob
    near_clean = flow.ctx_min + (1 - flow.ctx_min) * torch.rand(shape, generator=gen)
    return torch.where(ctx, near_clean, tau)


def flow_loss(net, batch: dict, flow, gen: torch.Generator, device) -> tuple[torch.Tensor, dict]:
    z = batch["z"].to(device)
    tau = sample_tau(z.shape[:2], flow, gen).to(device)
    noise = torch.randn(z.shape, generator=gen).to(device)
    t = tau[..., None, None]
    z_noisy = t * z + (1 - t) * noise
    base = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)  # previous clean frame
    clean, reward, term = net(
        z_noisy, tau, batch["prev_action"].to(device), batch["has_action"].to(device), base
    )
    # x-prediction loss; the velocity the sampler integrates is (clean - z_noisy) / (1 - tau)
    w = batch["w"].to(device)[..., None]
    loss_v = (w * (clean.float() - z) ** 2).sum() / (w.sum() * z.shape[-1])
    has = batch["has_action"].to(device).float()
    loss_r = ((reward.float() - batch["reward"].to(device)) ** 2 * has).sum() / has.sum()
    loss_d = (
        F.binary_cross_entropy_with_logits(
            term.float(), batch["terminated"].to(device), reduction="none"
        )
        * has
    ).sum() / has.sum()
    loss = loss_v + flow.reward_weight * (loss_r + loss_d)
    return loss, {"loss_flow": loss_v.item(), "loss_reward": loss_r.item()}


@torch.no_grad()
def rollout_psnr(
    tok: Tokenizer,
    dyn: Dynamics,
    store: EpisodeStore,
    episodes: list[int],
    context: int,
    horizon: int,
    steps: int = 1,
    video: Path | None = None,
) -> dict[str, float]:
    """Generate `horizon` frames from `context` real ones with the true actions; PSNR
    (whole frame and foreground) of the last generated frame vs copy-last-frame.

    With `video`, writes the first four rollouts as rows of truth | dream | difference."""
    starts = []
    for e in episodes:
        a, b = store.episode_bounds(e)
        if b - a >= context + horizon:
            starts.append(a)
    if not starts:
        return {}
    wins = [store.window(s, context, horizon) for s in starts]
    frames = np.stack([w["frame"] for w in wins])
    seg = np.stack([w["seg"] for w in wins])
    actions = np.stack([w["action"] for w in wins]).astype(np.float32)
    engine = FrameEngine(tok, dyn, len(starts), EngineConfig(steps=steps))
    engine.reset(frames[:, :context], actions[:, : context - 1])
    dreamed = []
    for t in range(context - 1, context + horizon - 1):
        out = engine.step(actions[:, t])
        dreamed.append(out.frames.numpy())
    if video is not None:
        rows = min(4, len(starts))
        clip = [
            np.concatenate(
                [side_by_side(frames[i, context + h], dreamed[h][i], 2) for i in range(rows)], 0
            )
            for h in range(horizon)
        ]
        imageio.mimwrite(video, clip, fps=4, macro_block_size=1)
    truth = torch.from_numpy(frames[:, -1])
    fg = torch.from_numpy((seg[:, -1] > 0) | (seg[:, context - 1] > 0))
    last = torch.from_numpy(frames[:, context - 1])
    return {
        f"h{horizon}_psnr_fg": psnr(out.frames, truth, fg),
        f"h{horizon}_copy_psnr_fg": psnr(last, truth, fg),
        f"h{horizon}_psnr": psnr(out.frames, truth),
    }


def store_latents(cfg: DictConfig, progress: bool = True):
    """The training store, its frozen tokenizer (cfg.tokenizer) and every row's latents."""
    store = open_store(cfg)
    tok, _ = load_model(cfg.tokenizer, "tokenizer", build_tokenizer, expect={"task": cfg.task.name})
    tok.eval().requires_grad_(False)
    return store, tok, encode_store(tok, store, progress=progress)


def train_dynamics(cfg: DictConfig, progress: bool = True) -> dict:
    tc = cfg.train
    torch.manual_seed(tc.seed)
    store, tok, latents = store_latents(cfg, progress)
    n = store.num_rows
    data = {
        "latents": latents,
        "weights": token_weights(store.read("seg", 0, n), tok.cfg.patch, tc.fg_weight),
        "action": store.read("action", 0, n).astype(np.float32),
        "reward": store.read("reward", 0, n).astype(np.float32),
        "terminated": store.read("terminated", 0, n),
    }
    config = {
        "task": cfg.task.name,
        "latent_dim": tok.cfg.latent_dim,
        "grid": tok.cfg.grid,
        "action_dim": int(data["action"].shape[1]),
        **OmegaConf.to_container(cfg.model, resolve=True),
    }
    length = int(cfg.model.window) + 1
    train_ids, val_ids = store.split(int(tc.val_every))
    starts = store.window_starts(length, train_ids)
    if not len(starts):
        raise ValueError(f"{cfg.data_path}: no episode is long enough for windows of {length}")

    def batch_loss(net, rng, gen, rank_slice, device):
        pick = starts[rng.integers(0, len(starts), tc.batch_size)][rank_slice]
        return flow_loss(net, window_batch(data, pick, length), cfg.flow, gen, device)

    def evaluate(model, step):
        video = Path(cfg.run_dir) / f"samples_{step:07d}.mp4"
        ids = val_ids[:16] or train_ids[:2]
        return rollout_psnr(tok, model, store, ids, context=4, horizon=8, video=video)

    trainer = Trainer(
        "dynamics",
        build_dynamics(config),
        config,
        batch_loss,
        evaluate,
        ["loss_flow", "loss_reward", "h8_psnr_fg", "h8_copy_psnr_fg", "h8_psnr"],
    )
    info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "windows": len(starts),
        "tokenizer": str(cfg.tokenizer),
    }
    return fit(trainer, tc, Path(cfg.run_dir), info, progress)
