"""Zarr v3 episode store: the one on-disk format for grounding data.

Layout (one group per dataset, readable with plain `zarr.open`):

    data/<key>          arrays concatenated along time, chunked along time only
    meta/episode_ends   int64, cumulative row count after each committed episode
    meta/episode_seed   int64, the reset seed of each episode
    meta/episode_policy int8, index into attrs["policy_kinds"] of the collection policy

Commit protocol: an episode's rows are written to every `data/` array (and its
`meta/` entries other than `episode_ends`) first; `episode_ends` is appended
last. Rows past `episode_ends[-1]` belong to no committed episode: readers ignore
them and `truncate_uncommitted()` removes them. zarr's LocalStore replaces each
chunk file atomically, so a crash never tears a committed row.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from worldsim.datasets.index import split_episodes, window_starts

SCHEMA_VERSION = 1

ROW_ALIGNMENT = (
    "An episode with T transitions has T+1 rows. Row t holds the observation at time t "
    "(frame, seg, state) and the transition taken from it: action[t], then reward[t], "
    "terminated[t], truncated[t] that the step returned. The last row holds the final "
    "observation; its action is 0, reward 0 and flags false, and it starts no transition."
)

FIXED_KEYS = ("frame", "seg", "action", "reward", "terminated", "truncated")
META_ARRAYS = {"episode_ends": np.int64, "episode_seed": np.int64, "episode_policy": np.int8}
"""Per-episode arrays; `episode_ends` is the commit point and is written last."""


class StoreError(ValueError):
    """The store on disk breaks an invariant; the message names the array and episode."""


@dataclass
class Episode:
    """All rows of one committed episode (see ROW_ALIGNMENT)."""

    index: int
    seed: int
    policy: int
    data: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    @property
    def num_transitions(self) -> int:
        return len(self) - 1


def array_specs(
    frame_shape: Sequence[int], action_dim: int, state_layout: Mapping[str, Sequence[int]]
) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Trailing shape and dtype of every `data/` array."""
    h, w, c = frame_shape
    specs: dict[str, tuple[tuple[int, ...], Any]] = {
        "frame": ((h, w, c), np.uint8),
        "seg": ((h, w), np.uint8),
        "action": ((int(action_dim),), np.float32),
        "reward": ((), np.float32),
        "terminated": ((), np.bool_),
        "truncated": ((), np.bool_),
    }
    for key, shape in state_layout.items():
        specs[key] = (tuple(shape), np.float32)
    return specs


CHUNK_CRC = "chunk_crc32c"
"""Array attribute: the stored CRC32C (hex) of each full chunk, in chunk order."""


def chunk_file(store_path: Path, arr: zarr.Array, i: int) -> Path:
    """The file of chunk i (along axis 0) of an array of the store at store_path."""
    key = arr.metadata.chunk_key_encoding.encode_chunk_key((i, *(0,) * (arr.ndim - 1)))
    return store_path / arr.path / key


