"""Benchmarks of BENCHMARKS.md. Most run as files (``python scripts/bench/bench_train.py``) and import
their helper `benchenv` from this folder (a script's own folder is on ``sys.path``); the ones that use the
tests' reference code run as modules from the repository root (``python -m scripts.bench.bench_ece``,
``python -m scripts.bench.bench_reliability``). Tests import `scripts.bench.gpu_check` as a module."""
