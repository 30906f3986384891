"""NKI kernels against their torch references, run through the emulator (and through
`nki.simulate` where the Neuron SDK imports), plus one test per hardware rule.

Tolerances: fp32 inputs agree to 1e-5 absolute (the kernels accumulate in fp32, the
references too). bf16 inputs are compared with the fp32 reference on the same bf16-rounded
inputs: norm 3e-2, MLP and attention 2e-2 of the output's scale, the whole block 5e-2
(bf16 roundings of intermediates between matmuls).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worldsim import kernels
from worldsim.kernels import reference
from worldsim.kernels.emulator import Chip, HardwareRuleError, memory
from worldsim.kernels.emulator import isa as enisa
from worldsim.kernels.emulator import language as enl
from worldsim.kernels.nki_compat import EMULATED, HAVE_NKI
from worldsim.model.dynamics import Block, DynamicsConfig

NO_SDK = "Neuron SDK (nki) not installed; these run under nki.simulate where it imports"
BOUND_TO_SDK = "kernels are bound to the real nki here; set WORLDSIM_NKI=emulator to emulate"
TOL = {torch.float32: 1e-5}


@pytest.fixture
def simulator(monkeypatch):
    """Route the ops through the kernels (emulator here, nki.simulate with the SDK)."""
    monkeypatch.setenv("NKI_SIMULATOR", "1")
    kernels.reset_counts()
    yield
    kernels.reset_counts()


def _close(got, want, tol):
    scale = max(1.0, float(want.abs().max()))
    err = float((got.float() - want.float()).abs().max())
    assert err <= tol * scale, f"max error {err:.3g} > {tol} x {scale:.3g}"


def _rand(*shape, scale=1.0, gen=None):
    return torch.randn(*shape, generator=gen) * scale


# -- parity: each op --------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("shape", [(5, 40), (130, 64), (2, 3, 200)])
def test_modulated_norm_matches_reference(simulator, shape, dtype, tol):
    g = torch.Generator().manual_seed(0)
    x = _rand(*shape, scale=3.0, gen=g).to(dtype)
    shift, scale = _rand(shape[-1], gen=g).to(dtype), _rand(shape[-1], scale=0.3, gen=g).to(dtype)
    got = kernels.modulated_norm(x, shift, scale)
    assert got.dtype == dtype and got.shape == x.shape
    want = reference.modulated_norm(x.float(), shift.float(), scale.float())
    _close(got, want, tol)
    assert kernels.counts["modulated_norm.kernel"] == 1


@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 140), d=st.integers(2, 96), seed=st.integers(0, 2**16))
def test_modulated_norm_any_shape(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x, shift, scale = _rand(n, d, gen=g), _rand(n, d, gen=g), _rand(n, d, gen=g)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NKI_SIMULATOR", "1")
        got = kernels.modulated_norm(x, shift, scale)
    _close(got, reference.modulated_norm(x, shift, scale), 1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("n,d", [(5, 40), (130, 192)])
def test_gelu_mlp_matches_reference(simulator, n, d, dtype, tol):
    g = torch.Generator().manual_seed(1)
    x = _rand(n, d, gen=g).to(dtype)
    w1, b1 = _rand(4 * d, d, scale=d**-0.5, gen=g), _rand(4 * d, scale=0.1, gen=g)
    w2, b2 = _rand(d, 4 * d, scale=(4 * d) ** -0.5, gen=g), _rand(d, scale=0.1, gen=g)
    w1, w2 = w1.to(dtype).float(), w2.to(dtype).float()
    got = kernels.gelu_mlp(x, w1, b1, w2, b2)
    assert got.dtype == dtype
    _close(got, reference.gelu_mlp(x.float(), w1, b1, w2, b2), tol)
    assert kernels.counts["gelu_mlp.kernel"] == 1


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize(
    "b,h,m,c,dh",
    [(1, 4, 32, 64, 48), (2, 1, 8, 200, 32), (1, 2, 128, 16, 16)],  # Reacher; 2 cache tiles
)
def test_frame_attention_matches_reference(simulator, b, h, m, c, dh, dtype, tol):
    g = torch.Generator().manual_seed(2)
    q, kc, vc = (_rand(b, h, r, dh, gen=g).to(dtype) for r in (m, c, c))
    kn, vn = (_rand(b, h, m, dh, gen=g).to(dtype) for _ in range(2))
    cache_ok = torch.rand(b, 1, m, c, generator=g) > 0.3  # empty / out-of-window slots
    causal = torch.ones(m, m, dtype=torch.bool).tril()  # new tokens see earlier new ones
    mask = torch.cat([cache_ok, causal.expand(b, 1, m, m)], dim=-1)
    got = kernels.frame_attention(q, kc, vc, kn, vn, mask)
    want = reference.frame_attention(*(t.float() for t in (q, kc, vc, kn, vn)), mask)
    _close(got, want, tol)
    assert kernels.counts["frame_attention.kernel"] == 1


def _block_case(width, heads, b, t, n, window, gen):
    blk = Block(DynamicsConfig(width=width, heads=heads)).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    c, m, dh = window * n, t * n, width // heads
    x, cond = _rand(b, t, n, width, gen=gen), _rand(b, t, width, gen=gen)
    kc, vc = _rand(b, heads, c, dh, gen=gen), _rand(b, heads, c, dh, gen=gen)
    age = torch.arange(window)  # slot s written s frames ago; the oldest one empty
    see = torch.cat(
        [
            (age < window - 1).repeat_interleave(n).expand(m, c),
            torch.ones(m, m, dtype=torch.bool).tril(),
        ],
        dim=1,
    )
    mask = see.expand(b, 1, m, c + m)
    q_pos = torch.arange(t).repeat_interleave(n)
    k_pos = (-(age + 1)).repeat_interleave(n).expand(b, 1, c)
    return blk, (x, cond, kc, vc, mask, q_pos, k_pos)


@pytest.mark.parametrize(
    "width,heads,b,t,n,window,tol",
    [(192, 4, 1, 2, 16, 4, 1e-5), (64, 2, 2, 1, 4, 3, 1e-5)],  # Reacher's block; a small one
)
def test_transformer_block_megakernel_matches_reference(
    simulator, width, heads, b, t, n, window, tol
):
    blk, args = _block_case(width, heads, b, t, n, window, torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = kernels.transformer_block(blk, *args)
        want = reference.transformer_block(blk, *args)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        _close(g, w, tol)
    assert kernels.counts["transformer_block.kernel"] == 1


def test_transformer_block_megakernel_bf16(simulator):
    blk, args = _block_case(64, 2, 1, 2, 4, 2, torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = reference.transformer_block(blk, *args)
        got = kernels.transformer_block(
            blk.to(torch.bfloat16), args[0].bfloat16(), args[1].bfloat16(), *args[2:]
        )
    for g, w in zip(got, want, strict=True):
        _close(g, w, 5e-2)


def test_block_reference_is_the_models_block_step():
    """The megakernel's oracle equals what Dynamics.step runs, bit for bit."""
    from worldsim.model.dynamics import Dynamics, KVCache

    torch.manual_seed(5)
    cfg = DynamicsConfig(latent_dim=4, grid=4, group=2, width=32, layers=1, heads=2, window=2)
    dyn = Dynamics(cfg).eval()
    for p in dyn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    cache = KVCache(cfg, 1, "cpu")
    z = torch.randn(1, 1, 16, 4)
    args = (
        torch.ones(1, 1),
        torch.zeros(1, 1, 2),
        torch.ones(1, 1, dtype=torch.bool),
        torch.zeros(1, 1, 8),  # the frame's scene state
    )
    with torch.no_grad():
        dyn.step(z, *args, cache, write_first=True)  # one frame in the cache
        x, c = dyn._embed(z, *args)
        blk = dyn.blocks[0]
        n = cfg.tokens
        mask = torch.cat(
            [
                cache.valid().repeat_interleave(n, 1)[:, None].expand(1, n, -1),
                torch.ones(1, n, n, dtype=torch.bool),
            ],
            dim=2,
        )[:, None]
        k_pos = cache.positions().repeat_interleave(n, dim=1)[:, None]
        q_pos = torch.zeros(n, dtype=torch.long)
        out, _, _ = reference.transformer_block(
            blk, x, c, cache.k[0], cache.v[0], mask, q_pos, k_pos
        )
        seen = []
        dyn.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o))
        dyn.step(z, *args, cache)
    assert torch.equal(out, seen[0])


