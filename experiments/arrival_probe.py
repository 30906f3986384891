"""Can the frame model draw a fast arrival beside the target from a clean, real context?

The 10,000-frame held-key rollout's frame/state disagreements fall where the arm lands
beside the target in one big jump, and the same frames fail under another sampling seed.
This takes the store's frames where the fingertip moved more than `--jump` cm and ended
within `--near` cm of the target, starts the engine from the real frames before each, steps
once with the true action, and reads the generated frame with the position reader against
the model's own state; beside it, the same for as many ordinary frames, and the reader on
the real next frames (its own error there).

    python experiments/arrival_probe.py [--store data/reacher.zarr] [--worlds 256]
        [--out arrival_probe.json]
"""

from __future__ import annotations

import json

import numpy as np
import shipped
import torch
from rollout_agreement import worst_cm

from worldsim.engine import EngineConfig, FrameEngine

CONTEXT = shipped.CONTEXT


def candidates(store, layout, jump_cm: float, near_cm: float, first_rows: int) -> tuple:
    """(fast-arrival rows, ordinary rows): rows t with CONTEXT real frames before them in
    their episode, among the first `first_rows` rows of the store."""
    n = min(store.num_rows, first_rows)
    tip = store.read("fingertip", 0, n)[:, :2]
    target = store.read("target", 0, n)[:, :2]
    moved = np.r_[0, 100 * np.linalg.norm(np.diff(tip, axis=0), axis=1)]
    near = 100 * np.linalg.norm(tip - target, axis=1)
    ends = store.episode_ends
    starts = np.r_[0, ends[:-1]]
    ok = np.zeros(n, bool)
    for a, b in zip(starts, ends, strict=True):
        ok[a + CONTEXT : min(b, n)] = True
    fast = np.flatnonzero(ok & (moved > jump_cm) & (near < near_cm))
    ordinary = np.flatnonzero(ok & (moved <= jump_cm))
    return fast, ordinary


@torch.no_grad()
def one_step(r, rows: np.ndarray, seed: int) -> dict:
    """Generated next frame vs the model's state, and the reader on the real next frame."""
    tok, dyn, reader, layout, store = r.tok, r.dyn, r.reader, r.layout, r.store
    windows = [store.window(int(t) - CONTEXT, CONTEXT, 1) for t in rows]
    engine = FrameEngine(tok, dyn, len(rows), EngineConfig(seed=seed))
    engine.reset(
        torch.from_numpy(np.stack([w["frame"][:CONTEXT] for w in windows])),
        np.stack([w["action"][: CONTEXT - 1] for w in windows]),
        states=np.stack([layout.values(w)[:CONTEXT] for w in windows]),
    )
    out = engine.step(np.stack([w["action"][CONTEXT - 1] for w in windows]), decode=False)
    state = out.state.numpy()
    dream_cm = worst_cm(
        reader, layout, reader.put(layout, state, reader.read_latents(tok, out.latents)), state
    )
    true = np.stack([layout.values(w)[CONTEXT] for w in windows])
    real = tok.encode(torch.from_numpy(np.stack([w["frame"][CONTEXT] for w in windows])))
    real_cm = worst_cm(
        reader, layout, reader.put(layout, true, reader.read_latents(tok, real)), true
    )
    state_cm = 100 * np.linalg.norm(
        state[:, layout.slices["fingertip"]] - true[:, layout.slices["fingertip"]], axis=1
    )
    engine.close()
    return {
        "frames": int(len(rows)),
        "dream_over_1cm": float((dream_cm > 1).mean()),
        "dream_median_cm": float(np.median(dream_cm)),
        "reader_on_real_next_frame_over_1cm": float((real_cm > 1).mean()),
        "model_fingertip_vs_true_median_cm": float(np.median(state_cm)),
    }


def main() -> None:
    p = shipped.parser(__doc__)
    p.set_defaults(store="data/reacher.zarr")
    p.add_argument("--worlds", type=int, default=256, help="frames per group, stepped at once")
    p.add_argument("--jump", type=float, default=8.0, help="fingertip move (cm) of an arrival")
    p.add_argument("--near", type=float, default=6.0, help="end distance to the target (cm)")
    p.add_argument("--rows", type=int, default=102_000, help="store rows searched")
    p.add_argument("--out", default="arrival_probe.json", help="JSON written here")
    args = p.parse_args()
    r = shipped.load(args)
    fast, ordinary = candidates(r.store, r.layout, args.jump, args.near, args.rows)
    rng = np.random.default_rng(0)
    pick = lambda rows: np.sort(rng.choice(rows, min(args.worlds, len(rows)), replace=False))  # noqa: E731
    result = {
        "store": args.store,
        "criterion": f"fingertip moved > {args.jump} cm, ends < {args.near} cm from the target",
        "fast_arrival_rows": int(len(fast)),
        "fast_arrival": one_step(r, pick(fast), 0),
        "ordinary": one_step(r, pick(ordinary), 0),
    }
    print(json.dumps(result, indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
