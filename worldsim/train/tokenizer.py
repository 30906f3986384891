"""`worldsim train tokenizer`: fit the patch autoencoder on a grounding store.

Frames of the training episodes are loaded into memory once (uint8, ~12 KiB a
frame); batches come from the step-seeded RNG of the harness, so a resumed run
sees exactly the batches it would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from worldsim.eval.metrics import psnr
from worldsim.model.tokenizer import Tokenizer, build_tokenizer, reconstruction_loss
from worldsim.train.harness import Trainer, fit

if TYPE_CHECKING:
    from worldsim.datasets.store import EpisodeStore


def open_store(cfg: DictConfig) -> EpisodeStore:
    from worldsim.datasets.store import EpisodeStore  # zarr: not needed to train from latents

    return EpisodeStore.open_for_task(cfg.data_path, cfg.task.name)


def load_frames(store: EpisodeStore, episodes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    if not episodes:
        raise ValueError(
            f"{store.path}: no episodes in this split (store has {store.num_episodes})"
        )
    eps = [store.episode(i, keys=["frame", "seg"]) for i in episodes]
    return (
        np.concatenate([e.data["frame"] for e in eps]),
        np.concatenate([e.data["seg"] for e in eps]),
    )


@torch.no_grad()
def reconstruct(model: Tokenizer, frames: np.ndarray, batch: int = 256) -> torch.Tensor:
    return torch.cat(
        [
            model.decode_uint8(model.encode(torch.from_numpy(frames[i : i + batch])))
            for i in range(0, len(frames), batch)
        ]
    )


def reconstruction_metrics(recon: torch.Tensor, frames: np.ndarray, seg: np.ndarray) -> dict:
    """PSNR on the whole frame, on foreground pixels, and on robot pixels."""
    target, s = torch.from_numpy(frames), torch.from_numpy(seg)
    return {
        "psnr": psnr(recon, target),
        "psnr_fg": psnr(recon, target, s > 0),
        "psnr_robot": psnr(recon, target, s == 1),
    }


def save_samples(path: Path, frames: np.ndarray, recon: np.ndarray, n: int = 8) -> None:
    img = np.concatenate([np.concatenate(list(frames[:n]), 1), np.concatenate(list(recon[:n]), 1)])
    imageio.imwrite(path, np.repeat(np.repeat(img, 3, 0), 3, 1))


def train_tokenizer(cfg: DictConfig, progress: bool = True) -> dict:
    tc = cfg.train
    torch.manual_seed(tc.seed)
    store = open_store(cfg)
    train_ids, val_ids = store.split(int(tc.val_every))
    frames, seg = load_frames(store, train_ids)
    val_frames, val_seg = load_frames(store, val_ids[:20] or train_ids[:2])
    config = {
        "task": cfg.task.name,
        "image_size": int(cfg.task.image_size),
        **OmegaConf.to_container(cfg.model, resolve=True),
    }
    run = Path(cfg.run_dir)

    def batch_loss(net, rng, gen, rank_slice, device):
        idx = rng.integers(0, len(frames), tc.batch_size)[rank_slice]
        x = torch.from_numpy(frames[idx]).to(device)
        recon = net(x, latent_noise=tc.latent_noise, generator=gen)
        return reconstruction_loss(
            recon, x, torch.from_numpy(seg[idx]).to(device), tc.fg_weight
        ), {}

    def evaluate(model, step):
        recon = reconstruct(model, val_frames)
        save_samples(run / f"samples_{step:07d}.png", val_frames, recon.numpy())
        return {
            f"val_{k}": v for k, v in reconstruction_metrics(recon, val_frames, val_seg).items()
        }

    trainer = Trainer(
        "tokenizer",
        build_tokenizer(config),
        config,
        batch_loss,
        evaluate,
        ["val_psnr", "val_psnr_fg", "val_psnr_robot"],
    )
    info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "train_frames": len(frames),
        "val_frames": len(val_frames),
    }
    return fit(trainer, tc, run, info, progress)


def eval_tokenizer(cfg: DictConfig) -> dict:
    """Held-out reconstruction PSNR (whole frame, foreground, robot) of a tokenizer checkpoint."""
    from worldsim.checkpoint import load_model
    from worldsim.dream import checkpoint_dir

    path = (
        Path(cfg.checkpoint)
        if cfg.checkpoint
        else (checkpoint_dir(cfg.task.name, None) / "tokenizer.safetensors")
    )
    model, meta = load_model(path, "tokenizer", build_tokenizer, expect={"task": cfg.task.name})
    store = open_store(cfg)
    _, val_ids = store.split(int(cfg.val_every))
    frames, seg = load_frames(store, val_ids[: cfg.episodes])
    model.eval()
    metrics = reconstruction_metrics(reconstruct(model, frames), frames, seg)
    return {"checkpoint": str(path), "step": meta.get("step"), "frames": len(frames), **metrics}
