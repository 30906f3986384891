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

from worldsim.checkpoint import (
    DIGEST_KEY,
    check_digest,
    file_sha256,
    load_tensors,
    save_json,
    save_tensors,
)

FORMAT = "worldsim-policy/1"


class PolicySpaceError(ValueError):
    """A policy's observation or action space differs from the env it is run in."""


class PolicyCardError(ValueError):
    """A policy card (NAME.json) that does not describe a policy this library builds, or
    does not fit its own weights (NAME.safetensors)."""


SPACE_DTYPES = ("float32", "float64", "uint8")
POLICY_KWARGS = {  # JSON-only SB3 policy_kwargs a card may carry (nothing else is built)
    "net_arch",
    "log_std_init",
    "ortho_init",
    "normalize_images",
    "share_features_extractor",
    "n_critics",
    "use_sde",  # SB3's SAC puts it in its policy_kwargs itself
}
MAX_WIDTH = 4096
"""Widest layer a card may ask for (the weights must hold it too)."""


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A Box, or a Dict of Boxes (a pixels+proprio observation), as JSON."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(v) for k, v in space.spaces.items()}}
    if not isinstance(space, spaces.Box):
        raise ValueError(f"policy files hold Box spaces or Dicts of them only, got {space}")

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


def space_from_json(d: dict[str, Any]) -> spaces.Box | spaces.Dict:
    if d.get("type") == "Dict":
        return spaces.Dict({k: space_from_json(v) for k, v in d["spaces"].items()})

    def bound(v, sign: float):
        a = np.asarray([sign * np.inf if x is None else x for x in np.atleast_1d(v)], d["dtype"])
        return np.broadcast_to(a if a.size > 1 else a[0], d["shape"]).reshape(d["shape"])

    return spaces.Box(bound(d["low"], -1), bound(d["high"], 1), tuple(d["shape"]), d["dtype"])


def same_space(a: spaces.Space, b: spaces.Space) -> bool:
    if isinstance(a, spaces.Dict) or isinstance(b, spaces.Dict):
        return (
            isinstance(a, spaces.Dict)
            and isinstance(b, spaces.Dict)
            and list(a.spaces) == list(b.spaces)
            and all(same_space(a[k], b[k]) for k in a.spaces)
        )
    return (
        isinstance(a, spaces.Box)
        and isinstance(b, spaces.Box)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and np.array_equal(a.low, b.low)
        and np.array_equal(a.high, b.high)
    )


def memory_key(t: torch.Tensor) -> tuple:
    """Equal for two tensors that are the same memory (one module under two names)."""
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)


