"""Policies on disk: safetensors weights + a JSON card, never a pickle.

Stable-Baselines3's own `save` writes a zip of pickles. A policy file here holds only the
network's tensors (`NAME.safetensors`) and what rebuilds the network around them
(`NAME.json`: algorithm, policy class, JSON-only policy kwargs, the spaces it was trained
on, and where and how long it trained). Loading checks the spaces against the env first,
so a policy for another task or observation mode fails with both spaces named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldsim.checkpoint import load_tensors, save_json, save_tensors

FORMAT = "worldsim-policy/1"


class PolicySpaceError(ValueError):
    """A policy's observation or action space differs from the env it is run in."""


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    if not isinstance(space, spaces.Box):
        raise ValueError(f"policy files hold Box spaces only, got {space}")

    def bound(b: np.ndarray):
        values = [float(v) if np.isfinite(v) else None for v in b.ravel()]
        return values[0] if len(set(values)) == 1 else values  # a uniform bound as one number

    return {
        "type": "Box",
        "shape": list(space.shape),
        "dtype": str(space.dtype),
        "low": bound(space.low),
        "high": bound(space.high),
    }


def space_from_json(d: dict[str, Any]) -> spaces.Box:
    def bound(v, sign: float):
        a = np.asarray([sign * np.inf if x is None else x for x in np.atleast_1d(v)], d["dtype"])
        return np.broadcast_to(a if a.size > 1 else a[0], d["shape"]).reshape(d["shape"])

    return spaces.Box(bound(d["low"], -1), bound(d["high"], 1), tuple(d["shape"]), d["dtype"])


def same_space(a: spaces.Space, b: spaces.Space) -> bool:
    return (
        isinstance(a, spaces.Box)
        and isinstance(b, spaces.Box)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a.low, b.low)
        and np.array_equal(a.high, b.high)
    )


def check_spaces(name: str, card: dict, observation_space, action_space) -> None:
    """Raise PolicySpaceError naming both sides unless the env's spaces are the policy's."""
    want_obs = space_from_json(card["observation_space"])
    want_act = space_from_json(card["action_space"])
    if not (same_space(want_obs, observation_space) and same_space(want_act, action_space)):
        raise PolicySpaceError(
            f"policy {name} was trained on observation space {want_obs} and action space "
            f"{want_act}; this env has observation space {observation_space} and action "
            f"space {action_space} (task {card.get('task')!r}, obs {card.get('obs')!r})"
        )


def _algos() -> dict:
    from stable_baselines3 import PPO, SAC

    return {"ppo": PPO, "sac": SAC}


def save_policy(model, path: str | Path, card: dict[str, Any], observation_space) -> Path:
    """Write an SB3 model's policy network as PATH.safetensors + PATH.json (atomically).

    `card` adds task, obs, algo and training facts; `observation_space` is the env's (SB3
    sees images channel-first, the env gives them channel-last), kwargs come from the model."""
    path = Path(path).with_suffix("")
    policy = model.policy
    kwargs = {k: v for k, v in (model.policy_kwargs or {}).items() if _is_json(v)}
    card = {
        "format": FORMAT,
        **card,
        "policy_class": _policy_alias(model),
        "policy_kwargs": kwargs,
        "observation_space": space_to_json(observation_space),
        "policy_observation_space": space_to_json(model.observation_space),
        "action_space": space_to_json(model.action_space),
    }
    save_tensors(path.with_suffix(".safetensors"), policy.state_dict(), {"format": FORMAT})
    save_json(path.with_suffix(".json"), card)
    return path


def _policy_alias(model) -> str:
    for alias, cls in type(model).policy_aliases.items():
        if type(model.policy) is cls:
            return alias
    raise ValueError(f"{type(model.policy).__name__} is not one of SB3's named policies")


def _is_json(v) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True


def read_card(path: str | Path) -> dict[str, Any]:
    path = Path(path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"no policy card {path} (a policy is NAME.json + NAME.safetensors)")
    card = json.loads(path.read_text())
    if card.get("format") != FORMAT:
        raise ValueError(f"{path} is not a worldsim policy card (format {card.get('format')!r})")
    return card


class SB3Policy:
    """A loaded policy file: `act(obs_batch) -> action_batch`, as every ladder policy."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = Path(path).with_suffix("")
        self.name = self.path.name
        self.card = read_card(self.path)
        algo = _algos()[self.card["algo"]]
        cls = algo.policy_aliases[self.card["policy_class"]]
        self.policy = cls(
            space_from_json(self.card["policy_observation_space"]),
            space_from_json(self.card["action_space"]),
            lambda _: 0.0,
            **self.card["policy_kwargs"],
        )
        tensors, _ = load_tensors(self.path.with_suffix(".safetensors"))
        self.policy.load_state_dict(tensors)
        self.policy.to(device).set_training_mode(False)

    def check(self, observation_space, action_space) -> None:
        check_spaces(self.name, self.card, observation_space, action_space)

    def reset(self, n: int, seed: int) -> None:
        torch.manual_seed(seed)  # SB3 samples stochastic actions from torch's global RNG

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        actions, _ = self.policy.predict(obs, deterministic=deterministic)
        return np.asarray(actions, np.float32)
