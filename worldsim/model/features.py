"""How the models take in the scene's state: angles as (cos, sin), so that -pi and pi are
one place, and features with sines at octave frequencies, which give an MLP or a
transformer the positional precision a raw coordinate lacks."""

from __future__ import annotations

import math

import torch


def angle_features(values: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """(..., dim) -> (..., dim + angles): each column (an angle's cosine), then the
    angles' sines; `angle` (dim,) bool marks the angle columns."""
    return torch.cat(
        [torch.where(angle, torch.cos(values), values), torch.sin(values[..., angle])], -1
    )


def fourier_features(x: torch.Tensor, bands: int, base: float = math.pi) -> torch.Tensor:
    """(..., F) -> (..., F * (1 + 2 * bands)): x with sines and cosines of base 2^k x."""
    freqs = base * 2.0 ** torch.arange(bands, device=x.device, dtype=x.dtype)
    ang = (x[..., None] * freqs).flatten(-2)
    return torch.cat([x, torch.sin(ang), torch.cos(ang)], -1)
