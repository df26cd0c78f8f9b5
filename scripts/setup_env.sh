#!/usr/bin/env bash
# Create .venv (if missing) and install simlab with its dev extras.
# torch/torchvision are pinned first: pip on this machine takes them from local disk,
# a CUDA build that also runs on CPU; anything else would download several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import simlab, torch, ray, mlflow, optuna; print('env ok: torch', torch.__version__, 'ray', ray.__version__, 'mlflow', mlflow.__version__, 'optuna', optuna.__version__)"
