"""worldsim: a generative world-model simulator for robotics."""

import os

# MuJoCo picks its GL backend when it is first imported; headless EGL (Mesa) is
# the default that works on servers and CI. Set before any submodule imports mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
