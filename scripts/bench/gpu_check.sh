#!/usr/bin/env bash
# One-command CUDA check (see scripts/bench/gpu_check.py): pytest -m gpu, ResNet-18 img/s, CIFAR-10-sized
# l1/l2 distances, a 4-trial sweep at 0.25 GPU per trial, peak GPU memory -> <out>/gpu_check.{json,log}.
#   PYTHON=/opt/torch/.venv/bin/python3 bash scripts/bench/gpu_check.sh [--out DIR] [--data CIFAR10_ZIP]
# Output folder: --out, else $GPU_CHECK_OUT, else ./gpu_check_out. Without CUDA: prints "skipped", exits 0.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# The repo need not be pip-installed: import it from the checkout.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" "$ROOT/scripts/bench/gpu_check.py" "$@"