# -- dispatch ---------------------------------------------------------------------
def test_dispatch_takes_the_reference_on_cpu_and_counts(monkeypatch):
    monkeypatch.delenv("NKI_SIMULATOR", raising=False)
    kernels.reset_counts()
    x = torch.randn(2, 8)
    out = kernels.modulated_norm(x, torch.zeros(8), torch.zeros(8))
    assert torch.equal(out, reference.modulated_norm(x, torch.zeros(8), torch.zeros(8)))
    assert kernels.counts == {"modulated_norm.reference": 1}
    assert not kernels.use_kernel(x)


def test_dispatch_leaves_autograd_to_the_reference(simulator):
    x = torch.randn(2, 8, requires_grad=True)
    kernels.modulated_norm(x, torch.zeros(8), torch.zeros(8)).sum().backward()
    assert x.grad is not None and kernels.counts["modulated_norm.reference"] == 1


@pytest.mark.skipif(not HAVE_NKI, reason=NO_SDK)
def test_parity_under_nki_simulate(simulator):  # pragma: no cover - needs the SDK
    x, shift, scale = torch.randn(130, 64), torch.randn(64), torch.randn(64)
    _close(kernels.modulated_norm(x, shift, scale), reference.modulated_norm(x, shift, scale), 1e-4)
    blk, args = _block_case(64, 2, 1, 2, 4, 2, torch.Generator().manual_seed(6))
    with torch.no_grad():
        for g, w in zip(
            kernels.transformer_block(blk, *args),
            reference.transformer_block(blk, *args),
            strict=True,
        ):
            _close(g, w, 1e-4)


