"""Does the dream's state follow MuJoCo's under a policy's own actions? (model exploitation)

A policy trained in the dream can score there and fail in MuJoCo when it steers into what
the grounding data never showed. This runs each policy in MuJoCo from the evaluation's
matched starts (reset, `context - 1` zero actions), then replays its actions open loop
through the world model's learned transition from the same start state, and prints the
median distance (cm) between the dream's and MuJoCo's positions (Pusher: tip, object)
at a few steps, plus the object's final distance to the goal in both places, and how much
of MuJoCo's object moves one transition step predicts from MuJoCo's own states. The
expert's row is the behaviour the grounding data holds.

    python experiments/policy_replay.py --task pusher --checkpoint DIR POLICY [POLICY ...]
        [--seeds 32] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from worldsim.cli import compose_config
from worldsim.datasets.policies import EXPERTS
from worldsim.dream import load_world_model
from worldsim.mujoco_sim import MujocoSim
from worldsim.policies.zoo import make_policy
from worldsim.scene import SceneLayout

STEPS_SHOWN = (1, 5, 10, 20, 40, 60, 99)


def mujoco_runs(spec, task, seeds, context):
    """(start states (S, dim), actions (S, T, A), MuJoCo's states (S, T, dim))."""
    layout = SceneLayout.from_task(task)
    sim = MujocoSim(task)
    if spec == "expert":  # the grounding data's own (privileged) expert, without noise
        policy = None
    else:
        policy, _ = make_policy(spec, task, obs="state")
    zero = np.zeros(sim.action_space.shape, np.float32)
    starts, actions, states = [], [], []
    for seed in seeds:
        obs = sim.reset(seed=int(seed))
        if policy is None:
            expert = EXPERTS[task.expert](sim, np.random.default_rng(int(seed)))
        else:
            policy.reset(1, int(seed))
        for _ in range(context - 1):
            obs = sim.step(zero)[0]
        starts.append(layout.values(obs.state))
        acts, path = [], []
        for _ in range(int(task.max_episode_steps)):
            if policy is None:
                a = expert.act()
            else:
                a = policy.act(sim.unwrapped._get_obs().astype(np.float32)[None])[0]
            obs = sim.step(a)[0]
            acts.append(a)
            path.append(layout.values(obs.state))
        actions.append(acts)
        states.append(path)
    sim.close()
    return np.stack(starts), np.asarray(actions, np.float32), np.asarray(states, np.float32)


@torch.no_grad()
def replay(dyn, start, actions):
    cur = torch.from_numpy(start).float()
    out = []
    for t in range(actions.shape[1]):
        cur = dyn.transition(cur, torch.from_numpy(actions[:, t]))
        out.append(cur.numpy().copy())
    return np.stack(out, 1)


@torch.no_grad()
def one_step(dyn, start, real, actions, sl) -> dict:
    """Each step from MuJoCo's true state instead of the dream's own (teacher-forced): over
    the steps in which a position moves more than 1 mm in MuJoCo, how much of that move the
    transition predicts (gain: the predicted move projected on the true one, summed, over
    the true moves' squared length; 1 = all of it) and its median error (mm). Separates a
    transition that cannot make a contact move from one whose rollouts drift off it."""
    prev = np.concatenate([start[:, None], real[:, :-1]], 1)
    n, t, dim = prev.shape
    flat = torch.from_numpy(prev.reshape(-1, dim)).float()
    nxt = dyn.transition(flat, torch.from_numpy(actions.reshape(n * t, -1))).numpy()
    true_d = (real.reshape(-1, dim) - prev.reshape(-1, dim))[:, sl]
    pred_d = (nxt - prev.reshape(-1, dim))[:, sl]
    moving = np.linalg.norm(true_d, axis=1) > 0.001
    if not moving.any():
        return {"moving_steps": 0}
    td, pd = true_d[moving], pred_d[moving]
    return {
        "moving_steps": int(moving.sum()),
        "gain": float((pd * td).sum() / (td * td).sum()),
        "median_error_mm": float(np.median(np.linalg.norm(pd - td, axis=1)) * 1000),
        "median_true_move_mm": float(np.median(np.linalg.norm(td, axis=1)) * 1000),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policies", nargs="+", help="policy files, or expert / zero / random")
    ap.add_argument("--task", default="pusher")
    ap.add_argument("--checkpoint", required=True, help="world-model folder (dynamics.*)")
    ap.add_argument("--seeds", type=int, default=32, help="evaluation seeds 1000, 1001, ...")
    ap.add_argument("--context", type=int, default=4)
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = compose_config("policy_eval", [f"task={args.task}", "policy=x"]).task
    layout = SceneLayout.from_task(task)
    _, dyn = load_world_model(task, Path(args.checkpoint))
    dyn.eval()
    seeds = 1000 + np.arange(args.seeds)
    names = [q.name for q in layout.quantities if q.unit == "m" and q.name != "goal"]
    report = {"checkpoint": args.checkpoint, "seeds": len(seeds), "rows": {}}
    for spec in args.policies:
        start, actions, real = mujoco_runs(spec, task, seeds, args.context)
        dream = replay(dyn, start, actions)
        row = {}
        for name in names:
            sl = layout.slices[name]
            err = np.linalg.norm(dream[..., sl] - real[..., sl], axis=-1) * 100
            row[name] = {str(t): float(np.median(err[:, t - 1])) for t in STEPS_SHOWN}
        if "object" in layout.slices and "goal" in layout.slices:
            o, g = layout.slices["object"], layout.slices["goal"]
            for where, path in (("mujoco", real), ("dream", dream)):
                d = np.linalg.norm(path[:, -1, o][:, :2] - path[:, -1, g][:, :2], axis=-1)
                row[f"object_goal_cm_{where}"] = float(np.median(d) * 100)
            row["object_goal_cm_start"] = float(
                np.median(np.linalg.norm(start[:, o][:, :2] - start[:, g][:, :2], axis=-1)) * 100
            )
        if "object" in layout.slices:
            row["object_one_step"] = one_step(dyn, start, real, actions, layout.slices["object"])
        report["rows"][spec] = row
        print(spec)
        for name in names:
            cells = "  ".join(f"t{t}: {v:5.1f}" for t, v in row[name].items())
            print(f"  {name:8s} dream - MuJoCo (cm, median)  {cells}")
        if "object_goal_cm_mujoco" in row:
            cm = {k: row[f"object_goal_cm_{k}"] for k in ("start", "mujoco", "dream")}
            print(
                f"  object-goal cm: start {cm['start']:.1f}, MuJoCo {cm['mujoco']:.1f}, "
                f"dream {cm['dream']:.1f}"
            )
        if row.get("object_one_step", {}).get("moving_steps"):
            o = row["object_one_step"]
            print(
                f"  object, one step from MuJoCo's state ({o['moving_steps']} steps moving "
                f"{o['median_true_move_mm']:.1f} mm median): gain {o['gain']:.2f}, "
                f"error {o['median_error_mm']:.2f} mm"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
