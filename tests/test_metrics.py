"""PSNR / SSIM checked against hand-computed cases."""

from __future__ import annotations

import math

import torch

from worldsim.eval.metrics import psnr_per_frame, ssim_per_frame


def test_psnr_matches_hand_computation():
    a = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, :] = 16  # one pixel of 16 pixels off by 16 in every channel: MSE = 16
    assert math.isclose(psnr_per_frame(b, a).item(), 10 * math.log10(255**2 / 16), rel_tol=1e-5)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True  # two pixels, one of them off: MSE = 128
    assert math.isclose(
        psnr_per_frame(b, a, mask).item(), 10 * math.log10(255**2 / 128), rel_tol=1e-5
    )
    assert torch.isnan(psnr_per_frame(b, a, torch.zeros_like(mask))).all()


def test_ssim_is_one_for_identical_and_drops_with_noise():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (2, 32, 32, 3), generator=g, dtype=torch.uint8)
    assert torch.allclose(ssim_per_frame(a, a), torch.ones(2), atol=1e-5)
    noisy = (a.float() + 40 * torch.randn(a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    s = ssim_per_frame(noisy, a)
    assert (s < 0.9).all() and (s > -1).all()
