#!/usr/bin/env bash
# Retrain a task's world model from scratch, then measure it: grounding data (MuJoCo),
# the dynamics model (learned state transition + frame transformer) on the shipped
# tokenizer's latents, the decoder fine-tuned to draw the state on the new dynamics
# model's own predictions (the shipped tokenizer's decoder onward; with TOKENIZER=train
# the new tokenizer's), the position reader and the linear baseline's motion model where
# none is shipped, and `worldsim eval fidelity` of the result.
#
#   bash scripts/train_world_model.sh [OUT]       (default runs/world_model/$TASK)
#
# OUT/checkpoint/ ends as a checkpoint folder (tokenizer, dynamics and the shipped
# reasoner files beside them) that every command takes as checkpoint=OUT/checkpoint;
# OUT/fidelity/ holds the evaluation. Every stage resumes: rerun the same command
# after a crash. A finished training stage is skipped on a rerun (its run folder holds
# stage.done; loading its latents again took ~12 min on Pusher): delete that file to
# train the stage further with new sizes. Environment:
#   TASK=reacher|inverted_pendulum|pusher   the task (configs/task/; default reacher)
#   DEVICE=cpu|cuda      where the dynamics trains (default cpu)
#   WORKERS=N            data-generation processes (default 2)
#   TOKENIZER=train      also retrain the tokenizer from scratch (the reasoner, which
#                        reads the shipped tokenizer's latents, is then left out; the
#                        default for a task that ships no tokenizer)
#   SOURCE_TOKENIZER=F   the .safetensors (JSON beside it) whose encoder makes the
#                        latents and whose decoder the decoder stage starts from
#                        (default: the checkpoint's tokenizer; e.g. the latents-only
#                        tokenizer the shipped decoder was trained from)
#   STEPS, BATCH, LR     dynamics training (default: configs/train/dynamics.yaml, the
#                        shipped model's recipe)
#   TOKENIZER_STEPS=N    tokenizer training steps when it is trained (default 4500)
#   DECODER_STEPS=N      decoder stage steps (default: configs/train/decoder.yaml)
#   TRANSITION_HORIZON=N frames of the state transition's training rollouts (default:
#                        the task's transition_horizon, configs/task/*.yaml: Reacher 48,
#                        InvertedPendulum 16)
#   LONG_FRAMES=N        length of the evaluation's free rollout (default 10000)
#   TINY=1               smoke sizes, for the test of this script
set -euo pipefail
cd "$(dirname "$0")/.."
task=${TASK:-reacher}
if [ ! -f "configs/task/$task.yaml" ]; then
  echo "TASK=$task: expected one of $(cd configs/task && ls -- *.yaml | sed 's/.yaml//' | tr '\n' ' ')" >&2
  exit 2
fi
out=${1:-runs/world_model/$task}
device=${DEVICE:-cpu}
workers=${WORKERS:-2}
ckpt_src=worldsim/checkpoints/$task
tokenizer=${TOKENIZER:-shipped}
if [ ! -f "$ckpt_src/tokenizer.safetensors" ]; then
  tokenizer=train  # nothing shipped to start from
fi
if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
export MUJOCO_GL=${MUJOCO_GL:-egl}
ws() { "${PYTHON:-python3}" -m worldsim.cli "$@"; }  # works where only PYTHONPATH has it
if [ "${TINY:-0}" = 1 ]; then
  episodes=3; heldout=2; STEPS=${STEPS:-2}; BATCH=${BATCH:-2}
  data_sizes=(task.max_episode_steps=20)
  sizes=(model.width=32 model.layers=1 model.heads=2
    model.state_width=16 model.state_layers=1 transition.horizon=4 transition.batch_size=4
    flow.pool=1
    train.eval_every=2 train.ckpt_every=2 train.warmup=1)
  tok_sizes=(train.steps=1 train.batch_size=2 model.width=32 model.layers=1 model.heads=2)
  dec_sizes=(train.steps=2 train.batch_size=2 train.eval_every=2 inputs.rows=20)
  reader_sizes=(train.steps=2 train.batch_size=2 train.eval_every=2 frames=20
    model.channels=4 model.trunk=4 model.hidden=8)
  eval_sizes=(episodes=2 horizon=8 long_frames=20)
  heldout_len=20
else
  episodes=2000; heldout=64
  data_sizes=()
  sizes=()
  tok_sizes=(train.steps="${TOKENIZER_STEPS:-4500}" train.eval_every=500 train.ckpt_every=250)
  dec_sizes=()
  if [ -n "${DECODER_STEPS:-}" ]; then dec_sizes=(train.steps="$DECODER_STEPS"); fi
  reader_sizes=()
  eval_sizes=(long_frames="${LONG_FRAMES:-10000}")
  heldout_len=100
fi
train_args=(train.device="$device")
for kv in steps="${STEPS:-}" batch_size="${BATCH:-}" lr="${LR:-}"; do
  if [ -n "${kv#*=}" ]; then train_args+=("train.$kv"); fi
