"""The shipped Reacher world model and reasoner against a live MuJoCo twin, and the world
model on its own (no twin, no re-grounding)."""

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
from worldsim.scene import SceneLayout

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
        self.frames, self.states, self.actions = [obs.frame], [obs.state], []
        for _ in range(CONTEXT - 1):
            self.actions.append(self.policy.act())
            obs = self.sim.step(self.actions[-1])[0]
            self.frames.append(obs.frame)
            self.states.append(obs.state)
        self.engine = FrameEngine(tok, dyn, 1, EngineConfig(), reasoner=reasoner)
        self.reground()

    def reground(self, corrupt: str | None = None) -> None:
        """Restart the dream from the twin's last frames and states; corrupt='noise': from
        noise frames; 'teleport': from another MuJoCo start's frames and state (target
        elsewhere) while the guard keeps its last estimate."""
        ctx = np.stack(self.frames[-CONTEXT:])[None].copy()
        states = np.stack([self.layout.values(s) for s in self.states[-CONTEXT:]])[None]
        if corrupt == "noise":
            ctx[0] = np.random.default_rng(0).integers(0, 256, ctx.shape[1:], np.uint8)
        if corrupt == "teleport":
            other = MujocoSim(self.sim.task)
            obs = other.reset(seed=12345)
            ctx[0, :], states[0, :] = obs.frame, self.layout.values(obs.state)
            other.close()
        acts = np.asarray(self.actions[-(CONTEXT - 1) :], np.float32)[None]
        self.engine.reset(ctx, acts, states=states)
        if corrupt != "teleport":
            self.guard.reset()

    def step(self):
        """One frame in both; returns (fingertip error in m of the reasoner's reading of the
        dreamed frame, drift flag, dream, real observation, the model's own state)."""
        a = self.policy.act()
        out = self.engine.step(a[None])
        obs = self.sim.step(a)[0]
        self.frames.append(obs.frame)
        self.states.append(obs.state)
        self.actions.append(a)
        est = self.layout.from_features(out.scene.result().numpy())
        flag = bool(self.guard.check(est, roundtrip_error(self.tok, out.latents))[0][0])
        true = self.layout.values(self.sim.state())
        tip = self.layout.slices["fingertip"]
        error = float(np.linalg.norm(est[0, tip] - true[tip]))
        return error, flag, out.frames[0], obs, out.state[0].numpy()


def test_shipped_env_id_is_registered():
    assert "worldsim/Reacher-v0" in gym.registry


def test_the_dream_and_its_state_follow_mujoco_on_their_own(world):
    """16 frames under the same actions, nothing but the start shared: the dreamed frames
    beat copying the last real frame by far, and the model's own fingertip stays within
    a centimetre of MuJoCo's (the v2 targets: 1 cm at h16, 2 cm at h50)."""
    model, copy, tip_error = [], [], []
    for seed in range(3):
        twin = Twin(world, seed)
        last = torch.from_numpy(twin.frames[-1])[None]
        tip = twin.layout.slices["fingertip"]
        for _ in range(16):
            _, _, dream, obs, state = twin.step()
            truth, fg = torch.from_numpy(obs.frame)[None], torch.from_numpy(obs.seg > 0)[None]
            model.append(psnr(dream[None], truth, fg))
            copy.append(psnr(last, truth, fg))
        true = twin.layout.values(obs.state)
        tip_error.append(float(np.linalg.norm(state[tip] - true[tip])))
    assert np.mean(model) > np.mean(copy) + 6.0, (np.mean(model), np.mean(copy))
    assert np.median(tip_error) < 0.01, tip_error


def test_drift_fires_on_a_teleported_context_and_regrounding_restores_state_error(world):
    twin = Twin(world, seed=7, policy="expert")
    # the normal level: a freshly grounded dream's first frames
    baseline = float(np.median([twin.step()[0] for _ in range(3)]))
    twin.reground(corrupt="teleport")  # the target jumps; the guard keeps its estimate
    fired = [twin.step()[1] for _ in range(3)]
    assert any(fired), "no drift flag within 3 frames of a teleported context"
    twin.reground()
    after = float(np.median([twin.step()[0] for _ in range(3)]))
    assert after <= 2 * baseline + 0.01, (baseline, after)


