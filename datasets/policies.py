"""Collection policies: what the world model gets to see.

A model trained only on random flailing cannot imagine success, and one trained
only on an expert never sees the rest of the workspace. So there are six:
uniform random, temporally correlated (Ornstein-Uhlenbeck) noise that sweeps the
workspace, held keys (full-scale actions held for a while, as a person at the
keyboard drives the arm), scripted experts that use privileged MuJoCo state
(optionally through noisy joint readings, `expert_state_noise`), a per-episode
mixture of noisy expert, correlated noise and held keys, and trained agents (policy
files acting on the task's observation), whose behaviour a model must also follow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import gymnasium as gym
import mujoco
import numpy as np

from worldsim.mujoco_sim import MujocoSim
from worldsim.scene import wrap_angle

POLICIES = ("random", "noise", "keys", "expert", "mix", "agent")


class Policy:
    """Acts on the privileged simulator; one instance per episode."""

    name = "policy"

    def __init__(self, sim: MujocoSim, rng: np.random.Generator) -> None:
        self.sim = sim
        self.rng = rng
        self.low = sim.action_space.low.astype(np.float64)
        self.high = sim.action_space.high.astype(np.float64)

    def act(self) -> np.ndarray:
        raise NotImplementedError

    def clip(self, a: np.ndarray) -> np.ndarray:
        return np.clip(a, self.low, self.high).astype(np.float32)


class RandomPolicy(Policy):
    name = "random"

    def act(self) -> np.ndarray:
        return self.clip(self.rng.uniform(self.low, self.high))


class CorrelatedNoisePolicy(Policy):
    """Ornstein-Uhlenbeck noise: smooth sweeps instead of jitter in place."""

    name = "noise"

    def __init__(self, sim, rng, theta: float = 0.15, sigma: float = 0.3) -> None:
        super().__init__(sim, rng)
        self.theta, self.sigma = theta, sigma
        self.x = rng.uniform(-0.5, 0.5, size=self.low.shape)

    def act(self) -> np.ndarray:
        self.x += -self.theta * self.x + self.sigma * self.rng.standard_normal(self.x.shape)
        mid, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        return self.clip(mid + half * np.clip(self.x, -1, 1))


class HeldKeysPolicy(Policy):
    """Piecewise-constant actions at the range's ends or zero, each held for a few to
    a few dozen frames: what the play window and keyboard scripts send. Without it the
    model never sees sustained full torque and breaks under a held key."""

    name = "keys"

    def __init__(self, sim, rng, min_hold: int = 3, max_hold: int = 30) -> None:
        super().__init__(sim, rng)
        self.min_hold, self.max_hold = min_hold, max_hold
        self.left = 0
        self.a = np.zeros_like(self.low)

    def act(self) -> np.ndarray:
        if self.left == 0:
            choice = self.rng.integers(-1, 2, size=self.low.shape)  # -1, 0, +1 per axis
            self.a = np.where(choice > 0, self.high, np.where(choice < 0, self.low, 0.0))
            self.left = int(self.rng.integers(self.min_hold, self.max_hold + 1))
        self.left -= 1
        return self.clip(self.a)


# -- scripted experts (privileged state) -----------------------------------------
class ReacherExpert(Policy):
    """Analytic two-link IK to the target, then joint-space PD."""

    name = "expert"

    def act(self) -> np.ndarray:
        d = self.sim.data
        return self.clip(reacher_reach(d.qpos[:2], d.qvel[:2], d.qpos[2:4]))


def reacher_reach(q: np.ndarray, qd: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Reacher torques toward the IK pose of `target` (xy), on the elbow branch nearest
    to the joint angles q; unclipped. Shared by the privileged collection expert and the
    observation-driven expert of the policy ladder."""
    l1, l2 = 0.1, 0.11  # body1 offset and fingertip offset in reacher.xml
    tx, ty = target
    c = np.clip((tx * tx + ty * ty - l1**2 - l2**2) / (2 * l1 * l2), -1, 1)
    best = None
    for elbow in (np.arccos(c), -np.arccos(c)):  # pick the elbow branch nearest to now
        shoulder = np.arctan2(ty, tx) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
        err = np.array([wrap_angle(shoulder - q[0]), elbow - q[1]])
        if best is None or np.abs(err).sum() < np.abs(best).sum():
            best = err
    return 2.0 * best - 0.15 * np.asarray(qd)


