"""A policy-training run's resumable state as safetensors + JSON (never a pickle).

Stable-Baselines3 keeps its networks and optimizers as nested state dicts (and SAC its
entropy coefficient as a bare tensor). Their tensors go into the safetensors file under
path-like keys; everything else (step counts, Adam's hyperparameters, the nesting, and
integer dict keys, which JSON alone would turn into strings) goes into a JSON skeleton in
the file's header. SAC's replay buffer is not kept: a resumed SAC run refills it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from worldsim.checkpoint import load_tensors, save_tensors
from worldsim.policies.policy_file import memory_key

EXTRA_TENSORS = ("log_ent_coef",)
"""Algorithm attributes that are plain tensors outside any state dict (SAC)."""


def flatten(tree: Any, tensors: dict[str, torch.Tensor], path: str = "", seen=None) -> Any:
    """The JSON skeleton of `tree`; its tensors are moved into `tensors` by path, a tensor
    met again under another path (SB3's shared CNN extractor) stored once and pointed to."""
    seen = {} if seen is None else seen
    if isinstance(tree, torch.Tensor):
        key = memory_key(tree)
        if key not in seen:
            seen[key] = path
            tensors[path] = tree.detach().cpu().contiguous()
        return {"tensor": seen[key]}
    if isinstance(tree, dict):
        return {"dict": [[k, flatten(v, tensors, f"{path}/{k}", seen)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return {"list": [flatten(v, tensors, f"{path}/{i}", seen) for i, v in enumerate(tree)]}
    return {"value": tree}


def unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if "tensor" in node:
        return tensors[node["tensor"]]
    if "dict" in node:
        return {k: unflatten(v, tensors) for k, v in node["dict"]}
    if "list" in node:
        return [unflatten(v, tensors) for v in node["list"]]
    return node["value"]


def save_train_state(model, path: str | Path, run: dict[str, Any]) -> None:
    """Networks, optimizers and the step count of an SB3 model; `run` names the settings
    a resumed run must share."""
    state = {"parameters": model.get_parameters()}
    state.update({k: getattr(model, k) for k in EXTRA_TENSORS if hasattr(model, k)})
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    meta = {"skeleton": skeleton, "num_timesteps": int(model.num_timesteps), "run": run}
    save_tensors(path, tensors, meta)


def load_train_state(model, path: str | Path, run: dict[str, Any]) -> int:
    """Restore a saved state into a freshly built model; returns its step count. Refuses a
    state from a run with other settings, naming them."""
    tensors, meta = load_tensors(path)
    differ = {k: (meta["run"].get(k), v) for k, v in run.items() if meta["run"].get(k) != v}
    if differ:
        raise ValueError(
            f"{path} is from a run with other settings (saved, now): {differ}; use another "
            "out_dir or delete the file to start over"
        )
    state = unflatten(meta["skeleton"], tensors)
    model.set_parameters(state["parameters"], exact_match=True, device=model.device)
    for k in EXTRA_TENSORS:
        if k in state:
            with torch.no_grad():
                getattr(model, k).copy_(state[k])
    model.num_timesteps = int(meta["num_timesteps"])
    return model.num_timesteps
