"""Frame transformer alone, continued 14,000 -> 16,500 from the shipped run, a quarter of each
batch drawn from windows whose last frame is a fast arrival beside the target (store state:
fingertip jump > 8 cm, ending < 6 cm from the target; never the position reader). It reuses
`flow.priority`'s sampler with these fixed weights in place of the model's own errors.
Needs the shipped run folder runs/world_model/reacher/ (scripts/train_world_model.sh).
Afterwards the shipped transition is put back (transition.weight=0 still lets Adam move
it) in a checkpoint folder beside the shipped files, runs/exp_arr/checkpoint, measured by

    python experiments/arrival_oversample.py
    python experiments/arrival_probe.py --checkpoint runs/exp_arr/checkpoint
    python experiments/rollout_agreement.py --checkpoint runs/exp_arr/checkpoint --idle-worlds 0
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

import worldsim.train.dynamics as td
from worldsim.checkpoint import DIGEST_KEY, file_sha256, load_tensors, save_tensors
from worldsim.cli import compose_config

out = Path("runs/exp_arr")
run = out / "dynamics"
if not run.exists():
    shutil.copytree("runs/world_model/reacher/dynamics", run)
cfg = compose_config(
    "train_dynamics",
    [
        "task=reacher",
        "data_path=runs/world_model/reacher/data/reacher.zarr",
        "tokenizer=worldsim/checkpoints/reacher/tokenizer.safetensors",
        "latents=runs/world_model/reacher/data/reacher_latents.safetensors",
        f"run_dir={run}",
        "train.steps=16500",
        "flow.priority=0.25",
        "transition.weight=0",
        "train.eval_every=100000",
    ],
)


def arrival_weights(net, data, starts, length, *a, **k):
    from worldsim.scene import SceneLayout

    layout = SceneLayout.from_dict(net.cfg.scene)
    s = data["state"]
    tip, tgt = s[:, layout.slices["fingertip"]], s[:, layout.slices["target"]]
    last = starts + length - 1
    jump = 100 * np.linalg.norm(tip[last] - tip[last - 1], axis=1)
    near = 100 * np.linalg.norm(tip[last] - tgt[last], axis=1)
    w = ((jump > 8) & (near < 6)).astype(np.float64)
    print(f"arrival windows: {int(w.sum())} of {len(w)}", file=sys.stderr)
    return w + 1e-12


td.window_errors = arrival_weights
print(json.dumps(td.train_dynamics(cfg, progress=False), default=str)[:500])

# the shipped transition back in, beside the shipped files (the frame transformer alone changed)
shipped = Path("worldsim/checkpoints/reacher")
ckpt = out / "checkpoint"
shutil.rmtree(ckpt, ignore_errors=True)
shutil.copytree(shipped, ckpt, ignore=shutil.ignore_patterns("policies"))
new, meta = load_tensors(run / "dynamics.safetensors")
old, _ = load_tensors(shipped / "dynamics.safetensors")
new |= {k: v for k, v in old.items() if k.startswith("transition.")}
save_tensors(ckpt / "dynamics.safetensors", new, meta)
card = json.loads((ckpt / "dynamics.json").read_text())
card[DIGEST_KEY] = file_sha256(ckpt / "dynamics.safetensors")
(ckpt / "dynamics.json").write_text(json.dumps(card, indent=1))
