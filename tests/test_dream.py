"""`worldsim dream` with a tiny untrained model, key scripts and checkpoint errors."""

from __future__ import annotations

import imageio.v2 as imageio
import pytest
import torch
from hydra import compose, initialize_config_module

from worldsim.checkpoint import save_model
from worldsim.cli import compose_config, main
from worldsim.keyboard import KeyScriptPolicy, default_script, key_action, parse_script
from worldsim.model.dynamics import Dynamics, DynamicsConfig
from worldsim.model.tokenizer import Tokenizer, TokenizerConfig


@pytest.fixture(scope="module")
def reacher_task():
    with initialize_config_module("worldsim.configs", version_base="1.3"):
        return compose("dream").task


def test_key_action_follows_the_task_map(reacher_task):
    a = key_action(reacher_task, {"right", "up"}, 2, -1, 1)
    assert a.tolist() == [1.0, 1.0]
    assert key_action(reacher_task, set(), 2, -1, 1).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="'q' is not in task 'reacher'"):
        key_action(reacher_task, {"q"}, 2, -1, 1)


def test_key_script_parsing_and_playback(reacher_task):
    script = parse_script("right 2  # hold\n- 1\nleft+up 1\n")
    pol = KeyScriptPolicy(reacher_task, script, 2, -1, 1)
    acts = [pol.act().tolist() for _ in range(5)]
    assert acts == [[1, 0], [1, 0], [0, 0], [-1, 1], [1, 0]]  # loops
    with pytest.raises(ValueError, match="line 1"):
        parse_script("right two")
    with pytest.raises(ValueError, match="not in task"):
        KeyScriptPolicy(reacher_task, [(frozenset({"f13"}), 1)], 2, -1, 1)
    assert len(default_script(reacher_task)) == 8  # 4 distinct actions, each then a pause


def save_tiny_world_model(folder) -> None:
    """An untrained tokenizer + dynamics pair for reacher, saved as the CLI expects."""
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig(width=32, layers=1, heads=2, latent_dim=4))
    roles = ["integrate"] * 4 + ["derived"] * 2 + ["static"] * 2  # as training finds them
    dyn = Dynamics(DynamicsConfig(latent_dim=4, width=32, layers=1, heads=2, window=3, roles=roles))
    for kind, model in (("tokenizer", tok), ("dynamics", dyn)):
        save_model(
            folder / f"{kind}.safetensors", model, kind, {"task": "reacher", **model.config_dict()}
        )


def save_tiny_reasoner(folder) -> None:
    """An untrained reacher reasoner over the tiny tokenizer's 4-channel latents."""
    from worldsim.cli import compose_config
    from worldsim.model.reasoner import Reasoner, ReasonerConfig
    from worldsim.scene import SceneLayout

    layout = SceneLayout.from_task(compose_config("generate", ["task=reacher"]).task)
    torch.manual_seed(0)
    cfg = ReasonerConfig(latent_dim=4, feature_dim=layout.feature_dim, width=32, layers=1,
                         lm_layers=1, heads=2, state_reader="mlp", reader_width=32)  # fmt: skip
    model = Reasoner(cfg)
    meta = {"task": "reacher", "scene": layout.to_dict(), **model.config_dict()}
    save_model(folder / "reasoner.safetensors", model, "reasoner", meta)


def test_dream_writes_side_by_side_video(tmp_path):
    save_tiny_world_model(tmp_path)
    out = tmp_path / "d.mp4"
    assert (
        main(
            [
                "dream",
                f"checkpoint={tmp_path}",
                "steps=5",
                "context=2",
                f"out={out}",
                "policy=keyboard-script",
            ]
        )
        == 0
    )
    frames = [f for f in imageio.get_reader(out)]  # list() asks len(): inf for ffmpeg
    assert len(frames) == 5
    assert frames[0].shape == (64 * 4, 64 * 4 * 3, 3)
    # a checkpoint for another task is refused
    assert main(["dream", f"checkpoint={tmp_path}", "task=pusher", f"out={out}"]) == 2


