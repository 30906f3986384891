"""Frame transformer alone, continued 14,000 -> 16,500 from the shipped run with a quarter
of each batch's windows jump windows (`flow.jump_prob=0.25`: the context frame from a random
place of the same episode, so the arm's pose jumps as far as under a fast-spinning held key
while the target stays). Aimed at issue 23 item 2's glitches: the target drawn wrong where
the arm arrives beside it in one big jump, which the store shows in 0.5% of frames.
Needs the shipped run folder runs/world_model/reacher/ (scripts/train_world_model.sh).
The shipped transition is put back afterwards (transition.weight=0 still lets Adam move
it) in a checkpoint folder beside the shipped files, runs/exp_jump/checkpoint, measured by

    python experiments/jump_windows.py [--jump-prob 0.25] [--steps 16500] [--out runs/exp_jump]
    python experiments/arrival_probe.py --checkpoint runs/exp_jump/checkpoint
    python experiments/rollout_agreement.py --checkpoint runs/exp_jump/checkpoint --idle-worlds 0
"""

import argparse
import json
import shutil
from pathlib import Path

import worldsim.train.dynamics as td
from worldsim.checkpoint import DIGEST_KEY, file_sha256, load_tensors, save_tensors
from worldsim.cli import compose_config

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--jump-prob", type=float, default=0.25)
parser.add_argument("--steps", type=int, default=16500)
parser.add_argument("--out", default="runs/exp_jump")
args = parser.parse_args()

out = Path(args.out)
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
        f"train.steps={args.steps}",
        f"flow.jump_prob={args.jump_prob}",
        "transition.weight=0",
        "train.eval_every=100000",
    ],
)
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
