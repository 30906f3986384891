"""Policies: metric functions by hand, policy files, training in both places, matched evaluation."""

from __future__ import annotations

import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import load_file
from test_envs import folder  # noqa: F401  (a tiny untrained world model)

from worldsim.cli import GENERATE_ALIASES, compose_config, main
from worldsim.dream import checkpoint_dir
from worldsim.envs.vector_env import WorldVectorEnv
from worldsim.policies import evaluate
from worldsim.policies.metrics import mmrv, pearson, ranks, spearman, transfer_ratio
from worldsim.policies.mujoco_env import MujocoTaskEnv
from worldsim.policies.policy_file import PolicySpaceError, SB3Policy
from worldsim.policies.zoo import make_policy

TINY_PPO = ["algo.kwargs.n_steps=16", "algo.kwargs.batch_size=32", "algo.kwargs.n_epochs=1"]


# -- metrics against hand-computed cases --------------------------------------------
def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = 1,2,3,4 ; y = 1,3,2,4: d^2 = 0,1,1,0 -> rho = 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # monotone but not linear: Spearman 1, Pearson below 1
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 10, 100, 1000]) < 0.9
    np.testing.assert_allclose(ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    with pytest.raises(ValueError, match="same length"):
        pearson([1, 2], [1, 2, 3])


def test_mmrv_by_hand():
    real = [0.0, 0.5, 1.0]
    assert mmrv([1, 2, 3], real) == 0.0  # same order: no violation
    # policies 0 and 1 swapped by the simulator: each sees a 0.5 violation, policy 2 none
    assert mmrv([2, 1, 3], real) == pytest.approx(1 / 3)
    # fully reversed: 0 and 2 violate by 1, 1 by 0.5 -> (1 + 0.5 + 1) / 3
    assert mmrv([3, 2, 1], real) == pytest.approx(2.5 / 3)
    # returns are rescaled to [0, 1] by the real range first
    assert mmrv([2, 1, 3], [-40.0, -20.0, 0.0]) == pytest.approx(1 / 3)
    assert mmrv([2, 1, 3], [-40.0, -20.0, 0.0], normalise=False) == pytest.approx(40 / 3)
    # or by the best's margin over a floor (doing nothing, -20): the swap costs 1, not 0.5
    assert mmrv([2, 1, 3], [-40.0, -20.0, 0.0], floor=-20.0) == pytest.approx(2 / 3)


def test_transfer_ratio_by_hand():
    assert transfer_ratio(-10.0, -5.0, -45.0) == pytest.approx(35 / 40)
    # Reacher-v5: doing nothing (-11.9) scores 0.90 against random (-43), 0 against itself
    assert transfer_ratio(-11.9, -8.5, -43.0) == pytest.approx(0.9014, abs=1e-4)
    assert transfer_ratio(-11.9, -8.5, -11.9) == 0.0
    assert transfer_ratio(-5.0, -5.0, -45.0) == 1.0
    with pytest.raises(ValueError, match="undefined"):
        transfer_ratio(-5.0, -45.0, -45.0)
    # a transfer report keeps going: the seed's ratio is None and its table says so
    from worldsim.policies.transfer import defined_ratio, ratio_cell

    assert defined_ratio(-5.0, -45.0, -45.0) is None and ratio_cell(None) == "undefined"
    assert defined_ratio(-10.0, -5.0, -45.0) == pytest.approx(35 / 40)


# -- scripted policies ----------------------------------------------------------------
def test_observation_expert_matches_the_privileged_expert():
    """The ladder's expert reads Reacher-v5's observation; the collection expert reads
    MuJoCo's state. Same controller, so the same action in the same state."""
    from worldsim.datasets.policies import ReacherExpert

    task = compose_config("policy_eval", ["policy=expert"]).task
    env = MujocoTaskEnv(task)
    policy, obs_mode = make_policy("expert", task)
    assert obs_mode == "state"
    privileged = ReacherExpert(env.sim, np.random.default_rng(0))
    obs, _ = env.reset(seed=3)
    for _ in range(20):
        a = policy.act(obs[None])[0]
        np.testing.assert_allclose(a, privileged.act(), atol=1e-4)
        obs, *_ = env.step(a)
    env.close()


def test_bad_policy_specs():
    task = compose_config("policy_eval", ["policy=expert"]).task
    with pytest.raises(ValueError, match="not a number"):
        make_policy("expert@lots", task)
    with pytest.raises(ValueError, match="neither random, zero, expert"):
        make_policy("/no/such/policy", task)
    zero, obs = make_policy("zero", task)
    assert obs == "state" and not zero.act(np.ones((3, 10))).any()  # doing nothing
    with pytest.raises(ValueError, match="shipped: \\['dream_ppo', 'dream_ppo_pixels'\\]"):
        make_policy("shipped:nope", task)


def test_a_shipped_policy_is_named_without_a_path(tmp_path, monkeypatch):
    """`shipped:dream_ppo` finds the file inside the installed package, from any folder."""
    pytest.importorskip("stable_baselines3")
    monkeypatch.chdir(tmp_path)
    task = compose_config("policy_eval", ["policy=expert"]).task
    policy, obs = make_policy("shipped:dream_ppo", task)
    assert obs == "state" and policy.act(np.zeros((2, 10), np.float32)).shape == (2, 2)


def test_bad_training_settings_name_the_choices(tmp_path, capsys):
    for bad, choices in (("obs=latent", "'state', 'pixels'"), ("where=moon", "'dream', 'mujoco'")):
        assert main(["policy", "train", bad, f"out_dir={tmp_path}"]) == 2
        assert choices in capsys.readouterr().err


# -- training, policy files --------------------------------------------------------------
@pytest.fixture(scope="module")
def mujoco_policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("pol") / "run"
    code = main(
        [
            "policy",
            "train",
            "where=mujoco",
            "steps=64",
            "n_envs=2",
            "save_every=32",
            f"out_dir={out}",
            *TINY_PPO,
        ]
    )
    assert code == 0
    return out


def test_mujoco_training_writes_policy_ladder_and_logs(mujoco_policy):
    ladder = sorted(p.name for p in (mujoco_policy / "ladder").iterdir())
    assert ladder == [
        "step_00000032.json",
        "step_00000032.safetensors",
        "step_00000064.json",
        "step_00000064.safetensors",
    ]
    assert (mujoco_policy / "logs" / "progress.csv").stat().st_size > 0
    card = json.loads((mujoco_policy / "policy.json").read_text())
    assert (card["where"], card["algo"], card["obs"], card["steps"]) == (
        "mujoco",
        "ppo",
        "state",
        64,
    )
    # weights are safetensors, never a pickle
    tensors = load_file(mujoco_policy / "policy.safetensors")
    assert any(k.startswith("action_net") for k in tensors)
    assert not list(mujoco_policy.glob("*.zip")) and not list(mujoco_policy.glob("*.pkl"))


def test_loaded_policy_acts_like_the_trained_one(mujoco_policy):
    from stable_baselines3 import PPO

    loaded = SB3Policy(mujoco_policy / "policy")
    card = loaded.card
    fresh = PPO(
        "MlpPolicy",
        MujocoTaskEnv(compose_config("policy_eval", ["policy=x"]).task),
        policy_kwargs=card["policy_kwargs"],
    )
    obs = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    # a freshly initialised network acts differently: the loaded weights are the trained ones
    assert not np.allclose(loaded.act(obs), fresh.policy.predict(obs, deterministic=True)[0])
    fresh.policy.load_state_dict(loaded.policy.state_dict())
    np.testing.assert_allclose(loaded.act(obs), fresh.policy.predict(obs, deterministic=True)[0])


def test_a_sac_policy_file_loads_and_acts_like_the_trained_one(tmp_path):
    """SB3's SAC adds use_sde to its policy_kwargs: a SAC policy file must load (it did
    not: its card was refused for that key)."""
    from stable_baselines3 import SAC

    out = tmp_path / "sac"
    args = ["policy", "train", "algo=sac", "where=mujoco", "steps=64", "n_envs=2"]
    args += ["algo.kwargs.learning_starts=16", "algo.kwargs.gradient_steps=1", f"out_dir={out}"]
    assert main(args) == 0
    loaded = SB3Policy(out / "policy")
    assert loaded.card["algo"] == "sac"
    env = MujocoTaskEnv(compose_config("policy_eval", ["policy=x"]).task)
    fresh = SAC("MlpPolicy", env, policy_kwargs=loaded.card["policy_kwargs"])
    obs = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    fresh.policy.load_state_dict(loaded.policy.state_dict())
    np.testing.assert_allclose(loaded.act(obs), fresh.policy.predict(obs, deterministic=True)[0])


def test_loading_refuses_mismatched_spaces(mujoco_policy):
    policy = SB3Policy(mujoco_policy / "policy")
    policy.check(
        spaces.Box(-np.inf, np.inf, (10,), np.float32), spaces.Box(-1, 1, (2,), np.float32)
    )
    with pytest.raises(PolicySpaceError, match=r"\(10,\).*\(23,\)"):
        policy.check(spaces.Box(-np.inf, np.inf, (23,), np.float32), spaces.Box(-1, 1, (2,)))
    with pytest.raises(PolicySpaceError, match="action space Box.*action space Box.*\\(7,\\)"):
        policy.check(spaces.Box(-np.inf, np.inf, (10,), np.float32), spaces.Box(-2, 2, (7,)))
    with pytest.raises(ValueError, match="obs=state, not obs=pixels"):
        make_policy(str(mujoco_policy / "policy"), None, obs="pixels")


def test_a_reacher_policy_is_refused_on_pusher(mujoco_policy, tmp_path, capsys):
    """CLI: a policy for another task fails naming both tasks, exit 2 (before the spaces,
    which differ too, are compared)."""
    code = main(
        [
            "policy",
            "eval",
            "task=pusher",
            f"policy={mujoco_policy / 'policy'}",
            "where=mujoco",
            "episodes=1",
            f"out_dir={tmp_path}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "trained for task='reacher', not 'pusher'" in err


def test_dream_training_runs_on_the_batched_env(folder, tmp_path):  # noqa: F811
    out = tmp_path / "dream"
    code = main(
        [
            "policy",
            "train",
            "where=dream",
            "steps=32",
            "n_envs=2",
            "save_every=0",
            f"checkpoint={folder}",
            f"out_dir={out}",
            *TINY_PPO,
        ]
    )
    assert code == 0
    card = json.loads((out / "policy.json").read_text())
    assert (card["where"], card["reward_source"], card["steps"]) == ("dream", "state", 32)
    assert not (out / "ladder").exists()


# -- evaluation ------------------------------------------------------------------------
def test_matched_seeds_start_both_places_from_the_same_mujoco_frames(folder):  # noqa: F811
    task = compose_config("policy_eval", ["policy=x"]).task
    real = MujocoTaskEnv(task, warmup=3)
    kw = {"num_envs": 2, "obs_mode": "state", "checkpoint": str(folder)}
    dream = WorldVectorEnv("reacher", generate_frames=True, **kw)
    lean = WorldVectorEnv("reacher", **kw)  # state observations: no frames at all
    dream.reset(seed=0, options={"spawn_seeds": [11, 12]})
    lean_obs, _ = lean.reset(seed=0, options={"spawn_seeds": [11, 12]})
    assert lean.spawn_frames is None
    for i, seed in enumerate([11, 12]):
        real_obs, _ = real.reset(seed=seed)
        np.testing.assert_array_equal(dream.spawn_frames[i, -1], real.render_frame())
        np.testing.assert_allclose(lean_obs[i], real_obs, atol=1e-6)  # the same start state
    assert not np.array_equal(dream.spawn_frames[0, -1], dream.spawn_frames[1, -1])
    lean.close()
    with pytest.raises(ValueError, match="one seed per world"):
        dream.reset(options={"spawn_seeds": [1]})
    real.close()
    dream.close()


def eval_info(out, *args: str) -> dict:
    """`policy eval` with `args` into `out` (it must succeed): its eval_info.json."""
    assert main(["policy", "eval", *args, "batch=2", f"out_dir={out}"]) == 0
    return json.loads((out / "eval_info.json").read_text())


def test_eval_writes_matched_results_and_videos(folder, tmp_path):  # noqa: F811
    out = tmp_path / "eval"
    info = eval_info(out, "policy=expert", "episodes=3", "videos=1", f"checkpoint={folder}")
    assert info["status"] == "complete"
    assert info["seeds"] == [1000, 1001, 1002]
    for where in ("mujoco", "dream"):
        for mode in ("deterministic", "stochastic"):
            eps = info["results"][where][mode]["episodes"]
            assert [e["seed"] for e in eps] == info["seeds"]
    assert info["results"]["mujoco"]["deterministic"]["success_rate"] == 1.0  # the expert reaches
    video = [f for f in imageio.get_reader(out / info["videos"][0])]
    assert len(video) == 51  # the starting frame + 50 steps
    assert video[0].shape[1] == 3 * video[0].shape[0]  # MuJoCo | dream | difference


def test_interrupted_eval_keeps_partial_results(folder, tmp_path, monkeypatch):  # noqa: F811
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "rollout_dream", interrupted)
    cfg = compose_config(
        "policy_eval",
        [
            "policy=random",
            "episodes=2",
            "stochastic=false",
            f"checkpoint={folder}",
            f"out_dir={tmp_path}",
        ],
    )
    with pytest.raises(KeyboardInterrupt):
        evaluate.eval_policy(cfg, progress=False)
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert info["status"] == "interrupted"
    assert len(info["results"]["mujoco"]["deterministic"]["episodes"]) == 2
    assert "dream" not in info["results"]


@pytest.fixture
def with_linear_model(folder, tmp_path):  # noqa: F811
    """The tiny world model's folder beside the shipped linear joint model."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(folder, ckpt)
    shutil.copy(checkpoint_dir("reacher", None) / "state_filter.json", ckpt)
    return ckpt


@pytest.mark.parametrize("where", ["dream", "linear", "mujoco"])
def test_training_episodes_last_the_tasks_max_episode_steps_everywhere(
    with_linear_model, where, monkeypatch
):
    """`task.max_episode_steps=N` reaches the env a policy trains on in every place: the
    dream and the linear baseline once kept their task file's 100 steps, so an
    InvertedPendulum policy meant to learn 1,000-step balance never saw a step past 100."""
    from worldsim.policies.train import make_train_env

    cfg = compose_config("policy_train", [f"where={where}", f"checkpoint={with_linear_model}",
                                          "n_envs=2", "task.max_episode_steps=7"])  # fmt: skip
    env, _ = make_train_env(cfg)
    env.reset()
    lengths = []
    for _ in range(8):  # the zero action; Reacher never terminates: every episode truncates
        for info in env.step(np.zeros((2, 2), np.float32))[3]:
            if "episode" in info:
                lengths.append(info["episode"]["l"])
    env.close()
    assert lengths == [7, 7], lengths
    # ... and the episodes `policy eval` runs there: Reacher's zero action costs ~0.24 a
    # step, -11.9 over its task file's 50
    policy, _ = make_policy("zero", cfg.task)
    rollout = {"dream": evaluate.rollout_dream, "linear": evaluate.rollout_linear,
               "mujoco": evaluate.rollout_mujoco}[where]  # fmt: skip
    kwargs = {} if where == "mujoco" else {"checkpoint": str(with_linear_model)}
    seen = []
    if where != "mujoco":  # the tiny dream's state is untrained: count its steps instead
        run = evaluate.rollout_vector

        def counted(env, *args):
            seen.append(env.max_episode_steps)
            return run(env, *args)

        monkeypatch.setattr(evaluate, "rollout_vector", counted)
    returns = rollout(policy, cfg.task, [1, 2], **kwargs)["return"]
    assert len(returns) == 2
    assert seen == [7] if where != "mujoco" else all(-5 < r < 0 for r in returns), returns


def test_compare_ranks_a_ladder_in_every_place(with_linear_model, tmp_path, mujoco_policy):
    code = main(
        [
            "policy",
            "compare",
            "episodes=2",
            "scripted=[random,zero,expert,expert@1]",
            f"ladder={mujoco_policy / 'ladder'}",
            f"checkpoint={with_linear_model}",
            f"out_dir={tmp_path / 'out'}",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert report["status"] == "complete"
    assert [r["policy"] for r in report["rungs"]][:4] == ["random", "zero", "expert", "expert@1"]
    assert len(report["rungs"]) == 6
    assert all({"mujoco", "dream", "linear"} <= set(r) for r in report["rungs"])
    for key in ("agreement", "agreement_linear"):
        agreement = report[key]["return"]
        assert -1 <= agreement["spearman"] <= 1 and agreement["mmrv"] >= 0
        real = [r["mujoco"]["mean_return"] for r in report["rungs"]]
        sim = [r[key.partition("_")[2] or "dream"]["mean_return"] for r in report["rungs"]]
        floor = max(real[:2])  # random, zero
        assert agreement["mmrv_trivial"] == pytest.approx(mmrv(sim, real, floor=floor))
    assert (tmp_path / "out" / "compare.png").stat().st_size > 0
    assert main(["policy", "compare", "baselines=[blind]", f"out_dir={tmp_path}"]) == 2


def test_transfer_report_trains_all_three_and_resumes(with_linear_model, tmp_path):
    ckpt = with_linear_model
    args = [
        "policy",
        "transfer",
        "steps=32",
        "n_envs=2",
        "seeds=[0]",
        "episodes=2",
        f"checkpoint={ckpt}",
        f"out_dir={tmp_path / 'out'}",
        *TINY_PPO,
    ]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "transfer.json").read_text())
    run = report["runs"][0]
    rnd, zero = report["random"]["mean_return"], report["zero"]["mean_return"]
    best = max(rnd, zero)
    assert report["trivial_return"] == best
    blind = run["blind"]["mean_return"]  # trained in MuJoCo on the encoders alone
    for where in ("dream", "linear"):  # the world model and the baseline simulator
        r, mj = run[where]["mean_return"], run["mujoco"]["mean_return"]
        assert run[where]["ratio"] == pytest.approx((r - rnd) / (mj - rnd))
        assert run[where]["ratio_trivial"] == pytest.approx((r - best) / (mj - best))
        assert run[where]["ratio_blind"] == pytest.approx((r - blind) / (mj - blind))
        assert report[where]["ratio_trivial"]["per_seed"] == [run[where]["ratio_trivial"]]
        assert 0 <= run[where]["success_rate"] <= 1
        pair = run[where]["pair_distance"]  # Reacher's fingertip-target distance, in MuJoCo
        assert pair["first_m"] == pytest.approx(run["mujoco"]["pair_distance"]["first_m"])
        assert report[where]["pair_distance"]["last_m"] == pytest.approx(pair["last_m"])
    md = (tmp_path / "out" / "transfer.md").read_text()
    assert "trivial-norm." in md and "linear joint model alone (baseline)" in md
    assert "the fingertip within 0.02 m of the target" in md and "distance first -> last" in md
    stamp = (tmp_path / "out" / "dream-seed0" / "policy.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # finished runs are reused, not retrained
    assert (tmp_path / "out" / "dream-seed0" / "policy.safetensors").stat().st_mtime_ns == stamp


def test_a_pixel_transfer_report_says_why_the_linear_baseline_has_no_row(folder, tmp_path):  # noqa: F811
    args = ["policy", "transfer", "obs=pixels+proprio", "steps=32", "n_envs=2", "seeds=[0]"]
    args += ["episodes=1", f"checkpoint={folder}", f"out_dir={tmp_path}", *TINY_PPO]
    assert main(args) == 0  # default baselines: linear (cannot train on pixels) and blind
    report = json.loads((tmp_path / "transfer.json").read_text())
    run = report["runs"][0]
    assert run["dream"]["policy"].endswith("dream-seed0/policy") and "linear" not in run
    assert "it has no pixels" in report["cannot_train"]["linear"]
    blind = json.loads((tmp_path / "blind-seed0" / "policy.json").read_text())
    assert (blind["where"], blind["obs"]) == ("mujoco", "proprio")  # never sees the target
    md = (tmp_path / "transfer.md").read_text()
    assert "obs=pixels+proprio" in md and "linear joint model alone (baseline) | cannot" in md
    assert "blind-norm." in md


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_train_state_round_trip_restores_networks_and_optimizers(algo, tmp_path):
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.logger import Logger

    from worldsim.policies.train_state import load_train_state, save_train_state

    def make():
        kw = {"n_steps": 32, "batch_size": 32} if algo == "ppo" else {"learning_starts": 8}
        return {"ppo": PPO, "sac": SAC}[algo]("MlpPolicy", gym.make("Pendulum-v1"), **kw)

    trained = make()
    trained.set_logger(Logger(None, []))  # SB3's default logger makes a folder in /tmp
    trained.learn(64)
    save_train_state(trained, tmp_path / "s.safetensors", {"algo": algo})
    fresh = make()
    assert load_train_state(fresh, tmp_path / "s.safetensors", {"algo": algo}) == 64
    want, got = trained.get_parameters(), fresh.get_parameters()
    for name in want:
        a, b = want[name], got[name]
        if name == "policy":
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:  # an optimizer: Adam's moments and step counts
            for pid, st in a["state"].items():
                assert all(torch.equal(st[k], b["state"][pid][k]) for k in st)
    if algo == "sac":
        assert torch.equal(trained.log_ent_coef, fresh.log_ent_coef)
    with pytest.raises(ValueError, match="other settings"):
        load_train_state(make(), tmp_path / "s.safetensors", {"algo": "other"})


def test_policy_training_resumes_from_its_last_checkpoint(tmp_path):
    args = [
        "policy",
        "train",
        "where=mujoco",
        "n_envs=2",
        "save_every=32",
        f"out_dir={tmp_path}",
        *TINY_PPO,
    ]
    assert main([*args, "steps=32"]) == 0
    first = json.loads((tmp_path / "policy.json").read_text())
    assert main([*args, "steps=64"]) == 0  # a larger budget continues the same run
    card = json.loads((tmp_path / "policy.json").read_text())
    assert (first["steps"], card["steps"]) == (32, 64)
    assert (tmp_path / "logs" / "from_32" / "progress.csv").is_file()
    assert sorted(p.stem for p in (tmp_path / "ladder").glob("*.json")) == [
        "step_00000032",
        "step_00000064",
    ]
    assert main([*args, "steps=64", "seed=9"]) == 2  # another seed is another run


def test_the_linear_model_baseline_follows_mujoco_on_matched_starts():
    """The baseline simulator (state_filter.json's joint model alone + MuJoCo kinematics)
    scores the zero action and the scripted expert as MuJoCo does from the same resets."""
    task = compose_config("policy_eval", ["policy=expert"]).task
    seeds = [1000, 1001, 1002, 1003]
    for spec in ("zero", "expert"):
        policy, _ = make_policy(spec, task)
        real = evaluate.rollout_mujoco(policy, task, seeds)["return"]
        linear = evaluate.rollout_linear(policy, task, seeds, batch=4)["return"]
        np.testing.assert_allclose(linear, real, atol=0.05, err_msg=spec)
    assert np.mean(real) > -15  # the expert reaches: not a test of two idle arms


def test_a_pixels_and_proprio_policy_trains_in_the_dream_and_acts_in_both_places(
    with_linear_model, tmp_path
):
    """obs=pixels+proprio: the camera frame and the arm's encoders (no target), the same
    in both places; SB3's CNN extractor (one module under three names) is stored once and
    loads back; training resumes; `policy eval` and `compare` run it in MuJoCo and the
    dream (not in the linear-model baseline, which has no frames)."""
    ckpt = with_linear_model  # the tiny world model, beside the linear joint model
    common = ["obs=pixels+proprio", "n_envs=2", "save_every=0", *TINY_PPO]
    out = tmp_path / "dream"
    args = ["policy", "train", "where=dream", f"checkpoint={ckpt}", f"out_dir={out}", *common]
    assert main([*args, "steps=32"]) == 0
    assert main([*args, "steps=64"]) == 0  # resumes from the train state, CNN included
    card = json.loads((out / "policy.json").read_text())
    assert (card["obs"], card["steps"], card["policy_class"]) == (
        "pixels+proprio",
        64,
        "MultiInputPolicy",
    )
    assert card["observation_space"]["spaces"]["pixels"]["shape"] == [64, 64, 3]
    assert card["observation_space"]["spaces"]["proprio"]["shape"] == [6]
    names = list(load_file(out / "policy.safetensors"))
    assert any(n.startswith("features_extractor.extractors.pixels.cnn") for n in names)
    assert not any(n.startswith(("pi_features_extractor", "vf_features_extractor")) for n in names)

    policy = SB3Policy(out / "policy")
    shared = policy.policy.pi_features_extractor.extractors["pixels"].cnn[0].weight
    stored = load_file(out / "policy.safetensors")
    assert torch.equal(shared, stored["features_extractor.extractors.pixels.cnn.0.weight"])
    task = compose_config("policy_eval", ["policy=x"]).task
    real = MujocoTaskEnv(task, obs="pixels+proprio", warmup=3)
    policy.check(real.observation_space, real.action_space)
    obs, _ = real.reset(seed=5)
    q, qdot = real.sim.data.qpos[:2], real.sim.data.qvel[:2]
    want = np.concatenate([np.cos(q), np.sin(q), qdot]).astype(np.float32)
    np.testing.assert_allclose(obs["proprio"], want, rtol=1e-6)  # encoders only: no target
    np.testing.assert_array_equal(obs["pixels"], real.render_frame())
    assert policy.act({k: v[None] for k, v in obs.items()}).shape == (1, 2)
    real.close()
    with pytest.raises(PolicySpaceError, match="Dict"):
        policy.check(spaces.Box(0, 255, (64, 64, 3), np.uint8), real.action_space)

    cmp = tmp_path / "compare"  # a ladder mixing state and pixel policies
    args = ["policy", "compare", "episodes=1", "scripted=[random,zero,expert]"]
    assert main([*args, f"ladder={out}", f"checkpoint={ckpt}", f"out_dir={cmp}"]) == 0
    report = json.loads((cmp / "compare.json").read_text())
    pixel = report["rungs"][-1]
    assert pixel["obs"] == "pixels+proprio" and {"mujoco", "dream"} <= set(pixel)
    assert "linear" not in pixel and "obs=state only" in pixel["not_run"]["linear"]
    assert (report["agreement"]["policies"], report["agreement_linear"]["policies"]) == (4, 3)

    ev = tmp_path / "eval"
    common = ["episodes=2", "videos=0", "stochastic=false", f"checkpoint={ckpt}"]
    info = eval_info(ev, f"policy={out / 'policy'}", *common)
    assert info["obs"] == "pixels+proprio"
    for where in ("mujoco", "dream"):
        assert len(info["results"][where]["deterministic"]["episodes"]) == 2


def test_pusher_episodes_report_whether_the_object_came_closer_to_the_goal():
    """MuJoCo episodes measure the success pair's distance at the first and last step
    (zero action leaves Pusher's puck where it is), and an episode counts as closer only
    past CLOSER_M."""
    task = compose_config("policy_eval", ["task=pusher", "policy=zero"]).task
    seeds = [1000, 1001, 1002]
    zero, _ = make_policy("zero", task)
    result = evaluate.rollout_mujoco(zero, task, seeds)
    s = evaluate.summarise(result, seeds)
    first = [ep["pair_distance_m"][0] for ep in s["episodes"]]
    assert min(first) > task.success_distance  # Pusher never starts solved
    assert s["pair_distance"]["last_m"] == pytest.approx(s["pair_distance"]["first_m"])
    assert s["pair_distance"]["closer_fraction"] == 0.0
    moved = evaluate.summarise(
        {
            "return": [0.0, 0.0],
            "success": [False, False],
            "pair_distance": [(0.3, 0.25), (0.3, 0.295)],
        },
        [0, 1],
    )
    assert moved["pair_distance"]["closer_fraction"] == 0.5  # 5 cm closer counts, 5 mm not
    assert moved["episodes"][0]["pair_distance_m"] == [0.3, 0.25]


def test_pushers_encoders_are_the_arms_joints_as_pusher_v5_lists_them():
    """obs=proprio (the blind baseline; the proprio part of pixels+proprio): the arm's 7
    joint angles and velocities, Pusher-v5's first 14 observation entries; never the
    object or the goal."""
    task = compose_config("policy_eval", ["task=pusher", "policy=zero"]).task
    envs = [MujocoTaskEnv(task, obs=obs) for obs in ("state", "proprio")]
    (state, _), (proprio, _) = (env.reset(seed=3) for env in envs)
    assert proprio.shape == (14,)
    np.testing.assert_allclose(proprio, state[:14], atol=1e-6)
    for env in envs:
        env.close()


def test_the_inverted_pendulum_expert_reads_the_observation_and_balances_in_mujoco():
    """The ladder's `expert` for InvertedPendulum is the data's LQR on the task observation
    (what the dream's state gives too): it keeps the pole up for InvertedPendulum-v5's full
    1,000 steps, where doing nothing lets it fall."""
    task = compose_config("policy_eval", ["task=inverted_pendulum", "policy=expert"]).task
    task.max_episode_steps = 1000
    returns = {}
    for spec in ("expert", "zero"):
        policy, obs = make_policy(spec, task)
        returns[spec] = evaluate.rollout_mujoco(policy, task, [3000, 3001], obs=obs)["return"]
    assert returns["expert"] == [1000.0, 1000.0], returns
    assert max(returns["zero"]) < 1000.0, returns


class _FallingWorlds:
    """Two worlds with reward 1 per step: world 0 terminates at its 3rd step, world 1
    runs to the end; autoreset would start world 0 over and keep paying it."""

    num_envs, max_episode_steps = 2, 10
    single_observation_space = spaces.Box(-1, 1, (1,), np.float32)
    single_action_space = spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, success_min_steps: int) -> None:
        from omegaconf import OmegaConf

        self.task = OmegaConf.create({"success_min_steps": success_min_steps})

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros((2, 1), np.float32), {}

    def step(self, actions):
        self.t += 1
        terminated = np.array([self.t == 3, False])
        truncated = np.array([False, self.t == 10])
        return np.zeros((2, 1), np.float32), np.ones(2), terminated, truncated, {}

    def close(self):
        pass


def test_a_world_that_ends_early_stops_counting_though_autoreset_restarts_it():
    """The first model's dream zero-action 'return 100' for InvertedPendulum summed every
    step of autoreset episodes; each world's first episode is what counts."""
    zero, _ = make_policy("zero", compose_config("policy_eval", ["policy=zero"]).task)
    zero.check = lambda *a: None
    out = evaluate.rollout_vector(_FallingWorlds(success_min_steps=10), zero, [0, 1])
    assert out["return"] == [3.0, 10.0]
    assert out["success"] == [False, True]  # a balance task succeeds by lasting


def test_a_store_grows_by_episodes_of_a_trained_agent(
    mujoco_policy, reacher_store, tmp_path, run_cli, capsys
):
    """`data generate append=true data.policy=agent`: episodes driven by a policy file on the
    task's own observation join an existing store (the grounding a dream-trained policy
    needs); plain resume still refuses other data settings, and an append must add."""
    from conftest import TINY_EPISODES, tiny_overrides

    from worldsim.datasets.generate import POLICY_KINDS
    from worldsim.datasets.store import EpisodeStore
    from worldsim.mujoco_sim import MujocoSim

    out = tmp_path / "grown.zarr"
    shutil.copytree(reacher_store, out)
    agent = ["policy=agent", f"agents=[{mujoco_policy / 'policy'}]", "agent_noise=0"]
    total = f"episodes={TINY_EPISODES + 2}"
    capsys.readouterr()
    assert run_cli("data", "generate", *tiny_overrides(out, total, "resume=true", *agent)) == 2
    assert "policy" in capsys.readouterr().err
    no_file = tiny_overrides(out, total, "append=true", "policy=agent")
    assert run_cli("data", "generate", *no_file) == 2
    assert "data.agents" in capsys.readouterr().err
    assert run_cli("data", "generate", *tiny_overrides(out, total, "append=true", *agent)) == 0
    store = EpisodeStore.open(out)
    assert store.num_episodes == TINY_EPISODES + 2
    kinds = store.meta["episode_policy"][:]
    assert (kinds[TINY_EPISODES:] == POLICY_KINDS.index("agent")).all()
    assert (kinds[:TINY_EPISODES] != POLICY_KINDS.index("agent")).all()
    assert store.attrs["policy_kinds"] == list(POLICY_KINDS)
    (log,) = store.attrs["generator"]["resumes"]
    assert log["from_episodes"] == TINY_EPISODES and log["data"]["policy"] == "agent"
    assert store.attrs["generator"]["data"]["policy"] == "mix"  # the first run's settings stay
    # the appended episodes are the agent's actions on Gymnasium's observation, step by step
    policy = SB3Policy(mujoco_policy / "policy")
    task = compose_config("generate", tiny_overrides(out), GENERATE_ALIASES).task
    sim = MujocoSim(task)
    for i in range(TINY_EPISODES, TINY_EPISODES + 2):
        ep = store.episode(i)
        sim.reset(seed=int(ep.seed))
        for a in ep.data["action"][:-1]:
            obs = sim.unwrapped._get_obs().astype(np.float32)[None]
            np.testing.assert_allclose(a, policy.act(obs)[0], atol=1e-6)
            sim.step(a)
    sim.close()
    # nothing to add: refused, naming the count
    assert run_cli("data", "generate", *tiny_overrides(out, total, "append=true", *agent)) == 2
    assert f"{TINY_EPISODES + 2} episodes" in capsys.readouterr().err
