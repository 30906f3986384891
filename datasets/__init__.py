"""Grounding datasets: the zarr episode store, collection policies, generation.

The store's names load on first use, so that `worldsim.datasets.index` (episode
bookkeeping) imports without zarr, e.g. on a training machine that has only PyTorch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ROW_ALIGNMENT", "Episode", "EpisodeStore", "StoreError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from worldsim.datasets import store

        return getattr(store, name)
    raise AttributeError(f"module 'worldsim.datasets' has no attribute {name!r}")
