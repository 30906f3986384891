"""`worldsim train tokenizer`: fit the patch autoencoder on a grounding store.

Frames of the training episodes are loaded into memory once (uint8; ~12 KiB a
frame); each step draws a batch from an RNG seeded by (seed, step), so a resumed
run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from worldsim.checkpoint import load_tensors
from worldsim.datasets.store import EpisodeStore
from worldsim.model.tokenizer import Tokenizer, TokenizerConfig, psnr, reconstruction_loss
from worldsim.train.harness import (
    Checkpointer,
    CSVLog,
    Throughput,
    autocast,
    autocast_dtype,
    init_distributed,
    lr_at,
    step_rng,
    write_run_info,
)

LOG_FIELDS = ["step", "loss", "lr", "samples_per_s", "val_psnr", "val_psnr_fg", "val_psnr_robot"]


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


def model_config(cfg: DictConfig) -> dict:
    return {
        "task": cfg.task.name,
        "image_size": int(cfg.task.image_size),
        **OmegaConf.to_container(cfg.model, resolve=True),
    }


@torch.no_grad()
def evaluate(model: Tokenizer, frames: np.ndarray, seg: np.ndarray, batch: int = 256) -> dict:
    """PSNR of reconstructions on the whole frame and on foreground pixels."""
    model.eval()
    recon = torch.cat(
        [
            model.decode_uint8(model.encode(torch.from_numpy(frames[i : i + batch])))
            for i in range(0, len(frames), batch)
        ]
    )
    model.train()
    target, fg = torch.from_numpy(frames), torch.from_numpy(seg) > 0
    return {
        "psnr": psnr(recon, target),
        "psnr_fg": psnr(recon, target, fg),
        "psnr_robot": psnr(recon, target, torch.from_numpy(seg) == 1),
        "recon": recon,
    }


def save_samples(path: Path, frames: np.ndarray, recon: torch.Tensor, n: int = 8) -> None:
    top = np.concatenate(list(frames[:n]), axis=1)
    bottom = np.concatenate(list(recon[:n].numpy()), axis=1)
    img = np.concatenate([top, bottom], axis=0)
    imageio.imwrite(path, np.repeat(np.repeat(img, 3, 0), 3, 1))


def train_tokenizer(cfg: DictConfig, progress: bool = True) -> dict:
    tc = cfg.train
    device = str(tc.device)
    dd = init_distributed(device)
    if dd.world > 1 and device.startswith("cuda"):
        device = f"cuda:{dd.rank}"
    amp = autocast_dtype(device, tc.dtype)
    torch.manual_seed(tc.seed)
    store = EpisodeStore.open(cfg.data_path)
    if store.attrs["task"] != cfg.task.name:
        raise ValueError(
            f"{cfg.data_path} holds task {store.attrs['task']!r}, not task={cfg.task.name!r}"
        )
    train_ids, val_ids = store.split(int(tc.val_every))
    frames, seg = load_frames(store, train_ids)
    val_frames, val_seg = load_frames(store, val_ids[:20] or train_ids[:2])

    mcfg = model_config(cfg)
    model = Tokenizer(TokenizerConfig(**{k: v for k, v in mcfg.items() if k != "task"})).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(run, "tokenizer")
    step = 0
    if ckpt.exists():
        _, meta = load_tensors(ckpt.model_path)
        if meta["config"] != mcfg:
            raise ValueError(
                f"{run} holds a tokenizer with config {meta['config']}, this run "
                f"asks for {mcfg}; choose another run_dir="
            )
        step = ckpt.load(model, opt)
    net = DDP(model) if dd.world > 1 else model
    if dd.main:
        write_run_info(
            run,
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "train_frames": len(frames),
                "val_frames": len(val_frames),
                "autocast": str(amp),
                "world_size": dd.world,
            },
        )
    log = CSVLog(run / "log.csv", LOG_FIELDS) if dd.main else None
    per_rank = tc.batch_size // dd.world
    speed = Throughput()
    bar = tqdm(
        total=tc.steps,
        initial=step,
        disable=not (progress and dd.main),
        unit="step",
        desc="tokenizer",
    )
    last: dict = {}
    while step < tc.steps:
        rng = step_rng(tc.seed, step, 0)
        idx = rng.integers(0, len(frames), tc.batch_size)
        gen = torch.Generator(device).manual_seed(int(rng.integers(2**62)) + dd.rank)
        idx = idx[dd.rank * per_rank : (dd.rank + 1) * per_rank]
        x = torch.from_numpy(frames[idx]).to(device)
        s = torch.from_numpy(seg[idx]).to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc.lr, tc.warmup, tc.steps)
        with autocast(device, amp):
            recon = net(x, latent_noise=tc.latent_noise, generator=gen)
        loss = reconstruction_loss(recon, x, s, tc.fg_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        step += 1
        sps = speed.add(tc.batch_size)
        if dd.main:
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{sps:.0f}")
            bar.update()
            if step % tc.log_every == 0 or step == tc.steps:
                log.write(
                    {
                        "step": step,
                        "loss": loss.item(),
                        "lr": opt.param_groups[0]["lr"],
                        "samples_per_s": sps,
                    }
                )
            if step % tc.eval_every == 0 or step == tc.steps:
                last = evaluate(model, val_frames, val_seg)
                save_samples(run / f"samples_{step:07d}.png", val_frames, last.pop("recon"))
                log.write({"step": step, **{f"val_{k}": v for k, v in last.items()}})
                bar.write(
                    f"step {step}: held-out PSNR {last['psnr']:.2f} dB, "
                    f"foreground {last['psnr_fg']:.2f} dB, robot {last['psnr_robot']:.2f} dB"
                )
            if step % tc.ckpt_every == 0 or step == tc.steps:
                ckpt.save(model, opt, step, mcfg, {"val": last})
    bar.close()
    return {"step": step, **last}
