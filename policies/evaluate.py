"""Run a policy in MuJoCo and in the dream from matched initial states.

Episode i starts from MuJoCo reset seed `seed + i` in both places: MuJoCo after the
dream's K-1 zero-action context steps (`MujocoTaskEnv(warmup=K-1)`), the dream from the
K real frames of that same reset (`spawn_seeds`). Dream episodes run batched, all worlds
in one forward pass; the dream's return is the task's reward formula on the world
model's own state (`reward_source=state`) unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.checkpoint import save_json
from worldsim.eval.metrics import side_by_side
from worldsim.policies.mujoco_env import MujocoTaskEnv
from worldsim.policies.zoo import batch_of_one

WHERE = ("mujoco", "dream", "both")
CLOSER_M = 0.01
"""An episode brought its success pair closer where the last distance is this much (m)
below the first. Measured on Pusher (seeds 1000-1031): zero action leaves the puck exactly
where it starts, a uniform random arm moved it 0.4 mm at most."""


def rollout_mujoco(policy, task, seeds, obs="state", context=4, deterministic=True, videos=0):
    """Episodes in MuJoCo, one after another: {'return', 'success', 'frames'} lists and,
    for a task with a success pair, 'pair_distance': its (first, last) distance in m per
    episode (whether a policy moved Pusher's object toward the goal, not only whether it
    got there)."""
    env = MujocoTaskEnv(task, obs=obs, warmup=context - 1)
    policy.check(env.observation_space, env.action_space)
    out = {"return": [], "success": [], "frames": [], "pair_distance": []}
    try:
        for i, seed in enumerate(seeds):
            policy.reset(1, seed)
            o, _ = env.reset(seed=int(seed))
            first = env.sim.pair_distance()
            frames = [env.render_frame()] if i < videos else None
            total, done, info = 0.0, False, {}
            while not done:
                o, r, term, trunc, info = env.step(policy.act(batch_of_one(o), deterministic)[0])
                total += r
                done = term or trunc
                if frames is not None:
                    frames.append(env.render_frame())
            out["return"].append(total)
            out["success"].append(bool(info.get("is_success", False)))
            if first is not None:
                out["pair_distance"].append((first, env.sim.pair_distance()))
            if frames is not None:
                out["frames"].append(np.stack(frames))
    finally:
        env.close()
    return out


def rollout_dream(
    policy,
    task,
    seeds,
    obs="state",
    context=4,
    deterministic=True,
    videos=0,
    checkpoint=None,
    batch=32,
    reward_source="state",
    device="cpu",
):
    """Episodes in the dream, `batch` worlds at a time: {'return', 'success', 'frames'}."""
    from worldsim.envs.vector_env import WorldVectorEnv

    n = min(batch, len(seeds))
    env = WorldVectorEnv(
        task.name,
        num_envs=n,
        obs_mode=obs,
        checkpoint=checkpoint,
        context=context,
        device=device,
        render_mode="rgb_array" if videos else None,
        reward_source=reward_source,
        max_episode_steps=int(task.max_episode_steps),  # as in MuJoCo
    )
    return rollout_vector(env, policy, seeds, deterministic, videos)


def rollout_linear(policy, task, seeds, obs="state", context=4, deterministic=True, videos=0,
                   checkpoint=None, batch=32, **_):  # fmt: skip
    """Episodes in the baseline simulator made of the linear joint model alone."""
    from worldsim.policies.linear_sim import LinearModelVectorEnv

    if obs != "state":
        raise ValueError("the linear-model baseline simulates state observations only")
    env = LinearModelVectorEnv(
        task.name, min(batch, len(seeds)), checkpoint, context, int(task.max_episode_steps)
    )
    return rollout_vector(env, policy, seeds, deterministic, 0)


def rollout_vector(env, policy, seeds, deterministic=True, videos=0) -> dict:
    """Episodes of a vector env started from MuJoCo reset seeds (`spawn_seeds`), all its
    worlds at a time: {'return', 'success', 'frames'}; closes the env. Each world's first
    episode counts: a world that terminates early (InvertedPendulum's pole past 0.2 rad)
    stops adding reward there, though autoreset starts it again. A world succeeds where
    the env says so at its last step (`is_success`) or, for a task that succeeds by
    lasting (`success_min_steps`), where its episode lasted that long."""
    seeds = [int(s) for s in seeds]
    n = env.num_envs
    policy.check(env.single_observation_space, env.single_action_space)
    out = {"return": [], "success": [], "frames": []}
    try:
        for start in range(0, len(seeds), n):
            chunk = seeds[start : start + n]
            padded = chunk + [chunk[-1]] * (n - len(chunk))  # the last batch fills up
            policy.reset(n, chunk[0])
            o, _ = env.reset(seed=chunk[0], options={"spawn_seeds": padded})
            keep = max(0, min(videos - start, len(chunk)))
            frames = [np.asarray(env.render())[:keep]] if keep else None
            total, length = np.zeros(n), np.zeros(n, int)
            success, running = np.zeros(n, bool), np.ones(n, bool)
            for _ in range(env.max_episode_steps):
                o, r, terminated, truncated, info = env.step(policy.act(o, deterministic))
                total += np.where(running, r, 0.0)
                length += running
                success = np.where(running, info.get("is_success", success), success)
                running &= ~(terminated | truncated)
                if frames is not None:
                    frames.append(np.asarray(env.render())[:keep])
            lasting = int(env.task.get("success_min_steps") or 0)
            if "is_success" not in info and lasting:
                success = length >= lasting
            out["return"] += total[: len(chunk)].tolist()
            out["success"] += success[: len(chunk)].astype(bool).tolist()
            if frames is not None:
                out["frames"] += list(np.stack(frames, axis=1))
    finally:
        env.close()
    return out


def rollout(where: str, policy, cfg: DictConfig, seeds, **kw) -> dict:
    """Episodes in MuJoCo, the dream or the linear-model baseline, with the dream
    settings of an eval config."""
    if where == "mujoco":
        return rollout_mujoco(policy, cfg.task, seeds, **kw)
    return {"dream": rollout_dream, "linear": rollout_linear}[where](
        policy,
        cfg.task,
        seeds,
        checkpoint=cfg.checkpoint,
        batch=cfg.batch,
        reward_source=cfg.reward_source,
        device=cfg.device,
        **kw,
    )


def summarise(result: dict, seeds) -> dict:
    r = np.asarray(result["return"], np.float64)
    out = {
        "mean_return": float(r.mean()) if len(r) else float("nan"),
        "std_return": float(r.std()) if len(r) else float("nan"),
        "success_rate": float(np.mean(result["success"])) if len(r) else float("nan"),
        "episodes": [
            {"seed": int(s), "return": float(ret), "success": bool(ok)}
            for s, ret, ok in zip(seeds, result["return"], result["success"], strict=False)
        ],
    }
    pairs = result.get("pair_distance") or []
    if pairs:
        first, last = np.asarray(pairs, np.float64).T
        out["pair_distance"] = {
            "first_m": float(first.mean()),
            "last_m": float(last.mean()),
            "closer_fraction": float(np.mean(last < first - CLOSER_M)),
        }
        for ep, a, b in zip(out["episodes"], first, last, strict=False):
            ep["pair_distance_m"] = [float(a), float(b)]
    return out


@contextmanager
def kept(path: Path, report: dict):
    """Write `report` however the block ends: `complete`, or `interrupted` with the part
    done so far (the block itself rewrites it as `partial` after each step)."""
    try:
        yield
        report["status"] = "complete"
    except KeyboardInterrupt:
        report["status"] = "interrupted"
        raise
    finally:
        save_json(path, report)


def run_folder(out_dir: str | None, root: str, name: str) -> Path:
    """`out_dir`, or a new timestamped folder under `root`."""
    if out_dir:
        folder = Path(out_dir)
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(root) / f"{stamp}-{name.replace('/', '_').replace('@', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_videos(folder: Path, runs: dict, count: int, fps: int = 25) -> list[str]:
    real = runs.get("mujoco", {}).get("frames", [])
    dream = runs.get("dream", {}).get("frames", [])
    paths = []
    for i in range(count):
        r = real[i] if i < len(real) else None
        d = dream[i] if i < len(dream) else None
        if r is None and d is None:
            break
        frames = (
            [side_by_side(a, b, 4) for a, b in zip(r, d, strict=False)]
            if r is not None and d is not None
            else [side_by_side(None, x, 4) for x in (r if r is not None else d)]
        )
        path = folder / f"episode_{i}.mp4"
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
        paths.append(path.name)
    return paths


def eval_policy(cfg: DictConfig, progress: bool = True) -> dict:
    """`worldsim policy eval`: eval_info.json (+ videos) in a run folder; partial results
    are written after every block and marked, so an interrupted evaluation keeps them."""
    from worldsim.policies.zoo import make_policy

    if cfg.where not in WHERE:
        raise ValueError(f"unknown where {cfg.where!r}; choose from {WHERE}")
    places = ["mujoco", "dream"] if cfg.where == "both" else [cfg.where]
    modes = [
        m for m, on in (("deterministic", cfg.deterministic), ("stochastic", cfg.stochastic)) if on
    ]
    if not modes:
        raise ValueError("deterministic=false and stochastic=false leave nothing to evaluate")
    policy, obs = make_policy(cfg.policy, cfg.task, cfg.obs, cfg.device)
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    folder = run_folder(cfg.out_dir, "runs/policy_eval", policy.name)
    info = {
        "task": cfg.task.name,
        "policy": cfg.policy,
        "obs": obs,
        "where": places,
        "seeds": seeds,
        "context": cfg.context,
        "reward_source_dream": cfg.reward_source,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "status": "partial",
        "results": {},
    }
    frames: dict = {}
    jobs = [(w, m) for m in modes for w in places]
    with kept(folder / "eval_info.json", info):
        for where, mode in tqdm(jobs, desc="policy eval", disable=not progress):
            kw = dict(obs=obs, context=cfg.context, deterministic=mode == "deterministic")
            kw["videos"] = cfg.videos if mode == modes[0] else 0
            res = rollout(where, policy, cfg, seeds, **kw)
            if kw["videos"]:
                frames[where] = res
            info["results"].setdefault(where, {})[mode] = summarise(res, seeds)
            save_json(folder / "eval_info.json", info)
        info["videos"] = _write_videos(folder, frames, cfg.videos)
    info["folder"] = str(folder)
    return info


def distance_words(d: dict | None) -> str:
    if not d:
        return ""
    return (
        f"  success-pair distance {100 * d['first_m']:.1f} -> {100 * d['last_m']:.1f} cm"
        f" ({d['closer_fraction']:.0%} of episodes >= {100 * CLOSER_M:.0f} cm closer)"
    )


def brief(info: dict) -> str:
    """One line per place and mode."""
    lines = []
    for where, modes in info["results"].items():
        for mode, s in modes.items():
            lines.append(
                f"{where:6s} {mode:13s} return {s['mean_return']:8.2f} ± {s['std_return']:.2f}"
                f"  success {s['success_rate']:.0%}" + distance_words(s.get("pair_distance"))
            )
    return (
        "\n".join(lines + [f"wrote {info.get('folder', '')}/eval_info.json"])
        + "\n"
        + json.dumps({"status": info["status"]})
    )