class InvertedPendulumExpert(Policy):
    """LQR around the upright pose, from MuJoCo's finite-difference linearisation.

    In a fraction `task.expert_travel` of episodes it also carries the cart, pole up, along
    the rail: a set-point moves at 0.2-0.8 m/s to a goal drawn in +-0.9 m, rests there
    10-40 frames, then heads for the next goal, and the LQR tracks the moving set-point.
    Balancing at the centre alone kept the cart within ~15 cm, so upright poles 0.15-0.9 m
    out were 0.7% of the frames (16.1% with travel at 0.5); the dream there slowed a
    moving cart by itself, and PPO trained in it let the cart run into the rail's end
    (MuJoCo: falls after 63 steps)."""

    name = "expert"

    def __init__(self, sim, rng) -> None:
        super().__init__(sim, rng)
        self.k = balance_gain(sim.model, sim.unwrapped.frame_skip)
        self.dt = sim.model.opt.timestep * sim.unwrapped.frame_skip
        fraction = float(sim.task.get("expert_travel", 0.0))
        self.travel = fraction > 0 and rng.random() < fraction  # no draw at 0: old stores
        self.ref, self.goal, self.speed, self.rest = 0.0, 0.0, 0.0, 0

    def _move_setpoint(self) -> float:
        """Advance the set-point one step; its velocity."""
        if self.rest > 0:
            self.rest -= 1
            return 0.0
        gap = self.goal - self.ref
        if abs(gap) < 1e-9:
            self.goal = float(self.rng.uniform(-0.9, 0.9))
            self.speed = float(self.rng.uniform(0.2, 0.8))
            self.rest = int(self.rng.integers(10, 41))
            return 0.0
        step = float(np.clip(gap, -self.speed * self.dt, self.speed * self.dt))
        self.ref += step
        return step / self.dt

    def act(self) -> np.ndarray:
        d = self.sim.data
        x = np.concatenate([d.qpos, d.qvel])
        if self.travel:
            velocity = self._move_setpoint()
            x = x - np.array([self.ref, 0.0, velocity, 0.0])
        return self.clip(-self.k @ x)


