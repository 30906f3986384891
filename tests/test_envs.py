"""Gymnasium envs on a tiny untrained world model: API checks, vector == single, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from worldsim.checkpoint import load_model, save_model
from worldsim.cli import compose_config
from worldsim.envs.env import WorldEnv
from worldsim.envs.registration import env_id
from worldsim.envs.vector_env import WorldVectorEnv
from worldsim.model.dynamics import build_dynamics
from worldsim.scene import SceneLayout


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from test_dream import save_tiny_world_model

    path = tmp_path_factory.mktemp("ckpt")
    save_tiny_world_model(path)
    # Reacher never terminates: make the untrained termination head say so too
    dyn, meta = load_model(path / "dynamics.safetensors", "dynamics", build_dynamics)
    with torch.no_grad():
        dyn.heads_out.bias[1] = -20.0
    save_model(path / "dynamics.safetensors", dyn, "dynamics", meta["config"])
    return path  # no reasoner: the envs' state, reward and success are the world model's


def test_env_ids():
    assert env_id("reacher") == "worldsim/Reacher-v0"
    assert env_id("inverted_pendulum") == "worldsim/InvertedPendulum-v0"


@pytest.mark.parametrize("obs_mode", ["pixels", "latent", "state", "pixels+state"])
def test_check_env_passes_for_every_observation_mode(folder, obs_mode):
    env = WorldEnv(checkpoint=str(folder), obs_mode=obs_mode, render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    env.close()


def test_vector_env_matches_single_envs_with_the_same_seed(folder):
    """World i of a vector env reset with seed s is a single env reset with seed s + i."""
    kw = {"checkpoint": str(folder), "obs_mode": "latent+state", "max_episode_steps": 3}
    vec = WorldVectorEnv(num_envs=2, **kw)
    singles = [WorldEnv(**kw) for _ in range(2)]
    obs_v, _ = vec.reset(seed=3)
    obs_s = [env.reset(seed=3 + i)[0] for i, env in enumerate(singles)]
    rng = np.random.default_rng(0)
    for _ in range(5):  # crosses an autoreset at step 4
        for i in range(2):
            for key in ("latent", "state"):
                np.testing.assert_allclose(obs_v[key][i], obs_s[i][key], atol=1e-5, err_msg=key)
        a = rng.uniform(-1, 1, (2, 2)).astype(np.float32)
        obs_v, r_v, term_v, trunc_v, _ = vec.step(a)
        steps = [env.step(a[i]) for i, env in enumerate(singles)]
        obs_s = [s[0] for s in steps]
        np.testing.assert_allclose(r_v, [s[1] for s in steps], atol=1e-5)
        assert trunc_v.tolist() == [s[3] for s in steps]
        if trunc_v.any():  # a single env's user resets it; the vector env does on the next step
            pairs = zip(singles, steps, strict=True)
            obs_s = [env.reset()[0] if s[3] else s[0] for env, s in pairs]
            obs_v, *_ = vec.step(a)
    vec.close()
    for env in singles:
        env.close()


@pytest.mark.parametrize("task", ["reacher", "inverted_pendulum"])
def test_state_observations_skip_the_frame_model_and_give_the_same_episodes(task, folder):
    """With state observations and the task's reward formula nothing reads a frame: the
    env steps the learned state transition alone and gives, bit for bit, what stepping
    the frame model too gives (shipped weights; InvertedPendulum under random forces
    terminates and autoresets worlds on the way)."""
    kw = {"task": task, "num_envs": 3, "obs_mode": "state", "max_episode_steps": 12}
    lean, full = WorldVectorEnv(**kw), WorldVectorEnv(generate_frames=True, **kw)
    assert (lean.generate_frames, full.generate_frames) == (False, True)
    rng = np.random.default_rng(0)
    low, high = lean.single_action_space.low, lean.single_action_space.high
    outs = [env.reset(seed=7)[0] for env in (lean, full)]
    np.testing.assert_array_equal(*outs)
    terminated = 0
    for _ in range(30):  # two truncations and their autoresets
        a = rng.uniform(low, high, (3, len(low))).astype(np.float32)
        (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) = lean.step(a), full.step(a)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        assert te1.tolist() == te2.tolist() and tr1.tolist() == tr2.tolist()
        assert sorted(i1) == sorted(i2)
        np.testing.assert_array_equal(i1.get("is_success", 0), i2.get("is_success", 0))
        terminated += int(te1.sum())
    assert task == "reacher" or terminated > 0  # the pole fell somewhere: autoresets crossed
    assert lean.engine.frameless.all() and not full.engine.frameless.any()
    with pytest.raises(RuntimeError, match="have no frames"):
        lean.engine.step(np.zeros((3, len(low)), np.float32))
    for env in (lean, full):
        env.close()
    with pytest.raises(ValueError, match="read the generated frames"):
        WorldVectorEnv(checkpoint=str(folder), obs_mode="pixels", generate_frames=False)


def test_autoreset_next_step_and_truncation(folder):
    vec = WorldVectorEnv(num_envs=2, checkpoint=str(folder), obs_mode="pixels",
                         max_episode_steps=3)  # fmt: skip
    vec.reset(seed=0)
    zeros = np.zeros((2, 2), np.float32)
    trunc = [vec.step(zeros)[3] for _ in range(3)]
    assert trunc[-1].all() and not trunc[0].any()
    obs, reward, term, trunc, _ = vec.step(zeros)  # the autoreset step
    assert (reward == 0).all() and not trunc.any() and obs.dtype == np.uint8
    vec.close()


@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros((2, 3)), "shape"),
        (np.full((2, 2), np.nan), "NaN"),
        (np.full((2, 2), np.inf), "NaN or inf"),
    ],
)
def test_bad_actions(folder, action, match):
    vec = WorldVectorEnv(num_envs=2, checkpoint=str(folder), obs_mode="latent")
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        vec.step(action)
    vec.close()


def test_out_of_range_actions_are_clipped_as_mujoco_does_and_counted(folder):
    """Reacher-v5 takes any finite action (its actuators clamp): so do the envs, and
    info says how many components of each world's action were clipped."""
    a = np.array([[5.0, -0.5], [-3.0, 2.0]], np.float32)
    clipped = np.clip(a, -1, 1)
    runs = []
    for act in (a, clipped):
        vec = WorldVectorEnv(num_envs=2, checkpoint=str(folder), obs_mode="latent+state")
        vec.reset(seed=0)
        runs.append(vec.step(act.copy()))
        vec.close()
    (obs_a, r_a, *_, info_a), (obs_c, r_c, *_, info_c) = runs
    np.testing.assert_array_equal(obs_a["latent"], obs_c["latent"])
    np.testing.assert_array_equal(r_a, r_c)  # the control cost of the action applied
    assert info_a["clipped_actions"].tolist() == [1, 2]
    assert info_c["clipped_actions"].tolist() == [0, 0] and info_c["_clipped_actions"].all()


