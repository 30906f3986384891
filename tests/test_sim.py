"""MujocoSim: frames, segmentation, framing, and render-only overrides."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from worldsim.cli import compose_config
from worldsim.mujoco_sim import SEG_CLASSES, MujocoSim

ROBOT, OBJECT, GOAL = (SEG_CLASSES.index(c) for c in ("robot", "object", "goal"))
EXPECTED_CLASSES = {
    "reacher": {ROBOT, GOAL},
    "inverted_pendulum": {ROBOT},
    "pusher": {ROBOT, OBJECT, GOAL},
}


def task_cfg(name: str, *overrides: str):
    return compose_config("generate", [f"task={name}", *overrides]).task


@pytest.fixture(scope="module", params=sorted(EXPECTED_CLASSES))
def sim(request):
    s = MujocoSim(task_cfg(request.param))
    yield s
    s.close()


def test_frames_and_segmentation(sim):
    name = sim.task.name
    classes_seen = set()
    for seed in (0, 1):
        obs = sim.reset(seed=seed)
        assert obs.frame.shape == (64, 64, 3) and obs.frame.dtype == np.uint8
        assert obs.seg.shape == (64, 64) and obs.seg.dtype == np.uint8
        assert obs.seg.max() < len(SEG_CLASSES)
        assert obs.frame.std() > 5, "a blank frame"
        present = set(np.unique(obs.seg).tolist()) - {0}
        assert EXPECTED_CLASSES[name] <= present, (name, present)
        classes_seen |= present
        # the labels belong to the picture: labelled pixels differ from the background colour
        bg = np.median(obs.frame[obs.seg == 0], axis=0)
        robot = obs.frame[obs.seg == ROBOT].astype(float)
        assert np.abs(robot - bg).sum(-1).mean() > 20, name
    assert classes_seen == EXPECTED_CLASSES[name], "a class the task does not have"
    # state: qpos, qvel and the configured bodies, float32, one layout for every step
    state = obs.state
    assert set(state) == {"qpos", "qvel", *sim.task.state_bodies}
    assert all(v.dtype == np.float32 for v in state.values())
    assert state["qpos"].shape == (sim.model.nq,) and state["qvel"].shape == (sim.model.nv,)
    assert sim.state_layout() == {k: list(v.shape) for k, v in state.items()}
    obs, reward, terminated, truncated, _ = sim.step(sim.action_space.sample() * 0)
    assert obs.frame.shape == (64, 64, 3) and isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)


def test_reacher_framing_makes_arm_and_target_visible():
    sim = MujocoSim(task_cfg("reacher"))
    try:
        for seed in range(3):
            seg = sim.reset(seed=seed).seg
            assert (seg == ROBOT).mean() >= 0.05, f"seed {seed}: robot covers {(seg == 1).mean()}"
            assert (seg == GOAL).sum() >= 9, f"seed {seed}: goal has {(seg == GOAL).sum()} px"
            ys, xs = np.nonzero(seg == GOAL)
            assert np.ptp(ys) < 20 and np.ptp(xs) < 20, "the goal should be one small blob"
    finally:
        sim.close()


def _rollout(task, seed: int, steps: int):
    sim = MujocoSim(task)
    try:
        rng = np.random.default_rng(seed)
        obs = sim.reset(seed=seed)
        frames, qpos, qvel, rewards = (
            [obs.frame],
            [sim.data.qpos.copy()],
            [sim.data.qvel.copy()],
            [],
        )
        for _ in range(steps):
            a = rng.uniform(sim.action_space.low, sim.action_space.high).astype(np.float32)
            obs, r, term, _, _ = sim.step(a)
            frames.append(obs.frame)
            qpos.append(sim.data.qpos.copy())
            qvel.append(sim.data.qvel.copy())
            rewards.append(r)
            if term:
                break
        return np.stack(frames), np.stack(qpos), np.stack(qvel), np.array(rewards)
    finally:
        sim.close()


@pytest.mark.parametrize("name", ["reacher", "inverted_pendulum"])
def test_render_overrides_are_render_only(name):
    task = task_cfg(name)
    assert len(task.render_overrides) > 0, "nothing to test: the task has no overrides"
    plain = OmegaConf.merge(task, {"render_overrides": []})
    assert len(plain.render_overrides) == 0
    f1, qp1, qv1, r1 = _rollout(task, seed=3, steps=15)
    f2, qp2, qv2, r2 = _rollout(plain, seed=3, steps=15)
    assert len(qp1) == len(qp2) and len(qp1) > 2
    np.testing.assert_array_equal(qp1, qp2)
    np.testing.assert_array_equal(qv1, qv2)
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(f1, f2), "the overrides should change the pixels"


def test_pusher_renders_without_shadows_and_its_physics_is_unchanged():
    """render_shadows: false (Pusher's) drops the light's shadows and the floor's
    reflections at every frame of an episode, not only the first, and changes no physics."""
    task = task_cfg("pusher")
    assert task.render_shadows is False
    shaded = OmegaConf.merge(task, {"render_shadows": True})
    f1, qp1, qv1, r1 = _rollout(task, seed=3, steps=5)
    f2, qp2, qv2, r2 = _rollout(shaded, seed=3, steps=5)
    np.testing.assert_array_equal(qp1, qp2)
    np.testing.assert_array_equal(r1, r2)
    assert len(f1) == len(f2) > 2
    assert all(not np.array_equal(a, b) for a, b in zip(f1, f2, strict=True))


def test_override_of_a_colliding_geom_is_refused():
    # pusher's table makes contacts: resizing it would change the physics
    task = task_cfg("pusher", "task.render_overrides=[{geom:table,size:[1.0]}]")
    with pytest.raises(ValueError, match="table"):
        MujocoSim(task)
    task = task_cfg("reacher", "task.render_overrides=[{geom:no_such_geom,size:[1.0]}]")
    with pytest.raises(ValueError, match="no_such_geom"):
        MujocoSim(task)


@pytest.mark.parametrize("steps", [7, 60])  # shorter and longer than Reacher-v5's own 50
def test_episode_length_comes_from_the_task_config(steps):
    sim = MujocoSim(task_cfg("reacher", f"task.max_episode_steps={steps}"))
    sim.reset(seed=0)
    zero = np.zeros(sim.action_space.shape, np.float32)
    truncated = [sim.step(zero)[3] for _ in range(steps)]
    sim.close()
    assert not any(truncated[:-1]) and truncated[-1]


@pytest.mark.parametrize("name", ["reacher", "pusher", "inverted_pendulum"])
def test_the_task_reward_and_termination_on_scene_state_are_mujocos(name):
    """What the envs' reward_source=state computes on the world model's state
    (worldsim.scene.task_reward, task_terminated) equals the MuJoCo env's reward and
    termination on MuJoCo's own state, up to and including a terminating step."""
    from worldsim.scene import SceneLayout, task_reward, task_terminated

    task = task_cfg(name)
    layout = SceneLayout.from_task(task)
    sim = MujocoSim(task)
    rng = np.random.default_rng(0)
    sim.reset(seed=3)
    low, high = sim.env.action_space.low, sim.env.action_space.high
    ends = 0
    for _ in range(40):
        action = rng.uniform(low, high).astype(np.float32)
        obs, reward, terminated, *_ = sim.step(action)
        state = layout.values(obs.state)[None]
        assert task_reward(task, layout, state, action[None])[0] == pytest.approx(reward, abs=1e-5)
        assert task_terminated(task, layout, state)[0] == terminated
        if terminated:  # InvertedPendulum's pole fell under random pushes: start again
            ends += 1
            sim.reset(seed=4 + ends)
    sim.close()
    assert (ends > 0) == (name == "inverted_pendulum")
