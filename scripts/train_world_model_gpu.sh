#!/usr/bin/env bash
# The whole retrain in one call on a lent GPU machine (the `device` tool), at most ~9
# minutes, bringing back the weights and the evaluation:
#
#   device run: bash scripts/train_world_model_gpu.sh     (carry: .whl .gl)
#
# That machine is bare and offline: the packages the project needs come as wheels in
# `.whl/` and MuJoCo's GL loader in `.gl/` (both made by scripts/gpu_wheels.sh, ignored
# by git); scripts/gpu_setup.sh installs them and the project from the tree that travels.
# Then scripts/train_world_model.sh runs with DEVICE=cuda, 13 data workers and a larger
# batch, and the new weights (dynamics model, tokenizer with the state decoder) and the
# fidelity report are copied to $OUT.
# DRY_RUN=1 runs the same steps on the CPU at smoke sizes (the test does), with the
# packages already installed here (nothing is unpacked or installed).
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir=${OUT:-runs/world_model_gpu_out}
work=${WORK:-/tmp/worldsim_gpu}
dry=${DRY_RUN:-0}
# shellcheck source=scripts/gpu_setup.sh
. scripts/gpu_setup.sh
if [ "$dry" = 1 ]; then
  TINY=1 DEVICE=cpu bash scripts/train_world_model.sh "$work"
else
  DEVICE=cuda WORKERS=${WORKERS:-13} STEPS=${STEPS:-6000} BATCH=${BATCH:-512} LR=${LR:-2e-3} \
    LONG_FRAMES=${LONG_FRAMES:-2000} bash scripts/train_world_model.sh "$work"
fi
mkdir -p "$out_dir"
cp "$work"/checkpoint/dynamics.safetensors "$work"/checkpoint/dynamics.json \
  "$work"/checkpoint/tokenizer.safetensors "$work"/checkpoint/tokenizer.json \
  "$work"/fidelity/fidelity.json "$work"/fidelity/fidelity.png "$work"/dynamics/log.csv \
  "$out_dir/"
echo "wrote $(ls "$out_dir" | tr '\n' ' ')to $out_dir"
