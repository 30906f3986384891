"""SBUF plan and roofline: does a model config fit one NeuronCore's SBUF, and how many
frames/s could one core give at peak?

FLOPs count matmuls and attention (2 per multiply-add); norms and activations are left
out (a few per cent at these widths). Bytes are bf16 weights and activations. An engine
step moves the state on by the learned transition (a few small MLPs), then runs S
dynamics passes for S Euler steps: the first over 2 frames (it also writes the pending
frame's keys and values; over the new frame alone for a model with no cache), the
others over 1; then the tokenizer decodes the frame and the reasoner reads it.

Capacities and rates per NeuronCore from the Neuron architecture pages
(https://awsdocs-neuron.readthedocs-hosted.com/en/latest/about-neuron/arch/neuron-hardware/neuron-core-v3.html,
.../neuron-core-v4.html, .../trainium2.html, .../trainium3.html): 79 dense bf16 TFLOPS per
core on both; SBUF 24 MiB usable (of 28) on Trn2, 32 MiB on Trn3; HBM per core is the
chip's bandwidth over its 8 cores (2.9 TB/s and 4.9 TB/s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

MiB = 1024**2
PARTITIONS = 128
TARGETS = {
    "trn2": {"sbuf": 24 * MiB, "tflops": 79.0, "hbm_gbs": 2900 / 8},
    "trn3": {"sbuf": 32 * MiB, "tflops": 79.0, "hbm_gbs": 4900 / 8},
}
BF16, FP32 = 2, 4


@dataclass
class Op:
    name: str
    flops: float
    bytes: float  # HBM traffic when nothing stays on chip (weights streamed every pass)


def _mm(name: str, m: int, k: int, n: int, act_bytes: int = BF16) -> Op:
    """(m, k) @ (k, n) with a bf16 weight streamed from HBM."""
    return Op(name, 2.0 * m * k * n, BF16 * k * n + act_bytes * (m * k + m * n))


def state_features(cfg) -> int:
    """Width of the state's features (angles as cos and sin) for a dynamics config."""
    return sum(len(q["index"]) * (2 if q["unit"] == "rad" else 1) for q in cfg.scene)


def dynamics_pass(cfg, frames: int) -> list[Op]:
    """Ops of one dynamics pass over `frames` new frames against a full cache: per frame
    a state token and the latent tokens."""
    d, n, t = cfg.width, cfg.tokens, frames
    m, c = t * n, cfg.window * n
    ops = [
        _mm("embed", t * cfg.latent_tokens, cfg.token_dim, d),
        _mm("state", t, state_features(cfg) * (1 + 2 * cfg.fourier_bands), d),
        _mm("state", t, d, d),
        _mm("condition", t, 256, d),
        _mm("condition", t, d, d),
        _mm("condition", t, cfg.action_dim + 1, d),
        _mm("condition", t, d, d),
    ]
    for _ in range(cfg.layers):
        ops += [
            _mm("ada", t, d, 6 * d),
            Op("modulated_norm", 0.0, 2 * BF16 * m * d * 2),
            _mm("qkv", m, d, 3 * d),
            Op(
                "frame_attention",
                2.0 * 2 * m * (c + m) * d,  # q k^T and p v over all heads
                BF16 * (2 * c * d + 4 * m * d),  # cache K, V read; q, k, v in; out
            ),
            _mm("proj", m, d, d),
            _mm("gelu_mlp", m, d, 4 * d),
            _mm("gelu_mlp", m, 4 * d, d),
        ]
    ops += [
        _mm("head", t, d, 2 * d),
        Op("modulated_norm", 0.0, 2 * BF16 * m * d * 2),
        _mm("head", t * cfg.latent_tokens, d, cfg.token_dim),
        _mm("head", t, d, 2),
    ]
    return ops


def transition_ops(cfg) -> list[Op]:
    """The learned state transition, once per frame (an upper bound: every state column
    in and out of both MLPs)."""
    f, w, a = state_features(cfg), cfg.state_width, cfg.action_dim
    ops = []
    for name, inp in (("transition", f + a), ("readout", f)):
        ops += [_mm(name, 1, inp, w)]
        ops += [_mm(name, 1, w, w) for _ in range(cfg.state_layers - 1)]
        ops += [_mm(name, 1, w, f)]
    return ops + [_mm("transition", 1, f + a, f)]


