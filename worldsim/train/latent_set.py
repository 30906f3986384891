"""The dynamics model's training set: every frame of an episode store, encoded once by
the frozen tokenizer, with what the loss needs beside it (the scene state of every row,
actions, rewards, terminations, which tokens show foreground, episode ends).

Saved as one safetensors file, so that a training start neither re-encodes the store
(minutes on a CPU) nor needs zarr or MuJoCo (a GPU machine with PyTorch alone can
train from it). Latents are stored as uint8 over the tokenizer's tanh range [-1, 1]:
steps of 2/255, far below the model's own error, at a quarter of float32's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from worldsim.checkpoint import file_sha256, load_tensors, save_tensors
from worldsim.datasets.index import split_episodes, window_starts
from worldsim.scene import SceneLayout

FORMAT = "worldsim.latent_set.v2"
"""v2 added the scene state of every row; v1 files are encoded again."""


def quantize(z: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((z + 1) * 127.5), 0, 255).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) / 127.5 - 1


@torch.no_grad()
def encode_frames(tok, store, batch: int = 512, progress: bool = True) -> np.ndarray:
    """Latents (rows, N, C) float32 of every committed row of the store."""
    n, out = store.num_rows, []
    for i in tqdm(range(0, n, batch), desc="encoding frames", unit="batch", disable=not progress):
        out.append(tok.encode(torch.from_numpy(store.read("frame", i, min(i + batch, n)))).numpy())
    return np.concatenate(out)


def foreground_tokens(seg: np.ndarray, patch: int) -> np.ndarray:
    """(rows, H, W) classes -> (rows, N) bool: the token's patch holds foreground."""
    r, h, w = seg.shape
    fg = (seg > 0).reshape(r, h // patch, patch, w // patch, patch).any(axis=(2, 4))
    return fg.reshape(r, -1)


@dataclass
class LatentSet:
    latents: np.ndarray  # (rows, N, C) float32 in [-1, 1]
    state: np.ndarray  # (rows, dim) float32 scene values (meta["scene"] is their layout)
    foreground: np.ndarray  # (rows, N) bool
    action: np.ndarray  # (rows, A) float32
    reward: np.ndarray  # (rows,) float32
    terminated: np.ndarray  # (rows,) bool
    episode_ends: np.ndarray  # (episodes,) int64
    meta: dict  # task, tokenizer sha256, source store and its row count

    @classmethod
    def encode(
        cls, tok, store, tokenizer_path: str | Path, layout: SceneLayout, progress: bool = True
    ) -> LatentSet:
        """Encode every committed row of `store` with the frozen tokenizer `tok`; read the
        scene state of `layout` beside it."""
        n = store.num_rows
        latents = dequantize(quantize(encode_frames(tok, store, progress=progress)))
        foreground = foreground_tokens(store.read("seg", 0, n), tok.cfg.patch)
        return cls._with_rows(store, tokenizer_path, layout, latents, foreground)

    @classmethod
    def states_only(
        cls, store, tokenizer_path: str | Path, layout: SceneLayout, latent_dim: int
    ) -> LatentSet:
        """The set without frames: every row's scene state, action, reward and termination,
        and empty latents (rows, 0, latent_dim). What the state transition trains on alone
        (`transition.only`): encoding Pusher's 242k frames took ~9 min on one thread, for
        latents that training never reads. Never saved as a cache (meta frames=False)."""
        n = store.num_rows
        empty = np.zeros((n, 0, latent_dim), np.float32)
        found = cls._with_rows(store, tokenizer_path, layout, empty, np.zeros((n, 0), bool))
        found.meta["frames"] = False
        return found

    @classmethod
    def _with_rows(cls, store, tokenizer_path, layout, latents, foreground) -> LatentSet:
        n = store.num_rows
        return cls(
            latents=latents,
            state=layout.read(store, 0, n),
            foreground=foreground,
            action=store.read("action", 0, n).astype(np.float32),
            reward=store.read("reward", 0, n).astype(np.float32),
            terminated=store.read("terminated", 0, n).astype(bool),
            episode_ends=np.asarray(store.episode_ends, np.int64),
            meta={
                "format": FORMAT,
                "task": store.attrs["task"],
                "tokenizer_sha256": file_sha256(tokenizer_path),
                "store": str(store.path),
                "store_digest": store.content_digest(),
                "rows": int(n),
                "scene": layout.to_dict(),
            },
        )

    def save(self, path: str | Path) -> None:
        if self.meta.get("frames") is False:
            raise ValueError("a states-only latent set holds no latents: it is not a cache")
        tensors = {
            "latents": torch.from_numpy(quantize(self.latents)),
            "state": torch.from_numpy(self.state),
            "foreground": torch.from_numpy(self.foreground.astype(np.uint8)),
            "action": torch.from_numpy(self.action),
            "reward": torch.from_numpy(self.reward),
            "terminated": torch.from_numpy(self.terminated.astype(np.uint8)),
            "episode_ends": torch.from_numpy(self.episode_ends),
        }
        save_tensors(path, tensors, self.meta)

    @classmethod
    def load(cls, path: str | Path) -> LatentSet:
        t, meta = load_tensors(path)
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a latent set of this version ({FORMAT}); its format: "
                f"{meta.get('format')!r}. Delete it and it is encoded again."
            )
        return cls(
            latents=dequantize(t["latents"].numpy()),
            state=t["state"].numpy(),
            foreground=t["foreground"].numpy().astype(bool),
            action=t["action"].numpy(),
            reward=t["reward"].numpy(),
            terminated=t["terminated"].numpy().astype(bool),
            episode_ends=t["episode_ends"].numpy(),
            meta=meta,
        )

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    def split(self, val_every: int) -> tuple[list[int], list[int]]:
        return split_episodes(self.num_episodes, val_every)

    def window_starts(self, length: int, episodes: list[int] | None = None) -> np.ndarray:
        return window_starts(self.episode_ends, length, episodes)

    def check_source(
        self,
        task: str,
        tokenizer_sha256: str,
        rows: int | None,
        scene: list[dict],
        store_digest: str | None = None,
    ) -> list[str]:
        """Why this set does not match the task, tokenizer, store (row count and, when given,
        content digest: `EpisodeStore.content_digest`) and scene layout (empty: it does)."""
        why = []
        if self.meta["scene"] != scene:
            why.append("holds another scene state than the task's `scene:`")
        if self.meta["task"] != task:
            why.append(f"task {self.meta['task']!r}, not {task!r}")
        if self.meta["tokenizer_sha256"] != tokenizer_sha256:
            why.append("encoded by another tokenizer")
        if rows is not None and self.meta["rows"] != rows:
            why.append(f"{self.meta['rows']} rows, the store now has {rows}")
        elif store_digest is not None and self.meta.get("store_digest") != store_digest:
            why.append("encoded from other episodes than the store now holds (content digest)")
        return why
