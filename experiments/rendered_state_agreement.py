"""Does a dreamed frame show the model's own state? The long held-key rollout of
`worldsim eval fidelity`, with MuJoCo's render of the model's own state beside every
`--every`-th dreamed frame: the position reader on both frames, the state's positions
against MuJoCo's forward kinematics of its own joint angles, how much of the arm the
render shows, and the foreground PSNR against the render of the dreamed frame and of the
tokenizer's round trip of the render (what the tokenizer can draw of that pose).

Separates three reasons the reader can disagree with the state: the reader itself (its
reading of the render is off too, e.g. the arm out of the camera's view), a state that
contradicts itself (the tip the state carries is not where its joint angles put it), and
a frame drawn off the state (the reader agrees with the state on the render only).

    python experiments/rendered_state_agreement.py --task pusher --checkpoint DIR \
        --store runs/world_model/pusher/data/pusher_heldout.zarr [--frames 1000] \
        [--every 10] [--steps 1] [--out agreement.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tqdm import tqdm

from worldsim.cli import compose_config
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.engine import EngineConfig
from worldsim.eval.fidelity import held_key_start
from worldsim.eval.metrics import psnr_per_frame
from worldsim.mujoco_sim import SEG_CLASSES, MujocoSim
from worldsim.scene import SceneLayout
from worldsim.train.position_reader import load_position_reader

CONTEXT = 4  # real frames a rollout starts from, as `worldsim eval fidelity`


def cm(a: np.ndarray, b: np.ndarray) -> float:
    return float(100 * np.linalg.norm(a - b))


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="pusher")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: shipped)")
    p.add_argument("--store", required=True, help="held-out store (its episode 0 starts it)")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--steps", type=int, default=1, help="Euler steps per frame (engine.steps)")
    p.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = p.parse_args()
    task = compose_config("dream", [f"task={args.task}"]).task
    folder = checkpoint_dir(args.task, args.checkpoint)
    tok, dyn = load_world_model(task, folder)
    reader = load_position_reader(folder / "position_reader.safetensors", task)
    layout = SceneLayout.from_dict(dyn.cfg.scene)
    store = EpisodeStore.open_for_task(args.store, args.task)
    engine, w, actions = held_key_start(  # as eval fidelity's long rollout
        tok, dyn, store, args.frames, CONTEXT, EngineConfig(steps=args.steps)
    )
    sim = MujocoSim(task)
    sim.reset(seed=0)
    qpos0 = w["qpos"][CONTEXT - 1].astype(np.float64)
    robot = SEG_CLASSES.index("robot")
    rows = []
    for t in tqdm(range(1, args.frames + 1), desc="rollout"):
        out = engine.step(actions[t - 1][None])
        if t % args.every:
            continue
        state = out.state.numpy()
        dream_frame = out.frames  # (1, H, W, 3) uint8, drawn with the state
        obs = sim.pose(layout, state[0], qpos0)
        render = torch.from_numpy(obs.frame[None])
        latents = tok.encode(render)
        on_dream = reader.put(
            layout, state, reader.read_latents(tok, out.latents, states=out.state)
        )
        on_render = reader.put(layout, state, reader.values(reader(render).numpy()))
        on_trip = reader.put(  # the render through the tokenizer, decoded with the state
            layout, state, reader.read_latents(tok, latents, states=out.state)
        )
        fg = torch.from_numpy(obs.seg[None] > 0)
        row = {"frame": t, "arm_pixels": int((obs.seg == robot).sum())}
        for name in reader.cfg.quantities:
            s = layout.slices[name]
            row[f"{name}_dream_vs_state_cm"] = cm(on_dream[0, s], state[0, s])
            row[f"{name}_render_vs_state_cm"] = cm(on_render[0, s], state[0, s])
            row[f"{name}_dream_vs_render_cm"] = cm(on_dream[0, s], on_render[0, s])
            row[f"{name}_render_roundtrip_vs_state_cm"] = cm(on_trip[0, s], state[0, s])
            if name in sim.body_ids:  # the state's position against its own joints' FK
                row[f"{name}_state_vs_kinematics_cm"] = cm(
                    state[0, s], sim.data.xpos[sim.body_ids[name]]
                )
        row["fg_psnr_dream_vs_render"] = float(psnr_per_frame(dream_frame, render, mask=fg)[0])
        trip = tok.decode_uint8(latents, out.state)  # the tokenizer's best drawing of it
        row["fg_psnr_roundtrip_vs_render"] = float(psnr_per_frame(trip, render, mask=fg)[0])
        rows.append(row)
    sim.close()
    keys = [k for k in rows[0] if k != "frame"]
    summary = {k: {"median": float(np.median([r[k] for r in rows])),
                   "max": float(np.max([r[k] for r in rows]))} for k in keys}  # fmt: skip
    arm = np.array([r["arm_pixels"] for r in rows])
    by_arm = {}
    for lo, hi in ((0, 200), (200, 500), (500, 4096)):
        sel = [r for r, a in zip(rows, arm, strict=True) if lo <= a < hi]
        if sel:
            by_arm[f"{lo}-{hi}"] = {"frames": len(sel)} | {
                k: float(np.median([r[k] for r in sel])) for k in keys if k.startswith("fg_")
            }
    result = {
        "checkpoint": str(folder),
        "fg_psnr_by_arm_pixels": by_arm,
        "frames": args.frames,
        "every": args.every,
        "steps": args.steps,
        "summary": summary,
        "rows": rows,
    }
    for k, v in summary.items():
        print(f"{k:36s} median {v['median']:8.2f}  max {v['max']:8.2f}")
    for b, v in by_arm.items():
        print(f"arm pixels {b}: {v}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
