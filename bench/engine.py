"""FrameEngine speed: B=1 latency p50/p99 and batched frames/s, against MuJoCo and a matmul peak.

All in one process and run (the machine is shared): MuJoCo Reacher-v5 step + 64x64
render frames/s (on the CPU), a large matmul's GFLOP/s as the peak (fp32 on the CPU,
bf16 on a GPU), and the engine's achieved GFLOP/s from FLOPs counted on one step; per
batch size, the eager engine against the serving variant in alternating blocks: on the
CPU engine.compile=true, with --device cuda engine.graph=true in bf16 with batched noise
(configs/engine/cuda.yaml). Then the cost of a frame after --long-frames frames against
a young world's (the ring cache keeps it flat). Weights are random unless --checkpoint
is given (speed does not depend on their values).

    python bench/engine.py                                  # the CPU figures
    python bench/engine.py --device cuda --batches 1,64,512,2048,4096 \
        --reasoner-frames 0 --out-json bench/results/engine_cuda.json
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from report import machine, write_report  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from worldsim.configs.schema import ReasonerModelConfig  # noqa: E402
from worldsim.engine import EngineConfig, FrameEngine  # noqa: E402
from worldsim.model.dynamics import Dynamics, DynamicsConfig  # noqa: E402
from worldsim.model.reasoner import Reasoner, ReasonerConfig  # noqa: E402
from worldsim.model.tokenizer import Tokenizer, TokenizerConfig  # noqa: E402
from worldsim.timing import alternating_times, relative_cost  # noqa: E402


def matmul_peak(device: str = "cpu", reps: int = 10) -> float:
    n, dtype = (1024, torch.float32) if device == "cpu" else (8192, torch.bfloat16)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


SERVING = {  # the engine settings timed against the eager fp32 one
    "compile": {"compile": True},
    "bf16": {"dtype": "bfloat16"},  # CPUs with AVX512-BF16 or AMX (lscpu)
    "cuda": {"graph": True, "dtype": "bfloat16", "noise": "batched"},  # configs/engine/cuda
}


def mujoco_fps(frames: int = 300) -> float:
    import gymnasium as gym

    env = gym.make("Reacher-v5", render_mode="rgb_array", width=64, height=64)
    env.reset(seed=0)
    t = time.perf_counter()
    for _ in range(frames):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        env.render()
        if term or trunc:
            env.reset()
    return frames / (time.perf_counter() - t)


def make_reasoner(checkpoint: str | None) -> Reasoner:
    """The checkpoint's reasoner, else one of the size `worldsim train reasoner` builds."""
    if checkpoint and (Path(checkpoint) / "reasoner.safetensors").exists():
        from worldsim.checkpoint import load_model
        from worldsim.model.reasoner import build_reasoner

        return load_model(Path(checkpoint) / "reasoner.safetensors", "reasoner", build_reasoner)[0]
    return Reasoner(ReasonerConfig(**asdict(ReasonerModelConfig())))


def make_engine(
    batch: int,
    steps: int,
    checkpoint: str | None,
    reasoner: Reasoner | None = None,
    device: str = "cpu",
    **engine,
) -> FrameEngine:
    if checkpoint:
        from omegaconf import OmegaConf

        from worldsim.dream import load_world_model

        tok, dyn = load_world_model(OmegaConf.create({"name": "reacher"}), Path(checkpoint))
    else:
        tok, dyn = Tokenizer(TokenizerConfig()), Dynamics(DynamicsConfig())
    return FrameEngine(
        tok, dyn, batch, EngineConfig(steps=steps, **engine), device, reasoner=reasoner
    )


def step_times(eng: FrameEngine, frames: int, decode: bool) -> np.ndarray:
    act = np.zeros((eng.batch, 2), np.float32)  # every step ends in a host copy: timed whole
    for _ in range(5):
        eng.step(act, decode=decode)
    times = []
    for _ in range(frames):
        t = time.perf_counter()
        eng.step(act, decode=decode)
        times.append(time.perf_counter() - t)
    return np.array(times)


