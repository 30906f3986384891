"""Image metrics on uint8 (B, H, W, 3) frames: per-frame PSNR (optionally on a mask) and SSIM."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR (dB) of the pooled squared error over all frames (or over mask (B, H, W) pixels)."""
    err = (pred.float() - target.float()) ** 2
    if mask is not None:
        if not mask.any():
            return float("nan")
        err = err[mask]
    return float(10 * torch.log10(255.0**2 / err.mean().clamp_min(1e-10)))


def psnr_per_frame(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) PSNR in dB; with mask (B, H, W) only masked pixels count (NaN where none)."""
    err = ((pred.float() - target.float()) ** 2).mean(-1)  # (B, H, W)
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = mask.float()
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1)  # NaN where the mask is empty
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def ssim_per_frame(
    pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """(B,) structural similarity (Wang et al. 2004: Gaussian window, K1=0.01, K2=0.03)."""
    x = pred.float().permute(0, 3, 1, 2)
    y = target.float().permute(0, 3, 1, 2)
    g = torch.exp(-((torch.arange(window) - window // 2) ** 2) / (2 * sigma**2))
    g = (g / g.sum()).to(x)
    kernel = (g[:, None] * g[None, :]).expand(3, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=3)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def side_by_side(real: np.ndarray | None, dream: np.ndarray, scale: int) -> np.ndarray:
    """Frames as MuJoCo | dream | absolute difference (or the dream alone), upscaled."""
    tiles = (
        [dream]
        if real is None
        else [real, dream, np.abs(real.astype(np.int16) - dream.astype(np.int16)).astype(np.uint8)]
    )
    img = np.concatenate(tiles, axis=1)
    return np.repeat(np.repeat(img, scale, 0), scale, 1)
