"""Comparing the speed of two things on a shared machine.

This VM's speed drifts by tens of percent within a minute (other tenants), so
two timings taken one after the other differ by more than the effects being
measured. Alternating short blocks of the two lets the drift hit both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def alternating_times(
    a: Callable[[], object], b: Callable[[], object], blocks: int = 20, block: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per call of a and b, (blocks, block) each, the two run in alternating blocks
    (a first)."""
    ta, tb = np.zeros((blocks, block)), np.zeros((blocks, block))
    for i in range(blocks):
        for fn, out in ((a, ta), (b, tb)):
            for j in range(block):
                t = time.perf_counter()
                fn()
                out[i, j] = time.perf_counter() - t
    return ta, tb


def relative_cost(ta: np.ndarray, tb: np.ndarray) -> dict:
    """b against a from alternating_times: medians (ms) and b / a - 1, over all calls and as
    the median of the blocks' own ratios."""
    ma, mb = float(np.median(ta)), float(np.median(tb))
    blocks = np.median(tb, axis=1) / np.median(ta, axis=1) - 1
    return {
        "ms_p50_a": ma * 1000,
        "ms_p50_b": mb * 1000,
        "b_over_a": mb / ma - 1,
        "b_over_a_median_of_blocks": float(np.median(blocks)),
        "calls_each": int(ta.size),
    }
