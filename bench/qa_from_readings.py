"""What question answering a position reader supports: the task's own answers computed
from the shipped tracked state with fingertip and target replaced by a reader's readings.

Reads the held-out readings that `bench/reader_precision.py --save-predictions` wrote
(fingertip xy + target xy in cm per frame, one array per reader) and, per reader, puts
its fingertip and target readings in place of the shipped reasoner's and tracks them
with the shipped state filter as `worldsim eval reasoner` does (joints filtered with the
actions; the target, which never moves within an episode, averaged since it began). Scores
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
from worldsim.state_filter import StateFilter, filter_episodes
from worldsim.train.latent_set import encode_frames
from worldsim.train.reasoner import load_reasoner, read_episodes


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
    own = layout.from_features(read_episodes(reasoner, latents, bounds))
    actions = store.read("action", 0, store.num_rows)
    values = layout.read(store, 0, store.num_rows)
    readings = np.load(args.readings)
    if len(readings["truth"]) != len(values):
        raise SystemExit(
            f"{args.readings}: {len(readings['truth'])} frames, {cfg.data_path} has "
            f"{len(values)}; the readings must be of this held-out store"
        )
    results = {}
    for name in readings.files:
        read = own.copy()
        if name != "shipped":  # the shipped reading is the reasoner's own
            xy = readings[name].astype(np.float32) / 100
            read[:, layout.slices["fingertip"]] = xy[:, :2]
            read[:, layout.slices["target"]] = xy[:, 2:]
        state = filter_episodes(filt, read, actions, bounds)  # the target: mean since start
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
