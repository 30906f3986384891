"""Intra-op threads under load: the engine's step on one thread against all usable cores,
on an idle machine and beside busy processes (another job sharing the cores).

Why: torch's default (one OpenMP thread per core) lets a thread that waits at the end of
each op spin for a core another process holds; with a step of hundreds of small ops that
wait is paid hundreds of times per frame. Each case times the two thread counts in
alternating blocks in one engine (the machine's speed drifts), so the ratio is what to read.
Weights are random (speed does not depend on their values).

    python bench/threads.py [--batches 1,64] [--busy 0,1] [--frames 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import torch
from engine import make_engine
from report import machine, write_report

from worldsim.threads import usable_cores
from worldsim.timing import alternating_times, relative_cost


def busy(n: int) -> list[subprocess.Popen]:
    """n processes that each keep one core busy (pure Python, no threads)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@torch.no_grad()
def case(batch: int, n_busy: int, frames: int, many: int) -> dict:
    eng = make_engine(batch, 1, None)
    ctx, acts = np.zeros((batch, 4, 64, 64, 3), np.uint8), np.zeros((batch, 3, 2), np.float32)
    eng.reset(ctx, acts, states=np.zeros((batch, 4, eng.layout.dim), np.float32))
    act = np.zeros((batch, 2), np.float32)

    def step_on(threads: int):
        torch.set_num_threads(threads)
        eng.step(act)

    for _ in range(3):
        step_on(1), step_on(many)
    procs = busy(n_busy)
    try:
        block = 10 if batch <= 8 else 2
        ta, tb = alternating_times(
            lambda: step_on(1), lambda: step_on(many), max(3, frames // block), block
        )
    finally:
        for p in procs:
            p.kill()
            p.wait()
    cost = relative_cost(ta, tb)
    row = {
        "batch": batch,
        "busy_processes": n_busy,
        "steps_each": cost["calls_each"],
        "ms_per_step_p50_1_thread": cost["ms_p50_a"],
        f"ms_per_step_p50_{many}_threads": cost["ms_p50_b"],
        f"time_{many}_threads_vs_1": cost["b_over_a"] + 1,
    }
    print(
        f"B={batch:<4} busy={n_busy}  1 thread {cost['ms_p50_a']:8.1f} ms   {many} threads "
        f"{cost['ms_p50_b']:8.1f} ms   ratio {cost['b_over_a'] + 1:.2f}"
    )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,64", help="comma-separated world counts")
    p.add_argument("--busy", default="0,1", help="comma-separated counts of busy processes")
    p.add_argument("--frames", type=int, default=60, help="timed steps per thread count")
    p.add_argument("--out-json", default="bench/results/threads.json", help="JSON report path")
    args = p.parse_args()
    many = usable_cores()
    rows = [
        case(int(b), int(n), args.frames, many)
        for b in args.batches.split(",")
        for n in args.busy.split(",")
    ]
    report = {"bench": "threads", "machine": machine(), "cores": many, "rows": rows}
    report["omp_num_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    write_report(args.out_json, report)


if __name__ == "__main__":
    main()
