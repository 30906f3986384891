#!/usr/bin/env bash
# Quickstart main job: set up, then drive the shipped Reacher world model and a
# MuJoCo twin with the same actions (the scripted expert for 200 frames, then a
# keyboard script for 1,000), writing side-by-side videos MuJoCo | dream | difference
# and printing how closely the dream follows. The dream is never re-grounded: after
# the first 4 real frames it runs on its own. Everything runs offline on the CPU from
# the weights in worldsim/checkpoints/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
out=runs/demo
mkdir -p "$out"
worldsim dream task=reacher steps=200 policy=expert twin=true out="$out/dream_expert.mp4"
worldsim dream task=reacher steps=1000 policy=keyboard-script twin=true out="$out/dream_keyboard.mp4"
echo "demo outputs in $out/: dream_expert.mp4, dream_keyboard.mp4 (MuJoCo | dream | difference)"
