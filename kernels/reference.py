"""Torch references of the kernel ops: the CPU/GPU path and the kernels' oracle.

Each is written with exactly the calls the dynamics model made inline before the ops
moved here, so routing the model through them changes no bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def modulated_norm(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm over the last axis (no affine), then `* (1 + scale) + shift`."""
    return F.layer_norm(x, x.shape[-1:], None, None, eps) * (1 + scale) + shift


def gelu_mlp(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """Linear -> GELU(tanh) -> Linear, weights in torch's (out, in) layout."""
    return F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)


def frame_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """q (B, H, M, dh) new queries; k/v_cache (B, H, C, dh); k/v_new (B, H, M, dh), keys
    already rotated; mask (B, 1, M, C + M) bool, True where a query may attend."""
    # in q's dtype: under bf16 autocast the new keys are bf16 and the cache float32
    k = torch.cat([k_cache.to(q.dtype), k_new.to(q.dtype)], dim=2)
    v = torch.cat([v_cache.to(q.dtype), v_new.to(q.dtype)], dim=2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def transformer_block(block, x, cond, k_cache, v_cache, mask, q_pos, k_pos):
    """One dynamics `Block` on new frames against a cache, as `Dynamics.step` runs it.

    x (B, T, n, d); cond (B, T, d); k/v_cache (B, H, C, dh) unrotated; mask (B, 1, M, C + M);
    q_pos (M,) and k_pos (B, 1, C) frame positions. Returns (x_out, k_new, v_new) with the
    new frames' unrotated keys and values (B, H, M, dh).
    """
    from worldsim.model.dynamics import rope

    new = {}

    def attend(q, k, v):
        new["k"], new["v"] = k, v
        k_all = torch.cat([rope(k_cache, k_pos), rope(k, q_pos)], dim=2)
        v_all = torch.cat([v_cache, v], dim=2)
        return F.scaled_dot_product_attention(rope(q, q_pos), k_all, v_all, attn_mask=mask)

    out = block(x, cond, attend)
    return out, new["k"], new["v"]
