"""Question answering reading the tracked state, on more held-out frames than
`worldsim eval reasoner` asks about by default, and without its other passes.

The same functions as the eval's `qa_exact_match_tracked` (the checkpoint's reader, state
filter and, where the folder has one, position reader), over every k-th held-out frame so
that about --qa-frames are asked every question form. ~7 minutes for 1,000 frames on 2
cores, a quarter of a full `worldsim eval reasoner qa_frames=1000`. Prints and writes JSON.

    python bench/qa_tracked.py --qa-frames 1000
"""

from __future__ import annotations

import argparse

import numpy as np
from report import machine, write_report

from worldsim.cli import compose_config
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.eval.reasoner import qa_by_form, qa_from_state
from worldsim.state_filter import StateFilter
from worldsim.train.latent_set import encode_frames
from worldsim.train.position_reader import load_position_reader
from worldsim.train.reasoner import load_reasoner, read_episodes, tracked_state


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="reacher")
    p.add_argument("--checkpoint", default=None, help="folder; default: the shipped one")
    p.add_argument("--qa-frames", type=int, default=1000, help="frames asked every form")
    p.add_argument("--out-json", default="bench/results/qa_tracked.json")
    args = p.parse_args()
    cfg = compose_config("eval_reasoner", [f"task={args.task}"])
    folder = checkpoint_dir(cfg.task.name, args.checkpoint)
    if not (folder / "state_filter.json").exists():
        raise SystemExit(f"{folder} has no state_filter.json: there is no tracked state")
    tok, _ = load_world_model(cfg.task, folder, "cpu")
    reasoner, layout, text = load_reasoner(folder / "reasoner.safetensors", cfg.task)
    store = EpisodeStore.open_for_task(cfg.data_path, cfg.task.name)
    bounds = [store.episode_bounds(e) for e in range(store.num_episodes)]
    latents = encode_frames(tok, store, progress=False)
    values = layout.read(store, 0, store.num_rows)
    rows = np.concatenate([np.arange(a, b) for a, b in bounds])
    qa_rows = rows[:: max(1, len(rows) // args.qa_frames)]
    positions = None
    if (path := folder / "position_reader.safetensors").exists():
        positions = (load_position_reader(path, cfg.task), tok)
    readings = layout.from_features(read_episodes(reasoner, latents, bounds))
    filt = StateFilter.load(folder / "state_filter.json")
    est = tracked_state(filt, layout, readings, latents, store, bounds, positions)
    feats = layout.to_features(est[qa_rows]).astype(np.float32)
    lm, _ = qa_by_form(reasoner, text, latents, values, qa_rows, feats)
    task = qa_from_state(text, est[qa_rows], values[qa_rows])
    result = {
        "language_model": float(np.mean(list(lm.values()))),
        "task_answers": float(np.mean(list(task.values()))),
    }
    print(f"{len(qa_rows)} frames: language model {result['language_model']:.4f}, "
          f"task's own answers {result['task_answers']:.4f}")  # fmt: skip
    for q in lm:
        print(f"  {q:50s} {lm[q]:.3f} {task[q]:.3f}")
    write_report(args.out_json, {
        "machine": machine(), "task": cfg.task.name, "checkpoint": str(folder),
        "qa_frames": len(qa_rows), "positions_from": "reasoner" if positions is None
        else "position_reader", **result, "language_model_by_form": lm,
        "task_answers_by_form": task,
    })  # fmt: skip


if __name__ == "__main__":
    main()