class PusherExpert(Policy):
    """Push the object to the goal with the hand, planned with IK on privileged state.

    Physics that shape the strategy (Pusher-v5's MJCF):
    - Only the hand makes contacts: a crossbar centred on `tips_arm` with two
      fingers, a U of capsules. Contacts are frictionless (condim 1), so a face
      pushes the object along its own normal.
    - The object is nearly massless (7.9e-6 kg) and MuJoCo softens a contact by
      the bodies' inverse mass, so the push force is only ~0.39 N/m times the
      penetration, against 0.5 N s/m of damping on the object's slide joints: the
      object moves at ~0.8 x penetration m/s, and a face pressed 7 cm deep (capsule
      plus object radius) passes through it. 100 steps are 5 s, so speed matters.

    Hence the object is pushed from the U's inner corner (crossbar and one finger),
    with the fingers along the push direction v turned by `turn` toward that
    finger. Any turn in [0, 90] deg pushes along v, since v stays in the corner's
    cone of contact normals; at 45 both faces press `depth` deep and the object
    moves ~1.4x faster than with one face. For objects at the edge of the reach
    the outer side of a finger is tried too. The "slot" is where the object's
    centre sits when it touches the face(s).

    Planning (at the start and after losing the object): damped-least-squares IK
    from a few plain postures scores each face and corner yaw at the push start
    (the object) and along the line to the goal, plus how far the joints must
    travel; the corner yaw then turns linearly from its start to its goal value as
    the object progresses. Control: a joint-space move to the start pose (via a
    pose above the object when re-approaching), then a Cartesian carrot that keeps
    the slot `depth` beyond the object along v, through the same IK (slot position
    first, then the hand's orientation, then posture and joint-limit room in the
    null space) warm-started from the last solution. If the object leaves the
    slot, lift and plan again. Joint PD scaled by the mass matrix (computed torque;
    there is no gravity) tracks the joint targets. Deterministic: no randomness.

    With `target` it pushes the object to that point instead of the goal (the goal disc
    stays where the env drew it; `data.expert_targets`). Why: a world model whose data
    only ever pushes the object toward the goal leaves it in place when a policy knocks
    it elsewhere (Pusher's dream-round checkpoint 5: the object 3.6-8.2 cm off MuJoCo's
    at step 99 under its own dream-trained policies, results/pusher/dream_rounds).
    """

    name = "expert"
    z_push = -0.275  # slot height while pushing: the object's mid-height
    z_high = -0.17  # hand height that clears the object (its top is at -0.225)
    depth = 0.066  # how far each face presses into the object (at 0.07 it passes)
    joint_speed = 0.2  # rad per step for joint-space moves
    travel_cost = 0.015  # planning cost per radian of the largest joint move to the start
    shoulder = np.array([0.0, -0.6])  # shoulder pan axis (xy), pusher.xml
    corner_turns = (0.0, 45.0, 90.0)  # corner yaws tried at the push start and at the goal
    outer_faces = ((90.0, 0.05, -0.17), (-90.0, 0.05, 0.17))  # outer side of a finger
    postures = ((0.8, -1.2), (1.2, -2.0), (0.5, -0.6))  # (shoulder lift, elbow) IK seeds

    def __init__(self, sim, rng, target: np.ndarray | None = None) -> None:
        super().__init__(sim, rng)
        m, d = sim.model, sim.data
        self.tip = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "tips_arm")
        self.obj = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "object")
        self.goal = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "goal")
        self.target = None if target is None else np.asarray(target, dtype=np.float64)
        """Where the object is pushed (world xy); None: the goal disc."""
        self.nq = m.nu  # the 7 arm hinges come first in qpos/qvel
        self.lo = m.jnt_range[: self.nq, 0] + 0.02
        self.hi = m.jnt_range[: self.nq, 1] - 0.02
        self.scratch = mujoco.MjData(m)  # IK forward kinematics, never stepped
        self.jacp = np.zeros((3, m.nv))
        self.jacr = np.zeros((3, m.nv))
        self.v = np.array([1.0, 0.0, 0.0])  # push direction
        self.face = (45.0, 0.07, 0.03)
        """(turn, a, e): the fingers point along v turned by `turn` degrees and the slot is
        tip + a * fingers + e * (fingers turned +90 deg). The fingers sit 0.1 either side
        of the tip and touching is 0.07 apart (capsule 0.02 + object 0.05), so a corner
        is (+-turn, 0.07, +-0.03) and a finger's outer side (+-90, 0.05, -+0.17)."""
        self.turns = (45.0, 45.0)  # corner yaw at the push start and at the goal
        self.span = 1.0  # object-goal distance when the push was planned
        self.engaged = False  # the hand has reached the object in this push
        self.q_ref = d.qpos[: self.nq].copy()
        self.q_nom = self.q_ref.copy()
        self.q_goal = self.q_ref.copy()
        self.waypoints: list[np.ndarray] = []
        self._update_dir()
        self.carrot = d.xpos[self.tip].copy()
        self._plan(via_high=False)
        self.phase = "approach"

    # -- geometry --------------------------------------------------------------
    @classmethod
    def draw_target(cls, sim: MujocoSim, rng: np.random.Generator) -> np.ndarray:
        """A point to push the object to instead of the goal: 10-30 cm from the object in a
        uniform direction, within the hand's reach of the shoulder (40-80 cm)."""
        obj = sim.data.xpos[mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, "object")]
        while True:
            r, a = rng.uniform(0.1, 0.3), rng.uniform(0.0, 2 * np.pi)
            xy = obj[:2] + r * np.array([np.cos(a), np.sin(a)])
            if 0.4 <= np.linalg.norm(xy - cls.shoulder) <= 0.8:
                return xy

    def _goal(self) -> np.ndarray:
        goal = self.sim.data.xpos[self.goal].copy()
        if self.target is not None:
            goal[:2] = self.target
        return goal

    def _update_dir(self) -> None:
        d = self.sim.data
        line = self._goal()[:2] - d.xpos[self.obj][:2]
        n = np.linalg.norm(line)
        if n > 0.03:  # on the goal: keep the last direction instead of spinning
            self.v = np.array([line[0] / n, line[1] / n, 0.0])

    def _fingers(self, face: tuple[float, float, float]) -> np.ndarray:
        c, s = np.cos(np.radians(face[0])), np.sin(np.radians(face[0]))
        return np.array([c * self.v[0] - s * self.v[1], s * self.v[0] + c * self.v[1], 0.0])

    @staticmethod
    def _is_corner(face: tuple[float, float, float]) -> bool:
        return abs(face[2]) < 0.05

    def _slot_offset(self, face: tuple[float, float, float]) -> np.ndarray:
        f = self._fingers(face)
        return face[1] * f + face[2] * np.array([-f[1], f[0], 0.0])

    # -- control ---------------------------------------------------------------
    def act(self) -> np.ndarray:
        d = self.sim.data
        self._update_dir()
        obj, goal = d.xpos[self.obj].copy(), self._goal()
        obj[2] = self.z_push
        progress = np.clip(1.0 - np.linalg.norm((goal - obj)[:2]) / self.span, 0.0, 1.0)
        if self.phase == "push" and self._is_corner(self.face):  # turn on the way
            turn = self.turns[0] + progress * (self.turns[1] - self.turns[0])
            self.face = (turn, self.face[1], self.face[2])
        slot = d.xpos[self.tip] + self._slot_offset(self.face)
        side = np.array([-self.v[1], self.v[0], 0.0])
        rel = obj - slot
        along, lateral = rel @ self.v, rel @ side

        if self.phase == "push":
            self.engaged = self.engaged or along < 0.01  # touching: from now on, watch it
            if self.engaged and (
                abs(lateral) > 0.08 or along < -self._depth() - 0.02 or along > 0.15
            ):
                self.phase = "lift"  # the object left the slot: go around again
        if self.phase == "lift" and slot[2] > self.z_high - 0.02:
            self._plan(via_high=True)
            self.phase = "approach"
        if self.phase == "approach" and not self.waypoints:
            settled = np.max(np.abs(d.qpos[: self.nq] - self.q_ref)) < 0.08
            if np.linalg.norm(slot - obj) < 0.08 or settled:  # or as close as it gets
                self.phase = "push"
                self.carrot = slot
                self.engaged = False

        if self.phase == "approach":
            if self.waypoints:
                step = self.waypoints[0] - self.q_ref
                n = np.max(np.abs(step))
                if n <= self.joint_speed:
                    self.waypoints.pop(0)
                else:
                    step *= self.joint_speed / n  # joints arrive together: a straight path
                self.q_ref = self.q_ref + step
            return self.clip(self._track(self.q_ref))
        if self.phase == "lift":
            target, speed = np.array([slot[0], slot[1], self.z_high]), 0.03
        else:
            near = float(np.linalg.norm(goal[:2] - obj[:2]))
            target, speed = obj + min(self._depth(), near) * self.v, 0.03
        self._move_carrot(target, slot, speed)
        posture = self.q_nom + progress * (self.q_goal - self.q_nom)  # as planned
        self.q_ref, _ = self._ik(self.q_ref, self.carrot, self.face, posture)
        return self.clip(self._track(self.q_ref))

    def _depth(self) -> float:
        """How far beyond the object the slot is held along v: `depth` into each face."""
        if not self._is_corner(self.face):
            return self.depth
        t = np.radians(self.face[0])
        return self.depth / max(abs(np.cos(t)), abs(np.sin(t)))

    def _plan(self, via_high: bool) -> None:
        """Pick the face, its yaw at the start and at the goal, and the joint pose that
        reach the push start and then follow the line to the goal best."""
        d = self.sim.data
        obj, goal = d.xpos[self.obj].copy(), self._goal()
        obj[2] = goal[2] = self.z_push
        start = obj  # the push starts with the slot on the object
        self.span = max(float(np.linalg.norm((goal - obj)[:2])), 1e-6)

        def reach(face):  # best joint pose at the start from a few plain postures
            tip = start - self._slot_offset(face)
            pan = np.arctan2(tip[1] - self.shoulder[1], tip[0] - self.shoulder[0])
            best = None
            for lift, elbow in self.postures:
                seed = np.clip(np.array([pan, lift, 0, elbow, 0, -0.3, 0]), self.lo, self.hi)
                q, err = self._ik(seed, start, face, seed, iters=80)
                err += self.travel_cost * np.max(np.abs(q - d.qpos[: self.nq]))  # time
                if best is None or err < best[1]:
                    best = (q, err)
            return best

        def slow(turn):  # 0 at 45 deg (two contacts), 0.02 at 0 or 90 (one contact)
            t = np.radians(turn)
            return 0.07 * (max(abs(np.cos(t)), abs(np.sin(t))) - np.sqrt(0.5))

        options = []  # (error, face at start, turn at goal, joints at start, at goal)
        for face in self.outer_faces:
            q_low, err = reach(face)
            q = q_low
            for f in (0.5, 1.0):  # follow the push line to the goal
                q, e = self._ik(q, (1 - f) * start + f * goal, face, q_low, iters=30)
                err += e
            options.append((err + 0.02, face, face[0], q_low, q))
        for sign in (1.0, -1.0):
            starts = {t: reach((sign * t, 0.07, sign * 0.03)) for t in self.corner_turns}
            for t0, (q_low, e0) in starts.items():
                for t1 in self.corner_turns:
                    q, err = q_low, e0 + slow(t0) + slow(t1)
                    for f in (0.5, 1.0):
                        face = (sign * (t0 + f * (t1 - t0)), 0.07, sign * 0.03)
                        q, e = self._ik(q, (1 - f) * start + f * goal, face, q_low, iters=30)
                        err += e
                    options.append((err, (sign * t0, 0.07, sign * 0.03), sign * t1, q_low, q))
        _, self.face, turn_goal, q_low, self.q_goal = min(options, key=lambda o: o[0])
        self.turns = (self.face[0], turn_goal)
        self.q_nom = q_low
        self.waypoints = [q_low]
        if via_high:
            high = start + np.array([0.0, 0.0, self.z_high - self.z_push])
            self.waypoints.insert(0, self._ik(q_low, high, self.face, q_low, iters=40)[0])

    def _move_carrot(self, target: np.ndarray, slot: np.ndarray, speed: float) -> None:
        step = target - self.carrot
        n = np.linalg.norm(step)
        if n > speed:
            step *= speed / n
        self.carrot = self.carrot + step
        lag = self.carrot - slot  # do not run away from a hand that is held back
        n = np.linalg.norm(lag)
        if n > 0.1:
            self.carrot = slot + lag * (0.1 / n)

    def _ik(self, q, target, face, q_nom, iters: int = 10) -> tuple[np.ndarray, float]:
        """Damped least squares, slot position first, then the hand's orientation in its
        null space, then the posture; returns the joints and the remaining error."""
        m, s, nq = self.sim.model, self.scratch, self.nq
        fingers, offset = self._fingers(face), self._slot_offset(face)
        across = np.array([-fingers[1], fingers[0], 0.0])  # crossbar direction
        eye = np.eye(nq)
        err = 0.0
        for it in range(iters + 1):
            s.qpos[:nq] = q
            mujoco.mj_kinematics(m, s)
            mujoco.mj_comPos(m, s)
            rot = s.xmat[self.tip].reshape(3, 3)
            point = s.xpos[self.tip] + offset
            e_pos = target - point
            y_goal = across if rot[:, 1] @ across >= 0 else -across
            e_rot = np.cross(rot[:, 1], y_goal) + 0.3 * np.cross(rot[:, 0], fingers)
            tight = np.clip(0.1 - np.minimum(q - self.lo, self.hi - q), 0.0, None).sum()
            err = float(np.linalg.norm(e_pos) + 0.03 * np.linalg.norm(e_rot) + 0.05 * tight)
            if it == iters:
                break
            mujoco.mj_jac(m, s, self.jacp, self.jacr, point, self.tip)
            jp, jr = self.jacp[:, :nq], self.jacr[:, :nq]
            jp_pinv = jp.T @ np.linalg.inv(jp @ jp.T + 1e-4 * np.eye(3))
            dq = jp_pinv @ e_pos
            null = eye - jp_pinv @ jp
            jr_n = jr @ null
            jr_pinv = jr_n.T @ np.linalg.inv(jr_n @ jr_n.T + 1e-2 * np.eye(3))
            dq += jr_pinv @ (0.5 * e_rot - jr @ dq)
            room = 0.3  # push joints away from their limits, then toward the posture
            away = np.clip(self.lo + room - q, 0, None) - np.clip(q - self.hi + room, 0, None)
            dq += (null - jr_pinv @ jr_n) @ (0.05 * (q_nom - q) + 0.3 * away)
            q = np.clip(q + np.clip(dq, -0.2, 0.2), self.lo, self.hi)
        return q, err

    def _track(self, q_ref: np.ndarray) -> np.ndarray:
        m, d, nq = self.sim.model, self.sim.data, self.nq
        acc = np.zeros(m.nv)
        acc[:nq] = 100.0 * (q_ref - d.qpos[:nq]) - 20.0 * d.qvel[:nq]
        tau = np.zeros(m.nv)
        mujoco.mj_mulM(m, d, tau, acc)  # computed torque with the current inertia
        return tau[:nq]


