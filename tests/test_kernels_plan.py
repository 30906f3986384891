"""The SBUF plan: FLOPs against a hand count, capacity verdicts at the boundary, and the
shipped Reacher checkpoint's plan."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import worldsim
from worldsim.kernels import plan
from worldsim.model.dynamics import Dynamics, DynamicsConfig

TINY = DynamicsConfig(
    latent_dim=2,
    grid=2,
    group=1,
    width=8,
    layers=1,
    heads=2,
    action_dim=1,
    window=1,
    scene=[{"name": "q", "array": "qpos", "index": [0], "unit": "rad"}],
    fourier_bands=1,
    state_width=4,
    state_layers=1,
)


def test_dynamics_pass_flops_by_hand():
    # 4 latent tokens + 1 state token, 1 frame, cache of 1 frame (5 keys): M = C = 5, d = 8,
    # token_dim = 2; the state: one angle = 2 features, Fourier with 1 band = 6 inputs
    ops = plan.by_name(plan.dynamics_pass(TINY, 1))
    assert ops["embed"]["flops"] == 2 * 4 * 2 * 8
    assert ops["state"]["flops"] == 2 * (6 * 8 + 8 * 8)
    assert ops["condition"]["flops"] == 2 * (256 * 8 + 8 * 8 + 2 * 8 + 8 * 8)
    assert ops["ada"]["flops"] == 2 * 8 * 48
    assert ops["qkv"]["flops"] == 2 * 5 * 8 * 24
    assert ops["frame_attention"]["flops"] == 2 * 2 * 5 * (5 + 5) * 8
    assert ops["proj"]["flops"] == 2 * 5 * 8 * 8
    assert ops["gelu_mlp"]["flops"] == 2 * (2 * 5 * 8 * 32)
    assert ops["head"]["flops"] == 2 * (8 * 16 + 4 * 8 * 2 + 8 * 2)


def test_frame_cost_grows_with_euler_steps():
    one, four = (sum(o.flops for o in plan.frame_ops(TINY, s)) for s in (1, 4))
    two_frames = sum(o.flops for o in plan.dynamics_pass(TINY, 2))
    one_frame = sum(o.flops for o in plan.dynamics_pass(TINY, 1))
    state = sum(o.flops for o in plan.transition_ops(TINY))
    assert state > 0
    assert one == state + two_frames and four == state + two_frames + 3 * one_frame


def test_weight_layout_pads_to_128_partitions():
    dyn = Dynamics(DynamicsConfig(width=192))
    per_partition = plan.weight_bytes_per_partition(dyn)
    params = sum(p.numel() for p in dyn.parameters())
    assert per_partition * plan.PARTITIONS > 2 * params  # 192 rows take 2 tiles of 128
    qkv = dyn.blocks[0].qkv.weight  # (576, 192): 2 row tiles x 576 bf16
    assert math.ceil(qkv.shape[1] / 128) * qkv.shape[0] * 2 == 2304


@pytest.mark.parametrize("target", ["trn2", "trn3"])
def test_fits_flips_at_capacity(target):
    cap = plan.TARGETS[target]["sbuf"] // plan.PARTITIONS
    assert plan.fits({"weights": cap - 10, "kv_cache": 10, "activations": 0}, target)
    assert not plan.fits({"weights": cap - 10, "kv_cache": 11, "activations": 0}, target)


def test_memory_bound_only_when_weights_stream():
    fast = plan.frames_per_s(1e9, 1e12, resident=True, target="trn2")
    slow = plan.frames_per_s(1e9, 1e12, resident=False, target="trn2")
    assert fast == pytest.approx(79e12 / 1e9)
    assert slow == pytest.approx(2900e9 / 8 / 1e12)


def test_shipped_reacher_plan():
    root = Path(worldsim.__file__).parent
    steps = plan.engine_steps(Path(worldsim.__file__).parent.parent / "configs")
    assert steps == {"fast": 1, "quality": 4}
    r = plan.plan_checkpoint(root / "checkpoints" / "reacher", steps)
    assert r["targets"]["trn2"]["fits"] and r["targets"]["trn3"]["fits"]
    fast = r["targets"]["trn2"]["engines"]["fast"]
    quality = r["targets"]["trn2"]["engines"]["quality"]
    assert quality["dynamics_gflop_per_frame"] > 2 * fast["dynamics_gflop_per_frame"]
    assert fast["dynamics_frames_per_s"] > quality["dynamics_frames_per_s"] > 0
    # enough worlds' KV caches fill even Trn3's SBUF
    big = plan.plan_checkpoint(root / "checkpoints" / "reacher", steps, batch=2000)
    assert not big["targets"]["trn3"]["fits"]


def test_table_names_every_shipped_checkpoint_per_target_and_engine():
    rows = plan.shipped_plans()
    table = plan.format_table(rows).splitlines()
    assert {r["checkpoint"] for r in rows} >= {"reacher"}
    assert len(table) == 1 + sum(len(r["targets"]) * 2 for r in rows)  # fast, quality
    assert all(" yes " in line or " no " in line for line in table[1:])
