#!/usr/bin/env python
"""A class-similarity source for a dataset: nearest classes, closest pairs, a heatmap (``simlab-similarity``).

    python scripts/similarity.py --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.zip --source l2

The command is `simlab.cli.similarity`; ``--help`` lists its options and more examples.
"""

from __future__ import annotations

import sys

from simlab.cli.similarity import main

if __name__ == "__main__":
    sys.exit(main())