def test_vector_reset_takes_one_seed_per_world(folder):
    kw = {"num_envs": 2, "checkpoint": str(folder), "obs_mode": "latent"}
    a, b = WorldVectorEnv(**kw), WorldVectorEnv(**kw)
    np.testing.assert_array_equal(a.reset(seed=[7, 8])[0], b.reset(seed=7)[0])  # = seed + i
    other = a.reset(seed=[8, 7])[0]
    assert not np.array_equal(other[0], b.reset(seed=7)[0][0])
    with pytest.raises(ValueError, match="list of 2 ints"):
        a.reset(seed=[1, 2, 3])
    _, _, _, _, info = a.step(np.zeros((2, 2), np.float32))
    assert info["_is_success"].tolist() == [True, True]  # Gymnasium's mask beside each key
    a.close()
    b.close()


def test_an_env_deep_copies_and_pickles_like_the_mujoco_env(folder):
    import copy
    import pickle

    env = WorldEnv(checkpoint=str(folder), obs_mode="pixels+state")
    env.reset(seed=0)
    twins = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    a = np.ones(2, np.float32)
    want = env.step(a)[0]
    for twin in twins:  # the copy goes on from the same world
        got = twin.step(a)[0]
        np.testing.assert_array_equal(got["pixels"], want["pixels"])
        np.testing.assert_array_equal(got["state"], want["state"])
        twin.reset(seed=1)  # and renders its own MuJoCo resets
        twin.close()
    env.close()


def test_unknown_obs_mode_and_task_list_choices(folder):
    with pytest.raises(ValueError, match="choose from"):
        WorldVectorEnv(checkpoint=str(folder), obs_mode="depth")
    with pytest.raises(ValueError, match="reacher"):
        WorldVectorEnv(task="cartpole", checkpoint=str(folder))


