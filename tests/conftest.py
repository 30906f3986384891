"""Shared fixtures: synthetic episode stores, tiny generated datasets, array comparison."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import zarr

REPO = Path(__file__).resolve().parents[1]

# Synthetic stores: small frames so the store tests never touch MuJoCo.
FRAME_SHAPE = (8, 8, 3)
ACTION_DIM = 2
STATE_LAYOUT = {"qpos": [3], "qvel": [3], "tip": [3]}
SYNTHETIC_ATTRS = {
    "task": "synthetic",
    "env_id": "none",
    "fps": 10.0,
    "segmentation_classes": ["background", "robot", "object", "goal"],
    "policy_kinds": ["random", "noise", "expert"],
    "generator": {"note": "written by tests/conftest.py"},
}

# Tiny generated reacher datasets (see `reacher_store`).
TINY_STEPS = 6
TINY_EPISODES = 4


def synthetic_rows(rng: np.random.Generator, n: int, smooth: bool = False) -> dict[str, np.ndarray]:
    """`n` rows of one valid episode (n-1 transitions, truncated, padding last row).

    Frames are random noise (incompressible), or with `smooth` flat images that compress.
    """
    assert n >= 2
    action = rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32)
    action[-1] = 0
    reward = rng.standard_normal(n).astype(np.float32)
    reward[-1] = 0
    truncated = np.zeros(n, bool)
    truncated[-2] = True
    if smooth:
        frame = np.broadcast_to(
            rng.integers(0, 256, (n, 1, 1, 1), dtype=np.uint8), (n, *FRAME_SHAPE)
        ).copy()
    else:
        frame = rng.integers(0, 256, (n, *FRAME_SHAPE), dtype=np.uint8)
    rows = {
        "frame": frame,
        "seg": rng.integers(0, 4, (n, *FRAME_SHAPE[:2]), dtype=np.uint8),
        "action": action,
        "reward": reward,
        "terminated": np.zeros(n, bool),
        "truncated": truncated,
    }
    for key, shape in STATE_LAYOUT.items():
        rows[key] = rng.standard_normal((n, *shape)).astype(np.float32)
    return rows


@pytest.fixture
def make_store() -> Callable[..., tuple]:
    """Create a synthetic store with episodes of the given lengths.

    Returns (EpisodeStore, list of the rows written per episode).
    """
    from worldsim.datasets.store import EpisodeStore

    def make(
        path: Path,
        lengths: Sequence[int],
        chunk_frames: int = 4,
        seed: int = 0,
        smooth: bool = False,
    ):
        rng = np.random.default_rng(seed)
        store = EpisodeStore.create(
            path,
            frame_shape=FRAME_SHAPE,
            action_low=[-1.0] * ACTION_DIM,
            action_high=[1.0] * ACTION_DIM,
            state_layout=STATE_LAYOUT,
            attrs=SYNTHETIC_ATTRS,
            chunk_frames=chunk_frames,
        )
        written = []
        for i, n in enumerate(lengths):
            rows = synthetic_rows(rng, n, smooth)
            assert store.add_episode(rows, seed=100 + i, policy=i % 3) == i
            written.append(rows)
        return store, written

    return make


def read_all(path: Path) -> dict[str, np.ndarray]:
    """Every array under data/ and meta/, read with plain zarr."""
    root = zarr.open_group(str(path), mode="r")
    out = {}
    for group in ("data", "meta"):
        for name, arr in root[group].arrays():
            out[f"{group}/{name}"] = arr[:]
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), f"{key} differs"


@pytest.fixture(scope="session")
def same_arrays() -> Callable[[Path, Path], None]:
    """Assert two stores hold byte-identical data/ and meta/ arrays."""
    return lambda p, q: assert_same_arrays(read_all(Path(p)), read_all(Path(q)))


def cli(*argv: str) -> int:
    from worldsim.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., int]:
    """`worldsim ...` in this process; returns the exit code."""
    return cli


def tiny_overrides(out: Path, *extra: str) -> list[str]:
    return [
        "task=reacher",
        f"task.max_episode_steps={TINY_STEPS}",
        "workers=0",
        f"out={out}",
        *extra,
    ]


@pytest.fixture(scope="session")
def reacher_store(tmp_path_factory) -> Path:
    """A tiny reacher dataset made by the CLI: TINY_EPISODES episodes, seed 0, workers=0.

    Read-only for tests: copy it before damaging it.
    """
    out = tmp_path_factory.mktemp("reacher") / "reacher.zarr"
    rc = cli("data", "generate", *tiny_overrides(out, f"episodes={TINY_EPISODES}"))
    assert rc == 0
    return out


# Tiny dynamics training from an encoded set alone (no store, no MuJoCo).
def tiny_dynamics_data(rows_per_episode: list[int], grid: int = 4, channels: int = 4):
    """A window-ready data dict with every latent equal to its row number / 100."""
    rows = sum(rows_per_episode)
    latents = (np.arange(rows, dtype=np.float32) / 100)[:, None, None]
    rng = np.random.default_rng(0)
    state = rng.normal(0, 0.1, (rows, 8)).astype(np.float32)
    ends = np.cumsum(rows_per_episode)
    for a, b in zip(ends - np.asarray(rows_per_episode), ends, strict=True):
        state[a:b, 6:] = state[a, 6:]  # the target holds still within an episode
    return {
        "latents": latents * np.ones((1, grid * grid, channels), np.float32),
        "state": state,
        "first": np.isin(np.arange(rows), np.cumsum([0, *rows_per_episode[:-1]])),
        "weights": np.ones((rows, grid * grid), np.float32),
        "action": rng.uniform(-1, 1, (rows, 2)).astype(np.float32),
        "reward": np.zeros(rows, np.float32),
        "terminated": np.zeros(rows, bool),
    }, np.cumsum(rows_per_episode)


def tiny_latent_run(folder: Path) -> list[str]:
    """Write a tiny tokenizer and latent set of 4 episodes into `folder`; the overrides of
    `worldsim train dynamics` that train on them (run_dir, sizes and steps left to add)."""
    from worldsim.checkpoint import file_sha256, save_model
    from worldsim.model.dynamics import DynamicsConfig
    from worldsim.model.tokenizer import build_tokenizer
    from worldsim.train.latent_set import FORMAT, LatentSet

    tok_cfg = {"task": "reacher", "width": 32, "layers": 1, "heads": 2, "latent_dim": 4}
    save_model(folder / "tok.safetensors", build_tokenizer(tok_cfg), "tokenizer", tok_cfg)
    data, ends = tiny_dynamics_data([12, 10, 11, 12], grid=8)
    LatentSet(
        latents=data["latents"],
        state=data["state"],
        foreground=np.zeros(data["weights"].shape, bool),
        action=data["action"],
        reward=data["reward"],
        terminated=data["terminated"],
        episode_ends=ends,
        meta={
            "format": FORMAT,
            "task": "reacher",
            "tokenizer_sha256": file_sha256(folder / "tok.safetensors"),
            "rows": len(data["reward"]),
            "scene": [dict(q) for q in DynamicsConfig().scene],
        },
    ).save(folder / "lat.safetensors")
    return [
        f"data_path={folder / 'none.zarr'}",
        f"latents={folder / 'lat.safetensors'}",
        f"tokenizer={folder / 'tok.safetensors'}",
    ]
