"""Grounding datasets: the zarr episode store, collection policies, generation."""

from worldsim.datasets.store import ROW_ALIGNMENT, Episode, EpisodeStore, StoreError

__all__ = ["ROW_ALIGNMENT", "Episode", "EpisodeStore", "StoreError"]
