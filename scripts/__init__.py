"""The repository's command files (``python scripts/report.py``, ``scripts/train.py``,
``scripts/similarity.py``: ~10-line wrappers of the installed commands ``simlab-report``, ``simlab-train``,
``simlab-similarity``) and benchmarks (`scripts.bench`). A package so tests and benchmarks import its
modules by name from the repository root (pytest puts the root on ``sys.path``: ``pythonpath`` in
pyproject.toml); it is not installed."""
