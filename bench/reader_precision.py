"""How precisely one frame shows the fingertip and target: read from the tokenizer's latents
vs from the frame's pixels.

The reasoner answers "how far is the fingertip from the target?" (and the scene
description, and "where is the target?") to the nearest cm, so an exact answer needs the
distance to ~0.1 cm: a tenth of a pixel on a 64x64 Reacher frame (1 px ~ 0.8 cm). This
trains single-frame position readers with the same trunk (the pixel one behind three
stride-2 convolutions), steps and data on the training store, and scores them on the
held-out store:

  (a) latents: a CNN over the tokenizer's 8x8 grid of latent tokens (what the reasoner and
      the dream work on);
  (b) pixels: a CNN over the 64x64 frame itself (what the camera showed);
  (c) decoded: the same pixel CNN over the tokenizer's decoding of the latents (what the
      latents hold, read by a trunk that works on pixels).

Beside them, the shipped reasoner's own reading (recurrent, then tracked by the shipped
state filter, as `worldsim eval reasoner` reports it). Per reader: median position error
(cm, Euclidean) of fingertip and target, the median error of their distance, and the
fraction of frames whose distance rounds to the true cm -- over all frames and over those
where the fingertip is >= 2 cm from the target (nearer, the answers say "at the target"
and the distance is moot for two of the three distance questions).
Prints a table and writes JSON (default bench/results/reader_precision.json).

    python bench/reader_precision.py --steps 4000
    python bench/reader_precision.py --inputs latents --steps 16000 \
        --out-json bench/results/reader_precision_latents_16k.json
    python bench/reader_precision.py --inputs decoded --steps 4000 \
        --out-json bench/results/reader_precision_decoded.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from report import machine, write_report
from torch import nn
from tqdm import tqdm

from worldsim.cli import compose_config
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.state_filter import StateFilter
from worldsim.train.latent_set import encode_frames
from worldsim.train.reasoner import load_reasoner, tracked_features

FAR_CM = 2.0


def positions_cm(store: EpisodeStore, n: int) -> np.ndarray:
    """(n, 4): fingertip xy, target xy in cm."""
    return 100 * np.concatenate(
        [store.read(k, 0, n)[:, :2] for k in ("fingertip", "target")], 1
    ).astype(np.float32)


def cnn(channels: int, downsample: int) -> nn.Module:
    """Conv trunk to an 8x8 map (downsample: stride-2 stages before it), then an MLP to 4."""
    layers, c = [], channels
    for _ in range(downsample):
        layers += [nn.Conv2d(c, 64, 4, 2, 1), nn.GELU()]
        c = 64
    layers += [nn.Conv2d(c, 96, 3, padding=1), nn.GELU(), nn.Conv2d(96, 96, 3, padding=1)]
    return nn.Sequential(*layers, nn.GELU(), nn.Flatten(), nn.Linear(96 * 64, 256), nn.GELU(),
                         nn.Linear(256, 4))  # fmt: skip


def latent_grid(z: torch.Tensor) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, side, side); the CNN expects the 8x8 grid of 64x64 frames."""
    side = round(z.shape[1] ** 0.5)
    return z.view(-1, side, side, z.shape[-1]).permute(0, 3, 1, 2)


