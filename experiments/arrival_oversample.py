"""Frame transformer alone, continued 14,000 -> 16,500 from the shipped run, a quarter of each
batch drawn from windows whose last frame is a fast arrival beside the target (store state:
fingertip jump > 8 cm, ending < 6 cm from the target; never the position reader). It reuses
`flow.priority`'s sampler with these fixed weights in place of the model's own errors.
Needs the shipped run folder runs/world_model/reacher/ (scripts/train_world_model.sh);
afterwards the shipped transition is put back (transition.weight=0 still lets Adam move
it) and the result measured with arrival_probe.py and rollout_agreement.py; the commands
are in the model card.

    python experiments/arrival_oversample.py
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

import worldsim.train.dynamics as td
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
