"""The learned state transition trained alone at several rollout horizons, judged by what
an unstable system needs: does InvertedPendulum's pole fall by itself as MuJoCo's does?

The dynamics trains its transition on `transition.horizon`-frame rollouts (48, chosen on
Reacher), so only episodes at least 49 frames long teach it; InvertedPendulum's falling
episodes last ~24-48 frames. This trains `StateTransition` alone, as `train dynamics`
does (same normalisation, scale and loss), at each horizon, then rolls it out under zero
action from held-out MuJoCo starts and reports the steps until the pole passes 0.2 rad
beside MuJoCo's, and the state error at h16 under the held-out episodes' true actions.

    python experiments/transition_horizon.py STORE HELDOUT [--horizons 4 8 16 48] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from worldsim.cli import compose_config
from worldsim.datasets.index import window_starts
from worldsim.datasets.store import EpisodeStore
from worldsim.model.transition import StateTransition, column_bounds, column_roles
from worldsim.mujoco_sim import MujocoSim
from worldsim.scene import SceneLayout
from worldsim.train.dynamics import robust_step_scale, transition_loss


def train(layout, state, action, ends, horizon, steps, seed=0):
    torch.manual_seed(seed)
    roles = column_roles(layout, state, ends)
    tr = StateTransition(layout, roles, action.shape[1], 256, 3, column_bounds(state, roles))
    tr.fit_statistics(state, ends)
    scale = torch.from_numpy(robust_step_scale(state, ends, tr.angle.numpy()))
    starts = window_starts(ends, horizon + 1)
    data = {"state": state, "action": action}
    opt = torch.optim.AdamW(tr.parameters(), 1e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        lr = (
            1e-3 * min(1, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        loss, _ = transition_loss(
            tr, data, starts[rng.integers(0, len(starts), 256)], horizon, scale, "cpu"
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tr.eval(), len(starts)


@torch.no_grad()
def fall_steps(tr, task, layout, seeds, limit=0.2, frames=100):
    """Steps until |pole| > limit under zero action, MuJoCo's and the transition's own,
    both from MuJoCo's state after reset (the transition sees only that state)."""
    sim = MujocoSim(task)
    pole = layout.slices["pole_angle"].start
    out = {"mujoco": [], "model": []}
    for seed in seeds:
        sim.reset(seed=seed)
        s = torch.from_numpy(layout.values(sim.state()).astype(np.float32))[None]
        zero = np.zeros(1, np.float32)
        n_m = n_d = frames
        for t in range(frames):
            if n_m == frames and abs(layout.values(sim.step(zero)[0].state)[pole]) > limit:
                n_m = t + 1
            s = tr(s, torch.zeros(1, 1))
            if n_d == frames and abs(float(s[0, pole])) > limit:
                n_d = t + 1
        out["mujoco"].append(n_m)
        out["model"].append(n_d)
    sim.close()
    return {k: float(np.mean(v)) for k, v in out.items()}


@torch.no_grad()
def h16_error(tr, layout, state, action, ends):
    starts = window_starts(ends, 17)
    rows = starts[:, None] + np.arange(17)
    cur = torch.from_numpy(state[rows[:, 0]])
    for k in range(16):
        cur = tr(cur, torch.from_numpy(action[rows[:, k]]))
    err = np.abs(cur.numpy() - state[rows[:, 16]])
    return {q.name: float(np.median(err[:, layout.slices[q.name]])) for q in layout.quantities}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("heldout")
    ap.add_argument("--horizons", type=int, nargs="+", default=[4, 8, 16, 48])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = compose_config("dream", ["task=inverted_pendulum"]).task
    layout = SceneLayout.from_task(task)
    store, held = EpisodeStore.open(args.store), EpisodeStore.open(args.heldout)
    state = layout.read(store, 0, store.num_rows).astype(np.float32)
    action = store.read("action", 0, store.num_rows).astype(np.float32)
    ends = np.asarray(store.episode_ends)
    hs = layout.read(held, 0, held.num_rows).astype(np.float32)
    ha = held.read("action", 0, held.num_rows).astype(np.float32)
    he = np.asarray(held.episode_ends)
    results = {}
    for h in args.horizons:
        t0 = time.time()
        tr, windows = train(layout, state, action, ends, h, args.steps)
        results[h] = {
            "training_windows": windows,
            "zero_action_steps_to_fall": fall_steps(tr, task, layout, range(1000, 1016)),
            "h16_median_error": h16_error(tr, layout, hs, ha, he),
            "seconds": round(time.time() - t0),
        }
        print(h, json.dumps(results[h]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
