"""Checkpoints: safetensors weights with their JSON config inside and beside them.

Loading never unpickles: tensors come from safetensors, everything else is JSON.
Every write goes to a temporary file in the same folder and is renamed into
place, so a crash never leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file


class CheckpointError(ValueError):
    """A checkpoint is missing, of another kind, or does not match the expected config."""


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# safetensors (>= 0.8, Rust) writes through its own temporary file beside the target,
# named by Rust's tempfile crate: ".tmp" and six letters or digits
RUST_TEMPFILE = re.compile(r"\.tmp[A-Za-z0-9]{6}")


def remove_partials(folder: str | Path) -> int:
    """Delete the temporary files of writes a crash cut short (`.NAME.*.partial`, and
    safetensors' own `.tmpXXXXXX`; never a final name) under folder; returns how many. Run
    folders call it when they resume."""
    if not Path(folder).is_dir():
        return 0
    stale = [
        p
        for p in Path(folder).rglob(".*")
        if p.is_file() and (p.name.endswith(".partial") or RUST_TEMPFILE.fullmatch(p.name))
    ]
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors + JSON metadata atomically (metadata lives in the safetensors header)."""
    path = Path(path)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {k: json.dumps(v) for k, v in meta.items()}
    _atomic(path, lambda tmp: save_file(flat, tmp, metadata=header))


def load_header(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors file, without reading its tensors."""
    return _read(path, tensors=False)[1]


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return _read(path, tensors=True)


def _read(path: str | Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        weights = load_file(str(path)) if tensors else {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a valid safetensors file: {e}") from e
    meta = {}
    for k, v in header.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: header entry {k!r} is not JSON ({e})") from e
    return weights, meta


def save_json(path: str | Path, obj: Any) -> None:
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    _atomic(path, write)


def save_model(
    path: str | Path,
    model: torch.nn.Module,
    kind: str,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """`<path>` (safetensors) + `<path>.json` beside it for people to read, which also
    records the weights file's sha256 (`load_model` checks it)."""
    meta = {"kind": kind, "config": config, **(extra or {})}
    save_tensors(path, model.state_dict(), meta)
    save_json(Path(path).with_suffix(".json"), {**meta, DIGEST_KEY: file_sha256(path)})


DIGEST_KEY = "file_sha256"
"""The sidecar JSON's record of its weights file's sha256."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_digest(path: str | Path, sidecar: str | Path | None = None) -> None:
    """Refuse a weights file whose sha256 differs from the one its sidecar JSON recorded
    (corrupted, or changed without the JSON); files without a recorded digest pass."""
    sidecar = Path(sidecar) if sidecar is not None else Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return
    try:
        want = json.loads(sidecar.read_text()).get(DIGEST_KEY)
    except (json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{sidecar} is not the JSON object saved beside {path}") from e
    if want is not None and want != file_sha256(path):
        raise CheckpointError(
            f"{path}: its sha256 differs from the one {sidecar.name} recorded: the file was "
            "corrupted or changed after it was saved"
        )


def save_half(src: str | Path, dst: str | Path) -> dict[str, int]:
    """Copy a weights file (and its JSON sidecar) with every float32 matrix stored as
    float16: the file to ship halves, and loading casts back to the model's float32
    (`load_state_dict` copies across dtypes). Vectors (biases, norms, normalisation
    statistics) stay float32: they are a sliver of the bytes and carry the state's scale.
    Returns {"bytes_before", "bytes_after"}."""
    tensors, meta = load_tensors(src)
    half = {
        k: v.half() if v.dtype == torch.float32 and v.dim() >= 2 else v for k, v in tensors.items()
    }
    save_tensors(dst, half, {**meta, "stored_dtype": "float16 matrices"})
    sidecar = Path(src).with_suffix(".json")
    side = json.loads(sidecar.read_text()) if sidecar.is_file() else dict(meta)
    side.update({"stored_dtype": "float16 matrices", DIGEST_KEY: file_sha256(dst)})
    save_json(Path(dst).with_suffix(".json"), side)
    return {"bytes_before": Path(src).stat().st_size, "bytes_after": Path(dst).stat().st_size}


def load_model(path: str | Path, kind: str, build, expect: dict[str, Any] | None = None):
    """Build a model from the checkpoint's own config and load its weights.

    `build(config) -> nn.Module`; `expect` lists config entries that must match
    (e.g. task and image size), named in the error when they do not.
    """
    check_digest(path)
    tensors, meta = load_tensors(path)
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: the header's 'config' must be a JSON object (the model's settings), "
            f"got {type(config).__name__}"
        )
    for key, want in (expect or {}).items():
        if config.get(key) != want:
            raise CheckpointError(
                f"{path}: checkpoint {key}={config.get(key)!r} but this run needs {key}={want!r}"
            )
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(
                f"{path}: tensor {name!r} holds non-finite values (NaN or inf): the file is "
                "corrupted or came from a diverged run"
            )
    try:
        model = build(config)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except (TypeError, ValueError, RuntimeError) as e:  # a config that builds another shape
        raise CheckpointError(
            f"{path}: its config does not build the model its weights fit: {e}"
        ) from e
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the {kind} built from its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.source = str(path)  # named by errors about what the model computes
    return model, meta


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (safetensors) and JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in info["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
