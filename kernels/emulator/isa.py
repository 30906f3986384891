"""The `nki.isa` instructions the kernels use, destination first, with the rules the
hardware enforces checked on every call. Each instruction cites its doc page.

Arithmetic is done in float32 (as the engines do) and rounded to the destination's dtype.
"""

from __future__ import annotations

import numpy as np

from . import language as nl
from .memory import PARTITIONS, PSUM, SBUF, HardwareRuleError, Tensor, float32

MATMUL_DTYPES = {"bfloat16", "float16", "float32"}
STATIONARY_FREE_MAX = 128
MOVING_FREE_MAX = 512


def _tile(t, what: str, buffers=(SBUF, PSUM)) -> Tensor:
    if not isinstance(t, Tensor):
        raise HardwareRuleError(f"{what} must be an NKI tensor, got {type(t).__name__}")
    if t.buffer not in buffers:
        names = "/".join(b.name for b in buffers)
        raise HardwareRuleError(f"{what} must be in {names}, is in {t.buffer}")
    if t.shape[0] > PARTITIONS:
        raise HardwareRuleError(f"{what}: partition dimension {t.shape[0]} > {PARTITIONS}")
    return t


def _values(x, partitions: int):
    """A tile's values, a (P, 1) vector tile broadcast along the free axis, or a scalar."""
    if isinstance(x, Tensor):
        _tile(x, "operand")
        if x.shape[0] != partitions:
            raise HardwareRuleError(f"operand has {x.shape[0]} partitions, data has {partitions}")
        return x.data
    return np.float32(x)


