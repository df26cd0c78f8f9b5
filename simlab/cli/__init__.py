"""simlab's command-line front ends, installed as console scripts (``pyproject.toml``):
``simlab-train`` (`simlab.cli.train`: one configuration through `simlab.train.fit`, no Ray) and
``simlab-similarity`` (`simlab.cli.similarity`: a class-similarity source for a dataset). The files under
``scripts/`` are the same commands for a checkout (``python scripts/train.py``)."""
