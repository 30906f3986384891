#!/usr/bin/env bash
# The speed figures of a lent GPU machine (the `device` tool) in one call of at most ~5
# minutes: the CUDA-graph tests, then bench/engine.py and bench/envs.py on the GPU with
# the shipped weights, the JSON reports copied to $OUT:
#
#   device run: bash scripts/bench_gpu.sh     (carry: .whl .gl, from scripts/gpu_wheels.sh)
#
# Engine: eager fp32 against engine.graph=true in bf16 with batched noise
# (configs/engine/cuda.yaml) per batch size, B=1 to 4096, and a 10,000-frame-old world
# against a young one; envs: gym.make_vec with engine=cuda against MuJoCo on the CPU.
# DRY_RUN=1 runs the same steps on the CPU at smoke sizes (the test does).
set -uo pipefail  # not -e: a bench cut by its timeout still leaves its JSON to bring back
cd "$(dirname "$0")/.."
out_dir=${OUT:-runs/bench_gpu_out}
# shellcheck source=scripts/gpu_setup.sh
. scripts/gpu_setup.sh
mkdir -p "$out_dir"
if [ "${DRY_RUN:-0}" = 1 ]; then
  device=cpu; batches=1,2; frames=4; long=10; nums=1,2; mujoco_nums=1; env_frames=8
  engine_args=(--reasoner-frames 0 --serving cuda)  # the GPU's engine settings, eagerly
else
  device=cuda; batches=1,64,512,2048,4096; frames=30; long=10000; nums=1,64,512,4096
  mujoco_nums=1,8,32; env_frames=4000; engine_args=(--reasoner-frames 0)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out_dir/gpu.txt"
  timeout 45 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py -k "graph or bfloat16" \
    | tail -3 | tee "$out_dir/tests.txt"
fi
# each bench rewrites its JSON after every row, so a timeout keeps what was measured
rc=0
timeout 150 python3 bench/engine.py --device "$device" --batches "$batches" --frames "$frames" \
  --long-frames "$long" --checkpoint worldsim/checkpoints/reacher "${engine_args[@]}" \
  --out-json "$out_dir/engine_$device.json" || rc=$?
timeout 75 python3 bench/envs.py --device "$device" --engine cuda --nums "$nums" \
  --mujoco-nums "$mujoco_nums" --frames "$env_frames" --out-json "$out_dir/envs_$device.json" || rc=$?
echo "wrote $(ls "$out_dir" | tr '\n' ' ')to $out_dir"
exit "$rc"
