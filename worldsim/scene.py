"""The physical scene state the reasoner reads off frames, in named quantities with units.

A task config lists its quantities (`scene:` name -> stored array, indices, unit).
The same layout serves training targets (read from a grounding store), model
features (an angle becomes cos/sin so that -pi and pi are one place) and errors
reported in physical units (angles wrap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNITS = ("m", "m/s", "rad", "rad/s")
STATE_ARRAYS = ("qpos", "qvel")
"""Store arrays holding MuJoCo's own state (joint coordinates); the others hold bodies'
world positions (Reacher's fingertip, Pusher's object)."""


def wrap_angle(x):
    """Angles (array or float) into [-pi, pi)."""
    return (x + np.pi) % (2 * np.pi) - np.pi


@dataclass(frozen=True)
class Quantity:
    name: str
    array: str
    index: tuple[int, ...]
    unit: str

    @property
    def angle(self) -> bool:
        return self.unit == "rad"

    @property
    def size(self) -> int:
        return len(self.index)

    @property
    def drawn_position(self) -> bool:
        """A body's position in the world (unit m, x, y or x, y, z; not a joint's
        coordinate): a place the frame draws something."""
        return self.unit == "m" and self.array not in STATE_ARRAYS and self.size in (2, 3)


class SceneLayout:
    """Named quantities laid out one after another in a state vector."""

    def __init__(self, quantities: list[Quantity]) -> None:
        if not quantities:
            raise ValueError("a scene layout needs at least one quantity")
        for q in quantities:
            if q.unit not in UNITS:
                raise ValueError(f"scene quantity {q.name!r}: unit {q.unit!r} not in {UNITS}")
        self.quantities = quantities
        self.by_name = {q.name: q for q in quantities}
        self.slices: dict[str, slice] = {}
        i = 0
        for q in quantities:
            self.slices[q.name] = slice(i, i + q.size)
            i += q.size
        self.dim = i
        self.feature_dim = sum(2 * q.size if q.angle else q.size for q in quantities)

    @classmethod
    def from_task(cls, task) -> SceneLayout:
        scene = task.get("scene") or {}
        if not scene:
            raise ValueError(f"task {task.name!r} defines no scene: quantities (configs/task/)")
        return cls(
            [
                Quantity(name, str(q["array"]), tuple(int(i) for i in q["index"]), str(q["unit"]))
                for name, q in scene.items()
            ]
        )

    def to_dict(self) -> list[dict]:
        return [
            {"name": q.name, "array": q.array, "index": list(q.index), "unit": q.unit}
            for q in self.quantities
        ]

    @classmethod
    def from_dict(cls, items: list[dict]) -> SceneLayout:
        return cls([Quantity(d["name"], d["array"], tuple(d["index"]), d["unit"]) for d in items])

    def read(self, store, start: int, stop: int) -> np.ndarray:
        """(rows, dim) float32 values of rows [start, stop) of an episode store."""
        missing = [q.array for q in self.quantities if q.array not in store.keys]
        if missing:
            raise ValueError(f"store {store.path} has no arrays {missing} for the scene state")
        return self.values({q.array: store.read(q.array, start, stop) for q in self.quantities})

    def values(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """(..., dim) float32 values from state arrays by name (a store's rows or
        `MujocoSim.state()`)."""
        cols = [np.asarray(arrays[q.array])[..., list(q.index)] for q in self.quantities]
        return np.concatenate(cols, axis=-1).astype(np.float32)

    def to_features(self, values: np.ndarray) -> np.ndarray:
        """(..., dim) values -> (..., feature_dim): angles as (cos, sin)."""
        out = []
        for q in self.quantities:
            v = values[..., self.slices[q.name]]
            out += [np.cos(v), np.sin(v)] if q.angle else [v]
        return np.concatenate(out, axis=-1).astype(np.float32)

    def from_features(self, features: np.ndarray) -> np.ndarray:
        out, i = [], 0
        for q in self.quantities:
            if q.angle:
                c, s = features[..., i : i + q.size], features[..., i + q.size : i + 2 * q.size]
                out.append(np.arctan2(s, c))
                i += 2 * q.size
            else:
                out.append(features[..., i : i + q.size])
                i += q.size
        return np.concatenate(out, axis=-1).astype(np.float32)

    def abs_error(self, pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
        """Per quantity (..., size) absolute error in its unit; angle differences wrap."""
        errs = {}
        for q in self.quantities:
            d = pred[..., self.slices[q.name]] - true[..., self.slices[q.name]]
            if q.angle:
                d = wrap_angle(d)
            errs[q.name] = np.abs(d)
        return errs

    def named(self, values: np.ndarray) -> dict[str, list[float]]:
        """One state vector (dim,) as {quantity: [values]}."""
        return {q.name: values[self.slices[q.name]].tolist() for q in self.quantities}

    def observation(self, values: np.ndarray, terms: list) -> np.ndarray:
        """(..., dim) values -> the task env's own observation layout from `terms`
        ({cos: q}, {sin: q}, {value: q}, {diff: [a, b]}); no terms: values as they are."""
        if not terms:
            return np.asarray(values, np.float32)
        parts = []
        for term in terms:
            ((op, arg),) = dict(term).items()
            if op not in ("cos", "sin", "value", "diff"):
                raise ValueError(f"observation term {dict(term)}: {op!r} is not cos|sin|value|diff")
            if op == "diff":
                a, b = (values[..., self.slices[n]] for n in arg)
                parts.append(a - b)
            else:
                v = values[..., self.slices[arg]]
                parts.append({"cos": np.cos, "sin": np.sin, "value": lambda x: x}[op](v))
        return np.concatenate(parts, axis=-1).astype(np.float32)


def task_observation(task, mode: str, layout, values: np.ndarray) -> np.ndarray:
    """(..., dim) scene values -> the task's `state` observation (its `observation` terms)
    or its `proprio` one (`proprioception` terms, which a task must define for it)."""
    if mode == "state":
        return layout.observation(values, list(task.get("observation") or []))
    terms = list(task.get("proprioception") or [])
    if not terms:
        raise ValueError(f"task {task.name!r} defines no proprioception: terms for obs 'proprio'")
    return layout.observation(values, terms)


def task_terminated(task, layout: SceneLayout, states: np.ndarray) -> np.ndarray:
    """(N,) bool: the MuJoCo task's termination rule (task `termination`) on scene states
    (N, dim); all False for a task whose episodes only truncate."""
    rule = task.get("termination")
    if rule is None:
        return np.zeros(len(states), bool)
    value = np.abs(states[:, layout.slices[rule.quantity]])
    return (value > rule.beyond).any(axis=1) | ~np.isfinite(states).all(axis=1)


def task_reward(task, layout: SceneLayout, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The MuJoCo task's reward formula (task `reward`) on scene states (N, dim) after
    actions (N, A): alive (0 on a terminating step) - the weighted distances -
    control_weight * |action|^2."""
    r = task.reward
    terms = [(list(task.success_pair), r.distance_weight)] if r.distance_weight else []
    terms += [(list(d.between), d.weight) for d in r.get("distances") or []]
    out = np.where(task_terminated(task, layout, states), 0.0, float(r.alive))
    for (a, b), weight in terms:
        d = states[:, layout.slices[a]].astype(np.float64) - states[:, layout.slices[b]]
        out -= weight * np.linalg.norm(d, axis=1)
    return out - r.control_weight * np.square(np.asarray(actions, np.float64)).sum(axis=1)
