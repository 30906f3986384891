"""The `nki.language` subset the kernels use: dtypes, buffers, tensor creation, loop
iterators and the math operators passed to `nki.isa` instructions.

Docs: https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/nki.language.html
"""

from __future__ import annotations

import numpy as np

from .memory import HBM, PSUM, SBUF, Buffer, DType, HardwareRuleError, Tensor, bfloat16
from .memory import float16 as float16
from .memory import float32 as float32

sbuf, psum = SBUF, PSUM
hbm = shared_hbm = private_hbm = HBM
__all__ = ["bfloat16", "float16", "float32", "sbuf", "psum", "hbm", "shared_hbm"]


# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.language.ndarray.html
def ndarray(shape, dtype: DType, buffer: Buffer = SBUF, name: str = "") -> Tensor:
    """Uninitialised tensor (NaN until written)."""
    if not isinstance(buffer, Buffer):
        raise HardwareRuleError(f"buffer must be nl.sbuf, nl.psum or nl.hbm, got {buffer!r}")
    return Tensor.allocate(shape, dtype, buffer)


def zeros(shape, dtype: DType, buffer: Buffer = SBUF, name: str = "") -> Tensor:
    t = ndarray(shape, dtype, buffer, name)
    t.data[...] = 0.0
    return t


# loop iterators: on the CPU they are all plain ranges
# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.language.affine_range.html
def affine_range(*args) -> range:
    return range(*args)


static_range = sequential_range = affine_range


# -- math operators (elementwise, float32 math) --------------------------------------
# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/nki.api.shared.html
class Op:
    def __init__(self, name: str, fn, reduce=None) -> None:
        self.name, self.fn, self.reduce = name, fn, reduce

    def __call__(self, *a):
        return self.fn(*a)

    def __repr__(self) -> str:
        return f"nl.{self.name}"


add = Op("add", np.add, np.sum)
subtract = Op("subtract", np.subtract)
multiply = Op("multiply", np.multiply, np.prod)
divide = Op("divide", np.divide)
maximum = Op("maximum", np.maximum, np.max)
minimum = Op("minimum", np.minimum, np.min)
ARITHMETIC = {add, subtract, multiply, divide, maximum, minimum}


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + 0.044715 * x**3)))


# activation functions (Scalar Engine)
exp = Op("exp", np.exp)
copy = Op("copy", lambda x: x)
rsqrt = Op("rsqrt", lambda x: 1.0 / np.sqrt(x))
gelu_apprx_tanh = Op("gelu_apprx_tanh", _gelu_tanh)
ACTIVATIONS = {exp, copy, rsqrt, gelu_apprx_tanh}
