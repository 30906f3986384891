"""NKI kernel: one frame's queries against the ring KV cache plus the frame's own keys.

Per (world, head): scores for one key tile at a time (<= 128 keys; the cache's tiles, then
the new frame's), online softmax in fp32 (running max, running sum, rescaled output), so
the (queries x keys) matrix never exists whole and the cache and new keys are never
concatenated. The cache's validity and the causal order of new frames arrive as an
additive fp32 bias (0 or -1e30) per (query, key).
"""

from __future__ import annotations

import math

from worldsim.kernels.nki_compat import nisa, nki, nl
from worldsim.kernels.tiles import OnlineSoftmax, chunks, load, transpose


def attend_group(q_t, sources, bias, out_dtype):
    """q_t: SBUF (dh, m) queries; sources: [(k_t HBM/SBUF (dh, L), v (L, dh), col0)];
    bias: HBM (m, total keys). Returns SBUF (m, dh) fp32."""
    dh, m = q_t.shape
    soft = OnlineSoftmax(q_t, 1.0 / math.sqrt(dh), out_dtype)
    for k_t, v, col0 in sources:
        for a, b in chunks(k_t.shape[1]):
            kt = load(k_t[:, a:b], q_t.dtype)
            vt = load(v[a:b, :], q_t.dtype)
            bt = load(bias[:, col0 + a : col0 + b], nl.float32)
            soft.add(kt, vt, bt)
    return soft.result()


@nki.jit
def frame_attention_kernel(q, k_cache_t, v_cache, k_new_t, v_new, bias):
    """q: (G, M, dh) with G = worlds x heads, M = new tokens <= 128 (rotated);
    k_cache_t: (G, dh, C) rotated cached keys, transposed; v_cache: (G, C, dh);
    k_new_t: (G, dh, M); v_new: (G, M, dh); bias: (G, M, C + M) fp32.
    Returns (G, M, dh) in q's dtype."""
    g, m, dh = q.shape
    c = k_cache_t.shape[2]
    out = nl.ndarray((g, m, dh), dtype=q.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(g):
        q_t = transpose(load(q[i, :, :]), q.dtype)  # (dh, m)
        sources = [(k_cache_t[i, :, :], v_cache[i, :, :], 0), (k_new_t[i, :, :], v_new[i, :, :], c)]
        o = attend_group(q_t, sources, bias[i, :, :], q.dtype)
        res = nl.ndarray((m, dh), dtype=q.dtype, buffer=nl.sbuf)
        nisa.tensor_copy(dst=res, src=o)
        nisa.dma_copy(dst=out[i, :, :], src=res)
    return out
