"""`worldsim policy train`: Stable-Baselines3 in the dream, or in MuJoCo or the
linear joint model as baselines.

In the dream, all worlds step in one batched forward pass (`SB3VecEnv` over
`WorldVectorEnv`); in MuJoCo the same algorithm, hyperparameters and environment-step
budget run on the task's own env; `where=linear` trains in the baseline simulator made
of the fitted linear joint model alone (worldsim.policies.linear_sim, state only).
Checkpoints every `save_every` steps are kept as a policy ladder (`ladder/step_N`), the
final policy is `policy`; all are safetensors + JSON.
Each checkpoint also writes the run's optimizer state, so rerunning the same command
after a crash (or with a larger `steps`) continues from the last checkpoint.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from worldsim.checkpoint import remove_partials
from worldsim.policies.policy_file import save_policy
from worldsim.policies.train_state import load_train_state, save_train_state
from worldsim.train.harness import trim_csv_log

WHERE = ("dream", "mujoco", "linear")
ALGOS = ("ppo", "sac")
OBS = ("state", "pixels", "pixels+proprio", "proprio")
STATE = "train_state.safetensors"
"""Networks, optimizers and step count of the last checkpoint: a rerun resumes from it."""
RUN_KEYS = ("where", "obs", "n_envs", "net_arch", "seed", "reward_source", "context", "checkpoint")


def make_train_env(cfg: DictConfig):
    """The SB3 VecEnv a policy trains on: n_envs dream worlds or MuJoCo envs."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    if cfg.where == "dream":
        from worldsim.envs.sb3 import SB3VecEnv
        from worldsim.envs.vector_env import WorldVectorEnv

        env = SB3VecEnv(
            WorldVectorEnv(
                cfg.task.name,
                num_envs=cfg.n_envs,
                obs_mode=cfg.obs,
                checkpoint=cfg.checkpoint,
                context=cfg.context,
                device=cfg.device,
                reward_source=cfg.reward_source,
                max_episode_steps=int(cfg.task.max_episode_steps),  # task.max_episode_steps=
            )
        )
        env.seed(cfg.seed)
        return VecMonitor(env), env.env.single_observation_space
    if cfg.where == "linear":
        from worldsim.envs.sb3 import SB3VecEnv
        from worldsim.policies.linear_sim import LinearModelVectorEnv

        if cfg.obs != "state":
            raise ValueError("where=linear simulates joints only: it has no pixels (obs=state)")
        base = LinearModelVectorEnv(
            cfg.task.name,
            num_envs=cfg.n_envs,
            checkpoint=cfg.checkpoint,
            context=cfg.context,
            max_episode_steps=int(cfg.task.max_episode_steps),
        )
        env = SB3VecEnv(base)
        env.seed(cfg.seed)
        return VecMonitor(env), base.single_observation_space
    import gymnasium as gym

    from worldsim.policies.mujoco_env import MujocoTaskEnv

    def one():
        if cfg.obs != "state":
            return MujocoTaskEnv(cfg.task, obs=cfg.obs)
        kwargs = dict(cfg.task.get("env_kwargs") or {})
        env = gym.make(cfg.task.env_id, max_episode_steps=int(cfg.task.max_episode_steps), **kwargs)
        return gym.wrappers.DtypeObservation(env, np.float32)  # as the dream's, so policies move

    env = DummyVecEnv([one for _ in range(cfg.n_envs)])
    env.seed(cfg.seed)
    return VecMonitor(env), env.observation_space


