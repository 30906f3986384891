"""Dynamics transformer: shapes, block causality, KV-cache rollout == full forward, ring wrap."""

from __future__ import annotations

import pytest
import torch

from worldsim.model.dynamics import Dynamics, DynamicsConfig, KVCache, build_dynamics


def _model(window: int = 3, seed: int = 0) -> Dynamics:
    torch.manual_seed(seed)
    m = Dynamics(DynamicsConfig(width=64, layers=2, heads=2, window=window))
    with torch.no_grad():  # adaLN-Zero starts as identity; randomise so the checks bite
        for p in m.parameters():
            p.normal_(0, 0.05 if p.dim() > 1 else 0.02)
    return m.eval()


def _inputs(b: int, t: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, 64, 16, generator=g)
    tau = torch.rand(b, t, generator=g)
    act = torch.randn(b, t, 2, generator=g)
    has = torch.ones(b, t, dtype=torch.bool)
    has[:, 0] = False
    return z, tau, act, has


def test_shapes_and_group_roundtrip():
    m = _model()
    z, tau, act, has = _inputs(2, 4)
    v, r, d = m(z, tau, act, has)
    assert v.shape == z.shape and r.shape == (2, 4) and d.shape == (2, 4)
    assert torch.equal(m.ungroup(m.group(z)), z)


def test_future_frames_never_change_past_outputs():
    m = _model()
    z, tau, act, has = _inputs(2, 6)
    v, r, _ = m(z, tau, act, has)
    z2, act2 = z.clone(), act.clone()
    z2[:, 4:] += 1.0
    act2[:, 4:] = -act2[:, 4:]
    v2, r2, _ = m(z2, tau, act2, has)
    torch.testing.assert_close(v2[:, :4], v[:, :4], rtol=0, atol=1e-6)
    torch.testing.assert_close(r2[:, :4], r[:, :4], rtol=0, atol=1e-6)
    assert (v2[:, 4:] - v[:, 4:]).abs().max() > 1e-3  # and the future does depend on them


def test_prediction_is_a_residual_on_the_base():
    m = _model()
    z, tau, act, has = _inputs(1, 3)
    base = torch.randn_like(z)
    torch.testing.assert_close(m(z, tau, act, has, base)[0] - base, m(z, tau, act, has)[0])


def test_actions_change_the_prediction():
    m = _model()
    z, tau, act, has = _inputs(1, 3)
    v, _, _ = m(z, tau, act, has)
    act2 = act.clone()
    act2[:, 2] += 1.0
    v2, _, _ = m(z, tau, act2, has)
    assert (v2[:, 2] - v[:, 2]).abs().max() > 1e-3


def _one(x, t):  # frame t of a (B, T, ...) tensor, keeping the time axis
    return x[:, t : t + 1]


@pytest.mark.parametrize("frames", [3, 4, 11])  # inside the window, exactly full, wrapped twice
def test_cached_rollout_equals_full_forward(frames):
    m = _model(window=3)
    z, tau, act, has = _inputs(2, frames)
    with torch.no_grad():
        v, r, d = m(z, tau, act, has)
        cache = KVCache(m.cfg, 2, "cpu")
        steps = [
            m.step(_one(z, t), _one(tau, t), _one(act, t), _one(has, t), cache, write_first=True)
            for t in range(frames)
        ]
    torch.testing.assert_close(torch.cat([s[0] for s in steps], 1), v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat([s[1] for s in steps], 1), r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("frames", [3, 4, 11])
def test_folded_write_and_next_frame_equal_full_forward(frames):
    """The engine's pattern: one pass stores frame t and predicts frame t + 1."""
    m = _model(window=3)
    z, tau, act, has = _inputs(2, frames)
    base = torch.randn_like(z)  # the residual base enters the output only
    with torch.no_grad():
        v, r, _ = m(z, tau, act, has, base)
        cache = KVCache(m.cfg, 2, "cpu")
        s = slice(0, 1)
        first = m.step(z[:, s], tau[:, s], act[:, s], has[:, s], cache, base=base[:, s])[0]
        pairs = []
        for t in range(frames - 1):
            s = slice(t, t + 2)
            args = (z[:, s], tau[:, s], act[:, s], has[:, s], cache)
            pairs.append(m.step(*args, write_first=True, base=base[:, s]))
    torch.testing.assert_close(first, v[:, :1], rtol=1e-4, atol=1e-5)
    got_v = torch.cat([p[0][:, 1:] for p in pairs], 1)
    got_r = torch.cat([p[1][:, 1:] for p in pairs], 1)
    torch.testing.assert_close(got_v, v[:, 1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_r, r[:, 1:], rtol=1e-4, atol=1e-5)


def test_ring_buffer_wraps_and_keeps_constant_memory():
    m = _model(window=3)
    cache = KVCache(m.cfg, 1, "cpu")
    ptr = cache.k.data_ptr(), cache.k.shape
    z, tau, act, has = _inputs(1, 7)
    with torch.no_grad():
        for t in range(7):
            m.step(_one(z, t), _one(tau, t), _one(act, t), _one(has, t), cache, write_first=True)
    assert (cache.k.data_ptr(), cache.k.shape) == ptr
    # 7 writes into 3 slots: slot 0 got frames 0, 3, 6; ages count frames since writing
    assert cache.next_slot.tolist() == [1]
    assert sorted(cache.age[0].tolist()) == [0, 1, 2]
    assert cache.age[0, 0].item() == 0  # frame 6 is the newest


def test_reset_mask_clears_only_selected_worlds():
    m = _model(window=3)
    cache = KVCache(m.cfg, 2, "cpu")
    z, tau, act, has = _inputs(2, 2)
    with torch.no_grad():
        for t in range(2):
            m.step(_one(z, t), _one(tau, t), _one(act, t), _one(has, t), cache, write_first=True)
        cache.reset(torch.tensor([True, False]))
        assert not cache.valid()[0].any() and cache.valid()[1].sum() == 2
        # a reset world generates as if it had no history
        fresh = KVCache(m.cfg, 2, "cpu")
        first = (_one(z, 0), _one(tau, 0), _one(act, 0), _one(has, 0))
        a = m.step(*first, cache)[0]
        b = m.step(*first, fresh)[0]
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert (a[1] - b[1]).abs().max() > 1e-4


def test_build_from_config_dict_roundtrip():
    m = _model()
    m2 = build_dynamics(m.config_dict())
    assert m2.cfg == m.cfg
