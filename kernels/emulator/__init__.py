"""A small NumPy emulator of the NKI subset the kernels in `worldsim.kernels` use.

It executes the kernels' own source on a CPU: `nki.jit` here wraps the kernel so that it
takes NumPy arrays or torch tensors, places them in HBM, runs the kernel body (whose
`nl.*`/`nisa.*` calls land in `language` and `isa`), and returns the output as the type it
was given. The hardware rules (partitions, matmul tile sizes, PSUM banks, SBUF capacity,
dtypes) raise `HardwareRuleError`. It is a functional model, not a timing one.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np

from . import isa, language
from .memory import DTYPES, HBM, Chip, HardwareRuleError, Tensor, set_chip

__all__ = ["nki", "language", "isa", "HardwareRuleError", "Chip", "run_on"]


def _to_hbm(x):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        name = str(x.dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise HardwareRuleError(f"unsupported input dtype {x.dtype}")
        return Tensor(x.detach().float().cpu().numpy().copy(), DTYPES[name], HBM), "torch"
    if isinstance(x, np.ndarray):
        name = str(x.dtype)
        if name not in DTYPES:
            raise HardwareRuleError(f"unsupported input dtype {x.dtype}")
        return Tensor(x.astype(np.float32), DTYPES[name], HBM), "numpy"
    return x, None


def _from_hbm(t: Tensor, kind: str | None):
    if not isinstance(t, Tensor):
        return t
    if t.buffer is not HBM:
        raise HardwareRuleError("a kernel's outputs must be HBM tensors")
    if kind == "torch":
        import torch

        return torch.from_numpy(t.data.copy()).to(getattr(torch, t.dtype.name))
    return t.data.copy() if t.dtype.name != "float16" else t.data.astype(np.float16)


_target = {"name": "trn2"}


def run_on(target: str) -> None:
    """Choose the chip whose capacities the next kernel runs are checked against."""
    Chip(target)  # validates the name
    _target["name"] = target


def jit(kernel=None, **_):
    """Decorator: calling the kernel runs it on a fresh emulated NeuronCore."""
    if kernel is None:
        return functools.partial(jit)

    @functools.wraps(kernel)
    def run(*args, **kwargs):
        converted = [_to_hbm(a) for a in args]
        kind = next((k for _, k in converted if k is not None), "numpy")
        chip = Chip(_target["name"])
        set_chip(chip)
        try:
            out = kernel(*(t for t, _ in converted), **kwargs)
        finally:
            set_chip(None)
        run.last_chip = chip
        if isinstance(out, tuple):
            return tuple(_from_hbm(o, kind) for o in out)
        return _from_hbm(out, kind)

    run.kernel = kernel
    return run


def simulate(kernel):
    """Same call shape as the SDK's `nki.simulate(kernel)(*arrays)`."""
    return kernel if hasattr(kernel, "kernel") else jit(kernel)


nki = SimpleNamespace(jit=jit, simulate=simulate, language=language, isa=isa, emulated=True)