def test_a_noise_context_does_not_derail_the_state_grounded_dream(world):
    """Context frames of pure noise with the true state: the dream draws its frames from
    the state, so the next frames are readable scenes at the normal error (v1, drawing
    from latents alone, dissolved and the guard fired within 3 frames)."""
    twin = Twin(world, seed=7, policy="expert")
    baseline = float(np.median([twin.step()[0] for _ in range(3)]))
    twin.reground(corrupt="noise")
    steps = [twin.step() for _ in range(3)]
    assert not any(flag for _, flag, *_ in steps)
    assert np.median([err for err, *_ in steps]) <= 2 * baseline + 0.01, (baseline, steps)


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


def test_the_envs_reward_follows_mujocos_reward(world):
    """The envs' reward (the task's formula on the world model's own state) on the shipped
    weights against MuJoCo's own reward for the same spawn (the env's seed stream
    reproduced) and the same actions."""
    from worldsim.envs.vector_env import WorldVectorEnv

    task = world[0]
    env = WorldVectorEnv(num_envs=1, obs_mode="latent")
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


@pytest.mark.parametrize("name", ["dream_ppo", "dream_ppo_pixels"])
def test_the_shipped_dream_trained_policies_beat_doing_nothing_in_mujoco(name):
    """Trained only in the dream (state, or pixels + the arm's encoders with the target only
    in the pixels), run in MuJoCo from the same resets as the trivial policies: each must
    beat the better of random (about -43 per episode) and zero action (about -11.9)."""
    from importlib import resources

    from worldsim.policies.evaluate import rollout_mujoco
    from worldsim.policies.zoo import make_policy as make_ladder_policy

    task = compose_config("policy_eval", ["policy=random"]).task
    path = resources.files("worldsim") / "checkpoints" / "reacher" / "policies" / name
    seeds = list(range(2000, 2008))
    returns = {}
    for spec in (str(path), "random", "zero"):
        policy, obs = make_ladder_policy(spec, task)
        returns[spec] = np.mean(rollout_mujoco(policy, task, seeds, obs=obs)["return"])
    # measured: state -9.8, pixels -9.5 against zero action's -14.5 on these 8 seeds
    assert returns[str(path)] > max(returns["random"], returns["zero"]) + 2, returns


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


def test_a_free_rollout_under_held_keys_stays_a_scene_that_shows_its_state(
    world, reacher_store, tmp_path
):
    """The 10,000-frame check of `worldsim eval fidelity`, 300 frames long: one world under
    held keys, never re-grounded; every 100th frame inside the data's pixel statistics,
    on the tokenizer's manifold (round trip under the drift guard's real-frame limit),
    and showing the model's own fingertip and target (the position reader's reading of
    the frame within 1 cm of the state)."""
    from worldsim.datasets.store import EpisodeStore
    from worldsim.eval.fidelity import long_rollout

    task, tok, dyn, _, _ = world
    store = EpisodeStore.open(reacher_store)  # real frames to start from and to range
    folder = checkpoint_dir("reacher", None)
    result = long_rollout(
        tok, dyn, store, 300, CONTEXT, EngineConfig(), task, folder, tmp_path, progress=False
    )
    assert result["checked_frames"] == [100, 200, 300] and not result["nan"]
    assert result["roundtrip_under_limit"], result["roundtrip_every_100"]
    assert result["reader_agrees_within_1cm"], result["reader_vs_state_cm_every_100"]
    assert result["reader_agrees_where_readable"] and result["readable_frames_cm"]["fingertip"]
    # against MuJoCo's render of the model's own state (measured 22.9-25.5 dB; eval
    # fidelity's bar is copy-last at h16 + 8 dB = 16.2 on the held-out store)
    assert result["fg_psnr_vs_render_of_state_min"] > 20, result
    means, (lo, hi) = result["pixel_mean_every_100"], result["pixel_mean_range_dataset"]
    assert lo - 3 <= min(means) and max(means) <= hi + 3, (means, lo, hi)


def test_the_shipped_decoder_draws_the_target_where_the_state_puts_it(world, reacher_store):
    """The decoder reads the state as well as the latents: the same latents decoded with
    the state's target moved 4 cm along x show the target moved (measured: 1.7 cm of the 4
    on held-out frames; a latents-only decoder moves it 0), and with the true state the
    frame shows the true target (measured 0.28 cm)."""
    from worldsim.datasets.store import EpisodeStore
    from worldsim.train.position_reader import load_position_reader

    task, tok, dyn, _, _ = world
    reader = load_position_reader(
        checkpoint_dir("reacher", None) / "position_reader.safetensors", task
    )
    store = EpisodeStore.open(reacher_store)
    layout = SceneLayout.from_dict(dyn.cfg.scene)
    rows = store.num_rows
    frames = torch.from_numpy(store.read("frame", 0, rows))
    state = layout.values(
        {k: store.read(k, 0, rows) for k in ("qpos", "qvel", "fingertip", "target")}
    )
    moved = state.copy()
    moved[:, 6] += 0.04
    target = layout.slices["target"]
    with torch.no_grad():
        z = tok.encode(frames)
        read = {n: reader.read_latents(tok, z, states=torch.from_numpy(s)) for n, s in
                (("true", state), ("moved", moved))}  # fmt: skip
    i = reader.cfg.quantities.index("target") * 2
    true_read, moved_read = read["true"][:, i : i + 2], read["moved"][:, i : i + 2]
    assert np.median(np.linalg.norm(true_read - state[:, target], axis=1)) < 0.006
    assert np.median(moved_read[:, 0] - true_read[:, 0]) > 0.01


