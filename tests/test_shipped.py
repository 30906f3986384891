"""The shipped Reacher world model and reasoner against a live MuJoCo twin."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldsim.cli import compose_config
from worldsim.datasets.policies import make_policy
from worldsim.dream import checkpoint_dir, load_drift_guard, load_world_model
from worldsim.drift import roundtrip_error
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.metrics import psnr
from worldsim.mujoco_sim import MujocoSim

CONTEXT = 4


@pytest.fixture(scope="module")
def world():
    task = compose_config("dream", ["task=reacher"]).task
    folder = checkpoint_dir("reacher", None)
    tok, dyn = load_world_model(task, folder)
    reasoner, guard = load_drift_guard(task, folder)
    return task, tok, dyn, reasoner, guard


class Twin:
    """MuJoCo and a dream driven by the same actions (correlated noise or the expert)."""

    def __init__(self, world, seed: int, policy: str = "noise") -> None:
        task, self.tok, dyn, reasoner, self.guard = world
        tok = self.tok
        self.layout = self.guard.layout
        self.sim = MujocoSim(task)
        obs = self.sim.reset(seed=seed)
        data = compose_config("generate", ["task=reacher"]).data
        self.policy = make_policy(policy, self.sim, data, np.random.default_rng(seed))
        self.frames, self.actions = [obs.frame], []
        for _ in range(CONTEXT - 1):
            self.actions.append(self.policy.act())
            self.frames.append(self.sim.step(self.actions[-1])[0].frame)
        self.engine = FrameEngine(tok, dyn, 1, EngineConfig(), reasoner=reasoner)
        self.reground()

    def reground(self, corrupt: str | None = None) -> None:
        """Restart the dream from the twin's last frames; corrupt='noise': from noise frames;
        'teleport': from another MuJoCo start's (target elsewhere) while the guard keeps
        its last estimate."""
        ctx = np.stack(self.frames[-CONTEXT:])[None].copy()
        if corrupt == "noise":
            ctx[0] = np.random.default_rng(0).integers(0, 256, ctx.shape[1:], np.uint8)
        if corrupt == "teleport":
            other = MujocoSim(self.sim.task)
            ctx[0, :] = other.reset(seed=12345).frame
            other.close()
        self.engine.reset(ctx, np.asarray(self.actions[-(CONTEXT - 1) :], np.float32)[None])
        if corrupt != "teleport":
            self.guard.reset()

    def step(self):
        """One frame in both; returns (fingertip error in m, drift flag, dream, real frame)."""
        a = self.policy.act()
        out = self.engine.step(a[None])
        obs = self.sim.step(a)[0]
        self.frames.append(obs.frame)
        self.actions.append(a)
        est = self.layout.from_features(out.scene.result().numpy())
        flag = bool(self.guard.check(est, roundtrip_error(self.tok, out.latents))[0][0])
        true = self.layout.values(self.sim.state())
        tip = self.layout.slices["fingertip"]
        return float(np.linalg.norm(est[0, tip] - true[tip])), flag, out.frames[0], obs


def test_shipped_env_id_is_registered():
    assert "worldsim/Reacher-v0" in gym.registry


def test_the_dream_follows_mujoco_better_than_copying_the_last_frame(world):
    model, copy = [], []
    for seed in range(3):
        twin = Twin(world, seed)
        last = torch.from_numpy(twin.frames[-1])[None]
        for _ in range(8):
            _, _, dream, obs = twin.step()
            truth, fg = torch.from_numpy(obs.frame)[None], torch.from_numpy(obs.seg > 0)[None]
            model.append(psnr(dream[None], truth, fg))
            copy.append(psnr(last, truth, fg))
    assert np.mean(model) > np.mean(copy) + 1.0


@pytest.mark.parametrize("corrupt", ["noise", "teleport"])
def test_drift_fires_on_a_corrupted_context_and_regrounding_restores_state_error(world, corrupt):
    twin = Twin(world, seed=7, policy="expert")
    # the normal level: a freshly grounded dream's first frames
    baseline = float(np.median([twin.step()[0] for _ in range(3)]))
    # noise: the dream dissolves (unreadable frames); teleport: the target jumps
    twin.reground(corrupt=corrupt)
    fired = [twin.step()[1] for _ in range(3)]
    assert any(fired), f"no drift flag within 3 frames of a {corrupt} context"
    twin.reground()
    after = float(np.median([twin.step()[0] for _ in range(3)]))
    assert after <= 2 * baseline + 0.01, (baseline, after)


def test_no_drift_flags_on_real_frames(world):
    """The guard reading MuJoCo's own frames (through the tokenizer) stays quiet."""
    task, tok, _, reasoner, guard = world
    layout = guard.layout
    sim = MujocoSim(task)
    data = compose_config("generate", ["task=reacher"]).data
    flags = 0
    for seed in range(2):
        obs = sim.reset(seed=seed)
        policy = make_policy("noise", sim, data, np.random.default_rng(seed))
        guard.reset()
        prev = None
        with torch.no_grad():
            for _ in range(25):
                z = tok.encode(torch.from_numpy(obs.frame)[None])
                prev = reasoner.read(z, prev)
                flags += int(guard.check(layout.from_features(prev.numpy()))[0][0])
                obs = sim.step(policy.act())[0]
    assert flags <= 1, f"{flags} drift flags on 50 real frames"


