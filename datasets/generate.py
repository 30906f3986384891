"""Parallel, resumable, deterministic generation of grounding episodes.

Worker processes each own a MuJoCo simulator and renderer and return whole
episodes; the parent is the only writer and commits episodes in index order, so
the same seed gives the same store whatever the number of workers, and a killed
run leaves only whole committed episodes behind.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import worldsim
from worldsim.datasets.policies import EXPERTS, POLICIES, check_agents, make_policy
from worldsim.datasets.store import EpisodeStore
from worldsim.mujoco_sim import SEG_CLASSES, MujocoSim

POLICY_KINDS = ("random", "noise", "expert", "keys", "agent")
"""Values of meta/episode_policy (the kind that drove each episode of a mix)."""

# Settings that may differ between a run and its resumption.
RESUMABLE_KEYS = ("episodes", "workers")
# data settings added after stores were first written, with the value that reproduces
# a store written before they existed (it has no such key)
LEGACY_DATA_DEFAULTS = {
    "keys_fraction": 0.0,
    "expert_state_noise": 0.0,
    "agents": [],
    "agent_noise": 0.1,
    "expert_targets": 0.0,
}
READING_TASK_KEYS = (
    "observation",
    "proprioception",
    "questions",
    "keyboard",
    "reward",
    "frame_readout",
    "free_rollout_policy",
    "transition_horizon",
)
"""Task settings that say how stored episodes are read (observations, questions, keys, the
reward formula, evaluation and training choices), never how they are generated: a store
stays resumable when they change (Pusher's encoders were added after its data)."""


def collect_episode(sim: MujocoSim, data_cfg, index: int) -> tuple[dict[str, np.ndarray], int, int]:
    """Run episode `index` (seed = data.seed + index); returns rows, seed, policy kind."""
    seed = int(data_cfg.seed) + index
    rng = np.random.default_rng(seed)
    obs = sim.reset(seed=seed)
    policy = make_policy(data_cfg.policy, sim, data_cfg, rng)
    frames, segs, states, actions, rewards, terms, truncs = [], [], [], [], [], [], []
    max_steps = int(sim.task.max_episode_steps)
    past = int(sim.task.get("record_past_termination") or 0)
    failed_at = None
    for t in range(max_steps):
        action = policy.act()
        frames.append(obs.frame)
        segs.append(obs.seg)
        states.append(obs.state)
        actions.append(action)
        obs, reward, terminated, truncated, _ = sim.step(action)
        if terminated and failed_at is None:
            failed_at = t
        truncated = truncated or t == max_steps - 1
        # an episode in which the task failed ends terminated, `past` frames on or at the limit
        terminated = failed_at is not None and (t >= failed_at + past or truncated)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated and not terminated)
        if terminated or truncated:
            break
    # final observation row: no transition starts here (see ROW_ALIGNMENT)
    frames.append(obs.frame)
    segs.append(obs.seg)
    states.append(obs.state)
    actions.append(np.zeros_like(actions[0]))
    rewards.append(0.0)
    terms.append(False)
    truncs.append(False)
    rows = {
        "frame": np.stack(frames),
        "seg": np.stack(segs),
        "action": np.stack(actions).astype(np.float32),
        "reward": np.asarray(rewards, np.float32),
        "terminated": np.asarray(terms),
        "truncated": np.asarray(truncs),
    }
    for key in states[0]:
        rows[key] = np.stack([s[key] for s in states])
    return rows, seed, POLICY_KINDS.index(policy.name)


# -- worker side ----------------------------------------------------------------
_worker: dict[str, Any] = {}


def _init_worker(task_yaml: str, data_yaml: str) -> None:
    torch.set_num_threads(1)  # an agent's network in each of the workers sharing the cores
    _worker["sim"] = MujocoSim(OmegaConf.create(task_yaml))
    _worker["data"] = OmegaConf.create(data_yaml)


def _run(index: int):
    return index, *collect_episode(_worker["sim"], _worker["data"], index)


# -- writer side ----------------------------------------------------------------
def store_attrs(cfg: DictConfig, sim: MujocoSim) -> dict[str, Any]:
    return {
        "task": cfg.task.name,
        "env_id": cfg.task.env_id,
        "fps": float(sim.unwrapped.metadata.get("render_fps", 0)),
        "segmentation_classes": list(SEG_CLASSES),
        "policy_kinds": list(POLICY_KINDS),
        "generator": {
            "worldsim_version": worldsim.__version__,
            "task": OmegaConf.to_container(cfg.task, resolve=True),
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "seeds": f"episode i: reset seed and policy RNG seed = {cfg.data.seed} + i",
        },
    }


def default_out(cfg: DictConfig) -> Path:
    return Path("data") / f"{cfg.task.name}.zarr"


