# Sourced by the one-call GPU scripts (scripts/train_world_model_gpu.sh,
# scripts/bench_gpu.sh): on the bare, offline GPU machine, unpack MuJoCo's GL loader
# (.gl/) and install the wheels in .whl/ and the project from this tree into /tmp/site
# (both folders made by scripts/gpu_wheels.sh). With DRY_RUN=1 nothing is unpacked or
# installed: the packages already installed here are used.
if [ "${DRY_RUN:-0}" != 1 ] && [ -d .gl ]; then  # NVIDIA driver present, loader packages not
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ "${DRY_RUN:-0}" != 1 ] && [ -d .whl ]; then  # what the project needs beyond torch, numpy,
  # safetensors, tqdm; then the project from this tree (offline: setuptools is there, no
  # build isolation)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target /tmp/site .
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}