EXPERTS: dict[str, type[Policy]] = {
    "reacher": ReacherExpert,
    "inverted_pendulum": InvertedPendulumExpert,
    "pusher": PusherExpert,
}


class NoisyExpert(Policy):
    """Expert plus Gaussian noise, a fraction of the action range."""

    name = "expert"

    def __init__(self, sim, rng, expert: Policy, noise: float) -> None:
        super().__init__(sim, rng)
        self.expert, self.noise = expert, noise

    def act(self) -> np.ndarray:
        a = self.expert.act().astype(np.float64)
        a += self.noise * (self.high - self.low) / 2 * self.rng.standard_normal(a.shape)
        return self.clip(a)


class PerceivingExpert(Policy):
    """The expert acting on its own estimate of the robot's joints instead of the truth.

    A policy in the dream reads the reasoner's estimate of a generated frame, and a
    high-gain controller turns those estimation errors into full-torque swings the
    privileged expert never makes. This one sees joint angles and velocities with
    persistent (AR(1)) errors of std `noise` rad and 30 x `noise` rad/s, so the data holds
    that regime. The simulator's state is put back untouched after every reading."""

    name = "expert"

    def __init__(self, sim, rng, expert: Policy, noise: float, keep: float = 0.8) -> None:
        super().__init__(sim, rng)
        self.expert, self.keep = expert, keep
        self.qpos, self.qvel = sim.robot_joints()
        self.scale = noise * np.concatenate([np.ones(len(self.qpos)), 30 * np.ones(len(self.qvel))])
        self.err = self.scale * rng.standard_normal(self.scale.shape)

    def act(self) -> np.ndarray:
        shock = np.sqrt(1 - self.keep**2) * self.scale * self.rng.standard_normal(self.scale.shape)
        self.err = self.keep * self.err + shock
        d, n = self.sim.data, len(self.qpos)
        true_q, true_v = d.qpos[self.qpos].copy(), d.qvel[self.qvel].copy()
        d.qpos[self.qpos] += self.err[:n]
        d.qvel[self.qvel] += self.err[n:]
        try:
            return self.expert.act()
        finally:
            d.qpos[self.qpos], d.qvel[self.qvel] = true_q, true_v