def pixel_grid(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def decoded(tok, z: torch.Tensor) -> torch.Tensor:
    """The tokenizer's decoding of latents (B, N, C) as uint8 frames (B, H, W, 3)."""
    return torch.cat([tok.decode_uint8(z[i : i + 512]) for i in range(0, len(z), 512)])


def train_reader(net, prep, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, name: str):
    """AdamW, warm-up then linear decay, smooth L1 in cm. fp32: bf16 convolutions run
    an order of magnitude slower than fp32 on a CPU without native bf16."""
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc=name, unit="step"):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, (step + 1) / 200) * max(0.02, 1 - step / steps)
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = nn.functional.smooth_l1_loss(net(prep(x[idx])), y[idx], beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


@torch.no_grad()
def predict(net, prep, x: torch.Tensor) -> np.ndarray:
    net.eval()
    return torch.cat([net(prep(x[i : i + 512])) for i in range(0, len(x), 512)]).numpy()


def scores(pred: np.ndarray, true: np.ndarray) -> dict:
    dist = np.linalg.norm(true[:, :2] - true[:, 2:], axis=1)
    dist_pred = np.linalg.norm(pred[:, :2] - pred[:, 2:], axis=1)
    far = dist >= FAR_CM
    out = {}
    for label, rows in (("all", slice(None)), ("far", far)):
        e = pred[rows] - true[rows]
        out[label] = {
            "fingertip_cm": float(np.median(np.linalg.norm(e[:, :2], axis=1))),
            "target_cm": float(np.median(np.linalg.norm(e[:, 2:], axis=1))),
            "distance_cm": float(np.median(np.abs(dist_pred - dist)[rows])),
            "distance_rounds_right": float(np.mean((np.round(dist_pred) == np.round(dist))[rows])),
        }
    out["far_frames"] = int(far.sum())
    return out


def shipped_reading(task, folder, store: EpisodeStore, latents: np.ndarray) -> np.ndarray:
    """The shipped reasoner's reading, tracked by the shipped state filter, as (rows, 4) cm."""
    reasoner, layout, _ = load_reasoner(folder / "reasoner.safetensors", task)
    bounds = [store.episode_bounds(e) for e in range(store.num_episodes)]
    filt = StateFilter.load(folder / "state_filter.json")
    est = layout.from_features(tracked_features(reasoner, filt, layout, latents, store, bounds))
    xy = [est[:, layout.slices[k]][:, :2] for k in ("fingertip", "target")]
    return 100 * np.concatenate(xy, 1)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="reacher")
    p.add_argument("--train-frames", type=int, default=60000, help="first rows of the train store")
    p.add_argument("--steps", type=int, default=4000, help="training steps per reader")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--inputs", default="latents,pixels", help="readers to train, comma-separated")
    p.add_argument("--out-json", default="bench/results/reader_precision.json")
    p.add_argument("--save-predictions", help="also write every reader's held-out readings "
                   "(cm, fingertip xy + target xy per frame) to this .npz")  # fmt: skip
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = compose_config("eval_reasoner", [f"task={args.task}"])
    train_path = compose_config("train_reasoner", [f"task={args.task}"]).data_path
    folder = checkpoint_dir(cfg.task.name, cfg.checkpoint)
    tok, _ = load_world_model(cfg.task, folder, "cpu")
    train = EpisodeStore.open_for_task(train_path, cfg.task.name)
    held = EpisodeStore.open_for_task(cfg.data_path, cfg.task.name)
    n = min(args.train_frames, train.num_rows)
    y_train = torch.from_numpy(positions_cm(train, n))
    y_held = positions_cm(held, held.num_rows)
    with torch.no_grad():
        z_held = encode_frames(tok, held)
        z_train = torch.cat([tok.encode(torch.from_numpy(train.read("frame", i, min(i + 512, n))))
                             for i in range(0, n, 512)])  # fmt: skip
    shipped = shipped_reading(cfg.task, folder, held, z_held)
    results = {"shipped reasoner, tracked": scores(shipped, y_held)}
    inputs = {  # name: grid, training inputs, held-out inputs, channels, stride-2 stages
        "latents": lambda: (latent_grid, z_train, torch.from_numpy(z_held), z_train.shape[-1], 0),
        "pixels": lambda: (pixel_grid, torch.from_numpy(train.read("frame", 0, n)),
                           torch.from_numpy(held.read("frame", 0, held.num_rows)), 3, 3),
        "decoded": lambda: (pixel_grid, decoded(tok, z_train),
                            decoded(tok, torch.from_numpy(z_held)), 3, 3),
    }  # fmt: skip
    seconds, readings = {}, {"truth": y_held, "shipped": shipped}
    for name in args.inputs.split(","):
        if name not in inputs:
            raise SystemExit(f"--inputs {name!r}: expected names from {sorted(inputs)}")
        prep, x_train, x_held, channels, down = inputs[name]()
        torch.manual_seed(0)
        net = cnn(channels, down)
        seconds[name] = train_reader(net, prep, x_train, y_train, args.steps, args.batch, name)
        readings[name] = predict(net, prep, x_held)
        results[f"{name} CNN, one frame"] = scores(readings[name], y_held)
    if args.save_predictions:
        np.savez(args.save_predictions, **readings)
    print(f"{'reader':28s} {'':4s} {'fingertip':>9s} {'target':>7s} {'dist':>6s} {'dist ok':>7s}")
    for name, r in results.items():
        for label in ("all", "far"):
            s = r[label]
            print(f"{name:28s} {label:4s} {s['fingertip_cm']:9.3f} {s['target_cm']:7.3f} "
                  f"{s['distance_cm']:6.3f} {s['distance_rounds_right']:7.3f}")  # fmt: skip
    write_report(args.out_json, {
        "machine": machine(), "task": cfg.task.name, "train_frames": n, "steps": args.steps,
        "batch": args.batch, "inputs": args.inputs, "train_seconds": seconds,
        "held_out_frames": held.num_rows, "far_cm": FAR_CM, "results": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
