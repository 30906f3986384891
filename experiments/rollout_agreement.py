"""Every-frame agreement between what a dreamed frame shows and the model's own state over
`worldsim eval fidelity`'s long held-key rollout, binned by the fastest joint's speed, beside
the position reader's own error on real held-out frames in the same bins (how much of a
disagreement is the reader's); then the same left idle (zero action, as `worldsim play`
with no key held) from the first held-out episodes' starts, every 100th frame, with how
much of the target's disagreement falls where the arm lies over it (unreadable there).

    python experiments/rollout_agreement.py [--frames 10000] [--steps 1] [--seed 0]
        [--checkpoint DIR] [--store data/reacher_heldout.zarr] [--idle-worlds 32]
        [--out agreement.json]
"""

from __future__ import annotations

import json

import numpy as np
import shipped
import torch
from tqdm import tqdm

from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.fidelity import held_key_actions

CONTEXT = shipped.CONTEXT
BINS = [0, 30, 60, 80, 90, 1e9]  # rad/s of the fastest joint
ARM_RADIUS_CM = 3.2  # the links' drawn radius (task render_overrides): the target is under the arm


def worst_cm(reader, layout, read, state) -> np.ndarray:
    """(B,) the larger of the reader's fingertip and target distances from `state`, in cm."""
    return 100 * np.max(
        [
            np.linalg.norm(read[:, layout.slices[n]] - state[:, layout.slices[n]], axis=1)
            for n in reader.cfg.quantities
        ],
        axis=0,
    )


