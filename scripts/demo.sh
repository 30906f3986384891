#!/usr/bin/env bash
# Quickstart main job: set up, then drive the shipped Reacher world model and a
# MuJoCo twin with the same actions (scripted expert), writing the side-by-side
# video MuJoCo | dream | difference and printing how closely the dream follows.
# Everything runs offline on the CPU from the weights in worldsim/checkpoints/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
out=runs/demo
mkdir -p "$out"
worldsim dream task=reacher steps=200 policy=expert twin=true out="$out/dream_expert.mp4"
worldsim dream task=reacher steps=200 policy=keyboard-script twin=true out="$out/dream_keyboard.mp4"
echo "demo outputs in $out/: dream_expert.mp4, dream_keyboard.mp4 (MuJoCo | dream | difference)"
