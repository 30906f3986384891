"""Vector-env frames/s: the world model against MuJoCo Reacher step + render, same run.

For each N: `gym.make_vec("worldsim/Reacher-v0", num_envs=N)` (the native batched
env, pixels observations, random actions) against `Reacher-v5` rendering 64x64
rgb_array frames in a sync vector env of the same N and in an async one with 2
workers. Frames/s counts environment steps of all worlds. MuJoCo runs for the N in
--mujoco-nums only (a CPU's MuJoCo frames/s stops growing with N; thousands of
renderers only cost set-up), each world-model row against the best MuJoCo figure of
the run. Writes JSON.

    python bench/envs.py                                      # the CPU figures
    python bench/envs.py --device cuda --engine cuda --nums 1,64,512,2048 \
        --mujoco-nums 1,8,32 --frames 20000 --out-json bench/results/envs_cuda.json
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from report import machine, steps_per_s, write_report

import worldsim  # noqa: F401  (registers worldsim/Reacher-v0)


def mujoco_vec(n: int, mode: str):
    def make():
        return gym.make("Reacher-v5", render_mode="rgb_array", width=64, height=64)

    # render every step, as a pixel observation would need
    def make_rendering():
        return gym.wrappers.AddRenderObservation(make(), render_only=True)

    if mode == "sync":
        return gym.vector.SyncVectorEnv([make_rendering] * n)
    return gym.vector.AsyncVectorEnv([make_rendering] * n, shared_memory=False, context="spawn")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nums", default="1,8,32,128", help="comma-separated num_envs values")
    p.add_argument("--frames", type=int, default=2000, help="world-steps timed per setting")
    p.add_argument("--obs-mode", default="pixels", help="worldsim observation mode")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument(
        "--engine", default="fast", help="engine config group (configs/engine/: fast, cuda, ...)"
    )
    p.add_argument(
        "--checkpoint", default=None, help="world-model checkpoint folder (default: shipped)"
    )
    p.add_argument(
        "--mujoco-nums", default=None, help="num_envs values MuJoCo runs for (default: --nums)"
    )
    p.add_argument("--out-json", default="bench/results/envs.json", help="JSON report path")
    args = p.parse_args()
    nums = [int(x) for x in args.nums.split(",")]
    mujoco = {}
    for n in [int(x) for x in (args.mujoco_nums or args.nums).split(",")]:
        for mode in ("sync", "async"):
            if mode == "async" and n < 2:
                continue
            env = mujoco_vec(n if mode == "sync" else 2, mode)  # async: 2 worker processes
            mujoco[f"{mode}_{n}"] = steps_per_s(env, max(5, args.frames // env.num_envs))
            env.close()
        print(
            f"MuJoCo N={n:>3}: "
            + "  ".join(
                f"{k.split('_')[0]} {v:7.1f}" for k, v in mujoco.items() if k.endswith(f"_{n}")
            ),
            flush=True,
        )
    best = max(mujoco.values())
    rows = []
    report = {
        "bench": "envs",
        "obs_mode": args.obs_mode,
        "device": args.device,
        "engine": args.engine,
        "checkpoint": args.checkpoint,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "machine": machine(),
        "mujoco_fps": mujoco,
        "best_mujoco_fps": best,
        "rows": rows,
    }
    for n in nums:
        steps = max(5, args.frames // n)
        world = gym.make_vec(
            "worldsim/Reacher-v0",
            num_envs=n,
            obs_mode=args.obs_mode,
            device=args.device,
            engine=args.engine,
            checkpoint=args.checkpoint,
        )
        row = {"num_envs": n, "worldsim_fps": steps_per_s(world, steps)}
        world.close()
        row |= {
            f"mujoco_{k.split('_')[0]}_fps": v for k, v in mujoco.items() if k.endswith(f"_{n}")
        }
        row["ratio_vs_best_mujoco"] = row["worldsim_fps"] / best
        rows.append(row)
        print(
            f"N={n:>4}: worldsim {row['worldsim_fps']:9.1f} frames/s"
            f"   ratio to the best MuJoCo ({best:.1f}) {row['ratio_vs_best_mujoco']:.2f}",
            flush=True,
        )
        write_report(args.out_json, report)  # after every row: a run cut short keeps them


if __name__ == "__main__":
    main()
