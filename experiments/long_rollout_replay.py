"""Replay `worldsim eval fidelity`'s long held-key rollout (deterministic) up to one frame
and print, around it, how far the position reader's reading of each dreamed frame is from
the model's own state, with the joint velocities and the target's distance from the arm's
links; writes the frames around it as a PNG.

    python experiments/long_rollout_replay.py --frame 7600 [--checkpoint DIR]
        [--store data/reacher_heldout.zarr] [--around 10] [--out replay.png]
"""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import shipped
import torch
from rollout_agreement import arm_to_target_cm

from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.fidelity import held_key_actions

CONTEXT = shipped.CONTEXT


@torch.no_grad()
def main() -> None:
    p = shipped.parser(__doc__)
    p.add_argument("--frame", type=int, required=True, help="the frame to look around")
    p.add_argument("--around", type=int, default=10, help="frames either side to print")
    p.add_argument("--out", default="replay.png", help="PNG of the frames around it")
    args = p.parse_args()
    r = shipped.load(args)
    tok, dyn, reader, store, layout = r.tok, r.dyn, r.reader, r.store, r.layout
    w = store.window(store.episode_bounds(0)[0], CONTEXT, 1)
    space = store.attrs["action_space"]
    low, high = (np.asarray(space[k], np.float32) for k in ("low", "high"))
    last = args.frame + args.around
    actions = held_key_actions(low, high, last, seed=0)
    engine = FrameEngine(tok, dyn, 1, EngineConfig())
    engine.reset(
        torch.from_numpy(w["frame"][None, :CONTEXT]),
        w["action"][None, : CONTEXT - 1],
        states=layout.values(w)[None, :CONTEXT],
    )
    frames = []
    for t in range(1, last + 1):
        out = engine.step(actions[t - 1][None])
        if t < args.frame - args.around:
            continue
        state = out.state.numpy()
        read = reader.put(layout, state, reader.read_latents(tok, out.latents, states=out.state))
        cm = {
            n: 100 * float(np.linalg.norm(read[0, layout.slices[n]] - state[0, layout.slices[n]]))
            for n in reader.cfg.quantities
        }
        velocity = [round(float(v), 1) for v in state[0, layout.slices["joint_velocity"]]]
        arm = float(arm_to_target_cm(layout, state)[0])  # < 3.2: a link lies over the target
        print(
            t,
            " ".join(f"{n} {v:.2f} cm" for n, v in cm.items()),
            f"velocity {velocity} arm-target {arm:.1f} cm",
        )
        frames.append(out.frames[0].numpy())
    iio.imwrite(args.out, np.concatenate(frames, 1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
