"""The shipped InvertedPendulum world model on its own (no MuJoCo twin, no re-grounding)
against MuJoCo: its frames and state under the same actions, a pole that falls by itself
as MuJoCo's does, the policy trained only in its dream balancing in MuJoCo, and the
position reader its frames are checked with. Measured values are in the model card
(worldsim/checkpoints/inverted_pendulum/MODEL_CARD.md)."""

from __future__ import annotations

from importlib import resources

import gymnasium as gym
import numpy as np
import pytest
import torch

from worldsim.cli import compose_config
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.metrics import psnr
from worldsim.mujoco_sim import MujocoSim
from worldsim.policies.zoo import make_policy
from worldsim.scene import SceneLayout, task_observation

TASK = "inverted_pendulum"
CONTEXT = 4
FOLDER = resources.files("worldsim") / "checkpoints" / TASK


@pytest.fixture(scope="module")
def world():
    task = compose_config("dream", [f"task={TASK}"]).task
    tok, dyn = load_world_model(task, checkpoint_dir(TASK, None))
    return task, tok, dyn, SceneLayout.from_dict(dyn.cfg.scene)


@pytest.fixture(scope="module")
def pendulum_store(tmp_path_factory):
    """Four held-out episodes of the noisy expert (seeds far from the training data's)."""
    from conftest import cli

    out = tmp_path_factory.mktemp("pendulum") / "pendulum.zarr"
    rc = cli("data", "generate", f"task={TASK}", "episodes=4", "seed=1000000", "workers=0",
             "data.keys_fraction=0", f"out={out}")  # fmt: skip
    assert rc == 0
    return out


@pytest.mark.parametrize("obs_mode", ["pixels", "latent", "state", "pixels+proprio"])
def test_the_env_id_is_registered_and_passes_gymnasiums_checker(obs_mode):
    from gymnasium.utils.env_checker import check_env

    env = gym.make("worldsim/InvertedPendulum-v0", obs_mode=obs_mode)
    check_env(env.unwrapped)
    env.close()


def test_the_dream_follows_mujoco_for_16_frames_on_its_own(world):
    """The same actions (the noisy expert reading MuJoCo's state) in MuJoCo and in the
    dream, nothing but the 4 start frames and states shared: the dreamed cart and pole beat
    copying the last real frame by 8 dB of foreground PSNR (the issue's target), and the
    model's own pole angle and cart follow MuJoCo's."""
    task, tok, dyn, layout = world
    expert, _ = make_policy("expert@0.3", task, "state")
    model, copy, pole, cart = [], [], [], []
    for seed in range(3):
        expert.reset(1, seed)
        sim = MujocoSim(task)
        obs = sim.reset(seed=seed)
        frames, states = [obs.frame], [layout.values(obs.state)]
        for _ in range(CONTEXT - 1):
            obs = sim.step(np.zeros(1, np.float32))[0]
            frames.append(obs.frame)
            states.append(layout.values(obs.state))
        engine = FrameEngine(tok, dyn, 1, EngineConfig())
        engine.reset(
            torch.from_numpy(np.stack(frames)[None]),
            np.zeros((1, CONTEXT - 1, 1), np.float32),
            states=np.stack(states)[None],
        )
        last = torch.from_numpy(frames[-1])[None]
        for _ in range(16):
            seen = layout.values(sim.state())[None]
            a = expert.act(task_observation(task, "state", layout, seen))
            out = engine.step(a)
            real = sim.step(a[0])[0]
            truth, fg = torch.from_numpy(real.frame)[None], torch.from_numpy(real.seg > 0)[None]
            model.append(float(psnr(out.frames, truth, fg)))
            copy.append(float(psnr(last, truth, fg)))
        true, own = layout.values(real.state), out.state[0].numpy()
        for name, errors in (("pole_angle", pole), ("cart_position", cart)):
            errors.append(float(np.abs(own[layout.slices[name]] - true[layout.slices[name]])[0]))
        sim.close()
    assert np.mean(model) > np.mean(copy) + 8.0, (np.mean(model), np.mean(copy))
    assert np.median(pole) < 0.02 and np.median(cart) < 0.005, (pole, cart)  # 0.009, 0.0005


