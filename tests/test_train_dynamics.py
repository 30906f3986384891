"""`worldsim train dynamics` end to end with tiny sizes (real entry point)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_dynamics_data, tiny_latent_run

from worldsim.checkpoint import load_tensors, save_tensors
from worldsim.cli import compose_config, main
from worldsim.model.dynamics import Dynamics, DynamicsConfig
from worldsim.train.decoder import ENCODER
from worldsim.train.dynamics import (
    DreamPool,
    own_rollout,
    train_dynamics,
    window_batch,
    window_errors,
)
from worldsim.train.latent_set import FORMAT, LatentSet, foreground_tokens

TINY_TOK = ["model.width=32", "model.layers=1", "model.heads=2", "model.latent_dim=4"]
TINY_DYN = [
    "model.width=32",
    "model.layers=1",
    "model.heads=2",
    "model.window=3",
    "model.state_width=16",
    "model.state_layers=1",
    "transition.horizon=4",
    "transition.batch_size=4",
]
SMOKE = [*TINY_DYN, "flow.pool=1"]  # a dream pool of one window: batches of 2 hold it
SCENE = [dict(q) for q in DynamicsConfig().scene]  # Reacher's: 8 state columns


def test_foreground_tokens_mark_patches_with_foreground():
    seg = np.zeros((1, 16, 16), np.uint8)
    seg[0, 9, 2] = 1  # patch row 1, col 0 of a 2x2 grid of 8-pixel patches
    assert foreground_tokens(seg, 8).tolist() == [[False, False, True, False]]


def test_window_batch_aligns_actions_and_rewards_with_frames():
    rows = 10
    data = {
        "latents": np.arange(rows, dtype=np.float32)[:, None, None] * np.ones((1, 2, 1)),
        "state": np.arange(rows, dtype=np.float32)[:, None] * np.ones((1, 8), np.float32),
        "first": np.isin(np.arange(rows), [0, 5]),  # episodes of rows 0-4 and 5-9
        "weights": np.ones((rows, 2), np.float32),
        "action": np.arange(rows, dtype=np.float32)[:, None],
        "reward": np.arange(rows, dtype=np.float32) * 10,
        "terminated": np.zeros(rows, bool),
    }
    b = window_batch(data, np.array([1, 5]), 4)
    assert b["z"][0, :, 0, 0].tolist() == [1, 2, 3, 4]
    assert b["state"][0, :, 0].tolist() == [1, 2, 3, 4]  # each frame's own state
    # frame t is conditioned on action[t - 1], its reward head on reward[t - 1]
    assert b["prev_action"][0, :, 0].tolist() == [0, 1, 2, 3]
    assert b["reward"][0].tolist() == [0, 10, 20, 30]
    assert b["has_action"][0].tolist() == [True] * 4
    # an episode's first frame had no action leading to it
    assert b["has_action"][1].tolist() == [False, True, True, True]


def test_train_dynamics_cli_smoke(tmp_path, capsys):
    store = tmp_path / "r.zarr"
    assert (
        main(
            [
                "data",
                "generate",
                "episodes=3",
                "workers=0",
                "task.max_episode_steps=20",
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
    lat = tmp_path / "lat.safetensors"
    assert (
        main(
            [
                "train",
                "dynamics",
                *common,
                f"latents={lat}",
                f"tokenizer={tok}",
                f"run_dir={tmp_path / 'dyn'}",
                "train.steps=2",
                "flow.priority=0.5",  # one of the two windows drawn by the model's error
                "flow.jump_prob=0.5",  # and jump windows (context from elsewhere)
                *SMOKE,
            ]
        )
        == 0
    )
    _, meta = load_tensors(tmp_path / "dyn" / "dynamics.safetensors")
    assert meta["step"] == 2 and meta["config"]["task"] == "reacher"
    assert "h16_psnr_fg" in meta["eval"] and "h16_copy_psnr_fg" in meta["eval"]
    assert "h16_fingertip_cm" in meta["eval"]  # the model's own state against MuJoCo's
    assert meta["config"]["roles"][6:] == ["static", "static"]  # the target, from the data
    video = tmp_path / "dyn" / "samples_0000002.mp4"  # truth | dream | difference
    assert video.stat().st_size > 0
    # the decoder fine-tuned on the dynamics' own predictions, with the state: a
    # tokenizer whose encoder is the source's bit for bit, that resumes where it stopped
    dec = [
        "train",
        "decoder",
        *common,
        f"latents={lat}",
        f"tokenizer={tok}",
        f"dynamics={tmp_path / 'dyn' / 'dynamics.safetensors'}",
        f"run_dir={tmp_path / 'dec'}",
        "inputs.rows=20",
    ]
    assert main([*dec, "train.steps=2"]) == 0
    assert main([*dec, "train.steps=3"]) == 0
    new, new_meta = load_tensors(tmp_path / "dec" / "tokenizer.safetensors")
    old, _ = load_tensors(tok)
    assert new_meta["step"] == 3 and new_meta["config"]["scene"] == SCENE
    assert "h16_psnr_fg" in new_meta["eval"]
    assert all(torch.equal(new[k], old[k]) for k in old if k.startswith(ENCODER))
    assert not torch.equal(new["dec.0.mlp.0.weight"], old["dec.0.mlp.0.weight"])
    assert new["state_in.2.weight"].abs().max() > 0  # the state reached the decoder
    assert main([*dec, "inputs.generated=0.9", "inputs.other_time=0.5"]) == 2  # > 1
    # a position reader on that decoder learns from frames drawn with and without a state
    pr = ["train", "position_reader", *common, "latents=null", "train.steps=1"]
    pr += [f"tokenizer={tmp_path / 'dec' / 'tokenizer.safetensors'}", f"run_dir={tmp_path / 'pr'}"]
    assert main([*pr, "model.channels=4", "model.trunk=4", "model.hidden=8"]) == 0
    _, pr_meta = load_tensors(tmp_path / "pr" / "position_reader.safetensors")
    assert {"err_fingertip_cm", "err_fingertip_cm_with_state"} <= set(pr_meta["eval"])
    # the encoded set it wrote is all a later run needs: no store, no re-encoding
    no_store = [c for c in common if not c.startswith("data_path=")]
    again = [
        "train",
        "dynamics",
        *no_store,
        f"data_path={tmp_path / 'gone.zarr'}",
        f"latents={lat}",
    ]
    again += [f"tokenizer={tok}", "train.steps=1", *SMOKE]
    assert main([*again, f"run_dir={tmp_path / 'dyn3'}"]) == 0
    _, meta = load_tensors(tmp_path / "dyn3" / "dynamics.safetensors")
    assert meta["step"] == 1 and meta["eval"] == {}  # no frames to evaluate against
    # the transition alone, retrained at another horizon (no transition.horizon given: the
    # task's transition_horizon): the frame model stays bit for bit
    start = tmp_path / "dyn" / "dynamics.safetensors"
    only = [*again, "transition.only=true", "transition.horizon=null", "train.steps=2"]
    only.append("task.transition_horizon=2")
    assert main([*only, f"run_dir={tmp_path / 'dyn6'}"]) == 2  # needs a model to start from
    assert main([*only, f"train.init_from={start}", f"run_dir={tmp_path / 'dyn6'}"]) == 0
    before, _ = load_tensors(start)
    after, _ = load_tensors(tmp_path / "dyn6" / "dynamics.safetensors")
    run = json.loads((tmp_path / "dyn6" / "run.json").read_text())
    assert run["config"]["transition"]["horizon"] == 2
    kept = [k for k in before if not k.startswith("transition.")]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    assert not torch.equal(
        before["transition.step_linear.weight"], after["transition.step_linear.weight"]
    )
    # the store regenerated with another seed and the same episode count and lengths: the
    # cache's row count still matches, its content digest does not, so it is encoded again
    _, lat_meta = load_tensors(lat)
    shutil.rmtree(store)
    generate = ["data", "generate", "episodes=3", "workers=0", "task.max_episode_steps=20"]
    assert main([*generate, "seed=50", f"out={store}"]) == 0
    capsys.readouterr()
    steps = ["train.steps=1", f"run_dir={tmp_path / 'dyn5'}"]
    assert (
        main(["train", "dynamics", *common, f"latents={lat}", f"tokenizer={tok}", *steps, *SMOKE])
        == 0
    )
    assert "content digest" in capsys.readouterr().out
    _, lat_meta2 = load_tensors(lat)
    assert lat_meta2["rows"] == lat_meta["rows"]
    assert lat_meta2["store_digest"] != lat_meta["store_digest"]
    # the transition trained further on that other store (other state ranges): the model
    # keeps the bounds it was built with, so its weights still load
    further = ["transition.only=true", "transition.horizon=2", "train.steps=1"]
    further += [f"train.init_from={start}", f"run_dir={tmp_path / 'dyn7'}"]
    unused = tmp_path / "never_encoded.safetensors"  # the transition reads no frame latents:
    assert main(["train", "dynamics", *common, f"latents={unused}", f"tokenizer={tok}",
                 *further, *SMOKE]) == 0  # fmt: skip
    assert not unused.exists()  # nothing was encoded or cached
    _, start_meta = load_tensors(start)
    _, further_meta = load_tensors(tmp_path / "dyn7" / "dynamics.safetensors")
    assert further_meta["config"]["bounds"] == start_meta["config"]["bounds"]
    # another tokenizer (same config, other weights) with no store to encode again: refused
    weights, tok_meta = load_tensors(tok)
    other = tmp_path / "tok2.safetensors"
    save_tensors(other, {k: v + 0.01 for k, v in weights.items()}, tok_meta)
    assert (
        main(
            [
                *again[: -len(SMOKE) - 2],
                f"tokenizer={other}",
                "train.steps=1",
                *SMOKE,
                f"run_dir={tmp_path / 'dyn4'}",
            ]
        )
        == 2
    )
    # a priority outside [0, 1] is refused before any work, naming the key
    assert main(["train", "dynamics", *common, f"tokenizer={tok}", "flow.priority=1.5"]) == 2
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


def test_latent_set_round_trip_and_source_check(tmp_path):
    rng = np.random.default_rng(0)
    rows = 7
    lset = LatentSet(
        latents=rng.uniform(-1, 1, (rows, 4, 3)).astype(np.float32),
        state=rng.normal(size=(rows, 8)).astype(np.float32),
        foreground=rng.random((rows, 4)) < 0.5,
        action=rng.normal(size=(rows, 2)).astype(np.float32),
        reward=rng.normal(size=rows).astype(np.float32),
        terminated=np.arange(rows) == 3,
        episode_ends=np.array([3, 7]),
        meta={
            "format": FORMAT,
            "task": "reacher",
            "tokenizer_sha256": "ab",
            "rows": rows,
            "scene": SCENE,
        },
    )
    lset.save(tmp_path / "l.safetensors")
    back = LatentSet.load(tmp_path / "l.safetensors")
    assert np.abs(back.latents - lset.latents).max() <= 1 / 255 + 1e-6  # uint8 steps
    for k in ("state", "foreground", "action", "reward", "terminated", "episode_ends"):
        assert np.array_equal(getattr(back, k), getattr(lset, k)), k
    assert back.window_starts(3).tolist() == [0, 3, 4]  # windows stay inside episodes
    assert back.check_source("reacher", "ab", rows, SCENE) == []
    why = back.check_source("pusher", "cd", rows + 1, SCENE[:2])
    assert len(why) == 4 and "scene" in why[0] and "pusher" in why[1] and str(rows + 1) in why[3]
    save_tensors(tmp_path / "m.safetensors", {"a": torch.zeros(1)}, {"kind": "tokenizer"})
    with pytest.raises(ValueError, match="not a latent set"):
        LatentSet.load(tmp_path / "m.safetensors")


def test_own_rollout_replaces_only_the_last_frames():
    cfg = DynamicsConfig(latent_dim=4, grid=4, action_dim=2, width=32, layers=1, heads=2, window=3)
    net = Dynamics(cfg).eval()
    torch.nn.init.normal_(net.token_out.weight, std=0.1)  # zero-initialised: make it act
    b, t = 3, 4
    batch = {
        "z": torch.rand(b, t, 16, 4) * 2 - 1,
        "state": torch.randn(b, t, 8) * 0.1,
        "prev_action": torch.randn(b, t, 2),
        "has_action": torch.ones(b, t, dtype=torch.bool),
    }
    own = own_rollout(net, batch, 2, 0.9, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(own[:, :2], batch["z"][:, :2])
    assert (own[:, 2:] - batch["z"][:, 2:]).abs().min() > 0
    assert own.abs().max() <= 1
    # the first generated frame is the model's one-step sample from the true context alone:
    # changing a later true frame does not change it
    batch2 = {**batch, "z": batch["z"].clone()}
    batch2["z"][:, 3] += 1
    own2 = own_rollout(net, batch2, 2, 0.9, torch.Generator().manual_seed(0), "cpu")
    assert torch.allclose(own2[:, 2], own[:, 2], atol=1e-6)


def test_window_errors_rank_first_the_windows_the_model_draws_worst():
    cfg = DynamicsConfig(latent_dim=4, grid=4, action_dim=2, width=32, layers=1, heads=2, window=3)
    net = Dynamics(cfg).eval()
    torch.nn.init.normal_(net.token_out.weight, std=0.1)
    data, ends = tiny_dynamics_data([7, 9])
    data["latents"][11] = -1.0  # a frame unlike anything the model could draw from its context
    starts = np.array([0, 1, 2, 3, 7, 8, 9, 10, 11, 12])
    err = window_errors(net, data, starts, 4, 0.9, "cpu", batch=3, progress=False)
    assert err.shape == (len(starts),) and (err > 0).all()
    assert starts[np.argmax(err)] == 8  # the window whose last frame is row 11
    again = window_errors(net, data, starts, 4, 0.9, "cpu", batch=3, progress=False)
    np.testing.assert_array_equal(err, again)  # fixed noise: a resumed run measures the same


def test_dream_pool_rolls_dreams_on_within_their_episodes():
    cfg = DynamicsConfig(latent_dim=4, grid=4, action_dim=2, width=32, layers=1, heads=2, window=3)
    net = Dynamics(cfg).eval()
    torch.nn.init.normal_(net.token_out.weight, std=0.1)
    data, ends = tiny_dynamics_data([7, 9])
    firsts = np.concatenate([[0], ends[:-1]])
    pool = DreamPool(3, 3, data, firsts, ends)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    prev = None
    restarts = carried = 0
    for _ in range(20):
        batch, inputs = pool.windows(net, rng, 0.9, gen, "cpu")
        assert inputs.shape == (3, 4, 16, 4) and inputs.abs().max() <= 1
        for i in range(3):
            first_row = int(round(float(batch["z"][i, 0, 0, 0]) * 100))
            last_row = int(round(float(batch["z"][i, -1, 0, 0]) * 100))
            # the window's targets are four consecutive true rows of one episode
            assert last_row - first_row == 3
            e = int(np.searchsorted(ends, first_row, side="right"))
            assert firsts[e] <= first_row and last_row < ends[e]
            if prev is not None and last_row == prev[1][i] + 1:
                # the same dream one frame on: the context is the last window's tail
                assert torch.equal(inputs[i, :3], prev[0][i, 1:])
                carried += 1
            if first_row == firsts[e]:  # a dream's first window: real context frames
                restarts += 1
                assert torch.allclose(inputs[i, :3], batch["z"][i, :3])
            # the newest frame is dreamed, not copied from the truth
            assert not torch.allclose(inputs[i, 3], batch["z"][i, 3])
        prev = (inputs, (batch["z"][:, -1, 0, 0] * 100).round().long())
    assert restarts >= 3  # every slot reached its episode's end and began another
    assert carried >= 40
    # a resumed run whose pool changed size starts new dreams instead of misusing old ones
    other = DreamPool(2, 3, data, firsts, ends)
    with pytest.warns(UserWarning, match="starting new dreams"):
        other.load_state(pool.state())
    assert (other.episode == -1).all()
    other.load_state(DreamPool(2, 3, data, firsts, ends).state())  # same shape: no warning


def test_train_dynamics_with_dream_pool_resumes_identically(tmp_path):
    torch.set_num_threads(1)  # bitwise-reproducible reductions
    sources = tiny_latent_run(tmp_path)

    def run(name: str, steps: int) -> dict:
        cfg = compose_config(
            "train_dynamics",
            [
                *sources,
                f"run_dir={tmp_path / name}",
                f"train.steps={steps}",
                "train.batch_size=4",
                "train.ckpt_every=2",
                "train.log_every=1",
                "train.dtype=fp32",
                "train.val_every=4",
                "flow.pool=2",
                *TINY_DYN,
            ],
        )
        train_dynamics(cfg, progress=False)
        return load_tensors(tmp_path / name / "dynamics.safetensors")[0]

    straight = run("straight", 6)
    run("split", 2)
    state, _ = load_tensors(tmp_path / "split" / "train_state.safetensors")
    assert state["loop.dream"].shape == (2, 3, 64, 4) and "loop.row" in state
    # what a SIGKILL after the checkpoint leaves: rows logged past it (and a torn one), a
    # write cut short, and (an older release's order of writes) no model file
    split_dir = tmp_path / "split"
    with open(split_dir / "log.csv", "a") as f:
        f.write("3,0.5,0.001,10\n4,0.4")
    (split_dir / ".dynamics.safetensors.x1.partial").write_bytes(b"half")
    (split_dir / "dynamics.safetensors").unlink()
    split = run("split", 6)
    for k in straight:
        torch.testing.assert_close(straight[k], split[k], rtol=0, atol=1e-6)
    assert not list(split_dir.glob(".*.partial"))

    def train_rows(run: str) -> list[str]:  # the step of every training row (loss logged)
        rows = (tmp_path / run / "log.csv").read_text().splitlines()[1:]
        return [r.split(",")[0] for r in rows if r.split(",")[1]]

    assert train_rows("split") == train_rows("straight") == [str(i) for i in range(1, 7)]
    # without the saved dreams a resumed run would differ: restarting them changes it
    run("fresh", 2)
    tensors, meta = load_tensors(tmp_path / "fresh" / "train_state.safetensors")
    save_tensors(
        tmp_path / "fresh" / "train_state.safetensors",
        {k: v for k, v in tensors.items() if not k.startswith("loop.")},
        meta,
    )
    fresh = run("fresh", 6)
    assert any(not torch.allclose(straight[k], fresh[k], rtol=0, atol=1e-6) for k in straight)


def test_jump_windows_take_their_context_from_their_own_episode():
    """flow.jump_prob: the context rows of a jump window lie in the window's episode (its
    scene and target), anywhere in it; the other windows keep their own."""
    from worldsim.train.dynamics import jump_context

    ends = np.array([10, 25, 40])
    first = np.zeros(40, bool)
    first[[0, 10, 25]] = True
    bounds, episode_of = np.stack([np.r_[0, ends[:-1]], ends], 1), np.cumsum(first) - 1
    starts = np.tile([0, 8, 10, 23, 38], 200)  # windows of 2 rows: the last row is start + 1
    rng = np.random.default_rng(0)
    jumped = jump_context(starts, 2, episode_of, bounds, 1.0, rng)
    assert (episode_of[jumped] == episode_of[starts + 1]).all()
    per_window = jumped.reshape(200, 5)
    assert (per_window.min(0) == [0, 0, 10, 10, 25]).all()  # every row of the episode drawn
    assert (per_window.max(0) == [9, 9, 24, 24, 39]).all()
    assert (jump_context(starts, 2, episode_of, bounds, 0.0, rng) == starts).all()
    some = jump_context(starts, 2, episode_of, bounds, 0.25, rng) != starts
    assert 0.1 < some.mean() < 0.3
