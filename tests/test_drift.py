"""Drift limits and flags; `worldsim dream reground=true` restarting from the twin."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from worldsim.cli import compose_config, main
from worldsim.drift import DriftGuard, DriftLimits, drift_flags
from worldsim.scene import SceneLayout


@pytest.fixture(scope="module")
def layout() -> SceneLayout:
    return SceneLayout.from_task(compose_config("generate", ["task=reacher"]).task)


def _smooth(layout: SceneLayout, rows: int, seed: int = 0) -> np.ndarray:
    t = np.arange(rows)[:, None]
    phase = np.random.default_rng(seed).uniform(0, 1, (1, layout.dim))
    return (0.1 * np.sin(0.05 * t + phase)).astype(np.float32)


def test_limits_hold_the_data_and_skip_episode_boundaries(layout):
    v = _smooth(layout, 100)
    v[50:] += 5.0  # a new episode starts far away: not a per-frame step
    limits = DriftLimits.fit(layout, v, np.array([50, 100]))
    assert max(limits.max_step) < 0.05
    flags, _ = drift_flags(layout, limits, v[1:], v[:-1])
    assert not flags[np.arange(99) != 49].any()


def test_flags_name_what_broke(layout):
    v = _smooth(layout, 100)
    limits = DriftLimits.fit(layout, v, np.array([100]))
    state, prev = v[10:11].copy(), v[9:10].copy()
    state[0, layout.slices["target"].start] += 0.05  # the target jumped 5 cm
    flags, reasons = drift_flags(layout, limits, state, prev)
    assert flags.tolist() == [True] and reasons == [["target"]]
    far = v[10:11].copy()
    far[0, layout.slices["fingertip"].start] = 3.0  # out of range, no previous estimate
    assert drift_flags(layout, limits, far, None)[1] == [["fingertip"]]


def test_angles_wrap_for_range_and_steps(layout):
    v = _smooth(layout, 60)
    v[:, 0] = np.linspace(-math.pi + 0.01, math.pi - 0.01, 60) + 4 * math.pi  # a joint spinning
    limits = DriftLimits.fit(layout, v, np.array([60]))
    a, b = v[:1].copy(), v[:1].copy()
    a[0, 0], b[0, 0] = math.pi - 0.01, -math.pi + 0.01  # 0.02 rad apart across the wrap
    assert not drift_flags(layout, limits, b, a)[0][0]


def test_guard_counts_and_limits_roundtrip(layout, tmp_path):
    v = _smooth(layout, 40)
    limits = DriftLimits.fit(layout, v, np.array([40]))
    limits.save(tmp_path / "l.json")
    assert DriftLimits.load(tmp_path / "l.json") == limits
    guard = DriftGuard(layout, limits)
    for row in v[:5]:
        guard.check(row[None])
    jump = v[5:6] + 1.0
    assert guard.check(jump)[0][0] and (guard.checked, guard.fired) == (6, 1)
    guard.reset()
    assert guard.prev is None


def test_unreadable_frames_are_flagged_when_a_roundtrip_limit_is_set(layout, tmp_path):
    v = _smooth(layout, 40)
    limits = DriftLimits.fit(layout, v, np.array([40]))
    state = v[5:7]
    errors = np.array([0.001, 0.05])
    assert not drift_flags(layout, limits, state, None, errors)[0].any()  # no limit: not checked
    limits.max_roundtrip = DriftLimits.fit_roundtrip(np.full(100, 0.002))
    assert limits.max_roundtrip == pytest.approx(0.004)
    flags, reasons = drift_flags(layout, limits, state, None, errors)
    assert flags.tolist() == [False, True] and reasons[1] == ["unreadable frame"]
    limits.save(tmp_path / "l.json")
    assert DriftLimits.load(tmp_path / "l.json").max_roundtrip == limits.max_roundtrip
    old = {k: v for k, v in json.loads((tmp_path / "l.json").read_text()).items()}
    del old["max_roundtrip"]  # limits written before the check existed
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert DriftLimits.load(tmp_path / "old.json").max_roundtrip is None


def _tiny_folder(tmp_path, layout, max_step: float) -> None:
    from test_dream import save_tiny_reasoner, save_tiny_world_model

    save_tiny_world_model(tmp_path)
    save_tiny_reasoner(tmp_path)
    big = [1e9] * layout.dim
    DriftLimits([-x for x in big], big, [max_step] * layout.dim).save(
        tmp_path / "drift_limits.json"
    )


@pytest.mark.parametrize("max_step, fires", [(1e9, False), (0.0, True)])
def test_dream_regrounds_when_the_guard_fires(tmp_path, layout, capsys, max_step, fires):
    _tiny_folder(tmp_path, layout, max_step)
    args = ["dream", f"checkpoint={tmp_path}", "steps=6", "reground=true", "scale=1"]
    assert main([*args, f"out={tmp_path / 'd.mp4'}"]) == 0
    result = json.loads(capsys.readouterr().out)
    # a limit of 0 fires from the second estimate on; each fire restarts the guard
    assert (result["reground_fires"] > 0) is fires
    assert len(result["reground_first"]) == min(5, result["reground_fires"])


def test_reground_needs_the_twin_and_a_reasoner(tmp_path, capsys):
    from test_dream import save_tiny_world_model

    save_tiny_world_model(tmp_path)
    base = ["dream", f"checkpoint={tmp_path}", "steps=2", "reground=true"]
    assert main([*base, "twin=false", f"out={tmp_path / 'a.mp4'}"]) == 2
    assert "needs twin=true" in capsys.readouterr().err
    assert main([*base, f"out={tmp_path / 'b.mp4'}"]) == 2
    assert "worldsim train reasoner task=reacher" in capsys.readouterr().err
