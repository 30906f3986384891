"""Which path an op takes: the NKI kernel or the torch reference, and a count of each.

The kernel runs when the Neuron SDK imports and the tensor lives on a Neuron (XLA)
device, or whenever `NKI_SIMULATOR=1` (then through `nki.simulate` where the SDK is
installed, else through the NumPy emulator in `worldsim.kernels.emulator`). Everything
else takes the reference. The check is an environment lookup and a device-type compare,
cheap enough for every op call.
"""

from __future__ import annotations

import os
from collections import Counter

import torch
import torch.nn.functional as F

from worldsim.kernels import reference
from worldsim.kernels.nki_compat import HAVE_NKI, nki

NEURON_DEVICES = frozenset({"xla", "neuron", "privateuseone"})
counts: Counter[str] = Counter()
"""`counts["frame_attention.kernel"]`, `counts["modulated_norm.reference"]`, ..."""


def use_kernel(t: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False  # torch.compile traces the reference (inductor fuses it for the CPU)
    if t.requires_grad and torch.is_grad_enabled():
        return False  # kernels are forward-only; training takes the reference
    if os.environ.get("NKI_SIMULATOR") == "1":
        return True
    return HAVE_NKI and t.device.type in NEURON_DEVICES


def run_kernel(kernel, *args, **kwargs):
    """Call a kernel on torch tensors: on the device, or simulated on the CPU."""
    if HAVE_NKI and os.environ.get("NKI_SIMULATOR") == "1":
        arrays = [
            a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else a for a in args
        ]
        out = nki.simulate(kernel)(*arrays, **kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        outs = tuple(torch.as_tensor(o) for o in outs)
        return outs if isinstance(out, tuple) else outs[0]
    return kernel(*args, **kwargs)  # real device, or the emulator (takes torch tensors)


def reset_counts() -> None:
    counts.clear()


def _count(op: str, kernel: bool) -> None:
    if torch.compiler.is_compiling():
        return  # counted once per compilation, not per call: leave it out of the graph
    counts[f"{op}.{'kernel' if kernel else 'reference'}"] += 1


# -- the ops ----------------------------------------------------------------------
def modulated_norm(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm(x) * (1 + scale) + shift; shift/scale broadcast against x."""
    if not use_kernel(x):
        _count("modulated_norm", False)
        return reference.modulated_norm(x, shift, scale, eps)
    _count("modulated_norm", True)
    from worldsim.kernels.norm import modulated_norm_kernel

    d = x.shape[-1]
    flat = x.reshape(-1, d)
    sh = shift.expand(x.shape).reshape(-1, d).float()
    sc = scale.expand(x.shape).reshape(-1, d).float()
    out = run_kernel(modulated_norm_kernel, flat, sh, sc, eps=eps)
    return out.to(device=x.device, dtype=x.dtype).view(x.shape)


def gelu_mlp(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """Linear(w1, b1) -> GELU(tanh) -> Linear(w2, b2); weights as in nn.Linear."""
    if not use_kernel(x):
        _count("gelu_mlp", False)
        return reference.gelu_mlp(x, w1, b1, w2, b2)
    _count("gelu_mlp", True)
    from worldsim.kernels.mlp import gelu_mlp_kernel

    d = x.shape[-1]
    dt = x.dtype
    out = run_kernel(
        gelu_mlp_kernel,
        x.reshape(-1, d),
        w1.t().contiguous().to(dt),
        b1.float()[:, None],
        w2.t().contiguous().to(dt),
        b2.float()[:, None],
    )
    return out.to(device=x.device, dtype=x.dtype).view(x.shape)


def attention_bias(mask: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, 1, M, L) bool mask -> (B * heads, M, L) fp32 additive bias (0 / -1e30)."""
    from worldsim.kernels.tiles import NEG

    b, _, m, keys = mask.shape
    bias = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    bias = bias.masked_fill(~mask, NEG)
    return bias.expand(b, heads, m, keys).reshape(b * heads, m, keys)


def frame_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """softmax(q [k_cache; k_new].T / sqrt(dh) | mask) [v_cache; v_new]; see reference."""
    if not use_kernel(q):
        _count("frame_attention", False)
        return reference.frame_attention(q, k_cache, v_cache, k_new, v_new, mask)
    _count("frame_attention", True)
    from worldsim.kernels.attention import frame_attention_kernel

    b, h, m, dh = q.shape
    c = k_cache.shape[2]
    g = b * h
    dt = q.dtype
    out = run_kernel(
        frame_attention_kernel,
        q.reshape(g, m, dh),
        k_cache.reshape(g, c, dh).transpose(1, 2).contiguous().to(dt),
        v_cache.reshape(g, c, dh).to(dt),
        k_new.reshape(g, m, dh).transpose(1, 2).contiguous().to(dt),
        v_new.reshape(g, m, dh).to(dt),
        attention_bias(mask.expand(b, 1, m, c + m), h),
    )
    return out.to(device=q.device, dtype=q.dtype).view(b, h, m, dh)


def _pair_swap(w: torch.Tensor) -> torch.Tensor:
    """Columns (c0, c1, c2, c3, ...) -> (-c1, c0, -c3, c2, ...): x @ result == swap(x @ w)."""
    out = torch.empty_like(w)
    out[..., 0::2] = -w[..., 1::2]
    out[..., 1::2] = w[..., 0::2]
    return out


def rope_tables(pos: torch.Tensor, dh: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin per channel (pairs repeated), transposed: (dh, M) fp32 each."""
    freqs = 1.0 / (10000 ** (torch.arange(0, dh, 2, device=pos.device).float() / dh))
    ang = (pos.float()[:, None] * freqs).repeat_interleave(2, dim=1)  # (M, dh)
    return ang.cos().t().contiguous(), ang.sin().t().contiguous()


def transformer_block(block, x, cond, k_cache, v_cache, mask, q_pos, k_pos):
    """A whole dynamics block for new frames (megakernel v1 on the kernel path).

    Arguments and results as `reference.transformer_block`."""
    if not use_kernel(x):
        _count("transformer_block", False)
        return reference.transformer_block(block, x, cond, k_cache, v_cache, mask, q_pos, k_pos)
    _count("transformer_block", True)
    from worldsim.kernels.block import transformer_block_kernel
    from worldsim.model.dynamics import rope

    b, t, n, d = x.shape
    h, c, dh = block.heads, k_cache.shape[2], d // block.heads
    m = t * n
    dt = x.dtype
    mods = block.ada(F.silu(cond)).repeat_interleave(n, dim=1).float()  # (B, M, 6d)
    wqkv, bqkv = block.qkv.weight.t(), block.qkv.bias
    cos_t, sin_t = rope_tables(q_pos, dh)
    k_rot = rope(k_cache, k_pos).transpose(2, 3).contiguous()  # (B, H, dh, C)
    bias = attention_bias(mask.expand(b, 1, m, c + m), 1)
    up, down = block.mlp[0], block.mlp[2]
    out, k_new, v_new = run_kernel(
        transformer_block_kernel,
        x.reshape(b, m, d).float(),
        mods,
        wqkv.contiguous().to(dt),
        bqkv.float()[:, None],
        _pair_swap(wqkv[:, : 2 * d]).contiguous().to(dt),
        _pair_swap(bqkv[: 2 * d]).float()[:, None],
        block.proj.weight.t().contiguous().to(dt),
        block.proj.bias.float()[:, None],
        up.weight.t().contiguous().to(dt),
        up.bias.float()[:, None],
        down.weight.t().contiguous().to(dt),
        down.bias.float()[:, None],
        cos_t,
        sin_t,
        k_rot.to(dt),
        v_cache.to(dt),
        bias,
        heads=h,
        eps=block.norm1.eps,
    )
    dev = x.device
    return (
        out.to(device=dev, dtype=dt).view(b, t, n, d),
        k_new.transpose(2, 3).to(device=dev, dtype=dt),
        v_new.to(device=dev, dtype=dt),
    )
