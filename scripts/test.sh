#!/usr/bin/env bash
# Set up .venv from scratch if needed, then run the whole test suite (fast, slow and fault tests;
# gpu tests skip themselves without CUDA). Extra arguments go to pytest, e.g.
#   scripts/test.sh -m "not slow and not fault"     # the fast suite only (< 10 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if [ -f scripts/system_deps.sh ]; then bash scripts/system_deps.sh; fi
export SIMLAB_CACHE="${SIMLAB_CACHE:-$PWD/.cache/simlab}"
export MPLBACKEND=Agg
# The suite shares two cores with Ray workers: one torch thread per process avoids oversubscription
# (measured here: small-tensor work ran ~10x slower with 2 threads per process under load).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest --timeout=1200 -p no:cacheprovider "$@"
