"""NKI kernel: the fused GELU(tanh) MLP, `gelu(x @ w1 + b1) @ w2 + b2`.

The hidden activations never leave SBUF: the first matmul writes feature-major chunks
that are directly the contraction chunks of the second. Biases ride on the Scalar
Engine's activation instruction (one per-partition bias per output feature).
"""

from __future__ import annotations

from worldsim.kernels.nki_compat import nisa, nki, nl
from worldsim.kernels.tiles import chunks, load, load_rows, mlp_t, transpose_cols, untranspose


@nki.jit
def gelu_mlp_kernel(x, w1, b1, w2, b2):
    """x: HBM (N, d); w1 (d, F); b1 (F, 1); w2 (F, d); b2 (d, 1). Returns (N, d)."""
    n, d = x.shape
    dt = w1.dtype  # matmul inputs share one dtype (bf16 or fp32)
    out = nl.ndarray((n, d), dtype=x.dtype, buffer=nl.shared_hbm)
    w1_rows, w2_rows = load_rows(w1, dt), load_rows(w2, dt)  # resident for all token tiles
    for a, b in chunks(n):
        xt = load(x[a:b, :], dt)
        y_t = mlp_t(transpose_cols(xt, dt), w1_rows, b1, w2_rows, b2, d, dt)
        y = untranspose(y_t, b - a)
        res = nl.ndarray((b - a, d), dtype=x.dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=res, src=y)
        nisa.dma_copy(dst=out[a:b, :], src=res)
    return out