@torch.no_grad()
def time_engine(
    batch: int,
    steps: int,
    frames: int,
    checkpoint: str | None,
    device: str = "cpu",
    serving: str = "compile",
) -> dict:
    """Timings with pixels decoded (pixels observations) and without (latent/state), and
    the serving variant (SERVING) against it, in alternating blocks."""
    eng = make_engine(batch, steps, checkpoint, device=device)
    ctx, acts = np.zeros((batch, 4, 64, 64, 3), np.uint8), np.zeros((batch, 3, 2), np.float32)
    sts = np.zeros((batch, 4, eng.layout.dim), np.float32)
    eng.reset(ctx, acts, states=sts)
    with FlopCounterMode(display=False) as fc:
        eng.step(np.zeros((batch, 2), np.float32))
    flops = fc.get_total_flops() / batch
    times = step_times(eng, frames, decode=True)
    latent_times = step_times(eng, frames, decode=False)
    fast = make_engine(batch, steps, checkpoint, device=device, **SERVING[serving])
    t = time.perf_counter()
    fast.reset(ctx, acts, states=sts)
    step_times(fast, 0, decode=True)  # its warm-up steps compile or capture it
    compile_s = time.perf_counter() - t
    act = np.zeros((batch, 2), np.float32)
    block = 10 if batch <= 8 else 2
    ta, tb = alternating_times(
        lambda: eng.step(act), lambda: fast.step(act), max(3, frames // block), block
    )
    cost = relative_cost(ta, tb)
    return {
        "batch": batch,
        "gflop_per_frame": flops / 1e9,
        "ms_per_step_p50": float(np.median(times) * 1000),
        "ms_per_step_p99": float(np.percentile(times, 99) * 1000),
        "frames_per_s": float(batch / np.median(times)),
        "achieved_gflop_s": float(flops * batch / np.median(times) / 1e9),
        "latents_only_ms_per_step_p50": float(np.median(latent_times) * 1000),
        "latents_only_frames_per_s": float(batch / np.median(latent_times)),
        "serving": {
            "engine": SERVING[serving],
            "compile_s": compile_s,
            "steps_each": cost["calls_each"],
            "ms_per_step_p50_eager": cost["ms_p50_a"],
            "ms_per_step_p50": cost["ms_p50_b"],
            "frames_per_s": float(batch / np.median(tb)),
            "time_vs_eager": cost["b_over_a"],
            "time_vs_eager_median_of_blocks": cost["b_over_a_median_of_blocks"],
        },
    }


@torch.no_grad()
def long_world_cost(
    batch: int, steps: int, frames: int, long_frames: int, checkpoint, device: str, engine: dict
) -> dict:
    """p50 step time of a world `long_frames` frames old against a freshly reset one of
    the same engine settings, in alternating blocks (the ring cache: constant cost)."""
    young, old = (make_engine(batch, steps, checkpoint, device=device, **engine) for _ in range(2))
    ctx, acts = np.zeros((batch, 4, 64, 64, 3), np.uint8), np.zeros((batch, 3, 2), np.float32)
    sts = np.zeros((batch, 4, young.layout.dim), np.float32)
    act = np.zeros((batch, 2), np.float32)
    for eng in (young, old):
        eng.reset(ctx, acts, states=sts)
    for _ in range(long_frames):
        old.step(act, decode=False)
    young.reset(ctx, acts, states=sts)
    ta, tb = alternating_times(
        lambda: young.step(act), lambda: old.step(act), max(3, frames // 10), 10
    )
    cost = relative_cost(ta, tb)
    return {
        "batch": batch,
        "engine": engine,
        "old_world_frames": long_frames,
        "ms_p50_young": cost["ms_p50_a"],
        "ms_p50_old": cost["ms_p50_b"],
        "old_vs_young": cost["b_over_a"],  # relative change of the p50
    }


@torch.no_grad()
def reasoner_cost(frames: int, steps: int, checkpoint: str | None, block: int = 10) -> dict:
    """B=1 p50 step time without and with the reasoner reading every frame, on the engine's
    worker thread and in a child process (engine.reasoner_process), each against the plain
    engine in alternating blocks of `block` frames."""
    reasoner = make_reasoner(checkpoint)
    plain = make_engine(1, steps, checkpoint)
    ctx, acts = np.zeros((1, 4, 64, 64, 3), np.uint8), np.zeros((1, 3, 2), np.float32)
    sts = np.zeros((1, 4, plain.layout.dim), np.float32)
    act = np.zeros((1, 2), np.float32)
    out = {
        "reasoner": reasoner.config_dict(),
        "reasoner_gflop_per_frame": reasoner_flops(reasoner) / 1e9,
    }
    plain.reset(ctx, acts, states=sts)
    for where, process in (("thread", False), ("process", True)):
        with_r = make_engine(1, steps, checkpoint, reasoner, reasoner_process=process)
        with_r.reset(ctx, acts, states=sts)
        step_times(with_r, 5, decode=True)
        blocks = max(3, frames // block)
        ta, tb = alternating_times(
            lambda: plain.step(act), lambda e=with_r: e.step(act), blocks, block
        )
        with_r.close()
        cost = relative_cost(ta, tb)
        out[where] = {
            "frames_each": cost["calls_each"],
            "ms_p50_without": cost["ms_p50_a"],
            "ms_p50_with_reasoner": cost["ms_p50_b"],
            "overhead": cost["b_over_a"],
            "overhead_median_of_blocks": cost["b_over_a_median_of_blocks"],
        }
    return out


@torch.no_grad()
def reasoner_flops(reasoner: Reasoner) -> float:
    """FLOPs of one frame's read (B=1, with a previous estimate)."""
    c = reasoner.cfg
    z, prev = torch.zeros(1, c.grid**2, c.latent_dim), torch.zeros(1, c.feature_dim)
    with FlopCounterMode(display=False) as fc:
        reasoner.read(z, prev)
    return fc.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", default="1,8,32,128", help="comma-separated world counts")
    p.add_argument("--steps", type=int, default=1, help="Euler steps per frame (engine=fast)")
    p.add_argument("--frames", type=int, default=50, help="timed steps per batch size")
    p.add_argument(
        "--reasoner-frames",
        type=int,
        default=1000,
        help="timed B=1 steps of each engine (with and without the reasoner, alternating)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="folder with tokenizer + dynamics weights (default: random weights, same sizes)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument(
        "--serving",
        choices=sorted(SERVING),
        default=None,
        help="engine settings timed against the eager fp32 engine (default: compile on the "
        "CPU, cuda on a GPU)",
    )
    p.add_argument(
        "--long-frames",
        type=int,
        default=10000,
        help="age of the old world whose step cost is compared with a young one's (0: skip)",
    )
    p.add_argument("--out-json", default="bench/results/engine.json", help="JSON report path")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch finds no CUDA GPU here")
    serving = args.serving or ("cuda" if args.device.startswith("cuda") else "compile")
    peak = matmul_peak(args.device)
    mj = mujoco_fps()
    report = {
        "bench": "engine",
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "machine": machine(),
        "matmul_peak_gflop_s": peak,
        "mujoco_step_render_fps": mj,
        "engine_steps": args.steps,
        "rows": [],
        "long_world": [],
        "reasoner_b1": None,
    }
    # the report is rewritten after every measurement: a run cut short (a device call's
    # time limit) keeps what it measured
    for b in args.batches.split(","):
        report["rows"].append(
            time_engine(int(b), args.steps, args.frames, args.checkpoint, args.device, serving)
        )
        write_report(args.out_json, report)
    # the old-world check covers the eager engine where it is the product (the CPU) and
    # the serving engine everywhere (eager on a GPU: 22 ms a step, 10,000 steps too long)
    engines = [SERVING[serving]] if args.device.startswith("cuda") else [{}, SERVING[serving]]
    for engine in engines if args.long_frames else ():
        report["long_world"].append(
            long_world_cost(
                1, args.steps, args.frames, args.long_frames, args.checkpoint, args.device, engine
            )
        )
        write_report(args.out_json, report)
    if args.reasoner_frames:
        report["reasoner_b1"] = reasoner_cost(args.reasoner_frames, args.steps, args.checkpoint)
    rows, long, reasoner = report["rows"], report["long_world"], report["reasoner_b1"]
    print(f"matmul peak {peak:.0f} GFLOP/s; MuJoCo Reacher step+render {mj:.0f} frames/s")
    print(
        "  B  GFLOP/frame  p50 ms  p99 ms  frames/s  x MuJoCo  GFLOP/s  % peak"
        "  | no decode: p50 ms  frames/s  x MuJoCo"
    )
    for r in rows:
        print(
            f"{r['batch']:>3}  {r['gflop_per_frame']:11.3f}  {r['ms_per_step_p50']:6.1f}  "
            f"{r['ms_per_step_p99']:6.1f}  {r['frames_per_s']:8.1f}  "
            f"{r['frames_per_s'] / mj:8.2f}  {r['achieved_gflop_s']:7.1f}  "
            f"{100 * r['achieved_gflop_s'] / peak:5.1f}"
            f"  |            {r['latents_only_ms_per_step_p50']:6.1f}  "
            f"{r['latents_only_frames_per_s']:8.1f}  {r['latents_only_frames_per_s'] / mj:8.2f}"
        )
    print(f"{SERVING[serving]}, in alternating blocks with the eager engine (pixels decoded):")
    for r in rows:
        c = r["serving"]
        print(
            f"{r['batch']:>3}  p50 {c['ms_per_step_p50']:6.1f} ms vs "
            f"{c['ms_per_step_p50_eager']:6.1f} ms eager ({100 * c['time_vs_eager']:+.1f}%), "
            f"{c['frames_per_s']:7.1f} frames/s"
            f" = {c['frames_per_s'] / mj:.2f}x MuJoCo; compiled in {c['compile_s']:.0f} s"
        )
    for r in long:
        print(
            f"B=1 {r['engine'] or 'eager'}: a world {r['old_world_frames']} frames old "
            f"{r['ms_p50_old']:.2f} ms vs young {r['ms_p50_young']:.2f} ms "
            f"({100 * r['old_vs_young']:+.1f}%)"
        )
    for where in ("thread", "process") if reasoner else ():
        r = reasoner[where]
        print(
            f"B=1 with the reasoner ({reasoner['reasoner_gflop_per_frame']:.3f} GFLOP/frame) "
            f"reading every frame on a worker {where}: p50 {r['ms_p50_with_reasoner']:.1f} ms vs "
            f"{r['ms_p50_without']:.1f} ms ({100 * r['overhead']:+.1f}%; median of alternating "
            f"blocks {100 * r['overhead_median_of_blocks']:+.1f}%)"
        )
    write_report(args.out_json, report)


if __name__ == "__main__":
    main()