def chunk_crc(path: Path) -> str:
    """The CRC32C the codec stored at the end of a chunk file (hex)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 4))
        return f.read(4).hex()


ATTRS_DIGEST = "attrs_sha256"
"""The root attribute holding the sha256 of all the others (`EpisodeStore.set_attrs`)."""


def attrs_digest(attrs: Mapping[str, Any]) -> str:
    body = {k: v for k, v in attrs.items() if k != ATTRS_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _compressors() -> tuple[BloscCodec, Crc32cCodec]:
    # CRC32C after Blosc: a chunk Blosc stored uncompressed would otherwise decode
    # even when truncated, returning garbage instead of an error
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()


class EpisodeStore:
    """Append-only store of episodes; see the module docstring for the layout."""

    def __init__(self, root: zarr.Group, path: Path) -> None:
        self.root = root
        self.path = path
        self.data = root["data"]
        self.meta = root["meta"]
        self._attrs = dict(root.attrs)
        self._ends: np.ndarray | None = None

    # -- constructors ---------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        frame_shape: tuple[int, int, int],
        action_low: Sequence[float],
        action_high: Sequence[float],
        state_layout: Mapping[str, list[int]],
        attrs: Mapping[str, Any],
        chunk_frames: int = 256,
    ) -> EpisodeStore:
        """Create an empty store; refuses to overwrite an existing path."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} already exists")
        if set(state_layout) & set(FIXED_KEYS):
            raise ValueError(f"state keys {sorted(state_layout)} clash with {FIXED_KEYS}")
        specs = array_specs(frame_shape, len(action_low), state_layout)
        # Built beside its final path and renamed into place once its attributes are
        # written: a crash part way leaves a hidden folder, never a store without them.
        building = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        root = zarr.open_group(str(building), mode="w-", zarr_format=3)
        data = root.create_group("data")
        for key, (shape, dtype) in specs.items():
            data.create_array(
                key,
                shape=(0, *shape),
                chunks=(chunk_frames, *shape),
                dtype=dtype,
                compressors=_compressors(),
                fill_value=0,
            )
        meta = root.create_group("meta")
        for key, dtype in META_ARRAYS.items():
            meta.create_array(
                key,
                shape=(0,),
                chunks=(4096,),
                dtype=dtype,
                compressors=_compressors(),
                fill_value=0,
            )
        store = cls(root, building)
        store.set_attrs(
            {
                "schema_version": SCHEMA_VERSION,
                "frame_shape": list(frame_shape),
                "state_layout": {k: list(v) for k, v in state_layout.items()},
                "row_alignment": ROW_ALIGNMENT,
                "action_space": {
                    "shape": [len(action_low)],
                    "low": [float(x) for x in action_low],
                    "high": [float(x) for x in action_high],
                },
                **attrs,
            }
        )
        os.rename(building, path)  # fails if path appeared meanwhile: never overwritten
        return cls.open(path, mode="r+")

    def set_attrs(self, values: Mapping[str, Any]) -> None:
        """Update the store's attributes and their digest (`ATTRS_DIGEST`), which `open`
        checks: an attribute changed behind the store's back (a task renamed, a bit flipped
        in zarr.json) is refused instead of read."""
        values = json.loads(json.dumps(dict(values)))  # as they read back from zarr.json
        attrs = {**self._attrs, **values}
        self.root.attrs.update({**values, ATTRS_DIGEST: attrs_digest(attrs)})
        self._attrs = dict(self.root.attrs)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> EpisodeStore:
        """Open an existing store (`mode="r"` to read, `"r+"` to append)."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise FileNotFoundError(f"{path} is not a worldsim episode store (no zarr.json)")
        try:
            group = json.loads((path / "zarr.json").read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{path}: zarr.json is not JSON ({e})") from e
        # zarr ignores keys it does not know and defaults missing ones: a corrupted name
        # would pass it, so the root's own metadata is checked here
        root_meta = {k: v for k, v in group.items() if k != "attributes"}
        if "consolidated_metadata" in root_meta and root_meta["consolidated_metadata"] is None:
            del root_meta["consolidated_metadata"]  # zarr may write it empty
        if root_meta != {"zarr_format": 3, "node_type": "group"}:
            raise StoreError(
                f"{path}: zarr.json holds {root_meta}, expected a zarr v3 group's metadata"
            )
        try:
            root = zarr.open_group(str(path), mode=mode)
            version = root.attrs.get("schema_version")
        except Exception as e:  # zarr.json that is not JSON or not a group's metadata
            raise StoreError(f"{path}: cannot read zarr.json: {type(e).__name__}: {e}") from e
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema_version {version!r}, this worldsim reads {SCHEMA_VERSION}"
            )
        for group in ("data", "meta"):
            if group not in root:
                raise StoreError(f"{path}: missing group {group!r}")
        store = cls(root, path)
        recorded = store.attrs.get(ATTRS_DIGEST)  # stores made before it have none
        if recorded is not None and recorded != attrs_digest(store.attrs):
            raise StoreError(
                f"{path}: the attributes in zarr.json do not match their digest "
                f"({ATTRS_DIGEST}): they were changed outside worldsim or corrupted"
            )
        store.check_lengths()
        return store

    @classmethod
    def open_for_task(cls, path: str | Path, task: str) -> EpisodeStore:
        """Open a store for reading and check it holds `task`'s episodes."""
        store = cls.open(path)
        if store.attrs["task"] != task:
            raise ValueError(f"{path} holds task {store.attrs['task']!r}, not task={task!r}")
        return store

    # -- properties -----------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return self._attrs

    @property
    def keys(self) -> list[str]:
        return [*FIXED_KEYS, *self.attrs["state_layout"]]

    @property
    def episode_ends(self) -> np.ndarray:
        """Committed episode ends (cached; this object is the store's only writer)."""
        if self._ends is None:
            ends = self.read_meta("episode_ends")
            # A commit writes episode_ends' new shape, then its value: a crash between the
            # two leaves a trailing fill value (0). It commits nothing.
            if len(ends) and ends[-1] == 0:
                ends = ends[:-1]
            self._ends = ends
        return self._ends

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def num_rows(self) -> int:
        ends = self.episode_ends
        return int(ends[-1]) if len(ends) else 0

    def split(self, val_every: int = 20) -> tuple[list[int], list[int]]:
        """Train and held-out episode indices (see `split_episodes`)."""
        return split_episodes(self.num_episodes, val_every)

    def episode_bounds(self, i: int) -> tuple[int, int]:
        n = self.num_episodes
        if not -n <= i < n:
            raise IndexError(f"episode {i} out of range: the store has {n} episodes")
        i %= n
        ends = self.episode_ends
        start = int(ends[i - 1]) if i else 0
        return start, int(ends[i])

    # -- integrity ------------------------------------------------------------
    def content_digest(self) -> str:
        """sha256 over the store's attributes and every chunk's stored CRC32C (each chunk
        file's last 4 bytes) with its path, under data/ and meta/: any change to a stored
        episode (another seed, another policy, a rewritten chunk) changes it, and computing
        it reads 4 bytes per chunk, not the frames. Caches made from the store record it."""
        h = hashlib.sha256(json.dumps(self.attrs, sort_keys=True, default=str).encode())
        for group in ("data", "meta"):
            for f in sorted((self.path / group).glob("*/c/**/*")):
                if f.is_file():
                    h.update(f"{f.relative_to(self.path)}\0{chunk_crc(f)}".encode())
        return h.hexdigest()

    def check_lengths(self) -> None:
        """Cheap checks run on every open; raise StoreError naming the array and episode."""
        if self.meta["episode_ends"].dtype != np.int64:
            raise StoreError(
                f"{self.path}: meta/episode_ends has dtype {self.meta['episode_ends'].dtype}, "
                "expected int64"
            )
        ends = self.episode_ends
        if len(ends) and (ends[0] < 1 or np.any(np.diff(ends) < 1)):
            bad = 0 if ends[0] < 1 else int(np.argmax(np.diff(ends) < 1)) + 1
            raise StoreError(
                f"{self.path}: meta/episode_ends is not strictly increasing at episode {bad}"
            )
        n = int(ends[-1]) if len(ends) else 0
        expected = self.expected_arrays()
        for key, (shape, dtype) in expected.items():
            if key not in self.data:
                raise StoreError(f"{self.path}: missing array data/{key}")
            arr = self.data[key]
            if arr.dtype != dtype or tuple(arr.shape[1:]) != shape:
                raise StoreError(
                    f"{self.path}: data/{key} is {arr.dtype}{tuple(arr.shape[1:])}, "
                    f"expected {np.dtype(dtype)}{shape}"
                )
            if arr.shape[0] < n:
                ep = int(np.searchsorted(ends, arr.shape[0], side="right"))
                raise StoreError(
                    f"{self.path}: data/{key} has {arr.shape[0]} rows but episode_ends commits "
                    f"{n}; episode {ep} onwards is missing from data/{key}"
                )
            self._check_chunks_present(key, n, ends)
        for key in META_ARRAYS:
            if key not in self.meta:
                raise StoreError(f"{self.path}: missing array meta/{key}")
            if self.meta[key].shape[0] < len(ends):
                raise StoreError(
                    f"{self.path}: meta/{key} has {self.meta[key].shape[0]} entries for "
                    f"{len(ends)} committed episodes"
                )
            self._check_chunks_present(key, len(ends), ends)

    def expected_arrays(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        a = self.attrs
        return array_specs(a["frame_shape"], a["action_space"]["shape"][0], a["state_layout"])

    def _check_chunks_present(self, key: str, n: int, ends: np.ndarray) -> None:
        """zarr fills a missing chunk with zeros silently; we refuse instead.

        Writers store every chunk, even all-fill-value ones (write_empty_chunks), so a
        missing chunk file under committed rows always means damage.
        """
        group = "meta" if key in META_ARRAYS and key not in self.data else "data"
        arr = self.root[group][key]
        per = arr.chunks[0]
        for i in range(-(-n // per)):
            if not chunk_file(self.path, arr, i).is_file():
                ep = int(np.searchsorted(ends, i * per, side="right"))
                raise StoreError(
                    f"{self.path}: {group}/{key} chunk {i} (entries {i * per}-"
                    f"{(i + 1) * per - 1}) is missing or not a file; episode {ep} cannot be read"
                )

    def check_chunk_positions(self) -> None:
        """Every recorded full chunk still holds what was written at its position (a chunk
        file swapped with or copied over another fails here; its own CRC still passes)."""
        for group, keys in (("data", self.keys), ("meta", list(META_ARRAYS))):
            for key in keys:
                arr = self.root[group][key]
                for i, want in enumerate(arr.attrs.get(CHUNK_CRC, [])):
                    if chunk_crc(chunk_file(self.path, arr, i)) != want:
                        ep = int(np.searchsorted(self.episode_ends, i * arr.chunks[0], "right"))
                        raise StoreError(
                            f"{self.path}: {group}/{key} chunk {i} holds other bytes than were "
                            f"written there (moved, swapped or replaced); episode {ep} onwards "
                            "cannot be trusted"
                        )

    def read_meta(self, key: str, start: int = 0, end: int | None = None) -> np.ndarray:
        """Entries [start, end) of meta/key; a damaged chunk raises StoreError."""
        try:
            return self.meta[key][start:end]
        except Exception as e:
            raise StoreError(f"{self.path}: cannot read meta/{key}: {type(e).__name__}: {e}") from e

    def read(self, key: str, start: int, end: int) -> np.ndarray:
        """Rows [start, end) of data/key; a damaged chunk raises StoreError naming the episode."""
        try:
            return self.data[key][start:end]
        except Exception as e:
            ep = int(np.searchsorted(self.episode_ends, start, side="right"))
            raise StoreError(
                f"{self.path}: cannot read data/{key} rows {start}-{end - 1} "
                f"(episode {ep}): {type(e).__name__}: {e}"
            ) from e

    # -- reading --------------------------------------------------------------
    def episode(self, i: int, keys: list[str] | None = None) -> Episode:
        start, end = self.episode_bounds(i)
        keys = keys or self.keys
        i %= self.num_episodes
        return Episode(
            index=i,
            seed=int(self.read_meta("episode_seed", i, i + 1)[0]),
            policy=int(self.read_meta("episode_policy", i, i + 1)[0]),
            data={k: self.read(k, start, end) for k in keys},
        )

    def episodes(self, keys: list[str] | None = None) -> Iterator[Episode]:
        for i in range(self.num_episodes):
            yield self.episode(i, keys)

    def window_starts(self, length: int, episodes: list[int] | None = None) -> np.ndarray:
        """Global row indices where a window of `length` rows fits inside one episode."""
        return window_starts(self.episode_ends, length, episodes)

    def window(self, start: int, context: int, horizon: int) -> dict[str, np.ndarray]:
        """`context` frames, then `horizon` frames to predict, and the actions between them.

        Returns arrays of `context + horizon` rows for every key; `action[j]` leads from
        row j to row j+1, so the last action is the row alignment's padding and unused.
        Raises if the window would cross an episode boundary.
        """
        length = context + horizon
        ends = self.episode_ends
        ep = int(np.searchsorted(ends, start, side="right"))
        if ep >= len(ends) or start < 0 or start + length > ends[ep]:
            raise IndexError(
                f"window at row {start} of length {length} does not fit inside one episode"
            )
        out = {k: self.read(k, start, start + length) for k in self.keys}
        out["episode"] = np.int64(ep)
        return out

    # -- writing --------------------------------------------------------------
    _appenders: dict[str, _Appender] | None = None
    """Writer state (one writer per store), built by the first add_episode, dropped when stale."""

    def add_episode(self, rows: Mapping[str, np.ndarray], seed: int, policy: int = 0) -> int:
        """Append one episode and commit it (data first, `episode_ends` last); returns its index.

        The episode is committed when this returns. Writes go in the order of the commit
        protocol: for each `data/` array its new shape, then its chunks; then `meta/`
        `episode_seed`, `episode_policy` and last `episode_ends`. Each array's rows of the
        chunk being filled are kept in memory, so an append rewrites whole chunks (zarr's
        atomic chunk replacement) without reading and decoding them back.
        """
        apps = self._appenders
        if apps is None:
            apps = self._appenders = self._open_appenders()
        n = len(rows["frame"]) if "frame" in rows else 0
        values = {}
        for key in self.keys:
            if key not in rows:
                raise ValueError(f"episode is missing data/{key}")
            app = apps[key]
            values[key] = np.asarray(rows[key], dtype=app.dtype)
            if n < 1 or values[key].shape != (n, *app.row_shape):
                raise ValueError(
                    f"data/{key}: expected shape {(max(n, 1), *app.row_shape)}, "
                    f"got {values[key].shape}"
                )
        e = apps["episode_ends"].rows
        start = apps["frame"].rows
        meta = {"episode_seed": seed, "episode_policy": policy, "episode_ends": start + n}
        for key, value in meta.items():
            values[key] = np.asarray([value], dtype=apps[key].dtype)
        try:  # dict order: data/ arrays, then meta/; episode_ends, the commit, is last
            for key, value in values.items():
                apps[key].append(value)
        except BaseException:
            self._appenders = self._ends = None  # on-disk state unknown: re-read it
            raise
        self._ends = np.append(self.episode_ends, start + n)
        for app in apps.values():
            app.record_full_chunks(self.path)
        return e

    def _open_appenders(self) -> dict[str, _Appender]:
        """Array handles and the committed rows of each array's last, partly filled chunk."""
        n, e = self.num_rows, self.num_episodes
        apps = {key: _Appender(self.data[key], n) for key in self.keys}
        for key in META_ARRAYS:  # episode_ends last (dict order)
            apps[key] = _Appender(self.meta[key], e)
        return apps

    def truncate_uncommitted(self) -> int:
        """Drop rows and meta entries past the last commit; returns rows dropped."""
        self._appenders = self._ends = None
        n, e = self.num_rows, self.num_episodes
        dropped = 0
        for key in self.keys:
            arr = self.data[key]
            if arr.shape[0] > n:
                dropped = max(dropped, arr.shape[0] - n)
                arr.resize((n, *arr.shape[1:]))
        for key in META_ARRAYS:
            if self.meta[key].shape[0] > e:
                self.meta[key].resize((e,))
        for partial in self.path.rglob("*.partial"):  # temp files of interrupted chunk writes
            partial.unlink(missing_ok=True)
        return dropped


class _Appender:
    """Appends rows to one array whose chunks run along axis 0 only.

    Keeps the committed rows of the last, partly filled chunk (`tail`), so an append
    writes from that chunk's first row to the new end: zarr then sees only whole chunks
    (the last one ends at the array's end) and replaces them without reading them.
    """

    def __init__(self, arr: zarr.Array, rows: int) -> None:
        # write_empty_chunks: every chunk gets a file (see _check_chunks_present)
        self.arr = arr.with_config({"write_empty_chunks": True})
        self.dtype = arr.dtype
        self.row_shape = tuple(arr.shape[1:])
        self.chunk = int(arr.chunks[0])
        self.rows = rows  # committed rows
        self.tail = arr[self.chunk_start(rows) : rows] if rows % self.chunk else None

    def chunk_start(self, row: int) -> int:
        return row - row % self.chunk

    def record_full_chunks(self, store_path: Path) -> None:
        """Record the stored CRC32C of every chunk filled since the last record in the
        array's attributes (`CHUNK_CRC`): a full chunk is never written again, so `validate`
        can tell a chunk file moved to another position (the CRC travels with its bytes).
        Called after the commit; a crash before it leaves chunks unrecorded, which the next
        commit records."""
        recorded = list(self.arr.attrs.get(CHUNK_CRC, []))
        full = self.rows // self.chunk
        if full > len(recorded):
            for i in range(len(recorded), full):
                recorded.append(chunk_crc(chunk_file(store_path, self.arr, i)))
            self.arr.attrs[CHUNK_CRC] = recorded  # through this handle: resizes keep it

    def append(self, value: np.ndarray) -> None:
        """New shape first, then the chunks from the tail's first row to the new end."""
        start = self.chunk_start(self.rows)
        end = self.rows + len(value)
        region = value if self.tail is None else np.concatenate([self.tail, value])
        self.arr.resize((end, *self.row_shape))
        self.arr[start:end] = region
        last = self.chunk_start(end)
        self.tail = region[last - start :].copy() if end % self.chunk else None
        self.rows = end
