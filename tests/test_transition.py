"""The learned state transition: roles from data, static and derived columns, angle wrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim.model.dynamics import REACHER_SCENE
from worldsim.model.transition import (
    StateTransition,
    column_bounds,
    column_roles,
    default_roles,
)
from worldsim.scene import SceneLayout
from worldsim.train.dynamics import robust_step_scale, transition_loss

LAYOUT = SceneLayout.from_dict(REACHER_SCENE)  # angle 2, velocity 2, fingertip 2, target 2


def reacher_like(episodes: int = 6, steps: int = 20, seed: int = 0):
    """Rows of whole episodes: joints under linear physics, fingertip by kinematics, a
    target that holds still within each episode."""
    rng = np.random.default_rng(seed)
    rows, actions, ends = [], [], []
    for _ in range(episodes):
        q, v, target = rng.uniform(-3, 3, 2), rng.normal(0, 1, 2), rng.uniform(-0.2, 0.2, 2)
        for _ in range(steps):
            a = rng.uniform(-1, 1, 2)
            tip = [
                0.1 * np.cos(q[0]) + 0.11 * np.cos(q.sum()),
                0.1 * np.sin(q[0]) + 0.11 * np.sin(q.sum()),
            ]
            rows.append(np.concatenate([q, v, tip, target]))
            actions.append(a)
            q, v = q + 0.02 * v + 0.04 * a, 0.98 * v + 4 * a
        ends.append(len(rows))
    return np.array(rows, np.float32), np.array(actions, np.float32), np.array(ends)


def test_roles_come_from_the_data():
    values, _, ends = reacher_like()
    assert default_roles(LAYOUT) == ["integrate"] * 4 + ["derived"] * 4
    assert (
        column_roles(LAYOUT, values, ends) == ["integrate"] * 4 + ["derived"] * 2 + ["static"] * 2
    )
    moving_target = values.copy()
    moving_target[1, 6] += 0.01
    assert column_roles(LAYOUT, moving_target, ends)[6] == "derived"


def test_a_state_without_joints_is_refused():
    layout = SceneLayout.from_dict(
        [{"name": "tip", "array": "fingertip", "index": [0], "unit": "m"}]
    )
    with pytest.raises(ValueError, match="qpos"):
        column_roles(layout, np.arange(4, dtype=np.float32)[:, None], np.array([4]))


def _transition(values, ends) -> StateTransition:
    torch.manual_seed(0)
    t = StateTransition(LAYOUT, column_roles(LAYOUT, values, ends), 2, width=32, layers=2)
    t.fit_statistics(values, ends)
    return t


@torch.no_grad()
def test_long_rollout_keeps_static_columns_exactly_and_angles_wrapped():
    values, _, ends = reacher_like()
    t = _transition(values, ends)
    s = torch.from_numpy(values[:4])
    start = s.clone()
    for _ in range(10_000):
        s = t(s, torch.ones(4, 2))
    assert torch.isfinite(s).all()
    assert torch.equal(s[:, 6:], start[:, 6:])  # the target, bit for bit
    assert (s[:, :2] >= -np.pi).all() and (s[:, :2] < np.pi).all()


@torch.no_grad()
def test_integrated_columns_stay_inside_the_datas_range():
    """A step that runs away (as a pole past its fall did, to inf) stops at the data's
    edge; without bounds (models saved before them) the same step runs away."""
    values, _, ends = reacher_like()
    roles = column_roles(LAYOUT, values, ends)
    bounds = column_bounds(values, roles)
    assert bounds[4:] == [None] * 4  # derived and static columns are not clamped
    assert bounds[2] == [float(values[:, 2].min()), float(values[:, 2].max())]
    runaway = {}
    for name, b in (("bounded", bounds), ("free", None)):
        torch.manual_seed(0)
        t = StateTransition(LAYOUT, roles, 2, width=32, layers=2, bounds=b)
        t.fit_statistics(values, ends)
        t.step_linear.bias.data.fill_(5.0)  # +5 step scales every frame, whatever the input
        s = torch.from_numpy(values[:3])
        for _ in range(200):
            s = t(s, torch.zeros(3, 2))
        runaway[name] = s
    low, high = (torch.tensor([b[i] for b in bounds[:4]]) for i in (0, 1))
    assert torch.equal(runaway["bounded"][:, 2:4], high[2:4].expand(3, 2))  # velocities at the edge
    assert ((runaway["bounded"][:, :4] >= low) & (runaway["bounded"][:, :4] <= high)).all()
    free = runaway["free"][:, :4]
    assert ((free < low) | (free > high)).any(1).all()  # each world left the data's range
    with pytest.raises(ValueError, match="bounds"):
        StateTransition(LAYOUT, roles, 2, width=32, layers=2, bounds=[[1.0, 0.0]] * 8)


@torch.no_grad()
def test_derived_columns_are_read_from_the_joints_not_carried():
    values, _, ends = reacher_like()
    t = _transition(values, ends)
    s = torch.from_numpy(values[:5])
    other = s.clone()
    other[:, 4:6] += 1.0  # a wrong fingertip going in is forgotten
    torch.testing.assert_close(t(s, torch.zeros(5, 2)), t(other, torch.zeros(5, 2)))
    torch.testing.assert_close(t.derive(s)[:, :4], s[:, :4])


def test_robust_scale_ignores_rare_fast_steps_and_episode_boundaries():
    values, _, ends = reacher_like()
    fast = values.copy()
    fast[5, 2] += 1000  # one wild velocity
    angle = np.array([True, True] + [False] * 6)
    a, b = robust_step_scale(values, ends, angle), robust_step_scale(fast, ends, angle)
    assert abs(b[2] / a[2] - 1) < 0.2
    assert np.all(a[6:] == 1e-4)  # the target never moves within an episode


def test_training_on_rollouts_lowers_the_rollout_error():
    values, actions, ends = reacher_like(episodes=20)
    t = _transition(values, ends)
    data = {"state": values, "action": actions}
    starts = np.concatenate([np.arange(e - 20, e - 8) for e in ends])
    scale = torch.from_numpy(robust_step_scale(values, ends, t.angle.numpy()))
    opt = torch.optim.Adam(t.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, _ = transition_loss(t, data, starts[:64], 8, scale, "cpu")
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_pusher_state_integrates_the_object_it_cannot_read_out_of_the_arm():
    from worldsim.cli import compose_config

    task = compose_config("generate", ["task=pusher"], {}).task
    layout = SceneLayout.from_task(task)
    roles = dict(
        zip(
            [q.name for q in layout.quantities for _ in range(q.size)],
            default_roles(layout),
            strict=True,
        )
    )
    assert roles["object_slide"] == roles["object_slide_velocity"] == "integrate"
    assert roles["object"] == "derived"  # the body's position, read out of its slide joints
    assert layout.slices["object_slide"].stop - layout.slices["object_slide"].start == 2