done
if [ -n "${TRANSITION_HORIZON:-}" ]; then train_args+=("transition.horizon=$TRANSITION_HORIZON"); fi
mkdir -p "$out/checkpoint"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
done_in() { [ -f "$1/stage.done" ]; }  # a training stage that finished in this run folder

stamp "grounding data: $episodes episodes"
ws data generate task="$task" episodes="$episodes" workers="$workers" resume=true \
  out="$out/data/$task.zarr" "${data_sizes[@]}"
ws data generate task="$task" episodes="$heldout" workers="$workers" resume=true \
  seed=1000000 data.keys_fraction=0 task.max_episode_steps="$heldout_len" \
  out="$out/data/${task}_heldout.zarr"

if [ "$tokenizer" = train ]; then
  if ! done_in "$out/tokenizer"; then
    stamp "tokenizer from scratch"
    ws train tokenizer task="$task" data_path="$out/data/$task.zarr" \
      run_dir="$out/tokenizer" train.device="$device" "${tok_sizes[@]}"
    cp "$out/tokenizer/tokenizer.safetensors" "$out/tokenizer/tokenizer.json" "$out/checkpoint/"
    touch "$out/tokenizer/stage.done"
  fi
else
  # the shipped folder's readers and limits come along where it has them (a task may
  # ship a world model before its reasoner)
  for f in "$ckpt_src"/tokenizer.* "$ckpt_src"/drift_limits.json "$ckpt_src"/reasoner.* \
    "$ckpt_src"/position_reader.* "$ckpt_src"/state_filter.json; do
    if [ -f "$f" ]; then cp "$f" "$out/checkpoint/"; fi
  done
fi

# the tokenizer the latents come from and the decoder stage starts from; that stage
# replaces the checkpoint's copy
if [ ! -f "$out/tokenizer_source.safetensors" ]; then
  src=${SOURCE_TOKENIZER:-$out/checkpoint/tokenizer.safetensors}
  cp "$src" "$out/tokenizer_source.safetensors"
  cp "${src%.safetensors}.json" "$out/tokenizer_source.json"
fi

if ! done_in "$out/dynamics"; then
  stamp "dynamics from scratch: ${train_args[*]}"
  ws train dynamics task="$task" data_path="$out/data/$task.zarr" \
    tokenizer="$out/tokenizer_source.safetensors" \
    latents="$out/data/${task}_latents.safetensors" \
    run_dir="$out/dynamics" "${train_args[@]}" "${sizes[@]}"
  cp "$out/dynamics/dynamics.safetensors" "$out/dynamics/dynamics.json" "$out/checkpoint/"
  touch "$out/dynamics/stage.done"
fi

if ! done_in "$out/decoder"; then
  stamp "decoder: draws the state, trained on the dynamics model's own predictions"
  ws train decoder task="$task" data_path="$out/data/$task.zarr" \
    latents="$out/data/${task}_latents.safetensors" \
    tokenizer="$out/tokenizer_source.safetensors" \
    dynamics="$out/checkpoint/dynamics.safetensors" run_dir="$out/decoder" \
    train.device="$device" "${dec_sizes[@]}"
  cp "$out/decoder/tokenizer.safetensors" "$out/decoder/tokenizer.json" "$out/checkpoint/"
  touch "$out/decoder/stage.done"
fi

if { [ "$tokenizer" = train ] && ! done_in "$out/position_reader"; } ||
  [ ! -f "$out/checkpoint/position_reader.safetensors" ]; then
  # its own latent cache: one keyed by the fine-tuned tokenizer in the dynamics stage's
  # file made every rerun of this script encode all the frames twice more
  stamp "position reader: what the new decoder draws, read off its frames"
  ws train position_reader task="$task" data_path="$out/data/$task.zarr" \
    latents="$out/data/${task}_latents_checkpoint.safetensors" \
    tokenizer="$out/checkpoint/tokenizer.safetensors" \
    run_dir="$out/position_reader" train.device="$device" "${reader_sizes[@]}"
  cp "$out/position_reader/position_reader.safetensors" \
    "$out/position_reader/position_reader.json" "$out/checkpoint/"
  stamp "linear baseline's motion model (no reasoner: no reading noise)"
  ws train state_filter task="$task" data_path="$out/data/$task.zarr" \
    heldout_path="$out/data/${task}_heldout.zarr" checkpoint="$out/checkpoint" \
    out="$out/checkpoint/state_filter.json"
  touch "$out/position_reader/stage.done"
fi

stamp "evaluation (no re-grounding, no MuJoCo twin)"
ws eval fidelity task="$task" checkpoint="$out/checkpoint" \
  data_path="$out/data/${task}_heldout.zarr" out_dir="$out/fidelity" device="$device" \
  "${eval_sizes[@]}"
stamp "done: $out/checkpoint (weights), $out/fidelity (fidelity.json, fidelity.png)"
