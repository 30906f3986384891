"""Dynamics transformer: shapes, block causality, state conditioning, KV-cache rollout == full
forward, ring wrap."""

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
    state = torch.randn(b, t, 8, generator=g) * 0.1  # Reacher's scene: 8 values
    return z, tau, act, has, state


def test_shapes_and_group_roundtrip():
    m = _model()
    z, tau, act, has, st = _inputs(2, 4)
    v, r, d = m(z, tau, act, has, st)
    assert v.shape == z.shape and r.shape == (2, 4) and d.shape == (2, 4)
    assert torch.equal(m.ungroup(m.group(z)), z)


def test_future_frames_never_change_past_outputs():
    m = _model()
    z, tau, act, has, st = _inputs(2, 6)
    v, r, _ = m(z, tau, act, has, st)
    z2, act2, st2 = z.clone(), act.clone(), st.clone()
    z2[:, 4:] += 1.0
    act2[:, 4:] = -act2[:, 4:]
    st2[:, 4:] += 0.5
    v2, r2, _ = m(z2, tau, act2, has, st2)
    torch.testing.assert_close(v2[:, :4], v[:, :4], rtol=0, atol=1e-6)
    torch.testing.assert_close(r2[:, :4], r[:, :4], rtol=0, atol=1e-6)
    assert (v2[:, 4:] - v[:, 4:]).abs().max() > 1e-3  # and the future does depend on them


@pytest.mark.parametrize("what", ["action", "state"])
def test_the_action_and_the_state_change_the_prediction(what):
    m = _model()
    z, tau, act, has, st = _inputs(1, 3)
    v, _, _ = m(z, tau, act, has, st)
    act2, st2 = act.clone(), st.clone()
    (act2 if what == "action" else st2)[:, 2] += 1.0
    v2, _, _ = m(z, tau, act2, has, st2)
    assert (v2[:, 2] - v[:, 2]).abs().max() > 1e-3
    torch.testing.assert_close(v2[:, :2], v[:, :2])


def _one(x, t):  # frame t of a (B, T, ...) tensor, keeping the time axis
    return x[:, t : t + 1]


@pytest.mark.parametrize("frames", [3, 4, 11])  # inside the window, exactly full, wrapped twice
def test_cached_rollout_equals_full_forward(frames):
    m = _model(window=3)
    inputs = _inputs(2, frames)
    with torch.no_grad():
        v, r, d = m(*inputs)
        cache = KVCache(m.cfg, 2, "cpu")
        steps = [
            m.step(*(_one(x, t) for x in inputs), cache, write_first=True) for t in range(frames)
        ]
    torch.testing.assert_close(torch.cat([s[0] for s in steps], 1), v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat([s[1] for s in steps], 1), r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("frames", [3, 4, 11])
def test_folded_write_and_next_frame_equal_full_forward(frames):
    """The engine's pattern: one pass stores frame t and predicts frame t + 1."""
    m = _model(window=3)
    inputs = _inputs(2, frames)
    with torch.no_grad():
        v, r, _ = m(*inputs)
        cache = KVCache(m.cfg, 2, "cpu")
        first = m.step(*(x[:, :1] for x in inputs), cache)[0]
        pairs = []
        for t in range(frames - 1):
            pairs.append(m.step(*(x[:, t : t + 2] for x in inputs), cache, write_first=True))
    torch.testing.assert_close(first, v[:, :1], rtol=1e-4, atol=1e-5)
    got_v = torch.cat([p[0][:, 1:] for p in pairs], 1)
    got_r = torch.cat([p[1][:, 1:] for p in pairs], 1)
    torch.testing.assert_close(got_v, v[:, 1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_r, r[:, 1:], rtol=1e-4, atol=1e-5)


def test_ring_buffer_wraps_and_keeps_constant_memory():
    m = _model(window=3)
    cache = KVCache(m.cfg, 1, "cpu")
    ptr = cache.k.data_ptr(), cache.k.shape
    inputs = _inputs(1, 7)
    with torch.no_grad():
        for t in range(7):
            m.step(*(_one(x, t) for x in inputs), cache, write_first=True)
    assert (cache.k.data_ptr(), cache.k.shape) == ptr
    # 7 writes into 3 slots: slot 0 got frames 0, 3, 6; ages count frames since writing
    assert cache.next_slot.tolist() == [1]
    assert sorted(cache.age[0].tolist()) == [0, 1, 2]
    assert cache.age[0, 0].item() == 0  # frame 6 is the newest


def test_reset_mask_clears_only_selected_worlds():
    m = _model(window=3)
    cache = KVCache(m.cfg, 2, "cpu")
    inputs = _inputs(2, 2)
    with torch.no_grad():
        for t in range(2):
            m.step(*(_one(x, t) for x in inputs), cache, write_first=True)
        cache.reset(torch.tensor([True, False]))
        assert not cache.valid()[0].any() and cache.valid()[1].sum() == 2
        # a reset world generates as if it had no history
        fresh = KVCache(m.cfg, 2, "cpu")
        first = tuple(_one(x, 0) for x in inputs)
        a = m.step(*first, cache)[0]
        b = m.step(*first, fresh)[0]
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert (a[1] - b[1]).abs().max() > 1e-4


def test_build_from_config_dict_roundtrip():
    m = _model()
    m2 = build_dynamics(m.config_dict())
    assert m2.cfg == m.cfg


def test_without_a_window_each_frame_sees_only_itself():
    m = _model(window=0)
    inputs = _inputs(2, 4)
    with torch.no_grad():
        v, r, _ = m(*inputs)
        alone = [m(*(_one(x, t) for x in inputs)) for t in range(4)]
        cache = KVCache(m.cfg, 2, "cpu")
        stepped = [m.step(*(_one(x, t) for x in inputs), cache, write_first=True) for t in range(4)]
    torch.testing.assert_close(torch.cat([a[0] for a in alone], 1), v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat([s[0] for s in stepped], 1), v, rtol=1e-4, atol=1e-5)
    assert not cache.valid().any()  # nothing was written


def test_repeat_each_is_repeat_interleave():
    from worldsim.model.dynamics import repeat_each

    x = torch.arange(24).view(2, 3, 4)
    for dim in (0, 1, 2, -1):
        assert torch.equal(repeat_each(x, 3, dim), x.repeat_interleave(3, dim))
