"""Results of sweeps: runs -> rows with statistics -> comparisons against a baseline -> tables.

- `method`: `Method`, a row's label method as a value (``onehot``, ``similarity:we``,
  ``confidence:pairs+log_projection``, ``onehot/ts`` for a post-hoc recalibration of the one-hot
  runs); `Method.parse` / `str` round-trip, `Method.display` is the paper's name (``WE``,
  ``LP (conf pairs)``).
- `rows`: `load_runs` (MLflow) -> `build_rows`: per (setting, model, method) the configuration chosen
  on the validation split, its seeds aggregated into `simlab.stats.Summary` cells; `to_csv` /
  `read_csv` (a report re-rendered without the store); `ood_rows`, `warm_start_points`.
- `compare`: every row against a named baseline row of the same setting and model: difference of
  means, Welch's p, Holm-corrected over the table, a verdict and the detectable difference.
- `tables`: cells, p-values and the markdown tables.
- `artifacts`: bootstrap intervals, reliability grid and noise-confidence figure from the runs'
  saved test outputs.
- `ablation`: a report grouped by one numeric param (``--group-by alpha``): each metric against it,
  one line per method (paper A §6.3, Fig. 2).

Claims checked by code are `sweeps.claims`; the CLI is `sweeps.report` (``scripts/report.py``).
MLflow, torch and matplotlib are imported when a function needs them.
"""

from sweeps.results.ablation import ablation_figure, ablation_param, ablation_series, build_ablation_figure
from sweeps.results.artifacts import (
    bootstrap_csv,
    bootstrap_markdown,
    bootstrap_rows,
    ood_figure,
    reliability_grid,
)
from sweeps.results.compare import (
    HIGHER_IS_BETTER,
    Comparison,
    Verdict,
    compare,
    comparisons_csv,
    paired_differences,
)
from sweeps.results.method import (
    LABEL_NAMES,
    LOSS_NAMES,
    METHOD_ORDER,
    PAPER_OOD_METHODS,
    POST_HOC,
    SIMILARITY_METHODS,
    SOURCE_NAMES,
    Method,
)
from sweeps.results.rows import (
    BEST_EPOCH_COLUMN,
    COLUMNS,
    NON_CONFIG_PARAMS,
    OOD_COLUMNS,
    Row,
    Run,
    build_rows,
    default_out,
    load_runs,
    ood_columns,
    ood_dataset_columns,
    ood_rows,
    read_csv,
    seed_values,
    selection_score,
    to_csv,
    warm_start_points,
)
from sweeps.results.tables import fmt_p, fmt_pct, fmt_points, format_cell, markdown_table, to_markdown

__all__ = [
    "BEST_EPOCH_COLUMN",
    "COLUMNS",
    "HIGHER_IS_BETTER",
    "LABEL_NAMES",
    "LOSS_NAMES",
    "METHOD_ORDER",
    "NON_CONFIG_PARAMS",
    "OOD_COLUMNS",
    "PAPER_OOD_METHODS",
    "POST_HOC",
    "SIMILARITY_METHODS",
    "SOURCE_NAMES",
    "Comparison",
    "Method",
    "Row",
    "Run",
    "Verdict",
    "ablation_figure",
    "ablation_param",
    "ablation_series",
    "bootstrap_csv",
    "bootstrap_markdown",
    "bootstrap_rows",
    "build_ablation_figure",
    "build_rows",
    "compare",
    "comparisons_csv",
    "default_out",
    "fmt_p",
    "fmt_pct",
    "fmt_points",
    "format_cell",
    "load_runs",
    "markdown_table",
    "ood_figure",
    "ood_columns",
    "ood_dataset_columns",
    "ood_rows",
    "paired_differences",
    "read_csv",
    "reliability_grid",
    "seed_values",
    "selection_score",
    "to_csv",
    "to_markdown",
    "warm_start_points",
]
