"""Copy a trained checkpoint folder into the package, weights stored half size.

    python scripts/ship_checkpoint.py runs/world_model/inverted_pendulum/checkpoint \
        worldsim/checkpoints/inverted_pendulum

Every `NAME.safetensors` is written with its float32 matrices as float16 (vectors stay
float32; loading casts back, `worldsim.checkpoint.save_half`) beside its `NAME.json`;
the folder's other JSON files (drift limits, state filter) are copied as they are.
Measure the shipped copy (`worldsim eval fidelity checkpoint=DST`): it is what users run.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from worldsim.checkpoint import save_half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="checkpoint folder of a training run")
    ap.add_argument("dst", type=Path, help="folder to ship, e.g. worldsim/checkpoints/TASK")
    args = ap.parse_args()
    weights = sorted(args.src.glob("*.safetensors"))
    if not weights:
        raise SystemExit(f"{args.src}: no .safetensors files (expected a checkpoint folder)")
    args.dst.mkdir(parents=True, exist_ok=True)
    before = after = 0
    for w in weights:
        b, a = save_half(w, args.dst / w.name).values()
        before, after = before + b, after + a
        print(f"{w.name}: {b / 1e6:.1f} MB -> {a / 1e6:.1f} MB")
    sidecars = {w.with_suffix(".json").name for w in weights}
    for j in sorted(args.src.glob("*.json")):
        if j.name not in sidecars:
            shutil.copy2(j, args.dst / j.name)
            print(f"{j.name}: copied")
    print(f"{args.dst}: {before / 1e6:.1f} MB of weights -> {after / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
