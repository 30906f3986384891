"""Foreground PSNR per horizon of a checkpoint's dream, with the model's own states and
with MuJoCo's true states fed in place of its transition: the second isolates the frame
transformer (what it draws from a state and its own past frames) from the transition's
drift. Writes JSON (default: `true_state_fidelity.json` in the checkpoint folder).

    python experiments/true_state_fidelity.py CHECKPOINT_FOLDER [--store data/reacher_heldout.zarr]
        [--out PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from worldsim.cli import compose_config
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import load_world_model
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.fidelity import held_out_windows
from worldsim.eval.metrics import psnr_per_frame
from worldsim.scene import SceneLayout


@torch.no_grad()
def curves(tok, dyn, store, starts, context: int, horizon: int, true_state: bool) -> list[float]:
    layout = SceneLayout.from_dict(dyn.cfg.scene)
    own = dyn.transition.forward
    given: dict[str, torch.Tensor] = {}
    if true_state:  # the engine asks the transition for the next state: hand it MuJoCo's
        dyn.transition.forward = lambda state, action: given["next"]
    total, n = np.zeros(horizon), 0
    try:
        for i in range(0, len(starts), 32):
            wins = [store.window(s, context, horizon) for s in starts[i : i + 32]]
            frames = torch.from_numpy(np.stack([w["frame"] for w in wins]))
            seg = torch.from_numpy(np.stack([w["seg"] for w in wins]))
            acts = np.stack([w["action"] for w in wins]).astype(np.float32)
            states = np.stack([layout.values(w) for w in wins])
            eng = FrameEngine(tok, dyn, len(wins), EngineConfig())
            eng.reset(frames[:, :context], acts[:, : context - 1], states=states[:, :context])
            for h in range(horizon):
                t = context + h
                given["next"] = torch.from_numpy(states[:, t])
                out = eng.step(acts[:, t - 1]).frames
                fg = (seg[:, t] > 0) | (seg[:, context - 1] > 0)
                total[h] += float(psnr_per_frame(out, frames[:, t], fg).sum())
            n += len(wins)
    finally:
        dyn.transition.forward = own
    return (total / n).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--store", default="data/reacher_heldout.zarr")
    p.add_argument("--horizon", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    args = p.parse_args()
    task = compose_config("dream", ["task=reacher"]).task
    tok, dyn = load_world_model(task, args.checkpoint)
    store = EpisodeStore.open_for_task(args.store, task.name)
    starts = held_out_windows(store, None, 4 + args.horizon, 64)
    out = {
        mode: curves(tok, dyn, store, starts, 4, args.horizon, mode == "true_state")
        for mode in ("true_state", "own_state")
    }
    for mode, c in out.items():
        print(mode, " ".join(f"h{h}: {c[h - 1]:.2f}" for h in (1, 4, 16, 32, 64)))
    path = args.out or args.checkpoint / "true_state_fidelity.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