def encoder_pass(tokens: int, width: int, layers: int, heads_in: int, heads_out: int) -> list[Op]:
    """A pre-norm transformer (tokenizer decoder, reasoner encoder) over one frame."""
    m, d = tokens, width
    ops = [_mm("embed", m, heads_in, d)]
    for _ in range(layers):
        ops += [
            _mm("qkv", m, d, 3 * d),
            Op("attention", 2.0 * 2 * m * m * d, BF16 * 4 * m * d),
            _mm("proj", m, d, d),
            _mm("mlp", m, d, 4 * d),
            _mm("mlp", m, 4 * d, d),
        ]
    return ops + [_mm("out", m, d, heads_out)]


def frame_ops(cfg, steps: int) -> list[Op]:
    """Dynamics ops per generated frame with `steps` Euler steps."""
    ops = transition_ops(cfg) + dynamics_pass(cfg, 2 if cfg.window else 1)
    for _ in range(steps - 1):
        ops += dynamics_pass(cfg, 1)
    return ops


def by_name(ops: list[Op]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for op in ops:
        row = out.setdefault(op.name, {"flops": 0.0, "bytes": 0.0})
        row["flops"] += op.flops
        row["bytes"] += op.bytes
    return out


# -- on-chip footprint ---------------------------------------------------------------
def weight_bytes_per_partition(model: torch.nn.Module, itemsize: int = BF16) -> int:
    """Bytes per SBUF partition to hold every parameter, laid out as the kernels do:
    a matrix (out, in) as ceil(in / 128) row tiles of `out` elements; vectors as columns."""
    total = 0
    for p in model.parameters():
        if p.dim() == 1:
            total += math.ceil(p.shape[0] / PARTITIONS) * FP32
        else:
            rows = p.shape[-1] if p.dim() == 2 else p.shape[-2]
            cols = p.shape[0] if p.dim() == 2 else p.shape[-1]
            total += math.ceil(rows / PARTITIONS) * cols * itemsize
    return total


def dynamics_footprint(model, batch: int = 1) -> dict[str, int]:
    """Bytes per partition of weights, KV cache and the largest block's activations."""
    cfg = model.cfg
    d, n = cfg.width, cfg.tokens
    m, c, dh = 2 * n, cfg.window * n, cfg.width // cfg.heads
    weights = weight_bytes_per_partition(model)
    # K stored transposed (dh partitions, C free) and V token-major, per head and layer
    kv = cfg.layers * cfg.heads * batch * BF16 * (c + math.ceil(c / PARTITIONS) * dh)
    # x, mods, h (fp32 rows) + q/k/v + MLP hidden (bf16) + one score tile (fp32)
    act = math.ceil(m / PARTITIONS) * (FP32 * (d + 6 * d + d) + BF16 * (3 * d + 4 * d))
    act += FP32 * (c + m)
    return {"weights": weights, "kv_cache": kv, "activations": act}


def fits(per_partition: dict[str, int], target: str) -> bool:
    return sum(per_partition.values()) <= TARGETS[target]["sbuf"] // PARTITIONS


def frames_per_s(flops: float, hbm_bytes: float, resident: bool, target: str) -> float:
    """Roofline: compute bound at peak; bandwidth bound too when weights stream."""
    spec = TARGETS[target]
    fps = spec["tflops"] * 1e12 / flops
    if not resident:
        fps = min(fps, spec["hbm_gbs"] * 1e9 / hbm_bytes)
    return fps


def engine_steps(configs: Path) -> dict[str, int]:
    """Euler steps per frame of each engine config a NeuronCore would run. Serving
    variants for other hardware are left out: CUDA graphs (configs/engine/cuda.yaml) and
    CPU autocast dtypes (configs/engine/bf16.yaml); a NeuronCore sets its own precision."""
    from omegaconf import OmegaConf

    engines = {p.stem: OmegaConf.load(p) for p in sorted(configs.glob("engine/*.yaml"))}
    return {
        name: int(c.steps)
        for name, c in engines.items()
        if "steps" in c and not c.get("graph") and c.get("dtype", "float32") == "float32"
    }


def plan_checkpoint(folder: Path, steps: dict[str, int], batch: int = 1) -> dict:
    """The plan for one shipped checkpoint folder (dynamics + tokenizer + reasoner)."""
    import json

    from worldsim.model.dynamics import build_dynamics
    from worldsim.model.reasoner import build_reasoner
    from worldsim.model.tokenizer import build_tokenizer

    cards = {
        k: json.loads((folder / f"{k}.json").read_text())["config"]
        for k in ("dynamics", "tokenizer", "reasoner")
        if (folder / f"{k}.json").exists()
    }
    dyn = build_dynamics(cards["dynamics"])
    cfg = dyn.cfg
    extra: list[Op] = []
    if "tokenizer" in cards:
        tok = build_tokenizer(cards["tokenizer"]).cfg
        extra += encoder_pass(tok.grid**2, tok.width, tok.layers, tok.latent_dim, 3 * tok.patch**2)
    if "reasoner" in cards:
        rcfg = build_reasoner(cards["reasoner"]).cfg
        extra += encoder_pass(
            (rcfg.grid // rcfg.group) ** 2 + 1,
            rcfg.width,
            rcfg.layers,
            rcfg.latent_dim * rcfg.group**2,
            rcfg.feature_dim,
        )
    foot = dynamics_footprint(dyn, batch)
    out = {
        "checkpoint": folder.name,
        "dynamics": cards["dynamics"],
        "batch": batch,
        "sbuf_bytes_per_partition": foot,
        "sbuf_total_mib": sum(foot.values()) * PARTITIONS / MiB,
        "targets": {},
    }
    for target, spec in TARGETS.items():
        ok = fits(foot, target)
        row = {"capacity_mib": spec["sbuf"] / MiB, "fits": ok, "engines": {}}
        for name, s in steps.items():
            ops = frame_ops(cfg, s)
            flops = sum(o.flops for o in ops)
            hbm = sum(o.bytes for o in ops)
            full = flops + sum(o.flops for o in extra)
            row["engines"][name] = {
                "steps": s,
                "dynamics_gflop_per_frame": flops / 1e9,
                "frame_gflop_with_decode_and_reasoner": full / 1e9,
                "dynamics_frames_per_s": frames_per_s(flops, hbm, ok, target),
                "frames_per_s_with_decode_and_reasoner": frames_per_s(
                    full, hbm + sum(o.bytes for o in extra), ok, target
                ),
                "ops": by_name(ops),
            }
        out["targets"][target] = row
    return out


def shipped_plans(batch: int = 1) -> list[dict]:
    """Plans of every shipped checkpoint under the engine configs' step counts."""
    import worldsim
    import worldsim.configs

    steps = engine_steps(Path(worldsim.configs.__file__).parent)
    root = Path(worldsim.__file__).resolve().parent / "checkpoints"
    folders = sorted(f for f in root.iterdir() if (f / "dynamics.json").exists())
    return [plan_checkpoint(f, steps, batch) for f in folders]


def format_table(rows: list[dict]) -> str:
    lines = [
        "checkpoint  target  SBUF MiB (w + kv + act)     capacity  fits  engine   steps"
        "  GFLOP/frame  dyn frames/s  +decode+reasoner"
    ]
    for r in rows:
        foot = r["sbuf_bytes_per_partition"]
        parts = " + ".join(f"{v * PARTITIONS / MiB:.2f}" for v in foot.values())
        for target, t in r["targets"].items():
            for name, e in t["engines"].items():
                lines.append(
                    f"{r['checkpoint']:<10}  {target:<6}  {r['sbuf_total_mib']:5.2f} ({parts})"
                    f"  {t['capacity_mib']:6.0f}  {'yes' if t['fits'] else 'no':<4}  "
                    f"{name:<7}  {e['steps']:>5}  {e['dynamics_gflop_per_frame']:11.4f}"
                    f"  {e['dynamics_frames_per_s']:12,.0f}"
                    f"  {e['frames_per_s_with_decode_and_reasoner']:16,.0f}"
                )
    return "\n".join(lines)