def test_vector_env_call_get_attr_set_attr(folder):
    vec = WorldVectorEnv(num_envs=3, checkpoint=str(folder), obs_mode="latent")
    assert vec.get_attr("max_episode_steps") == (50, 50, 50)
    vec.set_attr("max_episode_steps", 7)
    assert vec.call("max_episode_steps") == (7, 7, 7)
    with pytest.raises(ValueError, match="share"):
        vec.set_attr("max_episode_steps", [1, 2, 3])
    vec.close()


def test_sb3_check_env_and_ppo_on_the_batched_env(folder):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.logger import Logger

    from worldsim.envs.sb3 import SB3VecEnv

    single = WorldEnv(checkpoint=str(folder), obs_mode="state")
    sb3_check_env(single, warn=False)
    single.close()
    venv = SB3VecEnv(WorldVectorEnv(num_envs=4, checkpoint=str(folder), obs_mode="state",
                                    max_episode_steps=20))  # fmt: skip
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.set_logger(Logger(None, []))  # SB3's default logger makes a folder in /tmp
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True)
    obs, reward, done, infos = venv.step(action)
    assert obs.shape == (4, 10) and np.isfinite(obs).all() and reward.shape == (4,)
    venv.close()


def test_sb3_adapter_resets_finished_worlds_in_the_same_step(folder):
    from worldsim.envs.sb3 import SB3VecEnv

    venv = SB3VecEnv(WorldVectorEnv(num_envs=2, checkpoint=str(folder), obs_mode="latent",
                                    max_episode_steps=2))  # fmt: skip
    venv.seed(0)
    venv.reset()
    zeros = np.zeros((2, 2), np.float32)
    venv.step(zeros)
    obs, _, done, infos = venv.step(zeros)
    assert done.all() and all("terminal_observation" in i for i in infos)
    assert all(i["TimeLimit.truncated"] for i in infos)
    assert not np.allclose(obs, np.stack([i["terminal_observation"] for i in infos]))
    _, _, done, _ = venv.step(zeros)  # the new episode runs on: no second reset
    assert not done.any()
    venv.close()


def test_sb3_adapter_takes_a_wrapped_vector_env(folder):
    """Wrapped in Gymnasium vector wrappers, finished worlds' new first observations pass
    through the observation wrappers like every other observation."""
    from gymnasium.wrappers.vector import RecordEpisodeStatistics, TransformObservation

    from worldsim.envs.sb3 import SB3VecEnv

    inner = WorldVectorEnv(num_envs=2, checkpoint=str(folder), obs_mode="state",
                           max_episode_steps=2)  # fmt: skip
    wrapped = RecordEpisodeStatistics(TransformObservation(inner, lambda o: o * 0 + 7.0))
    venv = SB3VecEnv(wrapped)
    venv.seed(0)
    assert (venv.reset() == 7).all()
    zeros = np.zeros((2, 2), np.float32)
    venv.step(zeros)
    obs, _, done, infos = venv.step(zeros)
    assert done.all() and (obs == 7).all()  # the fresh rows were transformed too
    assert all("episode" in i for i in infos)
    venv.close()
    with pytest.raises(TypeError, match="reset_finished"):
        SB3VecEnv(gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")]))


def test_record_video_wrappers_write_videos(folder, tmp_path):
    from gymnasium.wrappers import RecordVideo
    from gymnasium.wrappers.vector import RecordVideo as VecRecordVideo

    env = RecordVideo(
        WorldEnv(
            checkpoint=str(folder), obs_mode="latent", render_mode="rgb_array", max_episode_steps=5
        ),  # fmt: skip
        str(tmp_path / "single"),
        episode_trigger=lambda e: True,
        disable_logger=True,
    )
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    env.close()
    vec = VecRecordVideo(
        WorldVectorEnv(
            num_envs=2, checkpoint=str(folder), obs_mode="latent", render_mode="rgb_array"
        ),  # fmt: skip
        str(tmp_path / "vector"),
        step_trigger=lambda s: s == 0,
        video_length=4,
    )
    vec.reset(seed=0)
    for _ in range(5):
        vec.step(vec.action_space.sample())
    vec.close()
    for sub in ("single", "vector"):
        assert list((tmp_path / sub).glob("*.mp4")), sub


def test_ten_thousand_steps_with_autoresets_stay_flat(folder):
    import resource

    vec = WorldVectorEnv(num_envs=2, checkpoint=str(folder), obs_mode="latent",
                         max_episode_steps=50)  # fmt: skip
    vec.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (64, 2, 2)).astype(np.float32)
    resets = 0
    for t in range(10_000):
        obs, reward, term, trunc, _ = vec.step(actions[t % 64])
        resets += int((term | trunc).sum())
        if t == 999:
            rss_1000 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if t % 500 == 0:
            assert np.isfinite(obs).all() and np.isfinite(reward).all()
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_1000) / 1024
    assert resets >= 2 * (10_000 // 51) and np.isfinite(obs).all()
    assert growth_mib < 20, f"peak memory grew {growth_mib:.1f} MiB from step 1,000 to 10,000"
    vec.close()


@pytest.mark.parametrize("task", ["reacher", "inverted_pendulum", "pusher"])
def test_state_observation_has_the_mujoco_envs_own_layout(task):
    """The task's observation terms applied to MuJoCo's true state give the env's own obs."""
    from worldsim.mujoco_sim import MujocoSim

    cfg = compose_config("generate", [f"task={task}"]).task
    layout, sim = SceneLayout.from_task(cfg), MujocoSim(cfg)
    sim.reset(seed=0)
    for _ in range(3):
        sim.step(sim.action_space.sample())
    own = sim.unwrapped._get_obs()
    ours = layout.observation(layout.values(sim.state())[None], list(cfg.observation))[0]
    np.testing.assert_allclose(ours, own, atol=1e-5)
    sim.close()


def test_state_mode_uses_the_task_observation_layout(folder):
    env = WorldEnv(checkpoint=str(folder), obs_mode="state")
    assert env.observation_space.shape == (10,)  # Reacher-v5's own observation
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[:2] ** 2 + obs[2:4] ** 2, 1.0, atol=1e-5)  # cos^2 + sin^2
    env.close()