def test_dream_without_checkpoint_names_the_training_command(tmp_path, capsys):
    assert main(["dream", f"checkpoint={tmp_path}", f"out={tmp_path / 'x.mp4'}"]) == 2
    err = capsys.readouterr().err
    assert "worldsim train tokenizer task=reacher" in err


def test_eval_fidelity_writes_curves_for_every_method(tmp_path):
    import json
    import shutil

    from worldsim.dream import checkpoint_dir

    save_tiny_world_model(tmp_path)
    # the baseline beside the model's own state: the shipped linear joint model alone
    shutil.copy(checkpoint_dir("reacher", None) / "state_filter.json", tmp_path)
    store = tmp_path / "r.zarr"
    assert (
        main(
            [
                "data",
                "generate",
                "episodes=4",
                "workers=0",
                "task.max_episode_steps=9",
                f"out={store}",
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "fidelity",
                f"data_path={store}",
                f"checkpoint={tmp_path}",
                "horizon=6",
                "context=3",
                "val_every=2",
                "long_frames=30",
                f"out_dir={out}",
            ]
        )
        == 0
    )
    result = json.loads((out / "fidelity.json").read_text())
    assert result["windows"] == 2  # episodes 1 and 3 are held out
    for method in ("model", "copy_last", "tokenizer_ceiling"):
        assert len(result["horizon"][method]["psnr_fg"]) == 6
    # copy-last compares a frame with itself-ish at h=1 far better than an untrained model
    assert result["horizon"]["copy_last"]["psnr"][0] > result["horizon"]["model"]["psnr"][0]
    assert result["long_rollout"]["nan"] is False
    paired = result["long_rollout"]["step_time_paired"]
    assert paired["frames_each"] == 200 and paired["ms_per_frame_long"] > 0
    assert isinstance(paired["within_10_percent"], bool)
    long = result["long_rollout"]
    assert long["checked_frames"] == [30]  # every 100th frame and the last
    assert len(long["roundtrip_every_100"]) == 1 and long["roundtrip_limit"] > 0
    assert "fitted on" in long["roundtrip_limit_source"]  # no drift_limits.json here
    # ... and the model's own predictions from real context, the reference for drift
    rt = result["horizon"]["model"]["roundtrip"]
    assert len(rt) == 6 and min(rt) > 0
    assert long["roundtrip_model_from_real_context"] == {"h1": rt[0], "h6": rt[5]}
    assert long["roundtrip_within_model_h6"] == (long["roundtrip_every_100"][0] <= rt[5])
    # the model's own state, per horizon, against the store's (positions in metres)
    state = result["model_state_error_per_horizon"]
    assert state["units"]["fingertip"] == "m" and len(state["median"]["fingertip"]) == 6
    assert state["median"]["target"] == [0.0] * 6  # carried unchanged: static in the data
    moved = state["moved"]["per_quantity"]
    assert moved["target"] == {"windows": 0, "median": [None] * 6}  # never moves
    assert 1 <= moved["fingertip"]["windows"] <= result["windows"]
    linear = result["linear_model_state_error_per_horizon"]["median"]
    assert max(linear["fingertip"]) < 0.005  # MuJoCo's joints are nearly linear here
    assert max(linear["fingertip"]) < min(state["median"]["fingertip"][1:])  # untrained model
    # positions where they move: here one window per held-out episode (9 frames each), so
    # the same windows as above, and the transition alone gives the full step's states
    mw = result["moving_windows"]
    tip = mw["per_quantity"]["fingertip"]
    assert mw["horizon"] == 6 and tip["windows"] == moved["fingertip"]["windows"]
    assert tip["model_median_m"] == pytest.approx(moved["fingertip"]["median"][5])
    assert tip["linear_model_median_m"] < tip["model_median_m"]  # untrained model
    assert 0 <= tip["copy_last_within_2cm"] <= 1 and tip["episodes"] == tip["windows"]
    assert mw["per_quantity"]["target"]["windows"] == 0
    assert mw["per_quantity"]["target"]["model_median_m"] is None
    assert (out / "fidelity.png").stat().st_size > 1000
    assert (out / "long_rollout_strip.png").stat().st_size > 1000