class LadderCallback(BaseCallback):
    """Progress bar with the mean episode return, and a policy file every `every` steps."""

    def __init__(
        self,
        folder: Path,
        every: int,
        card: dict,
        obs_space,
        total: int,
        show: bool,
        run: dict,
        done: int = 0,
    ):
        super().__init__()
        self.folder, self.every, self.card, self.obs_space = folder, every, card, obs_space
        self.run = run
        self.next = (done // every + 1) * every if every > 0 else None
        self.saved: list[str] = []
        self.bar = tqdm(
            total=total, initial=done, desc=f"policy train ({card['where']})", disable=not show
        )

    def _on_step(self) -> bool:
        self.bar.n = self.model.num_timesteps
        returns = [ep["r"] for ep in self.model.ep_info_buffer or []]  # None: no step run yet
        if returns:
            self.bar.set_postfix(ep_return=f"{np.mean(returns):.2f}", refresh=False)
        self.bar.refresh()
        if self.next is not None and self.model.num_timesteps >= self.next:
            self.save(self.folder / "ladder" / f"step_{self.model.num_timesteps:08d}")
            self.next += self.every
        return True

    def save(self, path: Path) -> None:
        card = {**self.card, "steps": int(self.model.num_timesteps)}
        returns = [ep["r"] for ep in self.model.ep_info_buffer or []]  # None: no step run yet
        card["train_mean_return"] = float(np.mean(returns)) if returns else None
        save_policy(self.model, path, card, self.obs_space)
        save_train_state(self.model, self.folder / STATE, self.run)  # resume from here
        self.saved.append(str(path))


def trim_logs(logs: Path, done: int) -> None:
    """Drop the CSV log rows an interrupted run wrote past its last checkpoint (`done`
    steps): the resumed run logs those steps again, in logs/from_<done>."""
    for log in logs.rglob("progress.csv") if logs.is_dir() else []:
        trim_csv_log(log, "time/total_timesteps", done)


def train_policy(cfg: DictConfig, progress: bool = True) -> dict:
    if cfg.where not in WHERE:
        raise ValueError(f"unknown where {cfg.where!r}; choose from {WHERE}")
    if cfg.algo.name not in ALGOS:
        raise ValueError(f"unknown algo {cfg.algo.name!r}; choose from {ALGOS}")
    if cfg.obs not in OBS:
        raise ValueError(f"unknown obs {cfg.obs!r}; a policy reads one of {OBS}")
    if cfg.steps < 1 or cfg.n_envs < 1:
        raise ValueError(f"steps and n_envs must be >= 1, got {cfg.steps}, {cfg.n_envs}")
    import torch
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.logger import configure

    torch.manual_seed(cfg.seed)
    folder = Path(cfg.out_dir)
    remove_partials(folder)  # writes a crash cut short
    env, obs_space = make_train_env(cfg)
    algo = {"ppo": PPO, "sac": SAC}[cfg.algo.name]
    kwargs = OmegaConf.to_container(cfg.algo.kwargs, resolve=True)
    policy_kwargs = {"net_arch": list(cfg.net_arch)}
    model = algo(
        {"pixels": "CnnPolicy", "pixels+proprio": "MultiInputPolicy"}.get(cfg.obs, "MlpPolicy"),
        env,
        seed=cfg.seed,
        device=cfg.device,
        policy_kwargs=policy_kwargs,
        verbose=0,
        **kwargs,
    )
    run = {"task": cfg.task.name, "algo": OmegaConf.to_container(cfg.algo, resolve=True)}
    run |= {k: OmegaConf.to_container(cfg, resolve=True)[k] for k in RUN_KEYS}
    done = load_train_state(model, folder / STATE, run) if (folder / STATE).is_file() else 0
    trim_logs(folder / "logs", done)
    formats = ["csv"] + (["tensorboard"] if importlib.util.find_spec("tensorboard") else [])
    logs = folder / "logs" if done == 0 else folder / "logs" / f"from_{done}"
    model.set_logger(configure(str(logs), formats))
    card = {
        "task": cfg.task.name,
        "obs": cfg.obs,
        "algo": cfg.algo.name,
        "where": cfg.where,
        "seed": int(cfg.seed),
        "budget": int(cfg.steps),
        "reward_source": {"dream": cfg.reward_source}.get(cfg.where, cfg.where),
    }
    ladder = LadderCallback(folder, cfg.save_every, card, obs_space, cfg.steps, progress, run, done)
    ladder.init_callback(model)
    start = time.perf_counter()
    try:
        if done < cfg.steps:
            model.learn(cfg.steps - done, callback=ladder, reset_num_timesteps=False)
    finally:
        ladder.bar.close()
        env.close()
    # Wall time of this process's share of the training (a resumed run counts only its
    # own part; `resumed_from` says where it began).
    ladder.card |= {"train_seconds": round(time.perf_counter() - start, 1), "resumed_from": done}
    ladder.save(folder / "policy")
    OmegaConf.save(cfg, folder / "config.yaml")
    return {
        "policy": str(folder / "policy"),
        "ladder": ladder.saved[:-1],
        "steps": model.num_timesteps,
        "resumed_from": done,
    }