class AgentPolicy(Policy):
    """A trained policy file acting on the task's own observation (Gymnasium's, as in
    `obs=state`), its action plus Gaussian noise of a per-episode std drawn from
    [0, noise] (fraction of the action range).

    A world model learns the arm from the behaviour in its data. Pusher's first model,
    grounded on expert, noise and held-key episodes, followed the arm to 1.3 cm at h16
    under the expert's actions, yet under a policy trained in its dream the dream's tip
    was 6 cm off MuJoCo's by step 20: the policy steered into what the data never showed.
    Episodes of that policy in MuJoCo are the grounding that closes the gap (as Dreamer
    collects with its current policy)."""

    name = "agent"

    def __init__(self, sim, rng, agent, noise: float) -> None:
        super().__init__(sim, rng)
        self.agent, self.noise = agent, noise * rng.random()

    def act(self) -> np.ndarray:
        obs = self.sim.unwrapped._get_obs().astype(np.float32)[None]
        a = self.agent.act(obs)[0].astype(np.float64)
        a += self.noise * (self.high - self.low) / 2 * self.rng.standard_normal(a.shape)
        return self.clip(a)


@functools.cache
def load_agent(path: str):
    """A policy file, loaded once per process (workers run many episodes each)."""
    from worldsim.policies.policy_file import SB3Policy  # Stable-Baselines3: agent only

    return SB3Policy(path)


