"""Tokenizer model, checkpoints (safetensors only) and the resumable training loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from worldsim.checkpoint import CheckpointError, load_model, load_tensors, save_model
from worldsim.cli import compose_config, main
from worldsim.eval.metrics import psnr
from worldsim.model.tokenizer import Tokenizer, TokenizerConfig, build_tokenizer, foreground_weights
from worldsim.train.harness import autocast_dtype, lr_at, step_rng
from worldsim.train.tokenizer import train_tokenizer

TINY = TokenizerConfig(width=32, layers=1, heads=2, latent_dim=4)
TINY_OVERRIDES = ["model.width=32", "model.layers=1", "model.heads=2", "model.latent_dim=4"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "reacher.zarr"
    code = main(
        [
            "data",
            "generate",
            "task=reacher",
            "episodes=4",
            "workers=0",
            "task.max_episode_steps=5",
            f"out={out}",
        ]
    )
    assert code == 0
    return out


def test_encode_decode_shapes_and_range():
    model = Tokenizer(TINY)
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    z = model.encode(frames)
    assert z.shape == (3, 64, 4)
    assert z.abs().max() < 1
    out = model.decode_uint8(z)
    assert out.shape == frames.shape and out.dtype == torch.uint8


def test_a_state_conditioned_decoder_starts_as_the_plain_one_and_draws_from_the_state(tmp_path):
    """With a scene, the decoder adds the state's embedding to every token: zero at the
    start (the shipped decoder's output, bit for bit), then the state moves the frame;
    decoding without a state uses the learned stand-in. Saved and loaded with its scene
    and feature statistics."""
    from worldsim.model.dynamics import REACHER_SCENE

    torch.manual_seed(0)
    plain = Tokenizer(TINY)
    cond = Tokenizer(TokenizerConfig(**{**TINY.__dict__, "scene": REACHER_SCENE}))
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {
        "feature_mean",
        "feature_std",
        "state_in",
        "to_grid",
        "point_in",
        "no_state",
    }
    z = plain.encode(torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8))
    states = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(cond.decode(z, states), plain.decode(z))
        assert torch.equal(cond.decode(z), plain.decode(z))
        cond.fit_state_statistics(np.random.default_rng(0).normal(size=(50, 8)))
        torch.nn.init.normal_(cond.state_in[-1].weight)
        a, b = cond.decode(z, states), cond.decode(z, states + 0.5)
        assert (a - b).abs().max() > 0.01
        assert torch.equal(cond.decode(z), plain.decode(z))  # the stand-in is still zero
    path = tmp_path / "tok.safetensors"
    save_model(path, cond, "tokenizer", {"task": "reacher", **cond.config_dict()})
    loaded, _ = load_model(path, "tokenizer", build_tokenizer)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z, states), a)


def test_the_camera_map_is_fitted_from_where_the_goal_is_drawn():
    """fit_camera finds the metres -> token-grid map from the goal's pixels, and a token's
    point embedding follows the target: tokens near the old and new places change."""
    from worldsim.model.dynamics import REACHER_SCENE

    rng = np.random.default_rng(0)
    values = rng.uniform(-0.2, 0.2, (40, 8)).astype(np.float32)
    seg = np.zeros((40, 64, 64), np.uint8)
    col = np.round(32 + 100 * values[:, 6]).astype(int)  # a top-down camera, 1 px = 1 cm
    row = np.round(32 - 100 * values[:, 7]).astype(int)
    values[:, 6], values[:, 7] = (col - 32) / 100, (32 - row) / 100  # on the pixel grid
    for i in range(40):
        seg[i, row[i] - 1 : row[i] + 2, col[i] - 1 : col[i] + 2] = 3  # the goal, 3x3 px
    tok = Tokenizer(TokenizerConfig(**{**TINY.__dict__, "scene": REACHER_SCENE}))
    assert tok.fit_camera(values, seg) < 0.01
    with torch.no_grad():
        grid = tok.to_grid(torch.tensor([[0.1, -0.05]]))[0]
        torch.testing.assert_close(grid, torch.tensor([(42 + 0.5) / 8, (37 + 0.5) / 8]))
        torch.nn.init.normal_(tok.point_in[-1].weight)
        a = tok.point_embedding(torch.from_numpy(values[:1]))
        moved = values[:1].copy()
        moved[:, 6] += 0.3  # the target 30 px to the right
        b = tok.point_embedding(torch.from_numpy(moved))
    assert (a - b).abs().amax(-1).gt(1e-3).any()
    with pytest.raises(ValueError, match="goal"):
        tok.fit_camera(values, np.zeros_like(seg))


def test_a_scene_without_x_y_positions_decodes_from_the_state_embedding_alone():
    """InvertedPendulum's state has a cart position (one coordinate) and angles: no point
    offsets, no camera to fit (refused by name), the state embedding still applies."""
    scene = [
        {"name": "cart_position", "array": "qpos", "index": [0], "unit": "m"},
        {"name": "pole_angle", "array": "qpos", "index": [1], "unit": "rad"},
    ]
    tok = Tokenizer(TokenizerConfig(**{**TINY.__dict__, "scene": scene}))
    assert tok.points == [] and not hasattr(tok, "to_grid")
    with torch.no_grad():
        torch.nn.init.normal_(tok.state_in[-1].weight)
        z = torch.zeros(2, 64, 4)
        a, b = tok.decode(z, torch.zeros(2, 2)), tok.decode(z, torch.ones(2, 2))
    assert (a - b).abs().max() > 0.01
    with pytest.raises(ValueError, match="no x, y position"):
        tok.fit_camera(np.zeros((4, 2), np.float32), np.full((4, 64, 64), 3, np.uint8))


def test_patchify_roundtrip_is_exact():
    model = Tokenizer(TINY)
    x = torch.rand(2, 64, 64, 3)
    assert torch.equal(model._unpatchify(model._patchify(x)), x)
    # token 1 is the second patch of the first row: pixels [0:8, 8:16]
    assert torch.equal(model._patchify(x)[0, 1].view(8, 8, 3), x[0, 0:8, 8:16])


def test_foreground_weights_dilate_by_one_pixel():
    seg = torch.zeros(1, 8, 8, dtype=torch.uint8)
    seg[0, 4, 4] = 1
    w = foreground_weights(seg, 10.0)[0, ..., 0]
    assert w[4, 4] == 10 and w[3, 3] == 10 and w[5, 5] == 10
    assert w[2, 2] == 1 and w[6, 4] == 1


def test_psnr_on_mask_only_sees_masked_pixels():
    a = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0] = 255
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:, 1:] = True
    assert psnr(a, b, mask) > 90  # identical where masked
    assert psnr(a, b) < 30


def test_checkpoint_roundtrip_and_refusals(tmp_path):
    model = Tokenizer(TINY)
    cfg = {"task": "reacher", **model.config_dict()}
    path = tmp_path / "tok.safetensors"
    save_model(path, model, "tokenizer", cfg)
    loaded, meta = load_model(path, "tokenizer", build_tokenizer, expect={"task": "reacher"})
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert (tmp_path / "tok.json").exists()
    with pytest.raises(CheckpointError, match="task='reacher' but this run needs task='pusher'"):
        load_model(path, "tokenizer", build_tokenizer, expect={"task": "pusher"})
    with pytest.raises(CheckpointError, match="expected 'dynamics'"):
        load_model(path, "dynamics", build_tokenizer)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "missing.safetensors", "tokenizer", build_tokenizer)


def test_pickled_file_is_never_loaded(tmp_path):
    evil = tmp_path / "evil.safetensors"
    torch.save({"w": torch.zeros(1)}, evil)  # a pickle, not safetensors
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_tensors(evil)


def test_step_rng_and_lr_schedule():
    assert np.array_equal(step_rng(0, 5).integers(0, 100, 8), step_rng(0, 5).integers(0, 100, 8))
    assert not np.array_equal(
        step_rng(0, 5).integers(0, 100, 8), step_rng(0, 6).integers(0, 100, 8)
    )
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert autocast_dtype("cpu", "fp32") is None
    assert autocast_dtype("cpu", "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        autocast_dtype("cpu", "fp16")


def _cfg(store: Path, run: Path, steps: int):
    return compose_config(
        "train_tokenizer",
        [
            f"data_path={store}",
            f"run_dir={run}",
            f"train.steps={steps}",
            "train.batch_size=4",
            "train.eval_every=1000",
            "train.ckpt_every=2",
            "train.log_every=1",
            "train.dtype=fp32",
            "train.val_every=2",
            *TINY_OVERRIDES,
        ],
    )


def test_resume_replays_identical_training(tiny_store, tmp_path):
    torch.set_num_threads(1)  # bitwise-reproducible reductions
    train_tokenizer(_cfg(tiny_store, tmp_path / "straight", 4), progress=False)
    train_tokenizer(_cfg(tiny_store, tmp_path / "split", 2), progress=False)
    result = train_tokenizer(_cfg(tiny_store, tmp_path / "split", 4), progress=False)
    assert result["step"] == 4
    a, _ = load_tensors(tmp_path / "straight" / "tokenizer.safetensors")
    b, meta = load_tensors(tmp_path / "split" / "tokenizer.safetensors")
    assert meta["step"] == 4
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert not list((tmp_path / "split").glob("*.partial"))


def test_resume_refuses_other_model_config(tiny_store, tmp_path):
    train_tokenizer(_cfg(tiny_store, tmp_path / "run", 1), progress=False)
    cfg = _cfg(tiny_store, tmp_path / "run", 2)
    cfg.model.width = 48
    with pytest.raises(ValueError, match="choose another run_dir"):
        train_tokenizer(cfg, progress=False)


def test_training_reduces_loss(tiny_store, tmp_path):
    cfg = _cfg(tiny_store, tmp_path / "fit", 30)
    cfg.train.lr = 3e-3
    cfg.train.warmup = 2
    train_tokenizer(cfg, progress=False)
    rows = (tmp_path / "fit" / "log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows if r.split(",")[1]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_torchrun_ddp_two_processes_on_cpu(tiny_store, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "worldsim.cli",
        "train",
        "tokenizer",
        f"data_path={tiny_store}",
        f"run_dir={run}",
        "train.steps=2",
        "train.batch_size=4",
        "train.ckpt_every=1",
        "train.eval_every=1000",
        "train.val_every=2",
        *TINY_OVERRIDES,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, meta = load_tensors(run / "tokenizer.safetensors")
    assert meta["step"] == 2


def test_init_from_starts_a_new_run_from_saved_weights(tiny_store, tmp_path):
    train_tokenizer(_cfg(tiny_store, tmp_path / "first", 1), progress=False)
    weights = tmp_path / "first" / "tokenizer.safetensors"
    cfg = _cfg(tiny_store, tmp_path / "second", 1)
    cfg.train.init_from = str(weights)
    cfg.train.lr = 0.0  # no update: the new run's weights are exactly the initial ones
    cfg.train.warmup = 1
    train_tokenizer(cfg, progress=False)
    a, _ = load_tensors(weights)
    b, _ = load_tensors(tmp_path / "second" / "tokenizer.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cfg = _cfg(tiny_store, tmp_path / "third", 1)
    cfg.train.init_from = str(weights)
    cfg.model.width = 48
    with pytest.raises(ValueError, match="init_from"):
        train_tokenizer(cfg, progress=False)


def test_eval_tokenizer_cli_reports_heldout_psnr(tiny_store, tmp_path, capsys):
    import json

    train_tokenizer(_cfg(tiny_store, tmp_path / "run", 1), progress=False)
    capsys.readouterr()
    ckpt = tmp_path / "run" / "tokenizer.safetensors"
    assert (
        main(["eval", "tokenizer", f"data_path={tiny_store}", f"checkpoint={ckpt}", "val_every=2"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == 1 and report["frames"] == 12  # episodes 1 and 3, 6 rows each
    assert 0 < report["psnr"] < 60 and report["psnr_fg"] == report["psnr_fg"]  # not NaN


def test_pusher_draws_bodies_in_three_coordinates_and_not_joint_coordinates():
    """Pusher's drawn positions are the tip, object and goal bodies (x, y, z); the object's
    slide joints (qpos, unit m) are a joint's coordinate, not a place in the frame. The
    camera map then takes three coordinates and is fitted from the goal like Reacher's."""
    from worldsim.cli import compose_config
    from worldsim.scene import SceneLayout

    task = compose_config("generate", ["task=pusher"], {}).task
    layout = SceneLayout.from_task(task)
    tok = Tokenizer(TokenizerConfig(**{**TINY.__dict__, "scene": layout.to_dict()}))
    assert tok.points == [layout.slices[n] for n in ("tip", "object", "goal")]
    assert tok.to_grid.in_features == 3
    rng = np.random.default_rng(0)
    values = rng.uniform(-0.2, 0.2, (40, layout.dim)).astype(np.float32)
    goal = layout.slices["goal"]
    seg = np.zeros((40, 64, 64), np.uint8)
    # an oblique camera: the goal's height moves it up the frame
    col = np.round(32 + 100 * values[:, goal.start]).astype(int)
    row = np.round(32 - 50 * values[:, goal.start + 1] - 50 * values[:, goal.start + 2]).astype(int)
    for i in range(40):
        seg[i, row[i] - 1 : row[i] + 2, col[i] - 1 : col[i] + 2] = 3
    assert tok.fit_camera(values, seg) < 0.5  # pixel rounding only
    mixed = layout.to_dict() + [{"name": "flat", "array": "flat", "index": [0, 1], "unit": "m"}]
    with pytest.raises(ValueError, match="same number of coordinates"):
        Tokenizer(TokenizerConfig(**{**TINY.__dict__, "scene": mixed}))
