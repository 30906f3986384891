"""NKI kernel: modulated LayerNorm, `LayerNorm(x) * (1 + scale) + shift` in one pass.

Tokens on partitions (128 per tile), features on the free axis, so both reductions
(mean, variance) run along the free axis on the Vector Engine. fp32 statistics whatever
the input dtype.
"""

from __future__ import annotations

from worldsim.kernels.nki_compat import nisa, nki, nl
from worldsim.kernels.tiles import chunks, load, modulated_norm_tile


@nki.jit
def modulated_norm_kernel(x, shift, scale, eps=1e-5):
    """x, shift, scale: HBM (N, d). Returns HBM (N, d) in x's dtype."""
    n, d = x.shape
    out = nl.ndarray((n, d), dtype=x.dtype, buffer=nl.shared_hbm)
    for a, b in chunks(n):
        xt = load(x[a:b, :], nl.float32)
        sh = load(shift[a:b, :], nl.float32)
        sc = load(scale[a:b, :], nl.float32)
        y = modulated_norm_tile(xt, sh, sc, eps, x.dtype)
        nisa.dma_copy(dst=out[a:b, :], src=y)
    return out