def arm_to_target_cm(layout, state: np.ndarray) -> np.ndarray:
    """(B,) distance from the target to the arm's two links (Reacher: a 0.1 m first link
    from the origin, then on to the fingertip), in cm."""
    q, tip = state[:, layout.slices["joint_angle"]], state[:, layout.slices["fingertip"]]
    target = state[:, layout.slices["target"]]
    elbow = 0.1 * np.stack([np.cos(q[:, 0]), np.sin(q[:, 0])], 1)

    def to_segment(a, b):
        ab = b - a
        t = np.clip(((target - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0, 1)
        return np.linalg.norm(target - (a + t[:, None] * ab), axis=1)

    return 100 * np.minimum(to_segment(0 * elbow, elbow), to_segment(elbow, tip))


@torch.no_grad()
def idle(tok, dyn, reader, store, layout, worlds: int, frames: int = 1000) -> dict:
    """Zero action from the first `worlds` held-out episodes' starts; every 100th frame."""
    w = [store.window(store.episode_bounds(i)[0], CONTEXT, 1) for i in range(worlds)]
    engine = FrameEngine(tok, dyn, worlds, EngineConfig())
    engine.reset(
        torch.from_numpy(np.stack([x["frame"][:CONTEXT] for x in w])),
        np.stack([x["action"][: CONTEXT - 1] for x in w]),
        states=np.stack([layout.values(x)[:CONTEXT] for x in w]),
    )
    err = {n: [] for n in reader.cfg.quantities}
    over_arm, speed = [], []
    for t in range(1, frames + 1):
        out = engine.step(np.zeros((worlds, dyn.cfg.action_dim), np.float32), decode=False)
        if t % 100:
            continue
        state = out.state.numpy()
        read = reader.put(layout, state, reader.read_latents(tok, out.latents, states=out.state))
        for n in err:
            s = layout.slices[n]
            err[n].append(100 * np.linalg.norm(read[:, s] - state[:, s], axis=1))
        over_arm.append(arm_to_target_cm(layout, state) < ARM_RADIUS_CM)
        speed.append(np.abs(state[:, layout.slices["joint_velocity"]]).max(1))
    err = {n: np.concatenate(v) for n, v in err.items()}
    over_arm = np.concatenate(over_arm)
    target = err["target"] > 1
    return {
        "worlds": worlds,
        "frames": frames,
        "readings": int(len(over_arm)),
        "over_1cm": {n: float((v > 1).mean()) for n, v in err.items()},
        "target_over_1cm_arm_over_target": float(target[over_arm].mean()),
        "target_over_1cm_arm_clear": float(target[~over_arm].mean()),
        "arm_over_target_fraction": float(over_arm.mean()),
        "joint_speed_at_end_rad_s": [float(v) for v in speed[-1]],
    }


def by_speed(speed: np.ndarray, cm: np.ndarray) -> list[dict]:
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
        m = (speed >= lo) & (speed < hi)
        if m.any():
            rows.append(
                {
                    "rad_s": [lo, hi if hi < 1e9 else None],
                    "frames": int(m.sum()),
                    "median_cm": float(np.median(cm[m])),
                    "p99_cm": float(np.percentile(cm[m], 99)),
                    "over_1cm": float((cm[m] > 1).mean()),
                }
            )
    return rows


def hide_velocities(dyn, layout, how: str) -> None:
    """Make the frame transformer read mean (or clipped) joint velocities: is the glitch in
    what the velocity features do to the drawing?"""
    features = dyn.transition.features
    vel = layout.slices["joint_velocity"]  # features keep the value columns' order first

    def without_velocities(values):
        f = features(values).clone()
        f[..., vel] = 0 if how == "mean" else f[..., vel].clamp(-1, 1)
        return f

    embed = dyn._embed

    def embed_without_velocities(*args):
        dyn.transition.features = without_velocities
        try:
            return embed(*args)
        finally:
            dyn.transition.features = features

    dyn._embed = embed_without_velocities


@torch.no_grad()
def main() -> None:
    p = shipped.parser(__doc__)
    p.add_argument("--frames", type=int, default=10_000, help="rollout length")
    p.add_argument("--steps", type=int, default=1, help="Euler steps of the flow per frame")
    p.add_argument(
        "--tau-ctx",
        type=float,
        default=EngineConfig.tau_ctx,
        help="flow time the previous frame is written into the context at",
    )
    p.add_argument("--idle-worlds", type=int, default=32, help="idle rollouts (0: none)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling-noise seed (the state does not depend on it: with another seed, do the "
        "same frames fail?)",
    )
    p.add_argument("--out", default="agreement.json", help="JSON written here")
    p.add_argument(
        "--velocity-features",
        choices=("keep", "mean", "clip"),
        default="keep",
        help="what the frame transformer reads of the joint velocities (the transition still "
        "integrates the real ones): keep, the data's mean, or clipped to +-1 std",
    )
    args = p.parse_args()
    r = shipped.load(args)
    if args.velocity_features != "keep":
        hide_velocities(r.dyn, r.layout, args.velocity_features)
    tok, dyn, reader, store, layout = r.tok, r.dyn, r.reader, r.store, r.layout
    vel = layout.slices["joint_velocity"]

    # the reader on real frames
    n = min(store.num_rows, 20_000)
    real_cm, real_speed, real_over_arm = [], [], []
    for a in range(0, n, 1000):
        arrays = {"frame", *(q.array for q in layout.quantities)}
        rows = {k: store.read(k, a, min(n, a + 1000)) for k in arrays}
        state = layout.values(rows).astype(np.float32)
        latents = tok.encode(torch.from_numpy(rows["frame"]))
        read = reader.put(layout, state, reader.read_latents(tok, latents))
        real_cm.append(worst_cm(reader, layout, read, state))
        real_speed.append(np.abs(state[:, vel]).max(1))
        real_over_arm.append(arm_to_target_cm(layout, state) < ARM_RADIUS_CM)
    real_cm, real_speed = np.concatenate(real_cm), np.concatenate(real_speed)
    real_over_arm = np.concatenate(real_over_arm)

    w = store.window(store.episode_bounds(0)[0], CONTEXT, 1)
    space = store.attrs["action_space"]
    low, high = (np.asarray(space[k], np.float32) for k in ("low", "high"))
    actions = held_key_actions(low, high, args.frames, seed=0)
    config = EngineConfig(steps=args.steps, tau_ctx=args.tau_ctx, seed=args.seed)
    engine = FrameEngine(tok, dyn, 1, config)
    engine.reset(
        torch.from_numpy(w["frame"][None, :CONTEXT]),
        w["action"][None, : CONTEXT - 1],
        states=layout.values(w)[None, :CONTEXT],
    )
    cm, speed = np.zeros(args.frames), np.zeros(args.frames)
    cm_prev = np.full(args.frames, np.inf)  # the reading against the previous frame's state
    prev = None
    elbow, over_arm = np.zeros(args.frames), np.zeros(args.frames, bool)
    # the fingertip read nearer the state's target than the state's fingertip is (by > 1 cm)
    pulled = np.zeros(args.frames, bool)
    tip, target = layout.slices["fingertip"], layout.slices["target"]
    for t in tqdm(range(args.frames), desc="rollout"):
        out = engine.step(actions[t][None])
        state = out.state.numpy()
        read = reader.put(layout, state, reader.read_latents(tok, out.latents, states=out.state))
        cm[t] = worst_cm(reader, layout, read, state)[0]
        if prev is not None:
            cm_prev[t] = worst_cm(reader, layout, read, prev)[0]
        prev = state
        speed[t] = np.abs(state[0, vel]).max()
        elbow[t] = abs(state[0, vel][1])
        over_arm[t] = arm_to_target_cm(layout, state)[0] < ARM_RADIUS_CM
        gap_read = np.linalg.norm(read[0, tip] - state[0, target])
        pulled[t] = gap_read < np.linalg.norm(state[0, tip] - state[0, target]) - 0.01
    every100 = cm[99::100]
    bad = cm > 1
    edges = np.flatnonzero(np.diff(np.r_[0, bad.astype(int), 0]))  # starts and ends of runs
    runs = edges[1::2] - edges[0::2]
    result = {
        "frames": args.frames,
        "steps": args.steps,
        "seed": args.seed,
        "bad_frames": [int(i) for i in np.flatnonzero(bad)],
        "every_100th_max_cm": float(every100.max()) if every100.size else None,
        "every_100th_over_1cm": [int(i) for i in np.flatnonzero(every100 > 1) * 100 + 100],
        "all_frames_over_1cm": float((cm > 1).mean()),
        "over_1cm_by_quarter": [float(q.mean()) for q in np.array_split(bad, 4)],
        "bad_runs": int(len(runs)),
        "bad_runs_one_frame_long": int((runs == 1).sum()),
        "tau_ctx": args.tau_ctx,
        "velocity_features": args.velocity_features,
        "bad_frames_drawn_nearer_the_previous_state": float((cm_prev[bad] < cm[bad]).mean()),
        "median_elbow_speed_rad_s_bad_good": [float(np.median(elbow[b])) for b in (bad, ~bad)],
        "over_1cm_arm_over_target_clear": [float(bad[m].mean()) for m in (over_arm, ~over_arm)],
        "bad_frames_fingertip_drawn_toward_the_target": float(pulled[bad].mean()),
        "good_frames_fingertip_drawn_toward_the_target": float(pulled[~bad].mean()),
        "dream_by_speed": by_speed(speed, cm),
        "real_frames": int(n),
        "reader_on_real_frames_by_speed": by_speed(real_speed, real_cm),
        "reader_on_real_frames_over_1cm_arm_over_target_clear": [
            float((real_cm[m] > 1).mean()) for m in (real_over_arm, ~real_over_arm)
        ],
    }
    if args.idle_worlds:
        result["idle"] = idle(tok, dyn, reader, store, layout, args.idle_worlds)
    print(json.dumps(result, indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
