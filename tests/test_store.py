"""The zarr episode store: round trip, windows, the commit protocol and damaged stores."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import ACTION_DIM, FRAME_SHAPE, STATE_LAYOUT, SYNTHETIC_ATTRS, synthetic_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import LocalStore

from worldsim.datasets.report import validate
from worldsim.datasets.store import ROW_ALIGNMENT, EpisodeStore, StoreError

SYNTHETIC_ROW_KEYS = ("frame", "seg", "action", "reward", "terminated", "truncated")
LENGTHS = [5, 6, 7]  # rows 0-4, 5-10, 11-17; with 4-row chunks every episode spans chunks


def chunk_file(path: Path, key: str, i: int) -> Path:
    """The file holding time-chunk `i` of data/key."""
    arr = zarr.open_array(str(path / "data" / key), mode="r")
    return (
        path
        / "data"
        / key
        / arr.metadata.chunk_key_encoding.encode_chunk_key((i,) + (0,) * (arr.ndim - 1))
    )


def rewrite_array(path: Path, name: str, values: np.ndarray) -> None:
    """Replace an array with `values` (its dtype) through plain zarr."""
    root = zarr.open_group(str(path), mode="r+")
    group, key = name.split("/")
    old = root[name]
    chunks = old.chunks
    del root[group][key]
    root[group].create_array(key, data=values, chunks=chunks)


# -- round trip -------------------------------------------------------------------------
def test_round_trip_every_array(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    _, written = make_store(path, [5, 2, 9, 4])
    store = EpisodeStore.open(path)
    assert store.num_episodes == 4
    assert store.num_rows == 20
    assert list(store.episode_ends) == list(np.cumsum([5, 2, 9, 4]))
    assert set(store.keys) == set(written[0])
    for i, rows in enumerate(written):
        ep = store.episode(i)
        assert ep.index == i and ep.seed == 100 + i and ep.policy == i % 3
        assert len(ep) == len(rows["frame"]) and ep.num_transitions == len(ep) - 1
        for key, value in rows.items():
            got = ep.data[key]
            assert got.dtype == value.dtype, key
            np.testing.assert_array_equal(got, value, err_msg=key)
    # negative indices and a key subset
    last = store.episode(-1, keys=["qvel"])
    assert last.index == 3 and list(last.data) == ["qvel"]
    np.testing.assert_array_equal(last.data["qvel"], written[3]["qvel"])
    with pytest.raises(IndexError):
        store.episode(4)
    assert [e.index for e in store.episodes(keys=["reward"])] == [0, 1, 2, 3]


def test_attrs_and_layout(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    make_store(path, [3, 3], chunk_frames=2)
    store = EpisodeStore.open(path)
    a = store.attrs
    assert a["row_alignment"] == ROW_ALIGNMENT
    assert a["frame_shape"] == list(FRAME_SHAPE)
    assert a["state_layout"] == STATE_LAYOUT
    assert a["action_space"]["shape"] == [ACTION_DIM]
    assert a["task"] == SYNTHETIC_ATTRS["task"]
    for key, arr in store.data.arrays():
        # chunked along time only, Blosc/zstd, then a CRC32C checksum
        assert arr.chunks[0] == 2 and tuple(arr.chunks[1:]) == tuple(arr.shape[1:]), key
        codec, crc = arr.compressors
        assert type(codec).__name__ == "BloscCodec" and str(codec.cname.value) == "zstd", key
        assert type(crc).__name__ == "Crc32cCodec", key
    assert store.data["frame"].dtype == np.uint8 and store.data["frame"].shape[1:] == FRAME_SHAPE
    assert store.meta["episode_ends"].dtype == np.int64


def test_plain_zarr_reads_the_store(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    _, written = make_store(path, LENGTHS)
    root = zarr.open(str(path), mode="r")
    assert isinstance(root, zarr.Group)
    np.testing.assert_array_equal(root["meta/episode_ends"][:], np.cumsum(LENGTHS))
    np.testing.assert_array_equal(root["meta/episode_seed"][:], [100, 101, 102])
    for key in written[0]:
        np.testing.assert_array_equal(
            root[f"data/{key}"][:], np.concatenate([w[key] for w in written]), err_msg=key
        )


def test_create_refuses_existing_path_and_bad_episodes(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    store, _ = make_store(path, [3])
    with pytest.raises(FileExistsError):
        make_store(path, [3])
    rows = synthetic_rows(np.random.default_rng(1), 4)
    with pytest.raises(ValueError, match="qvel"):
        store.add_episode({k: v for k, v in rows.items() if k != "qvel"}, seed=9)
    bad = dict(rows, reward=rows["reward"][:-1])
    with pytest.raises(ValueError, match="reward"):
        store.add_episode(bad, seed=9)
    assert EpisodeStore.open(path).num_episodes == 1  # nothing was committed
    with pytest.raises(ValueError, match="clash"):
        EpisodeStore.create(
            tmp_path / "t.zarr",
            frame_shape=FRAME_SHAPE,
            action_low=[-1],
            action_high=[1],
            state_layout={"reward": [1]},
            attrs={},
        )
    with pytest.raises(FileNotFoundError):
        EpisodeStore.open(tmp_path / "nowhere.zarr")


def test_validate_accepts_a_sound_synthetic_store(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    make_store(path, LENGTHS)
    assert validate(path) == []


# -- windows ----------------------------------------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    length=st.integers(1, 9),
    data=st.data(),
)
def test_windows_never_cross_episodes(lengths, length, data):
    with tempfile.TemporaryDirectory() as tmp:
        store = EpisodeStore.create(
            Path(tmp) / "w.zarr",
            frame_shape=(1, 1, 3),
            action_low=[-1.0],
            action_high=[1.0],
            state_layout={},
            attrs={},
            chunk_frames=3,
        )
        row = 0
        for i, n in enumerate(lengths):
            rows = {
                "frame": np.zeros((n, 1, 1, 3), np.uint8),
                "seg": np.zeros((n, 1, 1), np.uint8),
                "action": np.zeros((n, 1), np.float32),
                "reward": np.arange(row, row + n, dtype=np.float32),  # row id
                "terminated": np.zeros(n, bool),
                "truncated": np.zeros(n, bool),
            }
            store.add_episode(rows, seed=i)
            row += n
        episode_of_row = np.repeat(np.arange(len(lengths)), lengths)
        total = len(episode_of_row)
        # a start is valid iff all `length` rows from it exist and share one episode
        valid = {
            s for s in range(total - length + 1) if len(set(episode_of_row[s : s + length])) == 1
        }
        starts = store.window_starts(length)
        assert starts.dtype == np.int64
        assert len(set(starts.tolist())) == len(starts), "duplicate window starts"
        assert set(starts.tolist()) == valid
        # a subset of episodes gives exactly those episodes' windows
        chosen = data.draw(st.lists(st.sampled_from(range(len(lengths))), unique=True))
        sub = store.window_starts(length, episodes=chosen)
        assert set(sub.tolist()) == {s for s in valid if episode_of_row[s] in chosen}

        for s in data.draw(st.lists(st.integers(-2, total + 1), max_size=6)):
            context = data.draw(st.integers(0, length))
            if s in valid:
                w = store.window(s, context, length - context)
                np.testing.assert_array_equal(w["reward"], np.arange(s, s + length))
                assert int(w["episode"]) == episode_of_row[s]
                assert w["frame"].shape == (length, 1, 1, 3)
            else:
                with pytest.raises(IndexError):
                    store.window(s, context, length - context)
        with pytest.raises(ValueError):
            store.window_starts(0)


def test_window_crossing_a_boundary_raises(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    store, written = make_store(path, LENGTHS)
    w = store.window(5, 2, 4)  # episode 1 exactly
    np.testing.assert_array_equal(w["frame"], written[1]["frame"])
    assert int(w["episode"]) == 1
    with pytest.raises(IndexError):
        store.window(6, 2, 4)  # rows 6-11: 11 is episode 2
    assert int(store.window(3, 1, 1)["episode"]) == 0  # rows 3-4 fit in episode 0
    with pytest.raises(IndexError):
        store.window(3, 1, 2)  # rows 3-5 do not
    with pytest.raises(IndexError):
        store.window(sum(LENGTHS), 1, 0)  # past the end


# -- damaged stores ---------------------------------------------------------------------
@pytest.mark.parametrize("key", ["frame", "reward", "tip"])
def test_missing_chunk_is_reported_on_open(tmp_path, make_store, key):
    path = tmp_path / "s.zarr"
    make_store(path, LENGTHS)
    f = chunk_file(path, key, 2)  # rows 8-11: episodes 1 and 2
    assert f.is_file()
    f.unlink()
    with pytest.raises(StoreError) as e:
        EpisodeStore.open(path)
    msg = str(e.value)
    assert f"data/{key}" in msg and "episode 1" in msg, msg
    with pytest.raises(StoreError):
        validate(path)


def test_truncated_chunk_is_reported_on_read(tmp_path, make_store, run_cli, capsys):
    path = tmp_path / "s.zarr"
    _, written = make_store(path, LENGTHS, smooth=True)  # frames that Blosc compresses
    f = chunk_file(path, "frame", 2)  # rows 8-11
    blob = f.read_bytes()
    f.write_bytes(blob[: len(blob) // 2])
    store = EpisodeStore.open(path)  # the file is there; damage shows on read
    np.testing.assert_array_equal(store.episode(0).data["frame"], written[0]["frame"])
    for i in (1, 2):
        with pytest.raises(StoreError) as e:
            store.episode(i)
        msg = str(e.value)
        assert "data/frame" in msg and f"episode {i}" in msg, msg
    with pytest.raises(StoreError, match="data/frame"):
        validate(path)
    capsys.readouterr()
    assert run_cli("data", "validate", path) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and "data/frame" in err and "episode 1" in err, err


def test_truncated_incompressible_chunk_is_reported(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    _, written = make_store(path, LENGTHS)  # random frames: Blosc keeps them as they are
    f = chunk_file(path, "frame", 2)  # rows 8-11
    blob = f.read_bytes()
    f.write_bytes(blob[:-8])  # lose the last 8 bytes (the tail of row 11)
    store = EpisodeStore.open(path)
    try:
        got = store.episode(2).data["frame"]
    except StoreError as e:
        assert "data/frame" in str(e) and "episode 2" in str(e)
        return
    np.testing.assert_array_equal(got, written[2]["frame"], err_msg="silently wrong rows")
    pytest.fail("a truncated chunk was read back intact")  # cannot happen: bytes are gone


def test_episode_ends_past_the_data(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    make_store(path, LENGTHS)
    ends = zarr.open_array(str(path / "meta" / "episode_ends"), mode="r+")
    ends.append(np.array([sum(LENGTHS) + 5], np.int64))
    with pytest.raises(StoreError) as e:
        EpisodeStore.open(path)
    msg = str(e.value)
    assert re.search(r"data/\w+", msg) and "episode 3" in msg, msg


def test_episode_ends_not_increasing(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    make_store(path, LENGTHS)
    ends = zarr.open_array(str(path / "meta" / "episode_ends"), mode="r+")
    ends.append(np.array([4], np.int64))
    with pytest.raises(StoreError, match="episode_ends.*episode 3"):
        EpisodeStore.open(path)


@pytest.mark.parametrize(
    "name,dtype",
    [("data/reward", np.float64), ("data/frame", np.int16), ("meta/episode_ends", np.int32)],
)
def test_wrong_dtype(tmp_path, make_store, name, dtype):
    path = tmp_path / "s.zarr"
    make_store(path, LENGTHS)
    old = zarr.open_array(str(path / name), mode="r")[:]
    rewrite_array(path, name, old.astype(dtype))
    with pytest.raises(StoreError) as e:
        EpisodeStore.open(path)
    msg = str(e.value)
    assert name in msg and np.dtype(dtype).name in msg, msg


def test_damaged_store_cli_validate(tmp_path, make_store, run_cli, capsys):
    path = tmp_path / "s.zarr"
    make_store(path, LENGTHS)
    assert run_cli("data", "validate", path) == 0
    assert "OK" in capsys.readouterr().out
    chunk_file(path, "seg", 0).unlink()
    assert run_cli("data", "validate", path) == 1
    captured = capsys.readouterr()
    assert "INVALID" in captured.err and "data/seg" in captured.err and "episode 0" in captured.err
    assert "OK" not in captured.out
    assert run_cli("data", "validate", tmp_path / "missing.zarr") == 1
    assert "INVALID" in capsys.readouterr().err


# -- uncommitted rows -------------------------------------------------------------------
def write_uncommitted(path: Path, n: int) -> None:
    """What a crash mid-episode leaves: data rows (and meta entries) past the last commit."""
    root = zarr.open_group(str(path), mode="r+")
    rows = synthetic_rows(np.random.default_rng(7), n)
    with zarr.config.set({"array.write_empty_chunks": True}):
        for key, value in rows.items():
            arr = root[f"data/{key}"]
            start = arr.shape[0]
            arr.resize((start + n, *arr.shape[1:]))
            arr[start:] = value
        seeds = root["meta/episode_seed"]
        seeds.append(np.array([999], np.int64))
    (path / "data" / "frame" / "c" / "zarr.0123abcd.partial").write_bytes(b"torn")


def test_uncommitted_rows_ignored_then_truncated(tmp_path, make_store):
    path = tmp_path / "s.zarr"
    _, written = make_store(path, LENGTHS)
    committed = sum(LENGTHS)
    starts_before = EpisodeStore.open(path).window_starts(3)
    write_uncommitted(path, 6)

    store = EpisodeStore.open(path)
    assert store.data["frame"].shape[0] == committed + 6
    assert store.num_episodes == 3 and store.num_rows == committed
    for i, rows in enumerate(written):
        np.testing.assert_array_equal(store.episode(i).data["frame"], rows["frame"])
    np.testing.assert_array_equal(store.window_starts(3), starts_before)
    with pytest.raises(IndexError):
        store.window(committed, 1, 1)
    notes = validate(path)
    assert len(notes) == 1 and "6 uncommitted rows" in notes[0]

    store = EpisodeStore.open(path, mode="r+")
    assert store.truncate_uncommitted() == 6
    for key in store.keys:
        assert store.data[key].shape[0] == committed, key
    for key in ("episode_seed", "episode_policy", "episode_ends"):
        assert store.meta[key].shape[0] == 3, key
    assert not list(path.rglob("*.partial"))
    assert validate(path) == []
    assert store.truncate_uncommitted() == 0

    # the store goes on as if the crash never happened
    extra = synthetic_rows(np.random.default_rng(8), 5)
    assert store.add_episode(extra, seed=200) == 3
    reopened = EpisodeStore.open(path)
    assert reopened.num_episodes == 4 and list(reopened.meta["episode_seed"][:]) == [
        100,
        101,
        102,
        200,
    ]
    for key, value in extra.items():
        np.testing.assert_array_equal(reopened.episode(3).data[key], value, err_msg=key)
    assert validate(path) == []


# -- crashes inside add_episode ---------------------------------------------------------
class Crash(Exception):
    """Stands for the process dying before one store write happens."""


def _store_writes(monkeypatch, crash_at: int | None) -> list[str]:
    """Patch LocalStore.set to log keys and raise Crash at write number `crash_at` (1-based)."""
    log: list[str] = []
    original = LocalStore.set

    async def set_(self, key, value, *args, **kwargs):
        log.append(key)
        if crash_at is not None and len(log) == crash_at:
            raise Crash(key)
        return await original(self, key, value, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "set", set_)
    return log


@pytest.fixture
def crash_base(tmp_path, make_store):
    """A store with two committed episodes, the rows of a third, and add_episode's writes."""
    base = tmp_path / "base.zarr"
    _, written = make_store(base, [5, 6])
    rows = synthetic_rows(np.random.default_rng(5), 7)
    probe = tmp_path / "probe.zarr"
    shutil.copytree(base, probe)
    with pytest.MonkeyPatch.context() as mp:
        log = _store_writes(mp, None)
        EpisodeStore.open(probe, mode="r+").add_episode(rows, seed=300)
    # after the commit (episode_ends' chunk) come only the records of filled chunks' CRCs
    # (array attributes: zarr.json); validate checks them, and the next commit makes any a
    # crash skipped
    commit = max(k for k, w in enumerate(log) if w.startswith("meta/episode_ends/c/"))
    assert all(w.endswith("/zarr.json") for w in log[commit + 1 :])
    return base, written, rows, list(log[: commit + 1])


