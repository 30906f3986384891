"""Joint state filter: the reasoner's per-frame readings fused with a fitted linear motion model.

Where it is used: the reasoner's language model reads the state it tracks from real
frames (`worldsim eval reasoner`, `lm_state_filter=`), and its motion model alone is the
baseline simulator a world model must beat (worldsim.policies.linear_sim). The envs'
state is the world model's own (since v2): no filter is in their loop.

Joint velocity is barely visible in one 64x64 frame: at Reacher's 50 frames/s one
pixel of motion is 2-4 rad/s, and the reasoner's velocity reading of a dreamed
frame is 2-3 rad/s off. A velocity-damped controller acting on that reading
whips the arm around. Yet the robot's own joints are close to linear between
frames (Reacher: v' = 0.980 v + 3.96 u, residual 0.003 rad/s away from the joint
limits), so a Kalman filter over (joint position, joint velocity) that predicts
with the actions taken and corrects with each frame's reading keeps a velocity
estimate that the frames alone cannot give.

Everything is fitted on data, nothing is written per task: the motion model by
least squares on a grounding store's transitions (position change and next
velocity from velocity, action and a constant; positions are left out so that an
unlimited joint's angle can wrap), refitted without its outliers (a joint stopping
at its limit); its noise from the robust spread of the residuals; the reading
noise from the reasoner's errors on real frames. The dream's motion is not
MuJoCo's, so the process noise is widened by `process_scale` to let the readings
pull the estimate back, and where the model does not hold (a joint predicted past
the positions its fit covered, i.e. at a limit) the filter leans on the reading.
Joints are the scene quantities stored from `qpos` paired with those from `qvel`
at the same index.

Quantities that never move within an episode (Reacher's target) can be tracked
too: the estimate is the mean of their readings since the episode began. One
frame's reading of the target is ~0.5 cm off (median), the running mean ~0.35 cm
(part of the error repeats from frame to frame). Which quantities stay put is read
off the fitting store, not written per task.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from worldsim.checkpoint import save_json
from worldsim.scene import SceneLayout, wrap_angle


def _robust_std(x: np.ndarray) -> np.ndarray:
    """Per column 1.4826 x median absolute deviation: the std of the bulk, not the outliers."""
    return 1.4826 * np.median(np.abs(x - np.median(x, axis=0)), axis=0) + 1e-6


def joint_columns(layout: SceneLayout) -> tuple[list[int], list[int], list[bool]]:
    """(position columns, velocity columns, position is an angle) of the layout's joints:
    each qpos index that some quantity also reads from qvel."""
    vel = {}
    for q in layout.quantities:
        if q.array == "qvel":
            start = layout.slices[q.name].start
            vel.update({idx: start + k for k, idx in enumerate(q.index)})
    pos, velocity, angle = [], [], []
    for q in layout.quantities:
        if q.array != "qpos":
            continue
        start = layout.slices[q.name].start
        for k, idx in enumerate(q.index):
            if idx in vel:
                pos.append(start + k)
                velocity.append(vel[idx])
                angle.append(q.angle)
    return pos, velocity, angle


def static_columns(layout: SceneLayout, values: np.ndarray, episode_ends: np.ndarray) -> list[int]:
    """Layout columns of the non-joint, non-angle quantities that keep their value within
    every episode of a store (values (rows, dim), rows as stored) but vary across episodes."""
    starts = np.r_[0, np.asarray(episode_ends)[:-1]]
    first = np.repeat(values[starts], np.diff(np.r_[starts, len(values)]), axis=0)
    moves = np.abs(values - first).max(0)
    spread = values.max(0) - values.min(0)
    cols = []
    for q in layout.quantities:
        if q.array in ("qpos", "qvel") or q.angle:
            continue
        c = list(range(layout.slices[q.name].start, layout.slices[q.name].stop))
        if (spread[c] > 0).all() and (moves[c] <= 1e-6 * spread[c]).all():
            cols += c
    return cols


@dataclass
class StateFilter:
    positions: list[int]
    """Layout columns of the joint positions."""
    velocities: list[int]
    """Layout columns of the joint velocities, in the same joint order."""
    angles: list[bool]
    """Positions that wrap (angles)."""
    transition: list[list[float]]
    """x' = transition @ x + control @ u + offset, x = (positions, velocities)."""
    control: list[list[float]]
    offset: list[float]
    process_std: list[float]
    """Per element of x: the std of the motion model's one-step error."""
    reading_std: list[float]
    """Per element of x: the std of the reasoner's reading error on real frames (empty:
    fitted where no reasoner exists, a motion model only: the linear baseline simulator
    runs on it, nothing can be tracked with it)."""
    action_low: list[float]
    action_high: list[float]
    free_low: list[float | None]
    """Per joint: the positions between which the motion model holds (a limited joint
    stops at its limit; None: no limit)."""
    free_high: list[float | None]
    static: list[int] = field(default_factory=list)
    """Layout columns that stay put within an episode: estimated as the mean of their
    readings since it began (filters fitted before this field track none)."""

    @classmethod
    def fit(
        cls,
        layout: SceneLayout,
        values: np.ndarray,
        actions: np.ndarray,
        episode_ends: np.ndarray,
        readings: np.ndarray | None,
        truth: np.ndarray | None,
        action_low: np.ndarray,
        action_high: np.ndarray,
        process_scale: float = 10.0,
    ) -> StateFilter:
        """values (rows, dim) true states and actions (rows, A) of a store, rows aligned as
        stored (row t's action leads to row t + 1 within an episode); readings and truth
        (n, dim): the reasoner's estimates of real frames and their true values (None: no
        reasoner, the motion model alone)."""
        pos, vel, angle = joint_columns(layout)
        if not pos:
            raise ValueError(
                f"scene {[q.name for q in layout.quantities]} has no joint read from both qpos "
                "and qvel at the same index; a state filter has nothing to track"
            )
        p = len(pos)
        last = np.zeros(len(values), bool)
        last[np.asarray(episode_ends) - 1] = True  # an episode's last row starts no transition
        t = np.flatnonzero(~last[:-1])
        u = np.clip(actions[t], action_low, action_high)
        x_in = np.concatenate([values[t][:, vel], u, np.ones((len(t), 1))], 1)
        step = values[t + 1][:, pos] - values[t][:, pos]
        step[:, angle] = wrap_angle(step[:, angle])
        target = np.concatenate([step, values[t + 1][:, vel]], 1)
        x_in, target = x_in.astype(np.float64), target.astype(np.float64)
        inlier = np.ones(len(t), bool)
        for _ in range(10):  # trimmed least squares: contacts (joint limits) are not the model
            w, *_ = np.linalg.lstsq(x_in[inlier], target[inlier], rcond=None)
            residual = target - x_in @ w
            inlier = (np.abs(residual) < 4 * _robust_std(residual[inlier])).all(1)
        # where the linear model holds: the positions its inliers start from (an angle that
        # turns a full circle and more has no limit)
        low, high = np.quantile(values[t[inlier]][:, pos], [0.001, 0.999], axis=0)
        limited = ~np.asarray(angle) | (high - low < 2 * np.pi)
        low, high = np.where(limited, low, -np.inf), np.where(limited, high, np.inf)
        a = np.zeros((2 * p, 2 * p))
        a[:p, :p] = np.eye(p)
        a[:, p:] = w[:p].T  # both position change and next velocity come from velocity
        n_act = u.shape[1]
        reading_std = []
        if readings is not None:
            err = readings - truth
            err_x = np.concatenate([err[:, pos], err[:, vel]], 1)
            err_x[:, :p][:, angle] = wrap_angle(err_x[:, :p][:, angle])
            reading_std = _robust_std(err_x).tolist()
        return cls(
            positions=pos,
            velocities=vel,
            angles=angle,
            transition=a.tolist(),
            control=w[p : p + n_act].T.tolist(),
            offset=w[-1].tolist(),
            process_std=(process_scale * _robust_std(residual)).tolist(),
            reading_std=reading_std,
            action_low=np.asarray(action_low, float).tolist(),
            action_high=np.asarray(action_high, float).tolist(),
            free_low=[None if np.isinf(v) else float(v) for v in low],
            free_high=[None if np.isinf(v) else float(v) for v in high],
            static=static_columns(layout, values, episode_ends),
        )

    def save(self, path: str | Path) -> None:
        save_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> StateFilter:
        """Read a saved filter; ValueError naming the file and field when it is not JSON, has
        other fields, or holds a NaN or inf (which would reach every state it tracks)."""
        try:
            fields = json.loads(Path(path).read_text())
            found = cls(**fields)
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path} is not a state filter ({type(e).__name__}: {e})") from e
        for name, value in fields.items():
            numbers = np.asarray(value if value is not None else [], dtype=object).ravel()
            floats = [
                float(v) for v in numbers if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            if not np.isfinite(floats).all():
                raise ValueError(f"{path}: {name} holds NaN or inf (a state filter must be finite)")
        return found


class StateTracker:
    """One filter per world of a batch: `start` worlds from a reading, `advance` them by
    an action and the next reading, read `values` with the joints filtered and, with
    `average_static`, the static quantities averaged since each world started."""

    def __init__(self, filt: StateFilter, num_worlds: int, average_static: bool = True) -> None:
        if not filt.reading_std:
            raise ValueError(
                "this state filter was fitted without a reasoner (no reading noise): it is a "
                "motion model for the linear baseline and cannot track readings"
            )
        self.f = filt
        self.pos, self.vel = filt.positions, filt.velocities
        self.wraps = np.concatenate([filt.angles, np.zeros(len(filt.angles), bool)])
        self.A = np.asarray(filt.transition)
        self.B = np.asarray(filt.control)
        self.c = np.asarray(filt.offset)
        self.Q = np.diag(np.square(filt.process_std))
        self.R = np.diag(np.square(filt.reading_std))
        n = 2 * len(self.pos)
        self.low = np.array([-np.inf if v is None else v for v in filt.free_low])
        self.high = np.array([np.inf if v is None else v for v in filt.free_high])
        self.x = np.zeros((num_worlds, n))
        self.P = np.tile(self.R, (num_worlds, 1, 1))
        self.static = list(filt.static) if average_static else []
        self.static_sum = np.zeros((num_worlds, len(self.static)))
        self.static_count = np.zeros(num_worlds)

    def _reading(self, values: np.ndarray) -> np.ndarray:
        return np.concatenate([values[:, self.pos], values[:, self.vel]], 1).astype(np.float64)

    def start(self, values: np.ndarray, mask: np.ndarray) -> None:
        """Worlds in mask start over from their reading (values (N, dim))."""
        self.x[mask] = self._reading(values)[mask]
        self.P[mask] = self.R
        self.static_sum[mask] = values[mask][:, self.static]
        self.static_count[mask] = 1

    def advance(self, actions: np.ndarray, values: np.ndarray, mask: np.ndarray) -> None:
        """Worlds in mask: predict under the actions (N, A) taken, then correct with the
        reading of the frame those actions led to."""
        if not mask.any():
            return
        self.static_sum[mask] += values[mask][:, self.static]
        self.static_count[mask] += 1
        x, P = self.x[mask], self.P[mask]
        u = np.clip(actions[mask], self.f.action_low, self.f.action_high)
        x = x @ self.A.T + u @ self.B.T + self.c
        P = self.A @ P @ self.A.T + self.Q
        y = self._reading(values)[mask] - x
        y[:, self.wraps] = wrap_angle(y[:, self.wraps])
        pos = x[:, : len(self.pos)]
        stopped = ((pos < self.low) | (pos > self.high)).any(1)
        P[stopped] += self.R  # at a joint limit the motion model breaks: lean on the reading
        gain = np.linalg.solve(P + self.R, P).transpose(0, 2, 1)  # P (P + R)^-1, both symmetric
        self.x[mask] = x + (gain @ y[..., None])[..., 0]
        self.P[mask] = P - gain @ P

    def values(self, values: np.ndarray) -> np.ndarray:
        """values (N, dim) with the joint positions and velocities replaced by the filter's
        and the static quantities by their mean reading (worlds not started: as given)."""
        out = np.array(values, dtype=np.float32)
        if self.static:
            started = self.static_count > 0
            mean = self.static_sum[started] / self.static_count[started, None]
            out[np.ix_(started, self.static)] = mean
        p = len(self.pos)
        pos = self.x[:, :p].copy()
        pos[:, self.f.angles] = wrap_angle(pos[:, self.f.angles])
        out[:, self.pos], out[:, self.vel] = pos, self.x[:, p:]
        return out


def filter_episodes(
    filt: StateFilter, readings: np.ndarray, actions: np.ndarray, bounds: list[tuple[int, int]]
) -> np.ndarray:
    """Filtered values of every row of the given episodes, each started at its first row."""
    out = np.array(readings, dtype=np.float32)
    one = np.ones(1, bool)
    for a, b in bounds:
        track = StateTracker(filt, 1)
        track.start(readings[a : a + 1], one)
        out[a] = track.values(readings[a : a + 1])[0]
        for t in range(a + 1, b):
            track.advance(actions[t - 1 : t], readings[t : t + 1], one)
            out[t] = track.values(readings[t : t + 1])[0]
    return out