def open_for_generation(cfg: DictConfig, out: Path, sim: MujocoSim) -> EpisodeStore:
    if out.exists():
        if not (cfg.resume or cfg.append):
            raise FileExistsError(
                f"{out} already exists. Add resume=true to continue it up to "
                f"episodes={cfg.data.episodes} (append=true: with other data settings), "
                "or choose another out=PATH."
            )
        store = EpisodeStore.open(out, mode="r+")
        _check_same_generator(store, cfg)
        dropped = store.truncate_uncommitted()
        if dropped:
            print(f"resume: dropped {dropped} uncommitted rows of an interrupted episode")
        if cfg.append and store.num_episodes >= int(cfg.data.episodes):
            raise ValueError(
                f"append=true: {out} already holds {store.num_episodes} episodes; set "
                f"data.episodes above that (the total to reach), got {cfg.data.episodes}"
            )
        if store.num_episodes < int(cfg.data.episodes):
            # generator.data keeps the first run's settings; each resume that adds episodes
            # is logged beside them (an append with its own data settings). A complete
            # store is left as it is: the log is part of its content digest, and a logged
            # no-op voided every cache made from it (a rerun of
            # scripts/train_world_model.sh re-encoded all its latents)
            gen = dict(store.attrs["generator"])
            entry = {
                "from_episodes": store.num_episodes,
                "episodes": int(cfg.data.episodes),
                "workers": int(cfg.data.workers),
            }
            if cfg.append:
                entry["data"] = OmegaConf.to_container(cfg.data, resolve=True)
            gen["resumes"] = [*gen.get("resumes", []), entry]
            kinds = list(store.attrs["policy_kinds"])  # a store from before a kind existed
            if kinds != list(POLICY_KINDS[: len(kinds)]):
                raise ValueError(f"{out}: policy_kinds {kinds} are not a prefix of {POLICY_KINDS}")
            store.set_attrs({"generator": gen, "policy_kinds": list(POLICY_KINDS)})
        return store
    out.parent.mkdir(parents=True, exist_ok=True)
    low, high = sim.action_space.low, sim.action_space.high
    return EpisodeStore.create(
        out,
        frame_shape=(cfg.task.image_size, cfg.task.image_size, 3),
        action_low=low,
        action_high=high,
        state_layout=sim.state_layout(),
        attrs=store_attrs(cfg, sim),
        chunk_frames=int(cfg.data.chunk_frames),
    )


def _check_same_generator(store: EpisodeStore, cfg: DictConfig) -> None:
    old = store.attrs["generator"]
    new_task = OmegaConf.to_container(cfg.task, resolve=True)
    new_data = OmegaConf.to_container(cfg.data, resolve=True)
    # task settings added to worldsim after the store was written are not in its record
    # and did not exist when it was generated: compare the ones it has
    keys = (set(new_task) & set(old["task"])) - set(READING_TASK_KEYS)
    differ = sorted(k for k in keys if old["task"][k] != new_task[k])
    if differ:
        raise ValueError(
            f"{store.path} was generated for task {old['task']['name']!r} with other task "
            f"settings {differ}; resume with the same task settings or choose another out=PATH"
        )
    if cfg.append:  # other data settings by request; each append logs its own
        return
    stored = {**LEGACY_DATA_DEFAULTS, **old["data"]}
    diff = {
        k: (stored.get(k), v)
        for k, v in new_data.items()
        if k not in RESUMABLE_KEYS and stored.get(k) != v
    }
    if diff:
        raise ValueError(
            f"{store.path} was generated with other data settings {diff} (stored, requested); "
            f"only {RESUMABLE_KEYS} may change on resume"
        )


def generate(cfg: DictConfig, progress: bool = True) -> EpisodeStore:
    """Collect `cfg.data.episodes` episodes into `cfg.out` (created or resumed)."""
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    if cfg.data.policy not in POLICIES:
        raise ValueError(
            f"unknown collection policy {cfg.data.policy!r}; choose one of {list(POLICIES)}"
        )
    if cfg.task.expert not in EXPERTS:
        raise ValueError(
            f"task {cfg.task.name!r}: unknown expert {cfg.task.expert!r}; known: {sorted(EXPERTS)}"
        )
    if int(cfg.data.episodes) < 1:
        raise ValueError(f"episodes must be >= 1, got {cfg.data.episodes}")
    workers = int(cfg.data.workers)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    sim = MujocoSim(cfg.task)  # validates the task and gives the store's layout
    try:
        if cfg.data.policy == "agent":  # before any worker starts or the store is touched
            check_agents(sim, cfg.data.agents)
        store = open_for_generation(cfg, out, sim)
    except BaseException:
        sim.close()
        raise
    todo = range(store.num_episodes, int(cfg.data.episodes))
    bar = tqdm(total=len(todo), unit="ep", desc=f"{cfg.task.name} -> {out}", disable=not progress)
    episodes, rows_before = store.num_episodes, store.num_rows
    frames, t0 = 0, time.perf_counter()

    def commit(index: int, rows, seed: int, kind: int) -> None:
        # counts kept here rather than read back: each store.num_* is a disk read, and the
        # writer shares the CPUs with the workers
        nonlocal episodes, frames
        assert index == episodes, (index, episodes)
        store.add_episode(rows, seed=seed, policy=kind)
        episodes += 1
        frames += len(rows["frame"])
        if progress:
            fps = frames / (time.perf_counter() - t0)
            bar.set_postfix(frames=rows_before + frames, fps=f"{fps:.0f}", refresh=False)
            bar.update()

    try:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                commit(i, *collect_episode(sim, cfg.data, i))
        else:
            ctx = mp.get_context("spawn")  # fresh GL state per worker
            init = (OmegaConf.to_yaml(cfg.task), OmegaConf.to_yaml(cfg.data))
            with ctx.Pool(workers, initializer=_init_worker, initargs=init) as pool:
                for result in pool.imap(_run, todo, chunksize=1):
                    commit(*result)
    finally:
        bar.close()
        sim.close()
    return store
