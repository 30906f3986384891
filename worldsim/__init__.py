"""worldsim: a generative world-model simulator for robotics."""

import os
import sys

# MuJoCo picks its GL backend when it is first imported; headless EGL (Mesa) is
# the default that works on servers and CI. Set before any submodule imports mujoco.
MUJOCO_IMPORTED_FIRST = "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ
"""True when mujoco was imported before worldsim without MUJOCO_GL: it chose its own backend."""
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"

from worldsim.envs.registration import register_envs  # noqa: E402

register_envs()
