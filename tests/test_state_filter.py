"""The joint state filter: fitted motion model, tracking through noise, wrap and limits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldsim.scene import Quantity, SceneLayout
from worldsim.state_filter import (
    StateFilter,
    StateTracker,
    filter_episodes,
    joint_columns,
    static_columns,
)

LAYOUT = SceneLayout(
    [
        Quantity("angle", "qpos", (0, 1), "rad"),
        Quantity("speed", "qvel", (0, 1), "rad/s"),
        Quantity("tip", "tip", (0,), "m"),
        Quantity("goal", "goal", (0,), "m"),
    ]
)
DT, DECAY, GAIN, LIMIT = 0.02, 0.98, 4.0, 1.0


def episodes(rng: np.random.Generator, n: int, length: int = 60):
    """Joint 0 spins freely (crossing +-pi), joint 1 stops dead at +-LIMIT; both follow
    v' = DECAY v + GAIN u, position += DT v'. The tip moves every frame, the goal stays
    where each episode put it."""
    values, actions, ends = [], [], []
    for e in range(n):
        q, v = rng.uniform(-np.pi, np.pi, 2), np.zeros(2)
        q[1] = rng.uniform(-0.5, 0.5)
        goal = np.random.default_rng([n, e]).uniform(-0.2, 0.2)  # rng's stream as before
        for _ in range(length):
            u = np.clip(rng.normal(0.0, 0.7, 2), -1, 1)
            values.append([*q, *v, rng.normal(), goal])
            actions.append(u)
            v = DECAY * v + GAIN * u
            q = q + DT * v
            if abs(q[1]) > LIMIT:
                q[1], v[1] = np.sign(q[1]) * LIMIT, 0.0
        ends.append(len(values))
    return np.asarray(values), np.asarray(actions), np.asarray(ends)


def readings_of(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = values.copy()
    noisy[:, :5] += rng.normal(0, [0.03, 0.03, 2.0, 2.0, 0.01], values[:, :5].shape)
    noisy[:, 5] += np.random.default_rng(len(values)).normal(0, 0.01, len(values))
    noisy[:, :2] = (noisy[:, :2] + np.pi) % (2 * np.pi) - np.pi  # readings come wrapped
    return noisy


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    values, actions, ends = episodes(rng, 200)
    filt = StateFilter.fit(
        LAYOUT, values, actions, ends, readings_of(values, rng), values, -np.ones(2), np.ones(2)
    )
    return filt


def test_joints_pair_qpos_with_qvel_at_the_same_index():
    assert joint_columns(LAYOUT) == ([0, 1], [2, 3], [True, True])
    with pytest.raises(ValueError, match="no joint"):
        StateFilter.fit(
            SceneLayout([Quantity("tip", "tip", (0,), "m")]),
            *(np.zeros((4, 1)),) * 2, np.array([4]), *(np.zeros((4, 1)),) * 2,
            -np.ones(1), np.ones(1),
        )  # fmt: skip


def test_static_quantities_are_those_fixed_within_every_episode(fitted):
    assert fitted.static == [5]  # the goal; not the tip, not the joints
    values, _, ends = episodes(np.random.default_rng(2), 3)
    values[ends[0] - 1, 5] += 1e-3  # one episode's goal moves once
    assert static_columns(LAYOUT, values, ends) == []


def test_static_quantities_as_read_when_not_averaged_or_saved_before_them(fitted, tmp_path):
    data = json.loads(json.dumps(fitted.__dict__))
    del data["static"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    readings, every = np.arange(12, dtype=float).reshape(2, 6), np.ones(2, bool)
    for filt, average, seen in (
        (StateFilter.load(tmp_path / "old.json"), True, readings[:, 5] + 1),
        (fitted, False, readings[:, 5] + 1),
        (fitted, True, readings[:, 5] + 0.5),  # the mean of the two readings
    ):
        track = StateTracker(filt, 2, average_static=average)
        track.start(readings, every)
        track.advance(np.zeros((2, 2)), readings + 1, every)
        np.testing.assert_allclose(track.values(readings + 1)[:, 5], seen)


def test_fit_recovers_the_motion_model_and_the_limit(fitted):
    a, b = np.asarray(fitted.transition), np.asarray(fitted.control)
    np.testing.assert_allclose(np.diag(a)[2:], DECAY, rtol=1e-3)  # contacts were trimmed
    np.testing.assert_allclose(np.diag(b[2:]), GAIN, rtol=1e-3)
    np.testing.assert_allclose(a[0, 2], DT * DECAY, rtol=1e-2)
    assert fitted.free_low[0] is None and fitted.free_high[0] is None  # spins: no limit
    assert -LIMIT - 0.05 < fitted.free_low[1] < -LIMIT + 0.2
    assert LIMIT - 0.2 < fitted.free_high[1] < LIMIT + 0.05
    np.testing.assert_allclose(fitted.reading_std, [0.03, 0.03, 2.0, 2.0], rtol=0.1)


def test_tracking_beats_the_raw_readings_across_wrap_and_limits(fitted, tmp_path):
    rng = np.random.default_rng(1)
    values, actions, ends = episodes(rng, 20)
    readings = readings_of(values, rng)
    fitted.save(tmp_path / "f.json")
    filt = StateFilter.load(tmp_path / "f.json")
    assert json.loads((tmp_path / "f.json").read_text())["free_low"][0] is None
    bounds = list(zip(np.r_[0, ends[:-1]], ends, strict=True))
    out = filter_episodes(filt, readings, actions, bounds)
    raw, filtered = LAYOUT.abs_error(readings, values), LAYOUT.abs_error(out, values)
    assert np.median(filtered["speed"]) < 0.2 * np.median(raw["speed"])
    assert np.median(filtered["angle"]) < np.median(raw["angle"])
    assert np.percentile(filtered["angle"], 99) < 0.2  # no 2 pi jumps where joint 0 wraps
    # after joint 1 stops at its limit the estimate catches up within a few frames
    stops = np.flatnonzero((np.abs(values[:, 1]) >= LIMIT) & (np.abs(values[:, 3]) == 0))
    later = stops[np.isin(stops + 5, stops)] + 5
    assert np.median(filtered["speed"][later, 1]) < np.median(raw["speed"][later, 1])
    # the goal is the mean of its readings so far: after 30 frames ~5x closer than one
    late = np.concatenate([np.arange(a + 30, b) for a, b in bounds])
    assert np.median(filtered["goal"][late]) < 0.4 * np.median(raw["goal"][late])
    assert np.allclose(filtered["tip"], raw["tip"], atol=1e-5)  # one that moves: as read
    out_none = StateTracker(filt, 3)
    out_none.start(readings[:3], np.array([True, False, True]))
    assert np.all(out_none.x[1] == 0)  # a world not started is left alone


def test_train_state_filter_cli(tmp_path, reacher_store, run_cli):
    from test_dream import save_tiny_reasoner, save_tiny_world_model

    save_tiny_world_model(tmp_path)
    save_tiny_reasoner(tmp_path)
    out = tmp_path / "sf" / "state_filter.json"
    args = [f"data_path={reacher_store}", f"heldout_path={reacher_store}"]
    assert run_cli("train", "state_filter", *args, f"checkpoint={tmp_path}", f"out={out}") == 0
    filt = StateFilter.load(out)
    assert filt.positions == [0, 1] and filt.velocities == [2, 3]
    report = json.loads((out.parent / "state_filter_report.json").read_text())
    assert set(report["median_error_filtered"]) == {"joint_angle", "joint_velocity", "target"}
    assert filt.static == [6, 7]  # Reacher's target stays put within an episode


def test_without_readings_the_fit_is_a_motion_model_that_refuses_to_track(fitted, tmp_path):
    """A checkpoint with no reasoner (InvertedPendulum) still gets the linear baseline's
    motion model: the same fit, no reading noise, and a tracker refuses it."""
    values, actions, ends = episodes(np.random.default_rng(0), 200)
    motion = StateFilter.fit(LAYOUT, values, actions, ends, None, None, -np.ones(2), np.ones(2))
    assert motion.reading_std == [] and fitted.reading_std != []
    np.testing.assert_allclose(motion.transition, fitted.transition)
    np.testing.assert_allclose(motion.control, fitted.control)
    motion.save(tmp_path / "motion.json")
    loaded = StateFilter.load(tmp_path / "motion.json")
    with pytest.raises(ValueError, match="without a reasoner"):
        StateTracker(loaded, 1)