def test_the_env_state_is_the_world_models_own_and_follows_mujoco():
    """`state` observations come from the world model's own state (no filter, no reasoner)
    and follow Reacher-v5's own observation for the same spawn and actions."""
    from worldsim.envs.vector_env import WorldVectorEnv
    from worldsim.policies.mujoco_env import MujocoTaskEnv

    task = compose_config("dream", ["task=reacher"]).task
    env = WorldVectorEnv("reacher", 1, "state")
    real = MujocoTaskEnv(task, warmup=env.context - 1)
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 2)).astype(np.float32)
    o, _ = env.reset(seed=0, options={"spawn_seeds": [5]})
    r, _ = real.reset(seed=5)
    np.testing.assert_allclose(o[0], r, atol=1e-5)  # the start is MuJoCo's state
    for a in actions:
        o = env.step(a[None])[0]
        r = real.step(a)[0]
    np.testing.assert_array_equal(o, env.layout.observation(env.engine.state.numpy(),
                                                            list(task.observation)))  # fmt: skip
    assert np.abs(o[0, 8:10] - r[8:10]).max() < 0.01  # fingertip - target, in m
    env.close()
    real.close()


@pytest.mark.parametrize("obs_mode", ["pixels", "latent", "state", "pixels+state"])
def test_check_env_passes_on_the_shipped_weights(obs_mode):
    """Gymnasium's own checker, through `gym.make` (wrapped: order enforcing, passive
    checker, time limit) and unwrapped, on the shipped world model: its deterministic-step
    check caught the engine keeping (and zeroing) the caller's action array."""
    from gymnasium.utils.env_checker import check_env

    env = gym.make("worldsim/Reacher-v0", obs_mode=obs_mode)
    check_env(env)
    check_env(env.unwrapped)
    env.close()


def test_left_idle_the_dream_stays_the_scene_its_state_says(world, reacher_store):
    """Issue 27 item 7: `worldsim play` left idle (no key: zero action) turned into noise by
    frame ~820 on v1 and never recovered. 1,000 idle frames of the shipped model: the last
    frame is on the tokenizer's manifold (round trip under the drift guard's real-frame
    limit) and draws the arm where the model's own state puts the fingertip (within 1 cm).
    Not asserted, because it does not hold: the target as drawn, which idle dreams displace
    (32 held-out starts, every 100th frame to 1,000: 11% of readings > 1 cm from the state,
    3% where the arm is clear of it; 23% / 12% with the latents-only decoder)."""
    from worldsim.datasets.store import EpisodeStore
    from worldsim.eval.fidelity import roundtrip_limit
    from worldsim.train.position_reader import load_position_reader

    task, tok, dyn, _, _ = world
    folder = checkpoint_dir("reacher", None)
    store = EpisodeStore.open(reacher_store)
    layout = SceneLayout.from_dict(dyn.cfg.scene)
    w = store.window(store.episode_bounds(0)[0], CONTEXT, 1)
    engine = FrameEngine(tok, dyn, 1, EngineConfig())
    engine.reset(
        torch.from_numpy(w["frame"][None, :CONTEXT]),
        w["action"][None, : CONTEXT - 1],
        states=layout.values(w)[None, :CONTEXT],
    )
    idle = np.zeros((1, dyn.cfg.action_dim), np.float32)
    with torch.no_grad():
        for t in range(1000):
            out = engine.step(idle, decode=t == 999)
    assert roundtrip_error(tok, out.latents)[0] < roundtrip_limit(tok, store, folder)[0]
    reader = load_position_reader(folder / "position_reader.safetensors", task)
    state = out.state.numpy()
    read = reader.put(layout, state, reader.read_latents(tok, out.latents))
    tip = layout.slices["fingertip"]
    assert np.linalg.norm(read[0, tip] - state[0, tip]) < 0.01
