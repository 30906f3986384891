"""Key-event-to-displayed-frame latency of `worldsim play`, headless.

A thread presses and releases the task's keys at random moments (as a person
would: 50-400 ms apart) while the window runs at its configured fps; each event
carries the time it was posted, and the session records when the first frame
drawn after it reached the display. The baseline, measured in the same run, is
one bare `FrameEngine.step` (B=1, decode included): the ratio says what the
window adds (MuJoCo reset, reasoner, HUD, drawing). Writes JSON.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch
from hydra import compose, initialize_config_module
from report import machine, write_report

from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.play import import_pygame, play


def press_keys(keys: list[str], stop: threading.Event, seed: int) -> None:
    pygame = import_pygame()
    rng = np.random.default_rng(seed)
    while not pygame.display.get_init() and not stop.is_set():
        time.sleep(0.01)
    time.sleep(1.0)  # past the first frames (model warm-up)
    held = None
    while not stop.is_set():
        time.sleep(rng.uniform(0.05, 0.4))
        if not pygame.display.get_init():
            return
        if held is None:
            held = str(rng.choice(keys))
            kind = pygame.KEYDOWN
        else:
            kind = pygame.KEYUP
        code = pygame.key.key_code(held)
        pygame.event.post(pygame.event.Event(kind, key=code, sent=time.perf_counter()))
        held = held if kind == pygame.KEYDOWN else None


def engine_step_ms(cfg, frames: int = 200) -> float:
    tok, dyn = load_world_model(cfg.task, checkpoint_dir(cfg.task.name, cfg.checkpoint))
    engine = FrameEngine(tok, dyn, 1, EngineConfig(**cfg.engine))
    states = torch.zeros(1, cfg.context, engine.layout.dim)
    engine.reset(torch.zeros(1, cfg.context, 64, 64, 3, dtype=torch.uint8), states=states)
    a = torch.zeros(1, dyn.cfg.action_dim)
    times = []
    for _ in range(frames + 10):
        t = time.perf_counter()
        engine.step(a)
        times.append(time.perf_counter() - t)
    return float(np.median(times[10:]) * 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=600, help="frames the session runs")
    p.add_argument("overrides", nargs="*", help="worldsim play overrides (e.g. twin=true)")
    p.add_argument("--out-json", default="bench/results/play.json", help="JSON report path")
    args = p.parse_args()
    with initialize_config_module("worldsim.configs", version_base="1.3"):
        cfg = compose("play", [*args.overrides, "headless=true", f"frames={args.frames}"])
    stop = threading.Event()
    presser = threading.Thread(target=press_keys, args=(list(cfg.task.keyboard), stop, 0))
    presser.start()
    try:
        result = play(cfg)
    finally:
        stop.set()
        presser.join()
    base = engine_step_ms(cfg)
    report = {
        "bench": "play",
        "overrides": args.overrides,
        "fps": cfg.fps,
        "key_events": result["key_events"],
        "key_latency_ms_p50": result["key_latency_ms_p50"],
        "key_latency_ms_p99": result["key_latency_ms_p99"],
        "frame_ms_p50": result["frame_ms_p50"],
        "frames_over_budget": result["frames_over_budget"],
        "frames": result["frames"],
        "engine_step_ms_p50": base,
        "latency_over_engine_step": result["key_latency_ms_p50"] / base,
        "machine": machine(),
    }
    print(
        f"key -> frame latency p50 {report['key_latency_ms_p50']:.1f} ms, "
        f"p99 {report['key_latency_ms_p99']:.1f} ms over {report['key_events']} key events "
        f"(target p50 <= 33 ms); frame p50 {report['frame_ms_p50']:.1f} ms; bare engine step "
        f"{base:.1f} ms (latency = {report['latency_over_engine_step']:.2f}x)"
    )
    write_report(args.out_json, report)


if __name__ == "__main__":
    main()
