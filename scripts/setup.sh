#!/usr/bin/env bash
# Create .venv and install worldsim (editable) with its dev tools.
# PyTorch is pinned to the 2.13.0 CPU wheel: an unpinned `torch` pulls a
# multi-GB CUDA build. The package itself only asks for torch>=2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check --upgrade pip
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e ".[dev]"
echo "worldsim installed in $(pwd)/.venv (activate: . .venv/bin/activate)"