def test_moved_errors_take_the_median_over_moving_windows_only():
    import numpy as np

    from worldsim.eval.fidelity import moved_errors

    # two batches of windows, two horizon steps; the object moves in windows 1 and 2 only
    errs = {
        "object": [[np.array([0.0, 0.3]), np.array([0.1])], [np.array([0.0, 0.5]), np.array([0.7])]]
    }
    moved = {"object": [np.array([False, True]), np.array([True])]}
    out = moved_errors(errs, moved)["object"]
    assert out["windows"] == 2
    assert out["median"] == pytest.approx([0.2, 0.6])
    none = moved_errors(errs, {"object": [np.array([False, False]), np.array([False])]})
    assert none["object"] == {"windows": 0, "median": [None, None]}


def test_reader_agreement_holds_positions_to_1cm_and_angles_to_0_02_rad():
    from worldsim.eval.fidelity import reader_agreement
    from worldsim.scene import SceneLayout

    layout = SceneLayout.from_task(compose_config("generate", ["task=inverted_pendulum"]).task)
    ok = reader_agreement(layout, {"cart_position": [0.002, 0.009], "pole_angle": [0.01, 0.019]})
    assert ok["reader_vs_state_max_cm"] == {"cart_position": pytest.approx(0.9)}
    assert ok["reader_vs_state_max_rad"] == {"pole_angle": pytest.approx(0.019)}
    assert ok["reader_agrees"] and ok["reader_agrees_within_1cm"]
    tilted = reader_agreement(layout, {"cart_position": [0.002], "pole_angle": [0.03]})
    assert not tilted["reader_agrees"] and tilted["reader_agrees_within_1cm"]
    angle_only = reader_agreement(layout, {"pole_angle": [0.001]})
    assert angle_only["reader_agrees"] and "reader_agrees_within_1cm" not in angle_only
    # where the reader misreads MuJoCo's own render of the state too, the frame is not judged
    dream = {"cart_position": [0.002, 0.05, 0.03], "pole_angle": [0.01, 0.01, 0.01]}
    render = {"cart_position": [0.001, 0.04, 0.001], "pole_angle": [0.0, 0.0, 0.0]}
    judged = reader_agreement(layout, dream, render)
    assert judged["readable_frames_cm"] == {"cart_position": 2}
    assert judged["reader_vs_state_max_readable_cm"] == {"cart_position": pytest.approx(3.0)}
    assert not judged["reader_agrees"] and not judged["reader_agrees_where_readable"]
    render["cart_position"][2] = 0.02  # the third frame unreadable as well
    excused = reader_agreement(layout, dream, render)
    assert excused["readable_frames_cm"] == {"cart_position": 1}
    assert excused["reader_agrees_where_readable"] and not excused["reader_agrees"]


def test_fidelity_summary_reports_an_object_over_the_windows_it_moved_in():
    from worldsim.eval.fidelity import summary

    curve = {k: [20.0] * 16 for k in ("psnr", "ssim", "psnr_fg")}
    result = {
        "windows": 10,
        "horizon": {m: curve for m in ("model", "copy_last", "tokenizer_ceiling")},
        "model_state_error_per_horizon": {
            "units": {"object": "m", "goal": "m"},
            "median": {"object": [0.001] * 16, "goal": [0.0] * 16},
            "moved": {
                "per_quantity": {
                    "object": {"windows": 3, "median": [0.02] * 16},
                    "goal": {"windows": 0, "median": [None] * 16},
                }
            },
        },
    }
    result["moving_windows"] = {
        "horizon": 16,
        "per_quantity": {
            "object": {
                "windows": 40,
                "episodes": 9,
                "model_median_m": 0.012,
                "copy_last_median_m": 0.05,
                "model_within_2cm": 0.75,
                "copy_last_within_2cm": 0.1,
            },  # fmt: skip
            "goal": {"windows": 0, "episodes": 0, "model_median_m": None},
        },
    }
    text = summary(result)
    assert "object cm over the 3 of 10 windows in which it moved: h1 2.00" in text
    assert (
        "object at h16, windows in which it moves (40 in 9 episodes): model 1.20 cm (75% "
        "within 2), copy_last 5.00 cm (10% within 2)" in text
    )
    assert "goal at h16" not in text
    assert "h16 2.00" in text and "goal cm over" not in text
