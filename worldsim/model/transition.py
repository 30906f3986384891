"""Learned state transition: the scene's physical state one frame on, given the action.

The world model carries the scene's state (the task's `scene:` quantities, e.g.
Reacher's joint angles and velocities, fingertip and target) beside every frame's
latents, and this network moves it on. It is learned from the grounding store with
the rest of the dynamics model; nothing in it is fitted by hand.

Each state column has a role, found from the training data when the model is built
(`column_roles`) and saved in its config:
- "integrate": MuJoCo's own state (`qpos`, `qvel` arrays): next = current + a learned
  step, the step scaled by the data's spread of one-frame changes (a linear path
  beside the MLP carries the nearly linear part of the physics);
- "static": never changes within a training episode (Reacher's target): carried
  unchanged, so that 10,000 frames of rounding cannot move it;
- "derived": the rest (body positions such as the fingertip): read out afresh every
  frame from the integrated and static columns, so it cannot drift away from the
  joints it belongs to.
Angles (unit rad) enter as (cos, sin) and are kept wrapped into [-pi, pi).

Integrated columns are also kept inside the range the training rows span
(`column_bounds`, saved in the config like the roles). Run past what the data shows,
a learned step extrapolates without bound: an InvertedPendulum model under a held key,
whose data ends every episode when the pole falls, moved its cart to -44 m by frame 80
and overflowed before frame 300. The data's range is a measured fact like a rail's
end; models saved without bounds run unclamped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from worldsim.model.features import angle_features
from worldsim.scene import STATE_ARRAYS, SceneLayout

ROLES = ("integrate", "static", "derived")


def default_roles(layout: SceneLayout) -> list[str]:
    """Roles without data: MuJoCo's state columns integrate, the rest are derived."""
    return [
        "integrate" if q.array in STATE_ARRAYS else "derived"
        for q in layout.quantities
        for _ in range(q.size)
    ]


def column_roles(layout: SceneLayout, values: np.ndarray, episode_ends: np.ndarray) -> list[str]:
    """Role of every state column (layout.dim) from the training rows `values` (rows, dim)
    of whole episodes ending at `episode_ends`: columns that never move are static."""
    lengths = np.diff(np.concatenate([[0], episode_ends]))
    first = np.repeat(values[episode_ends - lengths], lengths, axis=0)
    moves = np.abs(values[: len(first)] - first).max(axis=0) > 0
    roles = [r if moves[j] else "static" for j, r in enumerate(default_roles(layout))]
    if "integrate" not in roles:
        raise ValueError(
            f"no scene quantity comes from {STATE_ARRAYS} and moves: the world model's state "
            "needs MuJoCo's joint state (task `scene:`)"
        )
    return roles


def column_bounds(values: np.ndarray, roles: list[str]) -> list[list[float] | None]:
    """[low, high] of every integrated column over the training rows (rows, dim); None
    for the others (static columns never move, derived ones are read out)."""
    return [
        [float(values[:, j].min()), float(values[:, j].max())] if r == "integrate" else None
        for j, r in enumerate(roles)
    ]


def wrap(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def mlp(inp: int, width: int, out: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inp if i == 0 else width, width), nn.SiLU()]
    return nn.Sequential(*mods, nn.Linear(width, out))


