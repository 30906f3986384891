"""Gymnasium ids `worldsim/<Task>-v0` for every task with a shipped world model.

Registration runs on `import worldsim` and imports nothing heavy: entry points
are strings, and the task's episode length is read from its YAML file.
"""

from __future__ import annotations

from importlib import resources

import gymnasium as gym
from omegaconf import OmegaConf


def env_id(task: str) -> str:
    return "worldsim/" + "".join(p.capitalize() for p in task.split("_")) + "-v0"


def shipped_tasks() -> list[str]:
    root = resources.files("worldsim") / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        d.name for d in root.iterdir() if d.is_dir() and (d / "dynamics.safetensors").is_file()
    )


def register_envs() -> list[str]:
    ids = []
    for task in shipped_tasks():
        name = env_id(task)
        if name in gym.registry:
            continue
        yaml = resources.files("worldsim.configs") / "task" / f"{task}.yaml"
        steps = int(OmegaConf.load(str(yaml)).max_episode_steps)
        gym.register(
            name,
            entry_point="worldsim.envs.env:WorldEnv",
            vector_entry_point="worldsim.envs.vector_env:WorldVectorEnv",
            max_episode_steps=steps,
            kwargs={"task": task},
        )
        ids.append(name)
    return ids
