"""Drift detection: flag dreamed frames whose estimated state is physically impossible.

A world model that drifts shows it in the state the reasoner reads: a joint past
its range, a jump from one frame to the next faster than the physics ever moves,
a target that is not where it was. The limits are fitted on what the reasoner
reads off real frames (the range of every state element, widened by a margin,
and the largest per-frame change, times a factor), so its own estimation noise
is inside them, and they ship beside the reasoner.

A dream can also dissolve into blotches that the reasoner reads as a plausible,
slowly changing state. Such frames are off the tokenizer's manifold: decoding and
encoding them again moves their latents ~10x further than any real frame's
(`roundtrip_error`), so that is checked too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from worldsim.checkpoint import save_json
from worldsim.scene import SceneLayout, wrap_angle


def wrap_angles(layout: SceneLayout, values: np.ndarray) -> np.ndarray:
    """A copy with every angle quantity wrapped into [-pi, pi)."""
    out = np.array(values, dtype=np.float64)
    for q in layout.quantities:
        if q.angle:
            sl = layout.slices[q.name]
            out[..., sl] = wrap_angle(out[..., sl])
    return out


@dataclass
class DriftLimits:
    low: list[float]
    high: list[float]
    max_step: list[float]
    """Largest plausible |change| per frame of each state element (angles wrapped)."""
    max_roundtrip: float | None = None
    """Largest plausible tokenizer round-trip error of a frame (None: not checked)."""

    @classmethod
    def fit(
        cls,
        layout: SceneLayout,
        values: np.ndarray,
        episode_ends: np.ndarray,
        margin: float = 0.1,
        step_factor: float = 1.5,
        quantile: float = 0.999,
    ) -> DriftLimits:
        """values (rows, dim) read off a store's frames. Range and step limits come from
        the `quantile` of the readings (the reasoner's rare misreadings of real frames
        would otherwise set them), widened by `margin` of the range and `step_factor`.
        Steps across episode ends and from an episode's first reading are not counted.
        Angles are wrapped first, so an unlimited joint has no range."""
        values = wrap_angles(layout, values)
        lo, hi = np.quantile(values, [1 - quantile, quantile], axis=0)
        pad = margin * (hi - lo) + 1e-3
        step = wrap_angles(layout, np.diff(values, axis=0))
        starts = np.concatenate([[0], np.asarray(episode_ends[:-1])])
        inside = np.ones(len(step), bool)
        inside[starts[1:] - 1] = False  # an episode's last row -> the next one's first
        inside[starts[starts < len(step)]] = False  # the first reading has no previous one
        max_step = np.quantile(np.abs(step[inside]), quantile, axis=0) * step_factor + 1e-3
        return cls((lo - pad).tolist(), (hi + pad).tolist(), max_step.tolist())

    @staticmethod
    def fit_roundtrip(errors: np.ndarray, factor: float = 2.0, quantile: float = 0.999) -> float:
        """The round-trip limit from real frames' errors (their quantile times a factor)."""
        return float(np.quantile(errors, quantile) * factor)

    def save(self, path: str | Path) -> None:
        save_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> DriftLimits:
        return cls(**json.loads(Path(path).read_text()))


@torch.no_grad()
def roundtrip_error(tok, z: torch.Tensor) -> np.ndarray:
    """(B, N, C) latents -> (B,) mean squared change of encode(decode(z)) against z."""
    return ((tok.encode(tok.decode_uint8(z)) - z) ** 2).mean(dim=(1, 2)).cpu().numpy()


def drift_flags(
    layout: SceneLayout,
    limits: DriftLimits,
    state: np.ndarray,
    prev: np.ndarray | None,
    roundtrip: np.ndarray | None = None,
) -> tuple[np.ndarray, list[list[str]]]:
    """state, prev (B, dim), roundtrip (B,) or None -> flags (B,) and, per world, what broke
    a limit (quantity names, or 'unreadable frame')."""
    low, high, max_step = (np.asarray(v) for v in (limits.low, limits.high, limits.max_step))
    wrapped = wrap_angles(layout, state)
    bad = (wrapped < low) | (wrapped > high)
    if prev is not None:
        bad |= np.abs(wrap_angles(layout, state - prev)) > max_step
    reasons = [
        [q.name for q in layout.quantities if bad[b, layout.slices[q.name]].any()]
        for b in range(len(state))
    ]
    flags = bad.any(axis=1)
    if roundtrip is not None and limits.max_roundtrip is not None:
        unreadable = np.asarray(roundtrip) > limits.max_roundtrip
        for b in np.flatnonzero(unreadable):
            reasons[b].append("unreadable frame")
        flags |= unreadable
    return flags, reasons


class DriftGuard:
    """Checks each new estimate of B dreams against the limits and the estimate before."""

    def __init__(self, layout: SceneLayout, limits: DriftLimits) -> None:
        self.layout, self.limits = layout, limits
        self.prev: np.ndarray | None = None
        self.checked = self.fired = 0

    def check(
        self, state: np.ndarray, roundtrip: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        flags, reasons = drift_flags(self.layout, self.limits, state, self.prev, roundtrip)
        self.prev = state
        self.checked += len(flags)
        self.fired += int(flags.sum())
        return flags, reasons

    def reset(self) -> None:
        """Forget the previous estimate (after the dream is re-grounded)."""
        self.prev = None
