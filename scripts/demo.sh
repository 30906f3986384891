#!/usr/bin/env bash
# Quickstart main job: set up, collect a small Reacher grounding dataset from
# MuJoCo (noisy scripted expert + correlated noise), check it, summarise it and
# write a preview video. Everything runs offline on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
out=runs/demo
mkdir -p "$out"
worldsim data generate task=reacher episodes=20 policy=mix workers=2 out="$out/reacher.zarr" resume=true
worldsim data validate "$out/reacher.zarr"
worldsim data inspect "$out/reacher.zarr" --json "$out/inspect.json"
worldsim data preview "$out/reacher.zarr" out="$out/preview.mp4" episodes=9
echo "demo outputs in $out/: reacher.zarr, inspect.json, preview.mp4"
