"""`worldsim train dynamics` end to end with tiny sizes (real entry point)."""

from __future__ import annotations

import numpy as np

from worldsim.checkpoint import load_tensors
from worldsim.cli import main
from worldsim.train.dynamics import token_weights, window_batch

TINY_TOK = ["model.width=32", "model.layers=1", "model.heads=2", "model.latent_dim=4"]
TINY_DYN = ["model.width=32", "model.layers=1", "model.heads=2", "model.window=3"]


def test_token_weights_mark_patches_with_foreground():
    seg = np.zeros((1, 16, 16), np.uint8)
    seg[0, 9, 2] = 1  # patch row 1, col 0 of a 2x2 grid of 8-pixel patches
    w = token_weights(seg, 8, 5.0)
    assert w.tolist() == [[1.0, 1.0, 5.0, 1.0]]


def test_window_batch_aligns_actions_and_rewards_with_frames():
    rows = 10
    data = {
        "latents": np.arange(rows, dtype=np.float32)[:, None, None] * np.ones((1, 2, 1)),
        "weights": np.ones((rows, 2), np.float32),
        "action": np.arange(rows, dtype=np.float32)[:, None],
        "reward": np.arange(rows, dtype=np.float32) * 10,
        "terminated": np.zeros(rows, bool),
    }
    b = window_batch(data, np.array([3]), 4)
    assert b["z"][0, :, 0, 0].tolist() == [3, 4, 5, 6]
    # frame t (t >= 1) is conditioned on action[t - 1], its reward head on reward[t - 1]
    assert b["prev_action"][0, 1:, 0].tolist() == [3, 4, 5]
    assert b["reward"][0, 1:].tolist() == [30, 40, 50]
    assert b["has_action"][0].tolist() == [False, True, True, True]


def test_train_dynamics_cli_smoke(tmp_path):
    store = tmp_path / "r.zarr"
    assert (
        main(
            [
                "data",
                "generate",
                "episodes=3",
                "workers=0",
                "task.max_episode_steps=12",
                f"out={store}",
            ]
        )
        == 0
    )
    common = [
        f"data_path={store}",
        "train.batch_size=2",
        "train.dtype=fp32",
        "train.val_every=2",
        "train.eval_every=2",
    ]
    assert (
        main(
            [
                "train",
                "tokenizer",
                *common,
                f"run_dir={tmp_path / 'tok'}",
                "train.steps=1",
                *TINY_TOK,
            ]
        )
        == 0
    )
    tok = tmp_path / "tok" / "tokenizer.safetensors"
    assert (
        main(
            [
                "train",
                "dynamics",
                *common,
                f"tokenizer={tok}",
                f"run_dir={tmp_path / 'dyn'}",
                "train.steps=2",
                *TINY_DYN,
            ]
        )
        == 0
    )
    _, meta = load_tensors(tmp_path / "dyn" / "dynamics.safetensors")
    assert meta["step"] == 2 and meta["config"]["task"] == "reacher"
    assert "h8_psnr_fg" in meta["eval"] and "h8_copy_psnr_fg" in meta["eval"]
    video = tmp_path / "dyn" / "samples_0000002.mp4"  # truth | dream | difference
    assert video.stat().st_size > 0
    # a tokenizer for another task is refused with both names
    assert (
        main(
            [
                "train",
                "dynamics",
                *common,
                "task=pusher",
                f"tokenizer={tok}",
                f"run_dir={tmp_path / 'dyn2'}",
            ]
        )
        == 2
    )
