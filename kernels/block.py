"""NKI megakernel v1: one whole transformer block of the dynamics model for new frames.

All of the block's weights are loaded into SBUF once and stay there while every world's
tokens go through: modulated norm -> q/k/v (RoPE folded in) -> attention over the ring
cache plus the new keys -> projection + gated residual -> modulated norm -> GELU MLP +
gated residual. Only the block input, the cache tiles and the outputs cross HBM.

RoPE without shuffling channels on chip: rotating pairs (x0, x1) -> (x0 c - x1 s,
x0 s + x1 c) equals x * cos + swap(x) * sin with swap(x) = (-x1, x0), and swap is linear,
so swap(q) comes from a second matmul with column-swapped weights (prepared on the host).
The per-frame modulation vectors (adaLN) arrive precomputed, one row per token.
"""

from __future__ import annotations

from worldsim.kernels.attention import attend_group
from worldsim.kernels.nki_compat import nisa, nki, nl
from worldsim.kernels.tiles import (
    chunks,
    linear_t,
    load,
    load_rows,
    mlp_t,
    modulated_norm_tile,
    transpose,
    transpose_cols,
    untranspose,
)


def _rotated(h_t, w_rows, b, wsw_rows, bsw, cols, cols_sw, cos_t, sin_t, dtype):
    """Feature-major rope(h @ w[:, cols] + b) -> SBUF (dh, m) in dtype; also unrotated."""
    f32 = nl.float32
    plain = linear_t(h_t, w_rows, b, cols, nl.copy, f32)
    swapped = linear_t(h_t, wsw_rows, bsw, cols_sw, nl.copy, f32)
    nisa.tensor_tensor(dst=swapped, data1=swapped, data2=sin_t, op=nl.multiply)
    rot = nl.ndarray(plain.shape, dtype=f32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=rot, data1=plain, data2=cos_t, op=nl.multiply)
    out = nl.ndarray(plain.shape, dtype=dtype, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=out, data1=rot, data2=swapped, op=nl.add)
    return out, plain


def _gated_residual(x, y, gate):
    """x + gate * y, token-major fp32."""
    out = nl.ndarray(x.shape, dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=out, data1=y, data2=gate, op=nl.multiply)
    nisa.tensor_tensor(dst=out, data1=out, data2=x, op=nl.add)
    return out


@nki.jit
def transformer_block_kernel(
    x,
    mods,
    wqkv,
    bqkv,
    wsw,
    bsw,
    wproj,
    bproj,
    w1,
    b1,
    w2,
    b2,
    cos_t,
    sin_t,
    k_cache_t,
    v_cache,
    bias,
    heads=4,
    eps=1e-5,
):
    """x: (B, M, d) fp32 block input, M new tokens <= 128; mods: (B, M, 6d) fp32 rows of
    (shift1, scale1, gate1, shift2, scale2, gate2); wqkv (d, 3d), bqkv (3d, 1); wsw (d, 2d),
    bsw (2d, 1): q/k columns pair-swapped for RoPE; wproj (d, d), bproj (d, 1); w1 (d, 4d),
    b1 (4d, 1); w2 (4d, d), b2 (d, 1); cos_t, sin_t (dh, M) fp32; k_cache_t (B, H, dh, C)
    rotated; v_cache (B, H, C, dh); bias (B, M, C + M) fp32 additive mask.

    Returns (x_out (B, M, d) fp32, k_new_t (B, H, dh, M) unrotated, v_new (B, H, M, dh))."""
    b_sz, m, d = x.shape
    dh = d // heads
    dt = wqkv.dtype
    f32 = nl.float32
    c = k_cache_t.shape[3]
    x_out = nl.ndarray((b_sz, m, d), dtype=f32, buffer=nl.shared_hbm)
    k_new = nl.ndarray((b_sz, heads, dh, m), dtype=f32, buffer=nl.shared_hbm)
    v_new = nl.ndarray((b_sz, heads, m, dh), dtype=f32, buffer=nl.shared_hbm)
    # weights: resident in SBUF for the whole call
    wqkv_rows, wsw_rows = load_rows(wqkv, dt), load_rows(wsw, dt)
    wproj_heads = [load(wproj[h * dh : (h + 1) * dh, :], dt) for h in range(heads)]
    w1_rows, w2_rows = load_rows(w1, dt), load_rows(w2, dt)
    cos, sin = load(cos_t, f32), load(sin_t, f32)
    for i in nl.affine_range(b_sz):
        xt = load(x[i, :, :], f32)
        md = load(mods[i, :, :], f32)
        h = modulated_norm_tile(xt, md[:, 0:d], md[:, d : 2 * d], eps, dt)
        h_t = transpose_cols(h, dt)
        o_heads = []
        for hd in range(heads):
            q0, k0, v0 = hd * dh, d + hd * dh, 2 * d + hd * dh
            q_t, _ = _rotated(
                h_t, wqkv_rows, bqkv, wsw_rows, bsw, (q0, q0 + dh), (q0, q0 + dh), cos, sin, dt
            )
            k_t, k_plain = _rotated(
                h_t, wqkv_rows, bqkv, wsw_rows, bsw, (k0, k0 + dh), (k0, k0 + dh), cos, sin, dt
            )
            v_t = linear_t(h_t, wqkv_rows, bqkv, (v0, v0 + dh), nl.copy, f32)
            v_tok = transpose(v_t, f32)  # (m, dh)
            nisa.dma_copy(dst=k_new[i, hd, :, :], src=k_plain)
            nisa.dma_copy(dst=v_new[i, hd, :, :], src=v_tok)
            sources = [(k_cache_t[i, hd, :, :], v_cache[i, hd, :, :], 0), (k_t, v_tok, c)]
            o = attend_group(q_t, sources, bias[i, :, :], dt)
            o_lo = nl.ndarray((m, dh), dtype=dt, buffer=nl.sbuf)
            nisa.tensor_copy(dst=o_lo, src=o)
            o_heads.append(transpose(o_lo, dt))  # (dh, m)
        proj_t = [linear_t(o_heads, wproj_heads, bproj, cc, nl.copy, f32) for cc in chunks(d)]
        x1 = _gated_residual(xt, untranspose(proj_t, m), md[:, 2 * d : 3 * d])
        h2 = modulated_norm_tile(x1, md[:, 3 * d : 4 * d], md[:, 4 * d : 5 * d], eps, dt)
        y_t = mlp_t(transpose_cols(h2, dt), w1_rows, b1, w2_rows, b2, d, dt)
        x2 = _gated_residual(x1, untranspose(y_t, m), md[:, 5 * d : 6 * d])
        nisa.dma_copy(dst=x_out[i, :, :], src=x2)
    return x_out, k_new, v_new