def distinct_tensors(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """{name: the name it shares memory with} for every tensor of `state` that is another's
    view (SB3's CNN policies hold one features extractor under three names); safetensors
    stores each tensor once, so those names are left out and put back on load."""
    first: dict[tuple, str] = {}
    aliases = {}
    for name in sorted(state):
        key = memory_key(state[name])
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


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
    weights = path.with_suffix(".safetensors")
    state = policy.state_dict()
    aliases = distinct_tensors(state)
    save_tensors(weights, {k: v for k, v in state.items() if k not in aliases}, {"format": FORMAT})
    save_json(path.with_suffix(".json"), {**card, DIGEST_KEY: file_sha256(weights)})
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
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PolicyCardError(f"{path} is not JSON ({e})") from e
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        got = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise PolicyCardError(
            f"{path} is not a worldsim policy card (format {got!r}, expected {FORMAT!r})"
        )
    return card


def validate_card(path: Path, card: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a card whose fields are not what `save_policy` writes, before anything is built:
    known algorithm and policy class, allowlisted kwargs, Box spaces of a known dtype and a
    sane size, and layer widths that its own weights hold."""

    def bad(what: str) -> PolicyCardError:
        return PolicyCardError(f"{path}: {what}")

    if not isinstance(card, dict):
        raise bad(f"a policy card is a JSON object, got {type(card).__name__}")
    algos = _algos()
    if card.get("algo") not in algos:
        raise bad(f"algo={card.get('algo')!r}: expected one of {sorted(algos)}")
    aliases = algos[card["algo"]].policy_aliases
    if card.get("policy_class") not in aliases:
        raise bad(f"policy_class={card.get('policy_class')!r}: expected one of {sorted(aliases)}")
    kwargs = card.get("policy_kwargs")
    if not isinstance(kwargs, dict) or set(kwargs) - POLICY_KWARGS:
        raise bad(
            f"policy_kwargs={kwargs!r}: expected an object with keys from {sorted(POLICY_KWARGS)}"
        )
    for key in ("observation_space", "policy_observation_space", "action_space"):
        sp = card.get(key)
        parts = sp.get("spaces") if isinstance(sp, dict) and key != "action_space" else None
        boxes = list(parts.values()) if isinstance(parts, dict) and sp["type"] == "Dict" else [sp]
        if not (boxes and len(boxes) <= 8 and all(_sane_box(b) for b in boxes)):
            raise bad(
                f"{key}={sp!r}: expected a Box (observations: or a Dict of up to 8) of at most "
                f"2^20 values, dtype in {SPACE_DTYPES}"
            )
    arch = kwargs.get("net_arch", [])
    layers = list(arch.values()) if isinstance(arch, dict) else [arch]
    widths = [w for layer in layers for w in (layer if isinstance(layer, list) else [None])]
    if not all(isinstance(w, int) and 0 < w <= MAX_WIDTH for w in widths):
        raise bad(f"net_arch={arch!r}: expected lists of layer widths between 1 and {MAX_WIDTH}")
    held = {int(t.shape[0]) for t in tensors.values() if t.ndim == 2}
    if set(widths) - held:
        raise bad(
            f"net_arch={arch!r} asks for layers of {sorted(set(widths) - held)} units that "
            "the weights do not hold"
        )


def _sane_box(sp: Any) -> bool:
    return (
        isinstance(sp, dict)
        and sp.get("type") == "Box"
        and sp.get("dtype") in SPACE_DTYPES
        and isinstance(sp.get("shape"), list)
        and all(isinstance(n, int) and 0 < n <= 1 << 16 for n in sp["shape"])
        and int(np.prod(sp["shape"])) <= 1 << 20
    )


class SB3Policy:
    """A loaded policy file: `act(obs_batch) -> action_batch`, as every ladder policy."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = Path(path).with_suffix("")
        self.name = self.path.name
        self.card = read_card(self.path)
        check_digest(self.path.with_suffix(".safetensors"))
        tensors, _ = load_tensors(self.path.with_suffix(".safetensors"))
        validate_card(self.path.with_suffix(".json"), self.card, tensors)
        cls = _algos()[self.card["algo"]].policy_aliases[self.card["policy_class"]]
        try:
            self.policy = cls(
                space_from_json(self.card["policy_observation_space"]),
                space_from_json(self.card["action_space"]),
                lambda _: 0.0,
                **self.card["policy_kwargs"],
            )
            aliases = distinct_tensors(self.policy.state_dict())
            self.policy.load_state_dict(tensors | {k: tensors[v] for k, v in aliases.items()})
        except (TypeError, ValueError, KeyError, RuntimeError) as e:
            raise PolicyCardError(
                f"{self.path}: the card does not build the network its weights fit: {e}"
            ) from e
        self.policy.to(device).set_training_mode(False)

    def check(self, observation_space, action_space) -> None:
        check_spaces(self.name, self.card, observation_space, action_space)

    def reset(self, n: int, seed: int) -> None:
        torch.manual_seed(seed)  # SB3 samples stochastic actions from torch's global RNG

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        actions, _ = self.policy.predict(obs, deterministic=deterministic)
        return np.asarray(actions, np.float32)
