"""The engine's frames with the dynamics ops routed through the emulated NKI kernels
(`NKI_SIMULATOR=1`) equal its frames on the torch references, on a short rollout of a
tiny random model (emulation is slow; the shipped model is not needed for the point)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim import kernels
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.model.dynamics import Dynamics, DynamicsConfig
from worldsim.model.tokenizer import Tokenizer, TokenizerConfig


def _models():
    torch.manual_seed(0)
    tok = Tokenizer(
        TokenizerConfig(image_size=16, patch=4, width=32, layers=1, heads=2, latent_dim=4)
    )
    dyn = Dynamics(
        DynamicsConfig(latent_dim=4, grid=4, group=2, width=32, layers=2, heads=2, window=2)
    )
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: wake them up
        for blk in dyn.blocks:
            torch.nn.init.normal_(blk.ada.weight, std=0.2)
        for lin in (dyn.ada_out, dyn.token_out):
            torch.nn.init.normal_(lin.weight, std=0.2)
    return tok, dyn


def _rollout(monkeypatch, simulate: bool):
    if simulate:
        monkeypatch.setenv("NKI_SIMULATOR", "1")
    else:
        monkeypatch.delenv("NKI_SIMULATOR", raising=False)
    kernels.reset_counts()
    tok, dyn = _models()
    eng = FrameEngine(tok, dyn, 2, EngineConfig(steps=2, seed=3))
    rng = np.random.default_rng(0)
    eng.reset(
        rng.integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8),
        np.zeros((2, 1, 2), np.float32),
        states=rng.uniform(-0.2, 0.2, (2, 2, eng.layout.dim)),
    )
    frames, latents = [], []
    for _ in range(3):
        out = eng.step(rng.uniform(-1, 1, (2, 2)).astype(np.float32))
        frames.append(out.frames.numpy())
        latents.append(out.latents.numpy())
    return np.stack(frames), np.stack(latents), dict(kernels.counts)


def test_emulated_kernels_give_the_same_frames(monkeypatch):
    ref_frames, ref_lat, ref_counts = _rollout(monkeypatch, simulate=False)
    frames, lat, counts = _rollout(monkeypatch, simulate=True)
    assert not any(k.endswith(".kernel") for k in ref_counts)
    # 2 layers x 3 frames x 2 passes (+ the context write): every op took the kernel
    assert counts["frame_attention.kernel"] >= 12 and counts["gelu_mlp.kernel"] >= 12
    assert not any(k.endswith(".reference") for k in counts)
    assert np.abs(lat - ref_lat).max() < 1e-4
    assert np.abs(frames.astype(int) - ref_frames.astype(int)).max() <= 1
    assert np.abs(np.diff(ref_lat, axis=0)).max() > 1e-2  # the dream moves: not a no-op test


def test_neuron_device_without_the_sdk_says_how_to_install():
    pytest.importorskip("torch")
    try:
        import torch_neuronx  # noqa: F401

        pytest.skip("torch-neuronx is installed here")
    except ImportError:
        pass
    tok, dyn = _models()
    with pytest.raises(RuntimeError, match="pip.repos.neuron.amazonaws.com"):
        FrameEngine(tok, dyn, 1, device="neuron")