def test_left_alone_the_dreamed_pole_falls_as_mujocos_does():
    """Zero action from the same held-out resets: MuJoCo's pole passes 0.2 rad after ~21
    steps. The first model's never fell in the dream (100 of 100 steps) and a policy
    trained there did not transfer; the shipped one's falls within 50% of MuJoCo's time
    (measured: 21.9 steps against 21.5)."""
    from worldsim.policies.evaluate import rollout_dream, rollout_mujoco

    task = compose_config("policy_eval", [f"task={TASK}", "policy=zero"]).task
    policy, obs = make_policy("zero", task)
    seeds = list(range(2000, 2008))
    mujoco = np.mean(rollout_mujoco(policy, task, seeds, obs=obs)["return"])
    dream = np.mean(rollout_dream(policy, task, seeds, obs=obs)["return"])
    assert 0.5 * mujoco < dream < 1.5 * mujoco, (dream, mujoco)


def test_the_shipped_dream_trained_policy_balances_in_mujoco():
    """Trained only in the dream (episodes of 1,000 steps, InvertedPendulum-v5's own), run
    in MuJoCo for the full 1,000 steps: it balances on >= 80% of the seeds (the issue's
    target on 32 held-out seeds, where it balanced on 32; here 8 others)."""
    from worldsim.policies.evaluate import rollout_mujoco

    task = compose_config("policy_eval", [f"task={TASK}", "policy=zero",
                                          "task.max_episode_steps=1000"]).task  # fmt: skip
    policy, obs = make_policy(str(FOLDER / "policies" / "dream_ppo"), task)
    returns = np.asarray(rollout_mujoco(policy, task, list(range(2000, 2008)), obs=obs)["return"])
    assert np.mean(returns >= 1000) >= 0.8, returns


def test_the_position_reader_reads_real_frames_to_a_fraction_of_a_pixel(world, pendulum_store):
    """One pixel is ~2.5 cm of cart travel at this framing; the reader reads the cart and
    the pole off the shipped decoder's drawing of held-out frames' latents."""
    from worldsim.datasets.store import EpisodeStore
    from worldsim.eval.fidelity import state_errors
    from worldsim.train.position_reader import load_position_reader

    task, tok, dyn, layout = world
    reader = load_position_reader(FOLDER / "position_reader.safetensors", task)
    store = EpisodeStore.open(pendulum_store)
    rows = store.num_rows
    state = layout.values({k: store.read(k, 0, rows) for k in ("qpos", "qvel")})
    with torch.no_grad():
        z = tok.encode(torch.from_numpy(store.read("frame", 0, rows)))
        readings = reader.read_latents(tok, z, states=torch.from_numpy(state))
    read = reader.put(layout, state, readings)
    errors = state_errors(layout, read, state)
    assert np.median(errors["cart_position"]) < 0.003, errors["cart_position"]  # 0.08 cm
    assert np.median(errors["pole_angle"]) < 0.005, errors["pole_angle"]  # 0.0017 rad


def test_a_closed_loop_free_rollout_stays_a_scene_that_shows_its_state(
    world, pendulum_store, tmp_path
):
    """The 1,000-frame check of `worldsim eval fidelity`, 300 frames long: one world driven
    by the noisy expert on the model's own state, never re-grounded; every 100th frame
    inside the data's pixel statistics, on the tokenizer's manifold, and showing the
    model's own cart and pole (the position reader within 1 cm / 0.05 rad)."""
    from worldsim.datasets.store import EpisodeStore
    from worldsim.eval.fidelity import long_rollout

    task, tok, dyn, _ = world
    result = long_rollout(
        tok, dyn, EpisodeStore.open(pendulum_store), 300, CONTEXT, EngineConfig(), task,
        checkpoint_dir(TASK, None), tmp_path, progress=False, policy="expert@0.3",
    )  # fmt: skip
    assert result["checked_frames"] == [100, 200, 300] and not result["nan"]
    assert result["pixel_stats_inside_dataset_range"], result["pixel_mean_every_100"]
    assert result["roundtrip_under_limit"], result["roundtrip_every_100"]
    assert result["reader_agrees"], result["reader_vs_state_cm_every_100"]
