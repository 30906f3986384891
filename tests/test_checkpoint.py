"""Half-precision shipping copies: smaller files that load into the same float32 models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldsim.checkpoint import CheckpointError, file_sha256, load_model, load_tensors, save_half
from worldsim.cli import compose_config
from worldsim.dream import checkpoint_dir
from worldsim.eval.metrics import psnr
from worldsim.model.tokenizer import build_tokenizer
from worldsim.mujoco_sim import MujocoSim


def test_a_halved_shipped_tokenizer_loads_as_float32_and_draws_the_same_frames(tmp_path):
    task = compose_config("train_tokenizer", ["task=reacher"]).task
    src = checkpoint_dir("reacher", None) / "tokenizer.safetensors"
    dst = tmp_path / "tokenizer.safetensors"
    sizes = save_half(src, dst)
    assert sizes["bytes_after"] < 0.55 * sizes["bytes_before"]
    tensors, meta = load_tensors(dst)
    assert {t.dtype for t in tensors.values() if t.dim() >= 2} == {torch.float16}
    assert {t.dtype for t in tensors.values() if t.dim() < 2} <= {torch.float32, torch.int64}
    assert json.loads(dst.with_suffix(".json").read_text())["file_sha256"] == file_sha256(dst)

    full, _ = load_model(src, "tokenizer", build_tokenizer, expect={"task": "reacher"})
    half, _ = load_model(dst, "tokenizer", build_tokenizer, expect={"task": "reacher"})
    assert all(p.dtype == torch.float32 for p in half.parameters())
    sim = MujocoSim(task)
    frames = [sim.reset(seed=s).frame for s in range(4)]
    x = torch.from_numpy(np.stack(frames))
    with torch.no_grad():
        a = full.decode_uint8(full.encode(x))
        b = half.decode_uint8(half.encode(x))
    assert psnr(a, b) > 55.0, psnr(a, b)  # measured 68 dB; the frames vs MuJoCo: 39 dB

    dst.write_bytes(dst.read_bytes()[:-8] + b"\x00" * 8)  # the digest still guards it
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(dst, "tokenizer", build_tokenizer)
