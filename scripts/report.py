#!/usr/bin/env python
"""Paper-style results with statistics: a sweep's table, its comparisons with a baseline, a paper's claims.

    python scripts/report.py --tracking-uri sqlite:///$HOME/simlab_sweeps/quickstart/mlflow.db \
        --experiment quickstart --out reports/quickstart [--interval] [--baseline onehot] [--bootstrap 1000]
    python scripts/report.py --from-csv results/round1/paper_a/report.csv --out results/round1/paper_a
    python scripts/report.py --claims claims/paper_a.yaml --out results/claims

Rows are methods per model (and per setting with ``--group-by``); cells ``mean ± std (n)`` over seeds;
every method is compared with ``--baseline`` (Welch over seeds, Holm over the table, verdict and the
detectable difference). The CLI is `sweeps.report`, the library `sweeps.results` and `sweeps.claims`,
the statistics `simlab.stats`; how to read a verdict: docs/statistics.md. Installed as ``simlab-report``.
"""

from __future__ import annotations

import sys

from sweeps.report import main

if __name__ == "__main__":
    sys.exit(main())