def _crash(base: Path, rows, k: int) -> tuple[Path, str]:
    """Copy the base store and let add_episode die before its k-th store write."""
    path = base.with_name(f"crash{k}.zarr")
    shutil.copytree(base, path)
    store = EpisodeStore.open(path, mode="r+")
    with pytest.MonkeyPatch.context() as mp:
        log = _store_writes(mp, k)
        with pytest.raises(Crash):
            store.add_episode(rows, seed=300)
    return path, log[-1]


def _check_and_resume(path: Path, written, rows) -> None:
    """A fresh reader sees whole committed episodes only; resuming completes the store."""
    reopened = EpisodeStore.open(path)
    assert reopened.num_episodes == 2
    for i, w in enumerate(written):
        got = reopened.episode(i).data
        for key, value in w.items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    resumed = EpisodeStore.open(path, mode="r+")
    resumed.truncate_uncommitted()
    resumed.add_episode(rows, seed=300)
    final = EpisodeStore.open(path)
    assert final.num_episodes == 3 and validate(path) == []
    got = final.episode(2).data
    for key, value in rows.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_crash_before_the_commit_keeps_committed_episodes(crash_base):
    base, written, rows, writes = crash_base
    # every data/ array first, then seed and policy, episode_ends (its shape, then its chunk) last
    data_arrays = [w.split("/")[1] for w in writes if w.startswith("data/")]
    assert set(data_arrays) == {*STATE_LAYOUT, *SYNTHETIC_ROW_KEYS}
    first_meta = next(k for k, w in enumerate(writes) if w.startswith("meta/"))
    assert all(w.startswith("meta/") for w in writes[first_meta:])
    assert all(w.startswith("data/") for w in writes[:first_meta])
    assert writes[-2] == "meta/episode_ends/zarr.json"
    assert writes[-1].startswith("meta/episode_ends/c/")
    # die before: the first write, the first chunk, half of the data, the first meta write,
    # the episode_ends shape (seed and policy written): each leaves only uncommitted rows
    ks = {1, 2, first_meta // 2, first_meta + 1, len(writes) - 1}
    for k in sorted(ks):
        path, key = _crash(base, rows, k)
        _check_and_resume(path, written, rows)


def test_crash_inside_the_commit_keeps_the_store_readable(crash_base):
    base, written, rows, writes = crash_base
    path, key = _crash(base, rows, len(writes))  # the last write: episode_ends' chunk
    assert key.startswith("meta/episode_ends/c/"), key
    _check_and_resume(path, written, rows)
