#!/usr/bin/env python
"""Train one configuration with `simlab.train.fit` and print its final metrics (``simlab-train``).

    python scripts/train.py --set dataset=digits model=small_cnn lr=0.05 --epochs 3

The command is `simlab.cli.train`; ``--help`` lists its options.
"""

from __future__ import annotations

from simlab.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
