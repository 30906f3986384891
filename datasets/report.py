"""`data inspect` and `data validate`: what is in a store, and whether it is sound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from worldsim.datasets.store import EpisodeStore, StoreError
from worldsim.mujoco_sim import success_mask


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def episode_success(store: EpisodeStore, ep) -> bool:
    task = OmegaConf.create(store.attrs["generator"]["task"])
    state = {k: ep.data[k] for k in store.attrs["state_layout"] if k in ep.data}
    return bool(success_mask(task, state, np.arange(len(ep))).any())


REQUIRED_ATTRS = (
    "task",
    "fps",
    "frame_shape",
    "action_space",
    "state_layout",
    "row_alignment",
    "segmentation_classes",
    "policy_kinds",
    "generator",
)
"""Attributes every store `worldsim data generate` writes holds."""


def require_attrs(store: EpisodeStore) -> dict[str, Any]:
    """The store's attributes; StoreError naming the first of REQUIRED_ATTRS it lacks."""
    for key in REQUIRED_ATTRS:
        if key not in store.attrs:
            raise StoreError(f"{store.path}: attribute {key!r} is missing")
    return store.attrs


def inspect(path: str | Path, max_pixel_episodes: int = 200) -> dict[str, Any]:
    """Summary statistics of a store (read-only)."""
    store = EpisodeStore.open(path)
    a = require_attrs(store)
    kinds = a["policy_kinds"]
    classes = a["segmentation_classes"]
    returns, lengths, success, policy = [], [], [], []
    state_keys = list(a["state_layout"])
    for ep in store.episodes(keys=["reward", *state_keys]):
        returns.append(float(ep.data["reward"].sum()))
        lengths.append(ep.num_transitions)
        success.append(episode_success(store, ep))
        policy.append(kinds[ep.policy])
    returns_a, success_a, policy_a = np.array(returns), np.array(success), np.array(policy)

    # Pixel statistics on a deterministic subset of episodes.
    n = store.num_episodes
    pick = np.linspace(0, n - 1, min(n, max_pixel_episodes)).astype(int) if n else []
    step_change, ever_change, area = [], [], np.zeros(len(classes))
    frames_seen = 0
    for i in sorted(set(pick)):
        ep = store.episode(int(i), keys=["frame", "seg"])
        f = ep.data["frame"].astype(np.int16)
        changed = np.any(f[1:] != f[:-1], axis=-1)  # (T, H, W)
        if len(changed):
            step_change.append(changed.mean())
            ever_change.append(changed.any(axis=0).mean())
        area += np.bincount(ep.data["seg"].ravel(), minlength=len(classes))[: len(classes)]
        frames_seen += len(f)
    h, w, _ = a["frame_shape"]
    area_px = area / max(frames_seen, 1)
    disk = _dir_bytes(store.path)

    def stats(x: np.ndarray) -> dict[str, float]:
        if not len(x):
            return {}
        return {
            "mean": float(x.mean()),
            "std": float(x.std()),
            "min": float(x.min()),
            "max": float(x.max()),
        }

    return {
        "path": str(store.path),
        "task": a["task"],
        "episodes": n,
        "frames": store.num_rows,
        "transitions": int(sum(lengths)),
        "episode_length": stats(np.array(lengths, float)),
        "return": stats(returns_a),
        "success_rate": float(success_a.mean()) if n else 0.0,
        "by_policy": {
            k: {
                "episodes": int((policy_a == k).sum()),
                "success_rate": float(success_a[policy_a == k].mean()),
                "return_mean": float(returns_a[policy_a == k].mean()),
            }
            for k in kinds
            if (policy_a == k).any()
        },
        "pixels": {
            "changed_per_step": float(np.mean(step_change)) if step_change else 0.0,
            "changed_within_episode": float(np.mean(ever_change)) if ever_change else 0.0,
            "area_px": dict(zip(classes, area_px.tolist(), strict=True)),
            "area_fraction": dict(zip(classes, (area_px / (h * w)).tolist(), strict=True)),
            "episodes_sampled": len(set(pick)),
        },
        "bytes_on_disk": disk,
        "bytes_per_frame": disk / max(store.num_rows, 1),
        "uncommitted_rows": int(store.data["frame"].shape[0] - store.num_rows),
    }


