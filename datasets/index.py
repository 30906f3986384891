"""Episode bookkeeping from `episode_ends` alone: the held-out split and window starts.

Kept apart from the zarr store so that anything holding only the ends (an encoded
latent set on a machine without zarr) splits and windows exactly as the store does.
"""

from __future__ import annotations

import numpy as np


def split_episodes(num_episodes: int, val_every: int = 20) -> tuple[list[int], list[int]]:
    """Train and held-out episode indices: every `val_every`-th episode is held out.

    Interleaved (not the last N) so the split of existing episodes never changes
    when a store is extended with resume.
    """
    if val_every < 2:
        raise ValueError(f"val_every must be >= 2, got {val_every}")
    ids = range(num_episodes)
    return (
        [i for i in ids if i % val_every != val_every - 1],
        [i for i in ids if i % val_every == val_every - 1],
    )


def window_starts(
    episode_ends: np.ndarray, length: int, episodes: list[int] | None = None
) -> np.ndarray:
    """Global row indices where a window of `length` rows fits inside one episode."""
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    ends = np.asarray(episode_ends)
    starts = np.concatenate([[0], ends[:-1]])
    chosen = range(len(ends)) if episodes is None else episodes
    parts = [np.arange(starts[e], ends[e] - length + 1) for e in chosen]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
