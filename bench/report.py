"""What every benchmark writes beside its figures: the machine it ran on, as JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def machine() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
    }
    try:
        import torch

        info |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    except ImportError:
        pass
    return info


def write_report(path: str | Path, report: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def steps_per_s(env, steps: int) -> float:
    """Steps/s of all a vector env's worlds together over `steps` steps of uniform random
    actions, after a reset and three warm-up steps."""
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    low, high = env.single_action_space.low, env.single_action_space.high
    acts = rng.uniform(low, high, (steps + 3, env.num_envs, low.shape[0])).astype(np.float32)
    for a in acts[:3]:  # warm-up
        env.step(a)
    t = time.perf_counter()
    for a in acts[3:]:
        env.step(a)
    return steps * env.num_envs / (time.perf_counter() - t)
