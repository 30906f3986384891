"""Soak: the shipped world model's vector env stepped for a long time, state and pixels.

For each (worlds, steps, obs mode): `gym.make_vec("worldsim/Reacher-v0")` under random
actions with autoreset, never closed in between. Records resident memory (RSS) after a
warm-up and at the end (growth must stay under 2%), whether any observation or reward was
ever NaN or inf, and the step time's p50 / p99. Prints and writes JSON.

    python bench/soak.py [--settings 1x10000,64x2000] [--obs state,pixels]
        [--out-json bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from report import machine, write_report
from tqdm import tqdm

import worldsim  # noqa: F401  (registers worldsim/Reacher-v0)

WARMUP = 50  # steps before the first RSS reading: allocators and caches settle


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def finite(x) -> bool:
    if isinstance(x, dict):
        return all(finite(v) for v in x.values())
    x = np.asarray(x)
    return not np.issubdtype(x.dtype, np.floating) or bool(np.isfinite(x).all())


def soak(worlds: int, steps: int, obs_mode: str, seed: int = 0) -> dict:
    env = gym.make_vec("worldsim/Reacher-v0", num_envs=worlds, obs_mode=obs_mode)
    rng = np.random.default_rng(seed)
    low, high = env.single_action_space.low, env.single_action_space.high
    obs, _ = env.reset(seed=seed)
    ok = finite(obs)
    times, rss_start = [], None
    try:
        for t in tqdm(range(WARMUP + steps), desc=f"{worlds} x {steps} {obs_mode}"):
            if t == WARMUP:
                rss_start = rss_mib()
            a = rng.uniform(low, high, (worlds, low.shape[0])).astype(np.float32)
            start = time.perf_counter()
            obs, reward, *_ = env.step(a)
            times.append(time.perf_counter() - start)
            ok = ok and finite(obs) and finite(reward)
        rss_end = rss_mib()
    finally:
        env.close()
    ms = 1000 * np.asarray(times[WARMUP:])
    return {
        "worlds": worlds,
        "steps": steps,
        "obs_mode": obs_mode,
        "rss_mib_after_warmup": round(rss_start, 1),
        "rss_mib_end": round(rss_end, 1),
        "rss_growth": round(rss_end / rss_start - 1, 4),
        "all_finite": ok,
        "step_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "step_ms_p99": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="1x10000,64x2000", help="WORLDSxSTEPS, comma-separated")
    p.add_argument("--obs", default="state,pixels", help="observation modes, comma-separated")
    p.add_argument("--out-json", default="bench/results/soak.json", help="JSON report path")
    args = p.parse_args()
    rows = []
    for setting in args.settings.split(","):
        worlds, steps = (int(x) for x in setting.split("x"))
        for mode in args.obs.split(","):
            rows.append(soak(worlds, steps, mode))
            print(rows[-1])
    report = {
        "machine": machine(),
        "rows": rows,
        "rss_growth_under_2pct": all(r["rss_growth"] < 0.02 for r in rows),
        "all_finite": all(r["all_finite"] for r in rows),
    }
    write_report(args.out_json, report)


if __name__ == "__main__":
    main()
