"""The report CLI (``scripts/report.py``): a sweep's table with statistics from its MLflow experiment
or a report CSV, its comparisons with a baseline, per-run bootstrap intervals, figures (reliability
grid, OOD histograms, and for a report grouped by one numeric param its ablation figure), and claims
tables.
The library parts are `sweeps.results`, `sweeps.claims` and `sweeps.claims_tables`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from simlab._io import write_text_atomic
from simlab.stats import Summary
from sweeps.claims import evaluate_claims, load_claims, load_source_rows
from sweeps.claims_tables import claims_csv, claims_markdown
from sweeps.preflight import PreflightError, check_store_exists, check_writable_folder
from sweeps.results import (
    BEST_EPOCH_COLUMN,
    COLUMNS,
    Method,
    ablation_figure,
    ablation_param,
    bootstrap_csv,
    bootstrap_markdown,
    bootstrap_rows,
    build_rows,
    compare,
    comparisons_csv,
    default_out,
    load_runs,
    ood_columns,
    ood_figure,
    ood_rows,
    read_csv,
    reliability_grid,
    to_csv,
    to_markdown,
    warm_start_points,
)

logger = logging.getLogger(__name__)


def _split(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


_BEGIN = "<!-- generated: "
_END = "<!-- end generated -->"


def refresh_generated(text: str, *, base: Path) -> str:
    """``text`` with each generated block replaced by its source file's current content, so documents
    quote reports and claims tables instead of copying them by hand. ``#table`` takes the file's first
    markdown table and the paragraph after it (``#tableN``: the N-th), ``#verdicts`` a claims table's
    verdict tally."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not line.startswith(_BEGIN):
            continue
        target = line[len(_BEGIN) :].removesuffix("-->").strip()
        name, _, part = target.partition("#")
        path = base / name
        if not path.is_file():
            raise ValueError(f"generated block: no such file {name!r} (line {i})")
        body = path.read_text().strip("\n").split("\n")
        if part.startswith("table"):  # "table" / "tableN": the N-th table (1-based) and its caption
            nth = int(part[5:] or 1)
            starts = [
                k
                for k, b in enumerate(body)
                if b.startswith("|") and (k == 0 or not body[k - 1].startswith("|"))
            ]
            if len(starts) < nth:
                raise ValueError(f"generated block: {name} has {len(starts)} table(s), not {nth}")
            start = end = starts[nth - 1]
            while end < len(body) and body[end].startswith("|"):
                end += 1
            while end < len(body) and not body[end].strip():  # the caption paragraph after it
                end += 1
            while end < len(body) and body[end].strip() and not body[end].startswith(("#", "|")):
                end += 1
            body = body[start:end]
        elif part == "verdicts":  # a claims table's verdict tally
            body = [b for b in body if b.startswith("Verdicts:")]
        elif part:
            raise ValueError(f"generated block: unknown part {part!r} of {name} (#table or #verdicts)")
        while i < len(lines) and lines[i].strip() != _END:
            i += 1
        if i == len(lines):
            raise ValueError(f"generated block for {name}: no closing {_END!r}")
        out += body
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Paper-style tables with statistics from a sweep's MLflow experiment (or a report CSV), "
        "and a paper's claims evaluated into a claims table."
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tracking-uri", help="e.g. sqlite:///<storage>/<sweep>/mlflow.db (with --experiment)")
    src.add_argument(
        "--from-csv", metavar="CSV", help="re-render a report from its report.csv (no store needed)"
    )
    src.add_argument(
        "--claims", metavar="YAML", help="evaluate a claims file (claims/paper_a.yaml) into a table"
    )
    src.add_argument(
        "--refresh",
        metavar="MARKDOWN",
        help="replace every '<!-- generated: FILE[#table[N]|#verdicts] -->' ... '<!-- end generated -->' "
        "block of a document (RESULTS.md) with FILE's current text",
    )
    p.add_argument("--experiment", help="the sweep's name (= its MLflow experiment)")
    p.add_argument(
        "--out",
        help="output folder (default: <sweep folder>/report for a sweep's own sqlite store, "
        "./reports/<experiment> for another store, ./reports otherwise)",
    )
    p.add_argument("--title", help="table title (default: the experiment or CSV name)")
    p.add_argument("--select", default="val_nll", help="validation metric that picks a method's config")
    p.add_argument("--mode", choices=["min", "max"], help="direction of --select (default: max for accuracy)")
    p.add_argument(
        "--no-diagrams",
        action="store_true",
        help="skip the figures (reliability grid, OOD histograms, the ablation figure)",
    )
    p.add_argument(
        "--group-by", default="", help="params that split rows into settings (paper B: noise_kind,noise_rate)"
    )
    p.add_argument(
        "--show-params",
        default="alpha,beta",
        help="params of each row's chosen configuration to show (default alpha,beta; '' for none)",
    )
    p.add_argument(
        "--interval", action="store_true", help="add the 95 %% Student-t interval over seeds to each cell"
    )
    p.add_argument(
        "--baseline",
        default="onehot",
        help="method every row is compared with (Method text: onehot, uniform, similarity:we, "
        "confidence:pairs+log_projection, onehot/ts; default onehot = one-hot CE); 'none' to skip",
    )
    p.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the verdicts (default 0.05)"
    )
    p.add_argument("--stage", help="only runs of this stage of a two-stage sweep (search / seeds)")
    p.add_argument(
        "--best-epoch",
        nargs="?",
        const="test_accuracy",
        metavar="METRIC",
        help="add the best epoch's test accuracy (the runs' test_accuracy_best, else the best of METRIC's "
        "per-epoch history, default test_accuracy): paper B's protocol, selected on test",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="per run, N bootstrap resamples of the test set (test_probs.npz)",
    )
    p.add_argument(
        "--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)"
    )
    p.add_argument(
        "--emit-warm-start",
        metavar="FILE",
        help="write each row's chosen configuration x --seeds as warm-start JSON",
    )
    p.add_argument("--seeds", default="0,1,2", help="seeds for --emit-warm-start (default 0,1,2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out:
        out = Path(args.out)
    elif args.tracking_uri and args.experiment:
        out = default_out(args.tracking_uri, args.experiment)
    else:
        out = Path("reports")

    def fail(message: str, code: int = 2) -> int:
        print(f"error: {message}", file=sys.stderr)
        return code

    if not 0 < args.alpha < 1:
        return fail(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.refresh:
        try:
            doc = Path(args.refresh)
            write_text_atomic(doc, refresh_generated(doc.read_text(), base=Path.cwd()))
        except (OSError, ValueError) as err:
            return fail(str(err))
        print(f"refreshed: {args.refresh}")
        return 0
    if args.claims:
        try:
            claims = load_claims(args.claims)
        except (OSError, ValueError) as err:
            return fail(str(err))
        loaded = {name: load_source_rows(s) for name, s in claims.sources.items()}
        rows_by_source = {name: rows for name, (rows, _) in loaded.items()}
        origins = {name: origin for name, (_, origin) in loaded.items()}
        try:
            results = evaluate_claims(claims, rows_by_source)
        except ValueError as err:
            return fail(str(err))
        md = claims_markdown(claims, results, origins=origins)
        stem = Path(args.claims).stem
        write_text_atomic(out / f"claims_{stem}.md", md)
        write_text_atomic(out / f"claims_{stem}.csv", claims_csv(results))
        print(md)
        return 0

    try:
        baseline = None if args.baseline == "none" else Method.parse(args.baseline)
        seeds = [int(x) for x in _split(args.seeds)]
    except ValueError as err:
        return fail(f"--baseline/--seeds: {err}")
    client = None
    if args.from_csv:
        try:
            rows = read_csv(args.from_csv)
        except ValueError as err:
            return fail(str(err))
        title = (
            args.title or f"{Path(args.from_csv).parent.name}: re-rendered from {Path(args.from_csv).name}"
        )
        show_config = any(r.config for r in rows)
    else:
        if not args.experiment:
            return fail("--experiment is required with --tracking-uri")
        if not args.select.startswith("val_"):
            return fail(f"--select must be a validation metric (val_...), got {args.select!r}")
        mode = args.mode or ("max" if args.select.endswith("accuracy") else "min")
        try:  # before any work: a store that exists (never create one), outputs that can be written
            check_writable_folder("--out", out)
            if args.emit_warm_start:
                check_writable_folder("--emit-warm-start", Path(args.emit_warm_start).absolute().parent)
            check_store_exists(args.tracking_uri)
            client, runs = load_runs(
                args.tracking_uri, args.experiment, best_epoch_from=args.best_epoch, stage=args.stage
            )
        except (ValueError, PreflightError) as err:
            return fail(str(err))
        if not runs:
            return fail(f"no finished trial runs in experiment {args.experiment!r}", 1)
        if not any(args.select in r.metrics for r in runs):
            have = sorted({m for r in runs for m in r.metrics if m.startswith("val_")})
            return fail(f"--select {args.select!r}: no run has this metric; available: {', '.join(have)}")
        show = _split(args.show_params)
        rows = build_rows(
            runs, select=args.select, mode=mode, group_by=_split(args.group_by), show_params=show
        )
        title = args.title or f"{args.experiment}: {len(runs)} finished trials"
        show_config = bool(show)
    metrics = [m for m, _ in COLUMNS]
    if any(r.cells.get(BEST_EPOCH_COLUMN[0], Summary(0, 0, 0)).n for r in rows):
        metrics.append(BEST_EPOCH_COLUMN[0])
    comparisons = compare(rows, baseline, metrics=metrics, alpha=args.alpha) if baseline else []
    if baseline and not any(r.method == baseline for r in rows):
        logger.warning("baseline %s: no such row; no comparisons", baseline)
    md = to_markdown(
        rows,
        title=title,
        show_config=show_config,
        interval=args.interval,
        comparisons=comparisons,
        baseline=baseline,
        alpha=args.alpha,
    )
    if client is not None and args.bootstrap:
        boot = bootstrap_rows(client, rows, n_resamples=args.bootstrap, seed=args.bootstrap_seed)
        if boot:
            md += "\n" + bootstrap_markdown(boot)
            write_text_atomic(out / "bootstrap.csv", bootstrap_csv(boot))
    write_text_atomic(out / "report.md", md)
    write_text_atomic(out / "report.csv", to_csv(rows))
    if comparisons:
        write_text_atomic(out / "comparisons.csv", comparisons_csv(comparisons))
    print(md)
    param = None if args.no_diagrams else ablation_param(rows)
    if param:  # grouped by one numeric param: paper A Fig. 2's view of it
        try:
            fig = ablation_figure(rows, param, out / f"ablation_{re.sub(r'[^0-9A-Za-z_]+', '_', param)}.png")
        except ValueError as err:  # a method both with and without the param: the tables stand
            print(f"no ablation figure: {err}", file=sys.stderr)
        else:
            print(
                f"ablation figure over {param}: {fig}"
                if fig
                else f"no ablation figure over {param} (no data)"
            )
    if client is not None and not args.no_diagrams:
        grid = reliability_grid(client, rows, out / "reliability.png")
        print(f"reliability diagrams: {grid}" if grid else "no reliability diagrams (no test_probs.npz)")
        if ood_columns(rows):
            ood = ood_figure(
                client, ood_rows(rows, select=args.select, mode=mode), out / "ood_confidence.png"
            )
            print(f"OOD confidence histograms: {ood}" if ood else "no ood_noise_confidences.npz")
    if args.emit_warm_start:
        if client is None:
            return fail("--emit-warm-start needs the MLflow store (the chosen params are not in the CSV)")
        points = warm_start_points(rows, _split(args.show_params), seeds)
        write_text_atomic(Path(args.emit_warm_start), json.dumps(points, indent=1) + "\n")
        print(f"warm-start points ({len(points)}): {args.emit_warm_start}")
    print(f"written: {out / 'report.md'}, {out / 'report.csv'}")
    return 0