class StateTransition(nn.Module):
    def __init__(
        self,
        layout: SceneLayout,
        roles: list[str],
        action_dim: int,
        width: int,
        layers: int,
        bounds: list | None = None,
    ) -> None:
        super().__init__()
        if len(roles) != layout.dim or set(roles) - set(ROLES):
            raise ValueError(f"roles must give one of {ROLES} per state column, got {roles}")
        bounds = bounds or [None] * layout.dim
        if len(bounds) != layout.dim or any(
            b is not None and (len(b) != 2 or not b[0] <= b[1]) for b in bounds
        ):
            raise ValueError(
                f"bounds must give [low, high] (low <= high) or None per state column, got {bounds}"
            )
        inf = float("inf")
        for name, i, fill in (("low", 0, -inf), ("high", 1, inf)):
            edge = torch.tensor([fill if b is None else float(b[i]) for b in bounds])
            self.register_buffer(name, edge, persistent=False)  # from the config
        self.dim = layout.dim
        angle = torch.zeros(layout.dim, dtype=torch.bool)
        for q in layout.quantities:
            if q.angle:
                angle[layout.slices[q.name]] = True
        role = torch.tensor([ROLES.index(r) for r in roles])
        self.register_buffer("angle", angle, persistent=False)
        for i, name in enumerate(ROLES):
            self.register_buffer(name, torch.nonzero(role == i)[:, 0], persistent=False)
        # features of the integrated and static columns: what the step and the derived
        # columns are computed from (a derived column going in would be a second copy)
        feature_col = torch.cat([torch.arange(layout.dim), torch.nonzero(angle)[:, 0]])
        self.register_buffer("known_features", role[feature_col] != 2, persistent=False)
        n_int, n_der = len(self.integrate), len(self.derived)
        self.feature_dim = layout.dim + int(angle.sum())
        # data statistics (set by `fit_statistics`, saved with the weights)
        self.register_buffer("value_mean", torch.zeros(layout.dim))
        self.register_buffer("value_std", torch.ones(layout.dim))
        self.register_buffer("step_std", torch.ones(n_int))
        self.register_buffer("feature_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feature_std", torch.ones(self.feature_dim))
        n_known = int(self.known_features.sum())
        self.step_mlp = mlp(n_known + action_dim, width, n_int, layers)
        self.step_linear = nn.Linear(n_known + action_dim, n_int)
        for p in self.step_mlp[-1].parameters():  # start as the linear path alone
            nn.init.zeros_(p)
        self.readout = mlp(n_known, width, n_der, layers) if n_der else None

    # -- features -------------------------------------------------------------------
    def features(self, values: torch.Tensor) -> torch.Tensor:
        """(..., dim) state -> (..., feature_dim) normalised features (angles as cos, sin)."""
        return (angle_features(values, self.angle) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def fit_statistics(self, values: np.ndarray, episode_ends: np.ndarray) -> None:
        """Normalisation from training rows (rows, dim) of whole episodes."""
        v = torch.as_tensor(values, dtype=torch.float32)
        f = angle_features(v, self.angle)
        self.feature_mean.copy_(f.mean(0))
        self.feature_std.copy_(f.std(0).clamp_min(1e-6))
        self.value_mean.copy_(v.mean(0))
        self.value_std.copy_(v.std(0).clamp_min(1e-6))
        last = np.zeros(len(v), bool)
        last[np.asarray(episode_ends) - 1] = True  # rows that start no transition
        step = v[1:] - v[:-1]
        step = torch.where(self.angle, wrap(step), step)[torch.from_numpy(~last[:-1])]
        self.step_std.copy_(step[:, self.integrate].std(0).clamp_min(1e-6))

    # -- the transition -----------------------------------------------------------------
    def derive(self, values: torch.Tensor) -> torch.Tensor:
        """The derived columns of `values` read out from its integrated and static ones."""
        if self.readout is None:
            return values
        out = self.readout(self.features(values)[..., self.known_features])
        derived = self.value_mean[self.derived] + self.value_std[self.derived] * out
        return values.index_copy(-1, self.derived, derived.to(values.dtype))

    def forward(self, values: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(..., dim) state and (..., A) action -> (..., dim) state one frame later."""
        x = torch.cat(
            [self.features(values)[..., self.known_features], action.to(values.dtype)], -1
        )
        step = (self.step_mlp(x) + self.step_linear(x)) * self.step_std
        nxt = values.index_add(-1, self.integrate, step.to(values.dtype))
        nxt = torch.where(self.angle, wrap(nxt), nxt)
        return self.derive(torch.clamp(nxt, self.low.to(nxt.dtype), self.high.to(nxt.dtype)))