# -- hardware rules: each one fires --------------------------------------------------
@pytest.fixture
def chip():
    if not EMULATED:
        pytest.skip(BOUND_TO_SDK)
    c = Chip("trn2")
    memory.set_chip(c)
    yield c
    memory.set_chip(None)


def _sbuf(shape, dtype=enl.float32, value=1.0):
    t = enl.ndarray(shape, dtype=dtype, buffer=enl.sbuf)
    t.data[...] = value
    return t


def test_rule_partition_dimension_at_most_128(chip):
    _sbuf((128, 4))
    with pytest.raises(HardwareRuleError, match="partition dimension 129"):
        enl.ndarray((129, 4), dtype=enl.float32, buffer=enl.sbuf)


def test_rule_matmul_stationary_free_at_most_128(chip):
    dst = enl.ndarray((128, 8), dtype=enl.float32, buffer=enl.psum)
    with pytest.raises(HardwareRuleError, match="stationary free size 129"):
        enisa.nc_matmul(dst=dst, stationary=_sbuf((64, 129)), moving=_sbuf((64, 8)))


def test_rule_matmul_moving_free_at_most_512(chip):
    ok = enl.ndarray((8, 512), dtype=enl.float32, buffer=enl.psum)
    enisa.nc_matmul(dst=ok, stationary=_sbuf((64, 8)), moving=_sbuf((64, 512)), accumulate=False)
    assert np.all(ok.data == 64.0)
    dst = enl.ndarray((8, 512), dtype=enl.float32, buffer=enl.psum)
    with pytest.raises(HardwareRuleError, match="moving free size 514"):
        enisa.nc_matmul(dst=dst, stationary=_sbuf((64, 8)), moving=_sbuf((64, 2, 257)))


def test_rule_matmul_contracts_over_equal_partitions(chip):
    dst = enl.ndarray((8, 8), dtype=enl.float32, buffer=enl.psum)
    with pytest.raises(HardwareRuleError, match="contraction"):
        enisa.nc_matmul(dst=dst, stationary=_sbuf((64, 8)), moving=_sbuf((32, 8)))


def test_rule_matmul_reads_sbuf_and_writes_fp32_psum(chip):
    psum_in = enl.ndarray((64, 8), dtype=enl.float32, buffer=enl.psum)
    dst = enl.ndarray((8, 8), dtype=enl.float32, buffer=enl.psum)
    with pytest.raises(HardwareRuleError, match="must be in sbuf"):
        enisa.nc_matmul(dst=dst, stationary=psum_in, moving=_sbuf((64, 8)))
    with pytest.raises(HardwareRuleError, match="must be in psum"):
        enisa.nc_matmul(dst=_sbuf((8, 8)), stationary=_sbuf((64, 8)), moving=_sbuf((64, 8)))
    bf_dst = enl.ndarray((8, 8), dtype=enl.bfloat16, buffer=enl.psum)
    with pytest.raises(HardwareRuleError, match="accumulates in float32"):
        enisa.nc_matmul(dst=bf_dst, stationary=_sbuf((64, 8)), moving=_sbuf((64, 8)))


