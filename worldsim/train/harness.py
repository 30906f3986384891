"""What every training loop shares: device/dtype policy, torchrun DDP, resumable
atomic checkpoints, a step-seeded sampler (identical data order after resume),
LR schedule and a CSV log.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from worldsim.checkpoint import (
    check_digest,
    load_header,
    load_optimizer,
    load_tensors,
    optimizer_tensors,
    remove_partials,
    save_json,
    save_model,
    save_tensors,
)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX-512 BF16 / AMX); without it
    oneDNN emulates bf16 and runs ~10x slower than fp32 (measured on an AVX2 EPYC)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: str, dtype: str) -> torch.dtype | None:
    """Resolve `train.dtype` (auto | bf16 | fp32) to an autocast dtype, or None for fp32."""
    if dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"dtype must be auto, bf16 or fp32, got {dtype!r}")
    if dtype == "fp32":
        return None
    if dtype == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def autocast(device: str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """torchrun sets WORLD_SIZE/RANK; gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def step_rng(seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The batch RNG of one step: resuming at step k replays exactly the same batches."""
    return np.random.default_rng([seed, step, rank])


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class CSVLog:
    """Append-only CSV with fixed columns. A run that finds a log first drops the rows logged
    after its checkpoint (the steps it is about to run again; all of them when a kill came
    before the first checkpoint, so `resumed_at` is 0), then keeps appending."""

    def __init__(self, path: Path, fields: list[str], resumed_at: int = 0) -> None:
        self.path, self.fields = path, fields
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(fields)
        else:
            trim_csv_log(path, "step", resumed_at)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)


def trim_csv_log(path: Path, column: str, done: float) -> None:
    """Drop the rows of a CSV log that a run resumed at `done` will log again (`column` past
    `done`, or not a number), and a last row a crash cut short; rewritten atomically."""
    lines = path.read_text().splitlines(keepends=True)
    torn = bool(lines) and not lines[-1].endswith("\n")
    rows = list(csv.reader(lines[:-1] if torn else lines))
    if not rows or column not in rows[0]:
        return
    col = rows[0].index(column)
    keep = [rows[0], *(r for r in rows[1:] if r and _value_of(r, col) <= done)]
    if torn or len(keep) < len(rows):
        tmp = path.with_name(f".{path.name}.partial")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, path)


def _value_of(row: list[str], col: int) -> float:
    try:
        return float(row[col])
    except (ValueError, IndexError):
        return math.inf


class Checkpointer:
    """`<run>/<kind>.safetensors` (weights, loadable alone) + `<run>/train_state.safetensors`."""

    def __init__(self, run_dir: Path, kind: str) -> None:
        self.run_dir = run_dir
        self.kind = kind
        self.model_path = run_dir / f"{kind}.safetensors"
        self.state_path = run_dir / "train_state.safetensors"

    def exists(self) -> bool:
        return self.state_path.exists()

    def save(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        step: int,
        config: dict[str, Any],
        extra: dict[str, Any],
        loop_state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        # One file holds everything resume needs (weights + optimizer + step + the loop's
        # own state), so a crash between the two writes can never pair weights with
        # another step.
        # The model file goes first: a crash between the two writes leaves the previous
        # train state (resume repeats a few steps), never a train state without its model.
        tensors, info = optimizer_tensors(opt)
        tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
        tensors.update({f"loop.{k}": v.contiguous() for k, v in (loop_state or {}).items()})
        save_model(self.model_path, model, self.kind, config, {"step": step, **extra})
        meta = {"step": step, "optimizer": info, "config": config}
        save_tensors(self.state_path, tensors, meta)

    def load(
        self, model: torch.nn.Module, opt: torch.optim.Optimizer
    ) -> tuple[int, dict[str, torch.Tensor]]:
        """(step, the loop's own state) of the last checkpoint; weights and optimizer loaded."""
        tensors, meta = load_tensors(self.state_path)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer(opt, tensors, meta["optimizer"])
        return int(meta["step"]), {k[5:]: v for k, v in tensors.items() if k.startswith("loop.")}


class Throughput:
    def __init__(self) -> None:
        self.t0, self.n = time.perf_counter(), 0

    def add(self, n: int) -> float:
        self.n += n
        return self.n / max(time.perf_counter() - self.t0, 1e-9)


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    save_json(run_dir / "run.json", info)


@dataclass
class Trainer:
    """A model to fit and the two callbacks that make one training loop differ from another.

    batch_loss(net, rng, gen, rank_slice) -> (loss, metrics) draws its batch from the step RNG;
    evaluate(model, step) -> metrics runs on rank 0 (and may write sample files);
    loop_state, when given, has state() -> tensors and load_state(tensors): state the
    batches carry from step to step, saved with each checkpoint (rank 0's only).
    """

    kind: str
    model: torch.nn.Module
    config: dict[str, Any]
    batch_loss: Any
    evaluate: Any
    log_fields: list[str]
    loop_state: Any = None
    unused_parameters: bool = False
    """Some parameters get no gradient in a step (DDP must then look for them)."""


def init_weights(model: torch.nn.Module, trainer: Trainer, path: str | Path) -> None:
    """Start from a trained model of the same config, or of one this run's config extends
    by new keys (new parts, e.g. a reasoner's judgment tokens): those parts start fresh,
    every other weight is loaded."""
    check_digest(path)
    weights, meta = load_tensors(path)
    old = meta.get("config") or {}
    same = {k: v for k, v in trainer.config.items() if k in old}
    if meta.get("kind") != trainer.kind or old != same:
        raise ValueError(
            f"init_from={path} holds a {meta.get('kind')} with config {old}, this run builds "
            f"a {trainer.kind} with {trainer.config}"
        )
    missing, unexpected = model.load_state_dict(weights, strict=old == trainer.config)
    if unexpected:
        raise ValueError(f"init_from={path} holds weights this model lacks: {unexpected}")
    if missing:
        new = sorted(set(trainer.config) - set(old))
        print(f"init_from={path}: {', '.join(missing)} start fresh (new in config: {new})")


def fit(
    trainer: Trainer, tc, run_dir: Path, run_info: dict[str, Any], progress: bool = True
) -> dict[str, Any]:
    """Resumable loop: step-seeded batches, LR schedule, autocast, DDP, CSV log, checkpoints."""
    device = str(tc.device)
    dd = init_distributed(device)
    if dd.world > 1 and device.startswith("cuda"):
        device = f"cuda:{dd.rank}"
    amp = autocast_dtype(device, tc.dtype)
    model = trainer.model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(run_dir, trainer.kind)
    step = 0
    remove_partials(run_dir)
    if ckpt.exists():
        meta = load_header(ckpt.state_path)
        if "config" not in meta:  # written before train states recorded their config
            meta = load_header(ckpt.model_path)
        if meta["config"] != trainer.config:
            raise ValueError(
                f"{run_dir} holds a {trainer.kind} with config {meta['config']}, this run asks "
                f"for {trainer.config}; choose another run_dir="
            )
        step, loop_state = ckpt.load(model, opt)
        if trainer.loop_state is not None and loop_state:
            trainer.loop_state.load_state(loop_state)
    elif tc.get("init_from"):
        init_weights(model, trainer, tc.init_from)
    net = model
    if dd.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=trainer.unused_parameters
        )
    if dd.main:
        write_run_info(run_dir, {**run_info, "autocast": str(amp), "world_size": dd.world})
    fields = ["step", "loss", "lr", "samples_per_s", *trainer.log_fields]
    log = CSVLog(run_dir / "log.csv", fields, resumed_at=step) if dd.main else None
    per_rank = tc.batch_size // dd.world
    rank_slice = slice(dd.rank * per_rank, (dd.rank + 1) * per_rank)
    speed = Throughput()
    bar = tqdm(
        total=tc.steps,
        initial=step,
        disable=not (progress and dd.main),
        unit="step",
        desc=trainer.kind,
    )
    last: dict[str, Any] = {}
    while step < tc.steps:
        rng = step_rng(tc.seed, step)
        gen = torch.Generator(device).manual_seed(int(rng.integers(2**62)) + dd.rank)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc.lr, tc.warmup, tc.steps)
        with autocast(device, amp):
            loss, metrics = trainer.batch_loss(net, rng, gen, rank_slice, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        step += 1
        sps = speed.add(tc.batch_size)
        if not dd.main:
            continue
        bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{sps:.0f}")
        bar.update()
        if step % tc.log_every == 0 or step == tc.steps:
            log.write(
                {
                    "step": step,
                    "loss": loss.item(),
                    "lr": opt.param_groups[0]["lr"],
                    "samples_per_s": sps,
                    **metrics,
                }
            )
        if step % tc.eval_every == 0 or step == tc.steps:
            model.eval()
            last = trainer.evaluate(model, step)
            model.train()
            log.write({"step": step, **last})
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()))
        if step % tc.ckpt_every == 0 or step == tc.steps:
            loop_state = trainer.loop_state.state() if trainer.loop_state is not None else None
            ckpt.save(model, opt, step, trainer.config, {"eval": last}, loop_state)
    bar.close()
    return {"step": step, **last}
