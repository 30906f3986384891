"""How well the dream ranks policies the way MuJoCo does, and how well dream training transfers.

MMRV follows SIMPLER (Li et al., 2024): for each policy, the largest real-score gap to
another policy that the simulator orders the other way round, averaged over policies.
SIMPLER's scores are success rates in [0, 1]; returns are first rescaled to [0, 1] by the
ladder's real (MuJoCo) range so that the figure is comparable across tasks.
"""

from __future__ import annotations

import numpy as np


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            f"need two 1-D score lists of the same length >= 2, got {a.shape}, {b.shape}"
        )
    return a, b


def pearson(a, b) -> float:
    a, b = _pair(a, b)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def ranks(x) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as Spearman's rho needs)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    a, b = _pair(a, b)
    return pearson(ranks(a), ranks(b))


def mmrv(sim, real, normalise: bool = True, floor: float | None = None) -> float:
    """Mean maximum rank violation of `sim` scores against `real` ones (lower is better).
    Regrets are fractions of `real`'s range, or with `floor` of the best real score's
    margin over `floor` (e.g. the better of random and zero action: a ladder that holds
    random spreads the range so wide that swaps among useful policies look small)."""
    sim, real = _pair(sim, real)
    if normalise:
        low = real.min() if floor is None else floor
        span = real.max() - low
        real = (real - low) / span if span > 0 else np.zeros_like(real)
    gap = np.abs(real[:, None] - real[None, :])
    violated = (sim[:, None] < sim[None, :]) != (real[:, None] < real[None, :])
    return float((gap * violated).max(axis=1).mean())


def transfer_ratio(dream_in_mujoco: float, mujoco_trained: float, baseline: float) -> float:
    """(R_dream-trained in MuJoCo - R_baseline) / (R_MuJoCo-trained - R_baseline).

    With the random policy's return as the baseline, doing nothing can already score high
    (Reacher-v5: zero action -11.9, random -43, MuJoCo-trained PPO ~-8.5 give the zero
    action 0.90); so reports also normalise by the better of random and zero action."""
    if mujoco_trained == baseline:
        raise ValueError("the MuJoCo-trained policy scores the same as the baseline: undefined")
    return (dream_in_mujoco - baseline) / (mujoco_trained - baseline)