def test_rule_matmul_input_dtypes_agree(chip):
    dst = enl.ndarray((8, 8), dtype=enl.float32, buffer=enl.psum)
    with pytest.raises(HardwareRuleError, match="fp32 or both 16-bit"):
        enisa.nc_matmul(dst=dst, stationary=_sbuf((64, 8), enl.bfloat16), moving=_sbuf((64, 8)))


def test_rule_psum_tile_fits_one_bank(chip):
    enl.ndarray((128, 512), dtype=enl.float32, buffer=enl.psum)  # 2 KiB: one full bank
    with pytest.raises(HardwareRuleError, match="exceeds one bank"):
        enl.ndarray((128, 513), dtype=enl.float32, buffer=enl.psum)


def test_rule_psum_has_eight_banks(chip):
    held = [enl.ndarray((128, 16), dtype=enl.float32, buffer=enl.psum) for _ in range(8)]
    with pytest.raises(HardwareRuleError, match="8 banks"):
        enl.ndarray((128, 16), dtype=enl.float32, buffer=enl.psum)
    del held[0]  # a dead tile's bank is free again
    enl.ndarray((128, 16), dtype=enl.float32, buffer=enl.psum)


@pytest.mark.parametrize("target,fits", [("trn2", False), ("trn3", True)])
def test_rule_sbuf_capacity_per_partition(target, fits):
    if not EMULATED:
        pytest.skip(BOUND_TO_SDK)
    memory.set_chip(Chip(target))
    try:
        floats = 24 * 1024**2 // 128 // 4  # exactly Trn2's usable SBUF per partition
        a = enl.ndarray((128, floats), dtype=enl.float32, buffer=enl.sbuf)
        if fits:
            enl.ndarray((128, 1024), dtype=enl.float32, buffer=enl.sbuf)
        else:
            with pytest.raises(HardwareRuleError, match="SBUF overflow on trn2"):
                enl.ndarray((128, 1), dtype=enl.float32, buffer=enl.sbuf)
        del a
    finally:
        memory.set_chip(None)


def test_rule_dma_cannot_touch_psum_and_tiles_need_two_dims(chip):
    with pytest.raises(HardwareRuleError, match="DMA cannot access PSUM"):
        enisa.dma_copy(dst=_sbuf((8, 8)), src=enl.ndarray((8, 8), enl.float32, enl.psum))
    with pytest.raises(HardwareRuleError, match=">= 2 dimensions"):
        enl.ndarray((8,), dtype=enl.float32, buffer=enl.sbuf)


def test_uninitialised_memory_reads_as_nan(chip):
    src = enl.ndarray((4, 4), dtype=enl.float32, buffer=enl.sbuf)  # never written
    dst = _sbuf((4, 4))
    enisa.tensor_tensor(dst=dst, data1=src, data2=_sbuf((4, 4)), op=enl.add)
    assert np.isnan(dst.data).all()


def test_bf16_tiles_round_to_nearest_even(chip):
    t = enl.ndarray((1, 3), dtype=enl.bfloat16, buffer=enl.sbuf)
    t.write(np.array([[1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-7]], dtype=np.float32))
    assert t.data.tolist() == [[1.0, 1.0 + 2**-6, 1.0 + 2**-7]]


def test_kernels_run_their_own_source_through_the_emulator():
    if not EMULATED:
        pytest.skip(BOUND_TO_SDK)
    from worldsim.kernels.norm import modulated_norm_kernel

    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    zeros = np.zeros_like(x)
    out = modulated_norm_kernel(x, zeros, zeros)
    assert isinstance(out, np.ndarray) and out.shape == (200, 16)
    assert np.allclose(out.mean(1), 0, atol=1e-5) and np.allclose(out.std(1), 1, atol=1e-3)
    assert modulated_norm_kernel.last_chip.sbuf_peak > 0
