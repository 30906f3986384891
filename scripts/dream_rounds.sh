#!/usr/bin/env bash
# Ground a world model's state transition in the behaviour of the policies trained in its
# own dream, round by round (as Dreamer collects with its current policy):
#   k = 0, 1, ..., ROUNDS
#   transfer<k>/    PPO trained in checkpoint<k>'s dream, in MuJoCo and in the linear-model
#                   simulator, all judged in MuJoCo (`worldsim policy transfer`: the report)
#   then, while k < ROUNDS:
#   the store grows by EPISODES MuJoCo episodes of transfer<k>'s dream-trained policies
#   (`data generate append=true policy=agent`), checkpoint<k+1>'s transition is trained
#   further on the grown store from checkpoint<k>'s (`train dynamics transition.only=true`;
#   the frame model, tokenizer and reasoner files are checkpoint<k>'s).
#
#   bash scripts/dream_rounds.sh OUT ROUNDS
#
# OUT is a run of scripts/train_world_model.sh (OUT/checkpoint is checkpoint 0, its store
# OUT/data/$TASK.zarr is copied to the growing OUT/data/${TASK}_agent.zarr); everything
# else goes to OUT/rounds/ (OUT/$RDIR/). Why: Pusher's first model followed the arm to
# 1.3 cm at h16 under the expert's actions, but its dream-trained policies steered the
# dream's arm 14-20 cm away from MuJoCo's under their own (experiments/policy_replay.py).
# Every stage resumes: rerun the same command after a crash. The MuJoCo and linear rows
# are trained once (transfer0) and reused by later reports. Episodes appended to the store
# by other means between rounds (e.g. `data generate append=true data.expert_targets=1`)
# join the next checkpoint's training data: a round adds EPISODES to whatever the store
# holds when it starts (OUT/rounds/append<k>.episodes). Environment:
#   TASK=pusher|reacher|inverted_pendulum   (default pusher)
#   EPISODES=N        MuJoCo episodes added per round (default 400)
#   AGENT_NOISE=F     action noise std bound of those episodes (default 0.3; data.agent_noise)
#   STEPS=N           transition training steps per round (default 2000)
#   PPO_STEPS=N       environment steps of every policy (default 500000)
#   SEEDS=[..]        policy seeds (default [0,1,2])
#   FROM=DIR          checkpoint 0 of this series (default OUT/checkpoint), e.g. a
#                     checkpoint of earlier rounds, for rounds at another PPO_STEPS
#   RDIR=NAME         the series' folder under OUT (default rounds)
#   TINY=1            smoke sizes, for the test of this script
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
  echo "usage: bash scripts/dream_rounds.sh OUT ROUNDS" >&2
  exit 2
fi
out=$1
rounds=$2
task=${TASK:-pusher}
if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
export MUJOCO_GL=${MUJOCO_GL:-egl}
ws() { "${PYTHON:-python3}" -m worldsim.cli "$@"; }
for need in "$out/checkpoint/dynamics.safetensors" "$out/data/$task.zarr"; do
  if [ ! -e "$need" ]; then
    echo "$need is missing: OUT must be a run of scripts/train_world_model.sh" >&2
    exit 2
  fi
done
episodes=${EPISODES:-400}
noise=${AGENT_NOISE:-0.3}
steps=${STEPS:-2000}
train=()
data=()
if [ "${TINY:-0}" = 1 ]; then
  PPO_STEPS=${PPO_STEPS:-32}
fi
ppo=(steps="${PPO_STEPS:-500000}" "seeds=${SEEDS:-[0,1,2]}")
if [ "${TINY:-0}" = 1 ]; then
  ppo+=(n_envs=2 episodes=1 algo.kwargs.n_steps=8 algo.kwargs.batch_size=16
    algo.kwargs.n_epochs=1 task.max_episode_steps=20)
  train=(train.batch_size=2 transition.batch_size=2 transition.horizon=2 train.eval_every=2
    train.ckpt_every=2 train.warmup=1 task.max_episode_steps=20)
  steps=2
  data=(task.max_episode_steps=20 workers=0)
fi
store=$out/data/${task}_agent.zarr
rdir=$out/${RDIR:-rounds}
mkdir -p "$rdir"
if [ ! -e "$store" ]; then
  cp -r "$out/data/$task.zarr" "$store.partial"
  mv "$store.partial" "$store"
fi
count() { "${PYTHON:-python3}" -c "from worldsim.datasets.store import EpisodeStore as S; print(S.open('$1').num_episodes)"; }
for k in $(seq 0 "$rounds"); do
  ckpt=${FROM:-$out/checkpoint}
  [ "$k" -gt 0 ] && ckpt=$rdir/checkpoint$k
  report=$rdir/transfer$k
  if [ "$k" -gt 0 ] && [ -d "$rdir/transfer0" ]; then  # the same MuJoCo and linear rows
    mkdir -p "$report"
    for run in "$rdir"/transfer0/mujoco-seed* "$rdir"/transfer0/linear-seed*; do
      [ -e "$run" ] && [ ! -e "$report/$(basename "$run")" ] && cp -r "$run" "$report/"
    done
  fi
  if [ ! -f "$report/transfer.md" ]; then  # written when the report is complete
    echo "== round $k: policies in $ckpt's dream -> $report"
    ws policy transfer task="$task" "${ppo[@]}" "baselines=[linear]" checkpoint="$ckpt" \
      out_dir="$report"
  fi
  [ "$k" -eq "$rounds" ] && break
  next=$rdir/checkpoint$((k + 1))
  if [ ! -f "$next/dynamics.safetensors" ]; then
    agents=$(ls -d "$report"/dream-seed*/policy.json | sed 's/\.json$//' | paste -sd, -)
    mark=$rdir/append$k.episodes  # the store's size this round appends up to
    [ -f "$mark" ] || echo $(($(count "$store") + episodes)) >"$mark"
    target=$(cat "$mark")
    if [ "$(count "$store")" -lt "$target" ]; then
      echo "== round $k: $store -> $target episodes of [$agents] in MuJoCo"
      ws data generate task="$task" out="$store" append=true policy=agent "agents=[$agents]" \
        agent_noise="$noise" episodes="$target" "${data[@]}"
    fi
    echo "== round $k: the transition trained further on $store -> $next"
    ws train dynamics task="$task" transition.only=true \
      train.init_from="$ckpt/dynamics.safetensors" data_path="$store" \
      tokenizer="$out/tokenizer_source.safetensors" train.steps="$steps" \
      run_dir="$rdir/transition$((k + 1))" "${train[@]}"
    mkdir -p "$next.partial"
    for f in "$ckpt"/*; do
      case $(basename "$f") in dynamics.*) ;; *) cp -r "$f" "$next.partial/" ;; esac
    done
    cp "$rdir/transition$((k + 1))"/dynamics.* "$next.partial/"
    mv "$next.partial" "$next"
  fi
done
echo "reports: $rdir/transfer*/transfer.md"
