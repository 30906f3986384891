"""`data preview`: a grid video of episodes, to look at what the model will learn from."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from worldsim.datasets.store import EpisodeStore

SEG_COLOURS = np.array([[0, 0, 0], [70, 130, 255], [255, 200, 0], [255, 40, 40]], np.uint8)


def grid_frames(store: EpisodeStore, episodes: int, scale: int, max_frames: int, seg: bool):
    """Yield (H, W, 3) uint8 frames: one tile per episode (with its segmentation beside it)."""
    n = min(episodes, store.num_episodes)
    if n < 1:
        raise ValueError(f"{store.path} has no committed episode to preview")
    eps = [store.episode(i, keys=["frame", "seg"]) for i in range(n)]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    length = min(max(len(e) for e in eps), max_frames)
    for t in range(length):
        tiles = []
        for e in eps:
            i = min(t, len(e) - 1)
            tile = e.data["frame"][i]
            if seg:
                tile = np.concatenate([tile, SEG_COLOURS[e.data["seg"][i] % 4]], axis=1)
            tiles.append(tile)
        tiles += [np.zeros_like(tiles[0])] * (rows * cols - n)
        grid = np.concatenate(
            [np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], 0
        )
        yield np.repeat(np.repeat(grid, scale, 0), scale, 1)


def preview(
    path: str | Path,
    out: str | Path,
    episodes: int = 4,
    scale: int = 4,
    max_frames: int = 200,
    seg: bool = True,
) -> Path:
    store = EpisodeStore.open(path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fps = store.attrs.get("fps") or 25
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    kw = {"macro_block_size": 1} if out.suffix == ".mp4" else {}
    with imageio.get_writer(tmp, fps=fps, **kw) as w:
        for frame in grid_frames(store, episodes, scale, max_frames, seg):
            w.append_data(frame)
    tmp.replace(out)
    return out
