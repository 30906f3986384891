"""MuJoCo grounding simulator: a Gymnasium MuJoCo task rendered the way worldsim sees it.

Physics comes from the Gymnasium task untouched; rendering is our own
`mujoco.Renderer` with the task config's camera, render-only geom overrides and a
per-pixel segmentation (background / robot / object / goal). Everything the world
model learns from and is judged against passes through here.
"""

from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

import worldsim

_GEOM = int(mujoco.mjtObj.mjOBJ_GEOM)  # a plain int: comparing arrays with the enum is slow

SEG_CLASSES: tuple[str, ...] = ("background", "robot", "object", "goal")
"""Segmentation class ids are the positions in this tuple."""


class RenderError(RuntimeError):
    """MuJoCo could not create an offscreen GL context."""


_RENDERING: weakref.WeakSet[MujocoSim] = weakref.WeakSet()
"""Sims of this process that hold a GL renderer."""


def release_gl_before_fork() -> None:
    """GL state does not survive a fork: a child that renders on the EGL display its parent
    initialised deadlocks (measured: gym.make_vec(..., vectorization_mode="async") after the
    parent had reset a worldsim env hung past 300 s). So before any fork this process frees
    its renderers and terminates its EGL display; both are made again on the next frame
    (tens of milliseconds), in the parent and in each child."""
    for sim in list(_RENDERING):
        sim.close_renderer()
    egl = sys.modules.get("mujoco.egl")
    if egl is not None and getattr(egl, "EGL_DISPLAY", None) is not None:
        egl._terminate_display()


os.register_at_fork(before=release_gl_before_fork)


@dataclass
class Observation:
    """What the recorder stores for one time step."""

    frame: np.ndarray  # (H, W, 3) uint8
    seg: np.ndarray  # (H, W) uint8, class ids from SEG_CLASSES
    state: dict[str, np.ndarray]  # qpos, qvel and the task's state_bodies positions


