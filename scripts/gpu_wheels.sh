#!/usr/bin/env bash
# Prepare what a bare, offline GPU machine needs to run scripts/train_world_model_gpu.sh:
# .whl/ (the packages the project needs beyond what that machine has: torch, numpy,
# safetensors, tqdm, matplotlib and imageio are there; CPython 3.12 wheels, ~23 MB) and
# .gl/ (the GL loader .debs MuJoCo's EGL rendering needs). The project itself travels as
# the working tree and is installed there from it. Both folders are kept out of git
# through .git/info/exclude; with the tree (~36 MB) they fit the device's 64 MiB.
# Run here, with network, before the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.whl/ /.gl/; do
  grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
done
py=${PYTHON:-python3}
mkdir -p .whl
get() {
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .whl "$@"
}
get mujoco==4.0.1 mujoco-core==4.0.1 gymnasium==1.4.0 zarr==3.1.6 numcodecs==0.16.6 \
  google-crc32c==1.9.0 donfig==0.8.1.post1 hydra-core==1.3.8 omegaconf==2.3.1 glfw==2.11.0 \
  pyopengl==3.1.10 farama-notifications==0.0.6 typing-extensions cloudpickle
# antlr4-python3-runtime 4.9.3 (what omegaconf pins) is published as a source archive only
"$py" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
mkdir -p .gl /tmp/amd64/partial
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${o[@]}" -qq update
(cd .gl && apt-get "${o[@]}" -qq download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
  libgles2)
du -sh .whl .gl
