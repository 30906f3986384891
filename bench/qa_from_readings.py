"""What question answering a position reader supports: the task's own answers computed
from the shipped tracked state with fingertip and target replaced by a reader's readings.

Reads the held-out readings that `bench/reader_precision.py --save-predictions` wrote
(fingertip xy + target xy in cm per frame, one array per reader) and, per reader, puts
its fingertip reading of each frame and the mean of its target readings since the
episode began (the target never moves within an episode, as the state filter tracks it)
into the shipped reasoner's tracked state (joints filtered with the actions). Scores
`qa_from_state` (no language model: the ceiling a transcribing one would reach) on every
held-out frame, per question form. Prints a table and writes JSON.

    python bench/reader_precision.py --inputs decoded --steps 4000 \\
        --out-json bench/results/reader_precision_decoded.json --save-predictions readings.npz
    python bench/qa_from_readings.py readings.npz
"""

from __future__ import annotations

import argparse

import numpy as np
from report import machine, write_report

from worldsim.cli import compose_config
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.eval.reasoner import qa_from_state
from worldsim.state_filter import StateFilter
from worldsim.train.latent_set import encode_frames
from worldsim.train.reasoner import load_reasoner, tracked_features


def running_mean(x: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Per row, the mean of x over its episode's rows so far."""
    out = np.empty_like(x)
    for a, b in bounds:
        out[a:b] = np.cumsum(x[a:b], 0) / np.arange(1, b - a + 1)[:, None]
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("readings", help=".npz from reader_precision.py --save-predictions")
    p.add_argument("--task", default="reacher")
    p.add_argument("--out-json", default="bench/results/qa_from_readings.json")
    args = p.parse_args()
    cfg = compose_config("eval_reasoner", [f"task={args.task}"])
    folder = checkpoint_dir(cfg.task.name, cfg.checkpoint)
    tok, _ = load_world_model(cfg.task, folder, "cpu")
    reasoner, layout, text = load_reasoner(folder / "reasoner.safetensors", cfg.task)
    store = EpisodeStore.open_for_task(cfg.data_path, cfg.task.name)
    bounds = [store.episode_bounds(e) for e in range(store.num_episodes)]
    latents = encode_frames(tok, store, progress=False)
    filt = StateFilter.load(folder / "state_filter.json")
    tracked = layout.from_features(tracked_features(reasoner, filt, layout, latents, store, bounds))
    values = layout.read(store, 0, store.num_rows)
    readings = np.load(args.readings)
    if len(readings["truth"]) != len(values):
        raise SystemExit(
            f"{args.readings}: {len(readings['truth'])} frames, {cfg.data_path} has "
            f"{len(values)}; the readings must be of this held-out store"
        )
    results = {}
    for name in readings.files:
        state = tracked.copy()
        if name != "shipped":  # the shipped reading is the tracked state itself
            xy = readings[name].astype(np.float64) / 100
            state[:, layout.slices["fingertip"]] = xy[:, :2]
            state[:, layout.slices["target"]] = running_mean(xy[:, 2:], bounds)
        by_form = qa_from_state(text, state, values)
        results[name] = {"mean": float(np.mean(list(by_form.values()))), "by_form": by_form}
        print(f"{name:10s} {results[name]['mean']:.3f}  "
              + "  ".join(f"{v:.2f}" for v in by_form.values()))  # fmt: skip
    write_report(args.out_json, {
        "machine": machine(), "task": cfg.task.name, "frames": len(values),
        "readings": args.readings, "questions": text.questions(), "results": results,
    })  # fmt: skip


if __name__ == "__main__":
    main()