def check_agents(sim: MujocoSim, paths) -> None:
    """Every policy file of `data.agents` loads and fits the task's state observation."""
    if not paths:
        raise ValueError("data.policy=agent needs data.agents=[PATH,...] (policy files)")
    native = sim.env.observation_space
    obs_space = gym.spaces.Box(native.low.astype(np.float32), native.high.astype(np.float32))
    for path in paths:
        load_agent(str(path)).check(obs_space, sim.action_space)


def make_policy(name: str, sim: MujocoSim, data_cfg, rng: np.random.Generator) -> Policy:
    """The collection policy for one episode; `mix` draws which kind per episode, `agent`
    which of `data_cfg.agents`."""
    if name not in POLICIES:
        raise ValueError(f"unknown collection policy {name!r}; choose one of {list(POLICIES)}")
    if name == "agent":
        agents = list(data_cfg.agents)
        check_agents(sim, agents)
        agent = load_agent(str(agents[rng.integers(len(agents))]))
        return AgentPolicy(sim, rng, agent, data_cfg.agent_noise)
    noise: Callable[[], Policy] = lambda: CorrelatedNoisePolicy(  # noqa: E731
        sim, rng, data_cfg.noise_theta, data_cfg.noise_sigma
    )
    if name == "random":
        return RandomPolicy(sim, rng)
    if name == "noise":
        return noise()
    if name == "keys":
        return HeldKeysPolicy(sim, rng)
    expert_cls = EXPERTS.get(sim.task.expert)
    if expert_cls is None:
        raise ValueError(
            f"task {sim.task.name!r} names expert {sim.task.expert!r}; known: {sorted(EXPERTS)}"
        )
    targets = data_cfg.get("expert_targets", 0.0)
    if targets > 0 and not hasattr(expert_cls, "draw_target"):
        raise ValueError(
            f"data.expert_targets={targets}: the {sim.task.expert!r} expert has no other "
            "targets than the task's goal (only pusher's does); set data.expert_targets=0"
        )
    # drawn only when asked for, so that stores written without the setting reproduce
    if targets > 0 and rng.random() < targets:
        expert = expert_cls(sim, rng, target=expert_cls.draw_target(sim, rng))
    else:
        expert = expert_cls(sim, rng)
    if data_cfg.get("expert_state_noise", 0.0) > 0:
        expert = PerceivingExpert(sim, rng, expert, data_cfg.expert_state_noise)
    if name == "expert":
        return expert
    draw = rng.random()
    if draw < data_cfg.noise_fraction:
        return noise()
    if draw < data_cfg.noise_fraction + data_cfg.keys_fraction:
        return HeldKeysPolicy(sim, rng)
    return NoisyExpert(sim, rng, expert, data_cfg.expert_noise)