def test_reasoner_reward_follows_mujocos_reward(world):
    """reward_source=reasoner on the shipped weights against MuJoCo's own reward for the
    same spawn (the env's seed stream reproduced) and the same actions."""
    from worldsim.envs.vector_env import WorldVectorEnv

    task = world[0]
    env = WorldVectorEnv(num_envs=1, obs_mode="latent", reward_source="reasoner")
    sim = MujocoSim(task)
    rng = np.random.default_rng(11)
    errors, scale = [], []
    for seed in (3, 4):
        env.reset(seed=seed)
        sim.reset(seed=int(np.random.default_rng(seed).integers(2**31)))
        zero = np.zeros(2, np.float32)
        for _ in range(env.context - 1):
            sim.step(zero)
        for _ in range(4):
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            _, dream_reward, *_ = env.step(a[None])
            true_reward = sim.step(a)[1]
            errors.append(abs(float(dream_reward[0]) - true_reward))
            scale.append(abs(true_reward))
    env.close()
    sim.close()
    assert np.median(errors) < 0.03 and np.median(errors) < 0.5 * np.median(scale), errors


def test_the_shipped_dream_trained_policy_reaches_in_mujoco():
    """Trained only in the dream, run in MuJoCo from the same resets as a random policy:
    it must close most of the gap to the target (random: about -43 per episode)."""
    from importlib import resources

    from worldsim.policies.evaluate import rollout_mujoco
    from worldsim.policies.zoo import make_policy as make_ladder_policy

    task = compose_config("policy_eval", ["policy=random"]).task
    path = resources.files("worldsim") / "checkpoints" / "reacher" / "policies" / "dream_ppo"
    seeds = list(range(2000, 2008))
    returns = {}
    for spec in (str(path), "random"):
        policy, obs = make_ladder_policy(spec, task)
        returns[spec] = np.mean(rollout_mujoco(policy, task, seeds, obs=obs)["return"])
    assert returns[str(path)] > returns["random"] + 20


def test_the_state_filter_reads_joint_velocity_better_than_one_frame(world):
    """On real MuJoCo frames, the shipped filter's joint velocities beat the reasoner's
    own reading (about 0.85 rad/s median off) by far, and its target (a mean of
    readings) beats one frame's reading."""
    from worldsim.state_filter import StateFilter, filter_episodes
    from worldsim.train.reasoner import read_episodes

    task, tok, _, reasoner, guard = world
    filt = StateFilter.load(checkpoint_dir("reacher", None) / "state_filter.json")
    layout, sim = guard.layout, MujocoSim(task)
    data = compose_config("generate", ["task=reacher"]).data
    frames, actions, truth = [], [], []
    for seed in (3000, 3001):
        obs = sim.reset(seed=seed)
        policy = make_policy("noise", sim, data, np.random.default_rng(seed))
        for _ in range(40):
            frames.append(obs.frame)
            truth.append(layout.values(sim.state()))
            actions.append(policy.act())
            obs = sim.step(actions[-1])[0]
    sim.close()
    with torch.no_grad():
        z = tok.encode(torch.from_numpy(np.stack(frames))).numpy()
    bounds = [(0, 40), (40, 80)]
    readings = layout.from_features(read_episodes(reasoner, z, bounds))
    filtered = filter_episodes(filt, readings, np.stack(actions), bounds)
    truth = np.stack(truth)
    raw, tracked = layout.abs_error(readings, truth), layout.abs_error(filtered, truth)
    assert np.median(tracked["joint_velocity"]) < 0.5 * np.median(raw["joint_velocity"])
    # the target stays put: past the first frames its running mean is closer than a reading
    late = np.r_[10:40, 50:80]
    assert np.median(tracked["target"][late]) < np.median(raw["target"][late])


def test_the_env_state_takes_the_filtered_joints():
    from worldsim.envs.vector_env import WorldVectorEnv

    obs, actions = {}, np.random.default_rng(0).uniform(-1, 1, (4, 2, 2)).astype(np.float32)
    for use in (True, False):
        env = WorldVectorEnv("reacher", 2, "state", state_filter=use)
        assert (env.tracker is not None) == use
        assert not use or env.tracker.static == []  # the target as read: see state_filter
        seen = [env.reset(seed=0)[0]]
        seen += [env.step(a)[0] for a in actions]
        env.close()
        obs[use] = np.stack(seen)
    np.testing.assert_array_equal(obs[True][0], obs[False][0])  # a start is the reading
    np.testing.assert_array_equal(obs[True][:, :, 4:6], obs[False][:, :, 4:6])  # target
    assert np.abs(obs[True][1:, :, 6:8] - obs[False][1:, :, 6:8]).max() > 0.1  # velocity