def test_state_reward_and_success_are_the_tasks_own_on_the_models_state(folder):
    env = WorldVectorEnv(checkpoint=str(folder), num_envs=2, obs_mode="state")
    head = WorldVectorEnv(
        checkpoint=str(folder), num_envs=2, obs_mode="state", reward_source="head"
    )
    env.reset(seed=0)
    head.reset(seed=0)
    a = np.array([[0.5, -1.0], [0.0, 0.2]], np.float32)
    obs, reward, _, _, info = env.step(a)
    _, head_reward, *_ = head.step(a)
    # the observation is the world model's own state in Reacher-v5's layout
    state = env.engine.state.numpy()
    np.testing.assert_allclose(obs, env.layout.observation(state, list(env.task.observation)))
    # Reacher-v5: -|fingertip - target| - |a|^2; the state's last terms are that vector
    expected = -np.linalg.norm(obs[:, -2:], axis=1) - np.square(a).sum(axis=1)
    np.testing.assert_allclose(reward, expected, atol=1e-5)
    np.testing.assert_array_equal(info["is_success"], np.linalg.norm(obs[:, -2:], axis=1) < 0.02)
    assert not np.allclose(reward, head_reward)
    env.close()
    head.close()
    with pytest.raises(ValueError, match="reward_source 'reasoner'.*'state', 'head'"):
        WorldVectorEnv(checkpoint=str(folder), reward_source="reasoner")


def test_a_task_termination_rule_ends_episodes_on_the_models_state(folder):
    """With the task's termination rule (InvertedPendulum: the pole past 0.2 rad) the
    dream ends an episode where the model's own state breaks it, pays no alive reward for
    that step and autoresets the world on the next (here rules on Reacher's joint speed)."""
    from worldsim.configs.schema import TaskTermination

    env = WorldVectorEnv(checkpoint=str(folder), num_envs=2, obs_mode="state")
    env.reset(seed=0)
    env.task.reward.alive = 1.0
    a = np.array([[0.5, -1.0], [0.0, 0.2]], np.float32)

    def reacher_reward(obs):  # Reacher-v5's formula without the alive term
        return -np.linalg.norm(obs[:, -2:], axis=1) - np.square(a).sum(axis=1)

    env.task.termination = TaskTermination(quantity="joint_velocity", beyond=1e9)
    obs, reward, terminated, truncated, _ = env.step(a)
    assert not terminated.any() and not truncated.any()
    np.testing.assert_allclose(reward, 1 + reacher_reward(obs), atol=1e-5)
    env.task.termination = TaskTermination(quantity="joint_velocity", beyond=-1.0)  # always
    obs, reward, terminated, truncated, _ = env.step(a)
    assert terminated.all() and not truncated.any()
    np.testing.assert_allclose(reward, reacher_reward(obs), atol=1e-5)  # no alive reward
    _, reward, terminated, *_ = env.step(a)  # the autoreset step
    assert not terminated.any() and (reward == 0).all()
    env.close()