def format_inspect(r: dict[str, Any]) -> str:
    lines = [
        f"store          {r['path']}  (task {r['task']})",
        f"episodes       {r['episodes']}   frames {r['frames']}   transitions {r['transitions']}",
        f"episode length {_fmt(r['episode_length'])}",
        f"return         {_fmt(r['return'])}",
        f"success rate   {r['success_rate']:.1%}",
    ]
    for k, v in r["by_policy"].items():
        lines.append(
            f"  {k:<12} {v['episodes']:>5} episodes  success {v['success_rate']:.1%}  "
            f"return {v['return_mean']:.2f}"
        )
    p = r["pixels"]
    lines += [
        f"pixels changed per step {p['changed_per_step']:.2%}, "
        f"within an episode {p['changed_within_episode']:.2%} "
        f"({p['episodes_sampled']} episodes sampled)",
        "pixel area per part (mean per frame):",
    ]
    for c, px in p["area_px"].items():
        lines.append(f"  {c:<12} {px:8.1f} px  {p['area_fraction'][c]:.2%}")
    lines.append(
        f"on disk        {r['bytes_on_disk'] / 2**20:.2f} MiB, "
        f"{r['bytes_per_frame']:.0f} bytes/frame"
    )
    if r["uncommitted_rows"]:
        lines.append(
            f"note           {r['uncommitted_rows']} uncommitted rows of an interrupted episode "
            "(ignored; `data generate ... resume=true` removes them)"
        )
    return "\n".join(lines)


def _fmt(s: dict[str, float]) -> str:
    if not s:
        return "-"
    return f"mean {s['mean']:.2f}  std {s['std']:.2f}  min {s['min']:.2f}  max {s['max']:.2f}"


def validate(path: str | Path) -> list[str]:
    """Check every invariant of the store; raises StoreError on the first problem.

    Returns notes that are not errors (e.g. uncommitted rows left by a crash).
    """
    store = EpisodeStore.open(path)  # structure, dtypes, lengths, chunks present
    a = require_attrs(store)
    store.check_chunk_positions()
    low = np.asarray(a["action_space"]["low"], np.float32)
    high = np.asarray(a["action_space"]["high"], np.float32)
    n_classes = len(a["segmentation_classes"])
    seeds = store.read_meta("episode_seed", 0, store.num_episodes)
    if len(np.unique(seeds)) != len(seeds):
        raise StoreError(f"{store.path}: meta/episode_seed repeats a seed (duplicate episode)")
    kinds = store.read_meta("episode_policy", 0, store.num_episodes)
    if len(kinds) and (kinds.min() < 0 or kinds.max() >= len(a["policy_kinds"])):
        raise StoreError(f"{store.path}: meta/episode_policy holds an unknown policy index")
    for ep in store.episodes():
        where = f"{store.path}: episode {ep.index}"
        d, t = ep.data, ep.num_transitions
        if t < 1:
            raise StoreError(f"{where}: has no transition (a single row)")
        if d["seg"].max() >= n_classes:
            raise StoreError(f"{where}: data/seg holds class {d['seg'].max()} >= {n_classes}")
        for key in ["action", "reward", *a["state_layout"]]:
            if not np.isfinite(d[key]).all():
                raise StoreError(f"{where}: data/{key} holds NaN or inf")
        act = d["action"][:t]
        if (act < low - 1e-6).any() or (act > high + 1e-6).any():
            raise StoreError(f"{where}: data/action leaves the action space [{low}, {high}]")
        last = (d["action"][t], d["reward"][t], d["terminated"][t], d["truncated"][t])
        if np.any(last[0] != 0) or last[1] != 0 or last[2] or last[3]:
            raise StoreError(f"{where}: final row is not the padding row (see row_alignment)")
        ends = d["terminated"][:t] | d["truncated"][:t]
        if not ends[-1] or ends[:-1].any():
            raise StoreError(
                f"{where}: terminated/truncated must be set on the last transition only"
            )
    notes = []
    extra = store.data["frame"].shape[0] - store.num_rows
    if extra:
        notes.append(f"{extra} uncommitted rows past the last episode (ignored by readers)")
    return notes
