"""The frame-transformer continuations of the shipped run that the issue-23 experiments
measure: continue runs/world_model/reacher/dynamics (step 14,000) in a copy with the
transition frozen out of the loss, then put the shipped transition back (with
`transition.weight=0` Adam's momentum still moves it) in a checkpoint folder beside the
shipped files, ready for `--checkpoint` of the probes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import worldsim.train.dynamics as td
from worldsim.checkpoint import DIGEST_KEY, file_sha256, load_tensors, save_tensors
from worldsim.cli import compose_config
from worldsim.scene import SceneLayout

SHIPPED = Path("worldsim/checkpoints/reacher")


def continue_frame_model(out: Path, overrides: list[str], steps: int = 16500) -> Path:
    """Train the copy in out/dynamics to `steps` with `overrides`; returns the checkpoint
    folder out/checkpoint (the shipped files, this frame transformer, the shipped
    transition)."""
    run = out / "dynamics"
    if not run.exists():
        shutil.copytree("runs/world_model/reacher/dynamics", run)
    cfg = compose_config(
        "train_dynamics",
        [
            "task=reacher",
            "data_path=runs/world_model/reacher/data/reacher.zarr",
            f"tokenizer={SHIPPED}/tokenizer.safetensors",
            "latents=runs/world_model/reacher/data/reacher_latents.safetensors",
            f"run_dir={run}",
            f"train.steps={steps}",
            "transition.weight=0",
            "train.eval_every=100000",
            *overrides,
        ],
    )
    print(json.dumps(td.train_dynamics(cfg, progress=False), default=str)[:500])
    ckpt = out / "checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    shutil.copytree(SHIPPED, ckpt, ignore=shutil.ignore_patterns("policies"))
    new, meta = load_tensors(run / "dynamics.safetensors")
    old, _ = load_tensors(SHIPPED / "dynamics.safetensors")
    new |= {k: v for k, v in old.items() if k.startswith("transition.")}
    save_tensors(ckpt / "dynamics.safetensors", new, meta)
    card = json.loads((ckpt / "dynamics.json").read_text())
    card[DIGEST_KEY] = file_sha256(ckpt / "dynamics.safetensors")
    (ckpt / "dynamics.json").write_text(json.dumps(card, indent=1))
    return ckpt


def last_frame_fingertip(net, data: dict, starts, length: int) -> tuple:
    """For `flow.priority` weight functions: (fingertip moved since the frame before,
    fingertip to target), in cm, at the last frame of each window, from the store state."""
    import numpy as np

    layout = SceneLayout.from_dict(net.cfg.scene)
    s = data["state"]
    tip, tgt = s[:, layout.slices["fingertip"]], s[:, layout.slices["target"]]
    last = starts + length - 1
    moved = 100 * np.linalg.norm(tip[last] - tip[last - 1], axis=1)
    return moved, 100 * np.linalg.norm(tip[last] - tgt[last], axis=1)
