"""Steps/s of the dream for state-observation policies: the learned state transition alone
against the full step (frame transformer too), same run, same worlds.

A state policy rewarded by the task's formula reads nothing the frame model makes, so
`WorldVectorEnv` steps only the transition (`generate_frames=False`, the default there;
the states are the same bit for bit: tests/test_envs.py). This times both for each
shipped task at the batch `worldsim policy train` uses (64 worlds), with random actions,
and beside them MuJoCo's own env stepping without rendering (a Gymnasium sync vector
env, the speed a state policy trains at in MuJoCo). Steps/s counts the steps of all
worlds. Writes JSON.

    python bench/state_dream.py
    python bench/state_dream.py --tasks pusher --checkpoint runs/world_model/pusher/checkpoint
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from report import machine, steps_per_s, write_report

from worldsim.envs.vector_env import WorldVectorEnv, task_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", default="reacher,inverted_pendulum", help="comma-separated tasks")
    p.add_argument("--num-envs", type=int, default=64, help="worlds stepped at once")
    p.add_argument("--steps", type=int, default=6400, help="world-steps timed per setting")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: shipped)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: auto)")
    p.add_argument("--out-json", default="bench/results/state_dream.json", help="JSON path")
    args = p.parse_args()
    report = {"bench": "state_dream", "num_envs": args.num_envs, "rows": []}
    for task in args.tasks.split(","):
        n, steps = args.num_envs, max(5, args.steps // args.num_envs)
        row = {"task": task}
        for name, frames in (("full_step", True), ("transition_only", False)):
            env = WorldVectorEnv(task, n, "state", args.checkpoint, threads=args.threads,
                                 generate_frames=frames)  # fmt: skip
            row[f"{name}_steps_per_s"] = steps_per_s(env, steps)
            env.close()
        cfg, _ = task_config(task)
        mujoco = gym.make_vec(cfg.env_id, num_envs=n, vectorization_mode="sync")
        row["mujoco_steps_per_s"] = steps_per_s(mujoco, steps)
        mujoco.close()
        row["speedup"] = row["transition_only_steps_per_s"] / row["full_step_steps_per_s"]
        report["rows"].append(row)
        print(
            f"{task}: full step {row['full_step_steps_per_s']:8.1f}  transition only "
            f"{row['transition_only_steps_per_s']:9.1f}  (x{row['speedup']:.1f})  MuJoCo "
            f"{row['mujoco_steps_per_s']:9.1f} steps/s",
            flush=True,
        )
        report["machine"] = machine() | {"torch_threads_used": torch.get_num_threads()}
        write_report(args.out_json, report)


if __name__ == "__main__":
    main()