class MujocoSim:
    """One MuJoCo task instance with worldsim's camera, overrides and segmentation."""

    def __init__(self, task) -> None:
        self.task = task
        try:
            # the task config, not the env's registration, sets the episode length
            self.env = gym.make(
                task.env_id,
                max_episode_steps=int(task.max_episode_steps),
                **dict(task.env_kwargs),
            )
        except gym.error.Error as e:
            raise ValueError(f"task {task.name!r}: cannot make env_id {task.env_id!r}: {e}") from e
        self.unwrapped = self.env.unwrapped
        self.model: mujoco.MjModel = self.unwrapped.model
        self.data: mujoco.MjData = self.unwrapped.data
        self.action_space = self.env.action_space
        self._apply_render_overrides()
        self._geom_class = self._geom_classes()
        self._camera = self._make_camera()
        self._gl: mujoco.Renderer | None = None  # made on first use: see `_renderer`
        self._gl_pid = -1
        self.body_ids = {
            name: self._id(mujoco.mjtObj.mjOBJ_BODY, body)
            for name, body in task.state_bodies.items()
        }

    @property
    def _renderer(self) -> mujoco.Renderer:
        """The GL renderer, made on first use in this process (and again after a fork:
        see `release_gl_before_fork`); a forked copy makes its own."""
        if self._gl is None or self._gl_pid != os.getpid():
            self._gl, self._gl_pid = self._make_renderer(), os.getpid()
            _RENDERING.add(self)
        return self._gl

    def close_renderer(self) -> None:
        """Free this process's GL renderer (the next frame makes a new one)."""
        if self._gl is not None and self._gl_pid == os.getpid():
            self._gl.close()
        self._gl, self._gl_pid = None, -1
        _RENDERING.discard(self)

    def __getstate__(self) -> dict:
        """Pickle and deepcopy (Gymnasium's MuJoCo envs allow both): the camera and the GL
        context are made again on the other side."""
        state = self.__dict__.copy()
        state.update(_gl=None, _gl_pid=-1, _camera=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._camera = self._make_camera()

    def _make_renderer(self) -> mujoco.Renderer:
        size = int(self.task.image_size)
        try:
            # one renderer (one GL context) for colour and segmentation: switching
            # between two contexts every frame cost more than the rendering itself
            renderer = mujoco.Renderer(self.model, size, size)
        except Exception as e:  # mujoco raises several types depending on the GL backend
            if worldsim.MUJOCO_IMPORTED_FIRST:
                raise RenderError(
                    "MuJoCo was imported before worldsim with MUJOCO_GL unset, so it chose a "
                    "windowed GL backend. Run with MUJOCO_GL=egl in the environment, or "
                    f"import worldsim before mujoco ({e})"
                ) from e
            raise RenderError(
                f"MuJoCo could not render offscreen with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}"
                f" ({e}). Install Mesa's EGL (Debian: `apt-get install libegl1 libgl1-mesa-dri`)"
                " and use MUJOCO_GL=egl, or MUJOCO_GL=osmesa with libosmesa6."
            ) from e
        if not self.task.get("render_shadows", True):
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                renderer.scene.flags[flag] = 0  # kept across update_scene
        return renderer

    # -- construction helpers -------------------------------------------------
    def _id(self, objtype, name: str) -> int:
        i = mujoco.mj_name2id(self.model, objtype, name)
        if i < 0:
            kind = "geom" if objtype == mujoco.mjtObj.mjOBJ_GEOM else "body"
            raise ValueError(f"task {self.task.name!r}: no {kind} named {name!r} in the MJCF")
        return i

    def _apply_render_overrides(self) -> None:
        for o in self.task.render_overrides:
            g = self._id(mujoco.mjtObj.mjOBJ_GEOM, o.geom)
            if self._can_collide(g):
                # Only collision-free geoms may change: then size is render-only
                # (inertia was computed from geoms when the model was compiled).
                raise ValueError(
                    f"render override of geom {o.geom!r} is not render-only: it can make contacts"
                )
            if o.size is not None:
                self.model.geom_size[g, : len(o.size)] = o.size
                self.model.geom_rbound[g] = 0.0  # let MuJoCo's culling ignore the stale bound
            if o.rgba is not None:
                self.model.geom_rgba[g] = o.rgba

    def _can_collide(self, g: int) -> bool:
        m = self.model
        others = np.arange(m.ngeom) != g
        pair = (m.geom_contype[g] & m.geom_conaffinity) | (m.geom_contype & m.geom_conaffinity[g])
        return bool(np.any(pair[others]))

    def _geom_classes(self) -> np.ndarray:
        """Class id per geom: a geom belongs to the class of its nearest listed ancestor body."""
        return self.body_classes()[self.model.geom_bodyid]

    def robot_joints(self) -> tuple[np.ndarray, np.ndarray]:
        """(qpos addresses, qvel addresses) of the robot bodies' hinge and slide joints."""
        m, robot, classes = self.model, SEG_CLASSES.index("robot"), self.body_classes()
        one_dof = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
        joints = [
            j
            for j in range(m.njnt)
            if classes[m.jnt_bodyid[j]] == robot and int(m.jnt_type[j]) in one_dof
        ]
        return m.jnt_qposadr[joints].copy(), m.jnt_dofadr[joints].copy()

    def body_classes(self) -> np.ndarray:
        """Segmentation class id per body: that of its nearest listed ancestor."""
        body_class = np.zeros(self.model.nbody, dtype=np.uint8)
        listed = {}
        for cls, bodies in self.task.segmentation.items():
            if cls not in SEG_CLASSES:
                raise ValueError(
                    f"unknown segmentation class {cls!r}; expected one of {SEG_CLASSES}"
                )
            for b in bodies:
                listed[self._id(mujoco.mjtObj.mjOBJ_BODY, b)] = SEG_CLASSES.index(cls)
        for b in range(self.model.nbody):  # parents precede children in MuJoCo's body order
            parent = self.model.body_parentid[b]
            body_class[b] = listed.get(b, body_class[parent] if b else 0)
        return body_class

    def _make_camera(self) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        c = self.task.camera
        cam.lookat[:] = c.lookat
        cam.distance = c.distance
        cam.azimuth = c.azimuth
        cam.elevation = c.elevation
        return cam

    # -- stepping -------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        self.env.reset(seed=seed)
        return self.observe()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict]:
        _, reward, terminated, truncated, info = self.env.step(action)
        return self.observe(), float(reward), bool(terminated), bool(truncated), info

    def observe(self) -> Observation:
        self._renderer.update_scene(self.data, self._camera)
        return Observation(frame=self._render_rgb(), seg=self._render_seg(), state=self.state())

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self.data, self._camera)
        return self._render_rgb()

    def pose(self, layout, state: np.ndarray, qpos: np.ndarray) -> Observation:
        """MuJoCo's picture of a scene state vector (dim,) in `layout`: its qpos columns set
        over `qpos` (the rest, e.g. a goal that never moves, kept from there), velocities
        zero. The judge of whether a dreamed frame shows the model's own state: a reader
        cannot be where the camera barely shows a part (Pusher's position reader misread
        the tip by 16 cm median on MuJoCo's own frames of held-key poses)."""
        q = np.array(qpos, dtype=np.float64)
        for quantity in layout.quantities:
            if quantity.array == "qpos":
                q[list(quantity.index)] = state[layout.slices[quantity.name]]
        self.data.qpos[:] = q
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)
        return self.observe()

    def segment(self) -> np.ndarray:
        self._renderer.update_scene(self.data, self._camera)
        return self._render_seg()

    def _render_rgb(self) -> np.ndarray:
        return self._renderer.render()

    def _render_seg(self) -> np.ndarray:
        r = self._renderer
        r.enable_segmentation_rendering()
        try:
            ids = r.render()  # (H, W, 2): object id, object type; -1 where empty
        finally:
            r.disable_segmentation_rendering()
        geom = (ids[..., 1] == _GEOM) & (ids[..., 0] >= 0)
        out = np.zeros(ids.shape[:2], dtype=np.uint8)
        out[geom] = self._geom_class[ids[..., 0][geom]]
        return out

    def state(self) -> dict[str, np.ndarray]:
        s = {
            "qpos": self.data.qpos.astype(np.float32),
            "qvel": self.data.qvel.astype(np.float32),
        }
        for name, b in self.body_ids.items():
            s[name] = self.data.xpos[b].astype(np.float32)
        return s

    def state_layout(self) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in self.state().items()}

    def pair_distance(self) -> float | None:
        """The success pair's distance (m) now; None for a task without one."""
        d = success_pair_distance(self.task, self.state())
        return None if d is None else float(d)

    def is_success(self, state: dict[str, np.ndarray], steps: int) -> bool:
        one = {k: np.asarray(v)[None] for k, v in state.items()}
        return bool(success_mask(self.task, one, np.array([steps]))[0])

    def close(self) -> None:
        self.close_renderer()
        self.env.close()


def success_pair_distance(task, state: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per-row distance (m) between the task's success pair (Reacher's fingertip and
    target, Pusher's object and goal); None for a task that succeeds otherwise."""
    if task.success_distance is None:
        return None
    a, b = task.success_pair
    return np.linalg.norm(np.asarray(state[a]) - np.asarray(state[b]), axis=-1)


def success_mask(task, state: dict[str, np.ndarray], steps: np.ndarray) -> np.ndarray:
    """Per-row task success from stored state (rows along axis 0) and steps taken so far."""
    if task.success_distance is not None:
        return success_pair_distance(task, state) < task.success_distance
    if task.success_min_steps:
        return np.asarray(steps) >= task.success_min_steps
    return np.zeros(len(steps), dtype=bool)