def test_dataset_spawn_starts_worlds_from_stored_windows(folder, reacher_store):
    from worldsim.datasets.store import EpisodeStore

    def first_latents(seed: int) -> np.ndarray:
        env = WorldVectorEnv(
            checkpoint=str(folder), num_envs=2, obs_mode="latent", spawn="dataset",
            spawn_data=str(reacher_store),
        )  # fmt: skip
        obs, _ = env.reset(seed=seed)
        tok = env.engine.tok
        env.close()
        return obs, tok

    obs, tok = first_latents(5)
    again, _ = first_latents(5)
    np.testing.assert_array_equal(obs, again)  # the seed picks the windows
    store = EpisodeStore.open(reacher_store)
    with torch.no_grad():
        stored = tok.encode(torch.from_numpy(store.read("frame", 0, store.num_rows))).numpy()
    # each world's pending frame is some stored frame's latents (a window's last frame)
    for world in obs:
        assert np.abs(stored - world).max(axis=(1, 2)).min() < 1e-4
    with pytest.raises(ValueError, match="spawn_data"):
        WorldVectorEnv(checkpoint=str(folder), spawn="dataset")
    with pytest.raises(ValueError, match="choose from"):
        WorldVectorEnv(checkpoint=str(folder), spawn="replay")


ASYNC_SCRIPT = """
import sys
import gymnasium as gym
import numpy as np
import worldsim.envs  # registers the ids


def main(folder):
    # the parent renders before it forks (its own env's spawn frames), and after
    own = gym.make("worldsim/Reacher-v0", checkpoint=folder, obs_mode="pixels")
    own.reset(seed=0)
    envs = gym.make_vec("worldsim/Reacher-v0", num_envs=2, vectorization_mode="async",
                        checkpoint=folder, obs_mode="pixels")
    envs.reset(seed=0)
    for _ in range(100):
        obs = envs.step(envs.action_space.sample())[0]
    envs.close()
    assert obs.shape == (2, 64, 64, 3)
    assert own.reset(seed=0)[0].shape == (64, 64, 3)
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv
    v = make_vec_env("worldsim/Reacher-v0", n_envs=2, vec_env_cls=SubprocVecEnv,
                     env_kwargs={"checkpoint": folder, "obs_mode": "pixels"})
    v.reset()
    for _ in range(100):
        v.step(np.stack([v.action_space.sample() for _ in range(2)]))
    v.close()
    print("stepped")


if __name__ == "__main__":
    main(sys.argv[1])
"""


def test_async_and_subprocess_vector_envs_step_with_the_default_start_method(folder, tmp_path):
    """Gymnasium's AsyncVectorEnv (fork) and SB3's SubprocVecEnv (forkserver) each step
    100 steps, after the parent has rendered itself: MuJoCo's GL context is made lazily
    in the process that renders, and freed with its EGL display before any fork, so no
    forked child deadlocks on its parent's (a parent that had rendered hung them past 300
    s before)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "vectors.py"
    script.write_text(ASYNC_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(script), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0 and "stepped" in run.stdout, run.stderr[-3000:]


def test_the_env_sets_the_thread_count_it_is_given(folder):
    """gym.make(..., threads=N) sets torch's intra-op threads (the documented override)."""
    before = torch.get_num_threads()
    try:
        env = gym.make("worldsim/Reacher-v0", checkpoint=str(folder), obs_mode="state", threads=1)
        assert torch.get_num_threads() == 1
        env.close()
    finally:
        torch.set_num_threads(before)


def test_one_reward_default_for_every_entry_point():
    """gym.make / make_vec and the policy commands score the dream the same way by default."""
    import inspect

    params = inspect.signature(WorldVectorEnv.__init__).parameters  # WorldEnv passes it on
    defaults = {"gym.make": params["reward_source"].default}
    for name in ("policy_train", "policy_eval", "policy_compare", "policy_transfer"):
        defaults[name] = compose_config(name, ["task=reacher"]).reward_source
    assert set(defaults.values()) == {"state"}, defaults
