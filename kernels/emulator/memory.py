"""Tensors that know their buffer (HBM, SBUF, PSUM), and the on-chip capacity rules.

Values are held as float32 NumPy arrays; a bfloat16 tensor rounds every write to
bfloat16 (round to nearest even), so the precision a kernel would see on chip is the
precision it sees here. On-chip memory starts as NaN: a kernel that reads what it never
wrote gets NaN in its output, not a silently right answer.

Capacities follow the NKI memory-hierarchy and architecture pages
(https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/about/nki-memory-hierarchy.html):
128 partitions; SBUF 24 MiB usable on Trn2, 32 MiB on Trn3, split evenly over partitions;
PSUM 2 KiB per partition per bank, 8 banks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARTITIONS = 128
PSUM_BANK_BYTES = 2 * 1024
PSUM_BANKS = 8
SBUF_BYTES = {"trn2": 24 * 1024**2, "trn3": 32 * 1024**2}


class HardwareRuleError(ValueError):
    """A kernel broke a rule the hardware (or the NKI compiler) enforces."""


@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int

    def round(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        if self.name != "bfloat16":
            return a
        u = np.ascontiguousarray(a).view(np.uint32)
        u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
        return u.view(np.float32).reshape(a.shape)

    def __repr__(self) -> str:
        return self.name


bfloat16 = DType("bfloat16", 2)
float16 = DType("float16", 2)
float32 = DType("float32", 4)
DTYPES = {"bfloat16": bfloat16, "float16": float16, "float32": float32}


class Buffer:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


HBM, SBUF, PSUM = Buffer("hbm"), Buffer("sbuf"), Buffer("psum")


class Chip:
    """Per-partition bytes in use on SBUF and PSUM for the kernel being run."""

    def __init__(self, target: str = "trn2") -> None:
        if target not in SBUF_BYTES:
            raise ValueError(f"unknown target {target!r}; one of {sorted(SBUF_BYTES)}")
        self.target = target
        self.sbuf_per_partition = SBUF_BYTES[target] // PARTITIONS
        self.sbuf_used = 0
        self.psum_banks_used = 0
        self.sbuf_peak = 0

    def allocate(self, buffer: Buffer, bytes_per_partition: int) -> int:
        """Reserve space; returns the PSUM banks taken (0 for SBUF)."""
        if buffer is SBUF:
            if self.sbuf_used + bytes_per_partition > self.sbuf_per_partition:
                raise HardwareRuleError(
                    f"SBUF overflow on {self.target}: {self.sbuf_used} + {bytes_per_partition} "
                    f"bytes per partition > {self.sbuf_per_partition}"
                )
            self.sbuf_used += bytes_per_partition
            self.sbuf_peak = max(self.sbuf_peak, self.sbuf_used)
            return 0
        if bytes_per_partition > PSUM_BANK_BYTES:
            raise HardwareRuleError(
                f"PSUM tile of {bytes_per_partition} bytes per partition exceeds one bank "
                f"({PSUM_BANK_BYTES} bytes = 512 float32)"
            )
        if self.psum_banks_used + 1 > PSUM_BANKS:
            raise HardwareRuleError(f"PSUM has {PSUM_BANKS} banks; all are in use")
        self.psum_banks_used += 1
        return 1

    def release(self, buffer: Buffer, bytes_per_partition: int) -> None:
        if buffer is SBUF:
            self.sbuf_used -= bytes_per_partition
        elif buffer is PSUM:
            self.psum_banks_used -= 1


_chip: Chip | None = None


def current_chip() -> Chip:
    global _chip
    if _chip is None:
        _chip = Chip()
    return _chip


def set_chip(chip: Chip | None) -> None:
    global _chip
    _chip = chip


class Tensor:
    """A tensor in one buffer. On-chip tensors are tiles: axis 0 is the partition axis.

    Indexing gives a view (same buffer and dtype) for slicing tiles out of HBM tensors or
    sub-tiles out of on-chip ones. On-chip space is returned to the chip when the tensor
    object is garbage collected (as a compiler's allocator would reuse a dead tile).
    """

    def __init__(self, data: np.ndarray, dtype: DType, buffer: Buffer, _owner=None) -> None:
        self.data, self.dtype, self.buffer = data, dtype, buffer
        self._owner = _owner  # views keep their base alive
        self._held = None

    @classmethod
    def allocate(cls, shape, dtype: DType, buffer: Buffer) -> Tensor:
        shape = tuple(int(s) for s in shape)
        if not isinstance(dtype, DType):
            raise HardwareRuleError(f"dtype must be an nki.language dtype, got {dtype!r}")
        t = cls(np.full(shape, np.nan, dtype=np.float32), dtype, buffer)
        if buffer is not HBM:
            if len(shape) < 2:
                raise HardwareRuleError(f"on-chip tiles need >= 2 dimensions, got {shape}")
            if shape[0] > PARTITIONS:
                raise HardwareRuleError(
                    f"partition dimension {shape[0]} exceeds {PARTITIONS} ({buffer} tile {shape})"
                )
            per_partition = int(np.prod(shape[1:])) * dtype.itemsize
            chip = current_chip()
            chip.allocate(buffer, per_partition)
            t._held = (chip, per_partition)
        return t

    def __del__(self) -> None:
        if getattr(self, "_held", None) is not None:
            chip, nbytes = self._held
            chip.release(self.buffer, nbytes)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __getitem__(self, idx) -> Tensor:
        view = self.data[idx]
        if view.ndim == 0:
            view = self.data[_keepdims(idx)]
        return Tensor(view, self.dtype, self.buffer, _owner=self)

    def write(self, values: np.ndarray) -> None:
        self.data[...] = self.dtype.round(np.broadcast_to(values, self.data.shape))

    def __repr__(self) -> str:
        return f"Tensor({self.buffer}, {self.dtype}, {self.shape})"


def _keepdims(idx):
    idx = idx if isinstance(idx, tuple) else (idx,)
    return tuple(slice(i, i + 1) if isinstance(i, int) else i for i in idx)