def _same_elements(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape[0] != b.shape[0] or a.data[0].size != b.data[0].size:
        raise HardwareRuleError(f"{what}: shapes {a.shape} and {b.shape} differ")


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.nc_matmul.html
def nc_matmul(dst, stationary, moving, accumulate=None, **_) -> None:
    """dst (PSUM, fp32) = stationary.T @ moving; contraction over the partition axis."""
    _tile(stationary, "nc_matmul stationary", (SBUF,))
    _tile(moving, "nc_matmul moving", (SBUF,))
    _tile(dst, "nc_matmul dst", (PSUM,))
    k, m = stationary.shape[0], int(np.prod(stationary.shape[1:]))
    k2, n = moving.shape[0], int(np.prod(moving.shape[1:]))
    if k != k2:
        raise HardwareRuleError(f"nc_matmul contraction (partition) sizes differ: {k} vs {k2}")
    if m > STATIONARY_FREE_MAX:
        raise HardwareRuleError(f"nc_matmul stationary free size {m} > {STATIONARY_FREE_MAX}")
    if n > MOVING_FREE_MAX:
        raise HardwareRuleError(f"nc_matmul moving free size {n} > {MOVING_FREE_MAX}")
    for t, what in ((stationary, "stationary"), (moving, "moving")):
        if t.dtype.name not in MATMUL_DTYPES:
            raise HardwareRuleError(f"nc_matmul {what} dtype {t.dtype} not supported")
    if (stationary.dtype is float32) != (moving.dtype is float32):
        raise HardwareRuleError(
            f"nc_matmul inputs must both be fp32 or both 16-bit: {stationary.dtype}, {moving.dtype}"
        )
    if dst.dtype is not float32:
        raise HardwareRuleError(f"nc_matmul accumulates in float32 PSUM; dst is {dst.dtype}")
    if dst.shape[0] != m or dst.data[0].size != n:
        raise HardwareRuleError(f"nc_matmul dst {dst.shape} must be ({m}, {n})")
    s = stationary.data.reshape(k, m).astype(np.float64)
    v = moving.data.reshape(k, n).astype(np.float64)
    out = (s.T @ v).astype(np.float32).reshape(dst.shape)
    # kernels here always say accumulate=; None accumulates into PSUM as the docs describe
    if accumulate is None or accumulate:
        out = dst.data + out
    dst.write(out)


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.nc_transpose.html
def nc_transpose(dst, data, **_) -> None:
    """Tensor Engine transpose: (P, F) in SBUF -> (F, P) in PSUM, same dtype, F <= 128."""
    _tile(data, "nc_transpose data", (SBUF,))
    _tile(dst, "nc_transpose dst", (PSUM,))
    p, f = data.shape[0], int(np.prod(data.shape[1:]))
    if f > PARTITIONS:
        raise HardwareRuleError(f"nc_transpose free size {f} > {PARTITIONS}")
    if dst.shape != (f, p):
        raise HardwareRuleError(f"nc_transpose dst {dst.shape} must be ({f}, {p})")
    if dst.dtype is not data.dtype:
        raise HardwareRuleError(f"nc_transpose dst dtype {dst.dtype} must be {data.dtype}")
    dst.write(data.data.reshape(p, f).T)


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.activation.html
def activation(dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None, **_):
    """dst = op(data * scale + bias); bias a (P, 1) vector; optional add-reduce per row."""
    _tile(data, "activation data")
    _tile(dst, "activation dst")
    if op not in nl.ACTIVATIONS:
        raise HardwareRuleError(f"activation op {op!r} not supported by the emulator")
    _same_elements(dst, data, "activation")
    p = data.shape[0]
    x = data.data * _values(scale, p)
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.shape != (p, 1):
            raise HardwareRuleError("activation bias must be a (partitions, 1) tile")
        x = x + bias.data
    y = op(x.astype(np.float32)).reshape(dst.shape)
    dst.write(y)
    if reduce_res is not None:
        if reduce_op is not nl.add:
            raise HardwareRuleError("activation reduce_op must be nl.add")
        _tile(reduce_res, "activation reduce_res")
        reduce_res.write(dst.data.reshape(p, -1).sum(axis=1, keepdims=True))


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.tensor_tensor.html
def tensor_tensor(dst, data1, data2, op, **_) -> None:
    _tile(data1, "tensor_tensor data1")
    _tile(data2, "tensor_tensor data2")
    _tile(dst, "tensor_tensor dst")
    if data1.buffer is PSUM and data2.buffer is PSUM:
        raise HardwareRuleError("tensor_tensor inputs cannot both be in PSUM")
    if op not in nl.ARITHMETIC:
        raise HardwareRuleError(f"tensor_tensor op {op!r} not supported by the emulator")
    _same_elements(data1, data2, "tensor_tensor")
    _same_elements(dst, data1, "tensor_tensor dst")
    dst.write(op(data1.data.reshape(dst.shape), data2.data.reshape(dst.shape)))


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.tensor_scalar.html
def tensor_scalar(dst, data, op0, operand0, reverse0=False, op1=None, operand1=None, **_):
    """(data op0 operand0) op1 operand1; operands are scalars or (P, 1) vectors."""
    _tile(data, "tensor_scalar data")
    _tile(dst, "tensor_scalar dst")
    _same_elements(dst, data, "tensor_scalar")
    p = data.shape[0]
    for op, operand in ((op0, operand0), (op1, operand1)):
        if op is None:
            continue
        if op not in nl.ARITHMETIC:
            raise HardwareRuleError(f"tensor_scalar op {op!r} not supported by the emulator")
        if isinstance(operand, Tensor) and operand.shape != (p, 1):
            raise HardwareRuleError("tensor_scalar operands must be scalars or (P, 1) tiles")
    x = data.data
    a = _values(operand0, p)
    x = op0(a, x) if reverse0 else op0(x, a)
    if op1 is not None:
        x = op1(x, _values(operand1, p))
    dst.write(x.reshape(dst.shape))


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.tensor_reduce.html
def tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, **_) -> None:
    _tile(data, "tensor_reduce data")
    _tile(dst, "tensor_reduce dst")
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if 0 in axes:
        raise HardwareRuleError("tensor_reduce cannot reduce the partition axis")
    if op.reduce is None:
        raise HardwareRuleError(f"tensor_reduce op {op!r} is not a reduction")
    r = op.reduce(data.data, axis=axes, keepdims=True)
    dst.write((-r if negate else r).reshape(dst.shape))


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.tensor_copy.html
def tensor_copy(dst, src, **_) -> None:
    """On-chip copy (e.g. PSUM -> SBUF) with a cast to dst's dtype."""
    _tile(src, "tensor_copy src")
    _tile(dst, "tensor_copy dst")
    _same_elements(dst, src, "tensor_copy")
    dst.write(src.data.reshape(dst.shape))


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.memset.html
def memset(dst, value, **_) -> None:
    _tile(dst, "memset dst")
    dst.write(np.float32(value))


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.isa.dma_copy.html
def dma_copy(dst, src, **_) -> None:
    """HBM <-> SBUF (or within either) copy; casts when dtypes differ. No PSUM access."""
    for t, what in ((dst, "dma_copy dst"), (src, "dma_copy src")):
        if not isinstance(t, Tensor):
            raise HardwareRuleError(f"{what} must be an NKI tensor")
        if t.buffer is PSUM:
            raise HardwareRuleError(f"{what}: DMA cannot access PSUM")
        if t.buffer is SBUF and t.shape[0] > PARTITIONS:
            raise HardwareRuleError(f"{what}: partition dimension {t.shape[0]} > {PARTITIONS}")
    if dst.shape != src.shape:
        raise HardwareRuleError(f"dma_copy shapes differ: {dst.shape} vs {src.shape}")
    dst.write(src.data)


__all__ = [
    "nc_matmul",
    "nc_transpose",
    "activation",
    "tensor_tensor",
    "tensor_scalar",
    "tensor_reduce",
    "tensor_copy",
    "dma_copy",
    "memset",
]