# -- helpers --------------------------------------------------------------------
def balance_gain(model: mujoco.MjModel, frame_skip: int, iters: int = 500) -> np.ndarray:
    """Discrete LQR gain at the upright pose, from central differences of the env step.

    Differences are taken over the env's `frame_skip` physics steps with the control
    held, i.e. the same discrete system the policy acts on (mjd_transitionFD would
    be the tool, but it does not support the RK4 integrator this task uses).
    """
    data = mujoco.MjData(model)
    nv, nu = model.nv, model.nu

    def step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:], data.ctrl[:] = x[:nv], x[nv:], u
        for _ in range(frame_skip):
            mujoco.mj_step(model, data)
        return np.concatenate([data.qpos, data.qvel])

    x0, u0, eps = np.zeros(2 * nv), np.zeros(nu), 1e-5
    a = np.stack(
        [(step(x0 + e, u0) - step(x0 - e, u0)) / (2 * eps) for e in np.eye(2 * nv) * eps], axis=1
    )
    b = np.stack(
        [(step(x0, u0 + e) - step(x0, u0 - e)) / (2 * eps) for e in np.eye(nu) * eps], axis=1
    )
    q = np.diag([1.0, 10.0] + [0.1] * (2 * nv - 2))
    r = np.eye(nu) * 0.1
    p = q.copy()
    for _ in range(iters):
        k = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ k)
    return k
