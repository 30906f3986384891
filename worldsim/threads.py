"""How many intra-op threads torch uses where worldsim steps the world model.

torch starts one OpenMP thread per core. When another process holds a core, a thread of
each op's team waits for it, and a step of hundreds of small ops pays that wait hundreds
of times. Measured on a 2-core machine (bench/threads.py, bench/results/threads.json, the
engine's step with decoding, one busy process beside it): B=1 took 16.3 ms on 1 thread
and 32.5 ms on 2 (idle: 16.4 and 14.4); B=64 took 389 ms on 1 and 661 ms on 2 (idle:
329 and 206). So where an env, `worldsim play` or `worldsim dream` starts its engine, the
default counts the cores that other processes leave idle then and uses that many (at
least one): all of them on an idle machine, fewer beside other work. FrameEngine itself
never changes the count (training's evaluation engines leave a run's threads alone).

Override: `EngineConfig.threads=N` (`engine.threads=N` on the command line,
`gym.make(..., threads=N)`), or set OMP_NUM_THREADS or call
torch.set_num_threads yourself before: a count chosen by the user is never changed.
"""

from __future__ import annotations

import os
import time

import torch

PROBE_S = 0.05
"""How long the probe watches the cores (seconds)."""


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _busy_jiffies(cpus: set[int]) -> int | None:
    """Busy time (user + nice + system + irq + softirq + steal) of `cpus`, from /proc/stat."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in values]
            busy += v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy


def busy_cores_of_others(window_s: float = PROBE_S) -> float | None:
    """Cores of this process's cpuset that other processes kept busy over `window_s`
    (None where /proc/stat is not there)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    before, own0, t0 = _busy_jiffies(cpus), os.times(), time.perf_counter()
    if before is None or not cpus:
        return None
    time.sleep(window_s)
    after, own1, t1 = _busy_jiffies(cpus), os.times(), time.perf_counter()
    own = (own1.user + own1.system) - (own0.user + own0.system)
    return max(0.0, ((after - before) / tick - own) / (t1 - t0))


_TORCH_DEFAULT = torch.get_num_threads()  # as worldsim found it (torch: one per core)
_ours: int | None = None  # the count `apply` last set by default


def user_chose_threads() -> bool:
    """OMP_NUM_THREADS is set, or torch runs a count that is neither its default nor the
    one worldsim chose: someone chose it."""
    if os.environ.get("OMP_NUM_THREADS"):
        return True
    return torch.get_num_threads() not in (_TORCH_DEFAULT, usable_cores(), _ours)


PROBE_REUSE_S = 10.0
"""A probe this recent answers again (engines made in a row do not each wait PROBE_S)."""
_probe: tuple[float, float | None] | None = None  # (when, busy cores of others)


def default_threads() -> int:
    """Usable cores that other processes leave idle now, at least 1."""
    global _probe
    now = time.monotonic()
    if _probe is None or now - _probe[0] > PROBE_REUSE_S:
        _probe = (now, busy_cores_of_others())
    cores, busy = usable_cores(), _probe[1]
    return cores if busy is None else max(1, min(cores, cores - round(busy)))


def apply(threads: int) -> int:
    """Set torch's intra-op threads: `threads` if > 0, else the default unless the user
    chose a count. Returns the count in use."""
    global _ours
    if threads > 0:
        torch.set_num_threads(threads)
    elif not user_chose_threads():
        _ours = default_threads()
        torch.set_num_threads(_ours)
    return torch.get_num_threads()
