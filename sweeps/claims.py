"""A paper's claims as data, checked by code: a YAML file of claims, each a list of tests evaluated on
the rows of `sweeps.results` into supported / contradicted / cannot tell / no data.

File format (``claims/paper_a.yaml``)::

    paper: A
    title: ...
    alpha: 0.05
    sources:                      # where rows come from: the MLflow store when it exists, else the CSV
      cifar10:
        csv: results/round2/repro2-a-cifar10/report.csv  # relative to the repository root (a file in claims/)
        tracking_uri: sqlite:////work/runs16/repro2-a-cifar10/mlflow.db
        experiment: repro2-a-cifar10
        select: val_nll           # how build_rows chooses each method's configuration
        group_by: []              # params that split rows into settings
        stage: seeds              # only runs of this stage of a two-stage sweep (report.py --stage)
        best_epoch: true          # add best_epoch_accuracy (report.py --best-epoch: paper B's protocol)
    claims:
      - id: A2-c10
        text: TS, ETS and Dir-ODIR remove most of one-hot's miscalibration
        paper: "Table 1: ECE 12-23 % -> 1-5 %"
        source: cifar10           # default for the tests
        tests:                    # a ? b, one line of the claims table each
          - {metric: ece_hist_prediction, method: onehot/ts, baseline: onehot, direction: less}
          - {metric: accuracy, method: "confidence:pairs+log_projection", baseline: onehot,
             direction: greater, setting: {noise_kind: asymmetric, noise_rate: 0.8},
             baseline_source: clean, baseline_setting: {noise_kind: none}}

``direction``: ``greater`` / ``less`` (a > b / a < b), ``differ``, ``equal`` (with an optional
``margin``, a fraction like the metrics, for an equivalence test). Optional per test:
``baseline_metric``, ``baseline_source``, ``baseline_setting``, ``model``, and ``paired: true`` when
both sides come from the same runs (e.g. two estimates of one metric): the test is then the paired
t-test over the per-seed differences (runs matched by ``seed``), which removes the between-seed
variance Welch's test counts twice; rows read from a CSV carry no runs and get Welch's test.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simlab.stats import (
    Summary,
    holm,
    min_detectable_difference,
    min_detectable_difference_paired,
    paired_test,
    welch_test,
)
from sweeps.claims_rows import find_row, load_source_rows, row_summary
from sweeps.results import Method, Row, paired_differences

logger = logging.getLogger(__name__)

__all__ = [
    "CLAIM_VERDICTS",
    "DIRECTIONS",
    "Claim",
    "ClaimResult",
    "ClaimTest",
    "ClaimsFile",
    "Outcome",
    "Side",
    "Source",
    "combine_verdicts",
    "evaluate_claims",
    "load_claims",
    "load_source_rows",
]


DIRECTIONS: tuple[str, ...] = ("greater", "less", "differ", "equal")
CLAIM_VERDICTS: tuple[str, ...] = ("supported", "contradicted", "cannot tell", "no data")
_SOURCE_KEYS = frozenset(
    {"csv", "tracking_uri", "experiment", "select", "mode", "group_by", "note", "stage", "best_epoch"}
)


@dataclass(frozen=True)
class Side:
    """One side of a test: a row (method in a setting of a source) and the metric read from it."""

    method: Method
    metric: str
    source: str
    setting: tuple[tuple[str, str], ...] = ()
    model: str | None = None

    def describe(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in self.setting)
        return f"{self.method.display} [{self.source}{' ' + where if where else ''}]"


@dataclass(frozen=True)
class ClaimTest:
    a: Side
    b: Side
    direction: str  # a ? b: greater, less, differ, equal
    margin: float | None = None  # for "equal": equivalence margin (a fraction, like the metrics)
    paired: bool = False  # both sides from the same runs (pairs by seed): the paired t-test


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    paper: str  # the paper's numbers, as the paper states them
    tests: tuple[ClaimTest, ...]
    note: str = ""


@dataclass(frozen=True)
class Source:
    """Where a claim's rows come from: an MLflow experiment (preferred when the store exists) or a CSV."""

    name: str
    csv: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    select: str = "val_nll"
    mode: str | None = None
    group_by: tuple[str, ...] = ()
    note: str = ""
    stage: str | None = None  # only runs tagged simlab.stage = stage (a two-stage sweep's "seeds")
    best_epoch: bool = False  # load best_epoch_accuracy (test_accuracy_best, else the history's best)


@dataclass(frozen=True)
class ClaimsFile:
    paper: str
    title: str
    sources: dict[str, Source]
    claims: tuple[Claim, ...]
    alpha: float = 0.05


def _setting(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}.setting: expected a mapping of param -> value, got {raw!r}")
    return tuple(sorted((str(k), str(v)) for k, v in raw.items()))


def load_claims(path: str | os.PathLike) -> ClaimsFile:
    """Read and validate a claims YAML file (format: this module's docstring, ``claims/paper_a.yaml``).

    Relative ``csv`` paths are resolved from the repository root when the file sits in a ``claims/``
    folder, else from the file's own folder; ``~`` and ``$VARS`` in ``tracking_uri`` are expanded.
    """
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, Mapping) or "claims" not in data or "sources" not in data:
        raise ValueError(f"claims file {str(path)!r}: expected a mapping with 'sources' and 'claims'")
    base = path.resolve().parent.parent if path.resolve().parent.name == "claims" else path.resolve().parent
    sources = {}
    for name, raw in data["sources"].items():
        raw = dict(raw or {})
        unknown = set(raw) - _SOURCE_KEYS
        if unknown:
            raise ValueError(f"sources.{name}: unknown key(s) {sorted(unknown)}")
        csv_path = raw.get("csv")
        if csv_path and not os.path.isabs(csv_path):
            csv_path = str(base / csv_path)
        uri = raw.get("tracking_uri")
        if uri:
            uri = os.path.expandvars(
                os.path.expanduser(uri.replace("sqlite:///~", "sqlite:///" + os.path.expanduser("~")))
            )
        sources[name] = Source(
            name,
            csv=csv_path,
            tracking_uri=uri,
            experiment=raw.get("experiment"),
            select=raw.get("select", "val_nll"),
            mode=raw.get("mode"),
            group_by=tuple(raw.get("group_by", ())),
            note=raw.get("note", ""),
            stage=raw.get("stage"),
            best_epoch=bool(raw.get("best_epoch", False)),
        )
    claims = []
    seen = set()
    for i, raw in enumerate(data["claims"]):
        where = f"claims[{i}]"
        for key in ("id", "text", "paper", "tests"):
            if key not in raw:
                raise ValueError(f"{where}: missing {key!r}")
        if raw["id"] in seen:
            raise ValueError(f"{where}: duplicate id {raw['id']!r}")
        seen.add(raw["id"])
        tests = []
        for j, t in enumerate(raw["tests"]):
            tw = f"{where}.tests[{j}]"
            direction = t.get("direction")
            if direction not in DIRECTIONS:
                raise ValueError(
                    f"{tw}.direction: expected one of {', '.join(DIRECTIONS)}, got {direction!r}"
                )
            source = t.get("source", raw.get("source"))
            b_source = t.get("baseline_source", source)
            for s in (source, b_source):
                if s not in sources:
                    raise ValueError(
                        f"{tw}.source: {s!r} is not one of the file's sources: {', '.join(sources)}"
                    )
            setting = _setting(t.get("setting", raw.get("setting")), tw)
            b_setting = _setting(t["baseline_setting"], tw) if "baseline_setting" in t else setting
            metric = t.get("metric", raw.get("metric"))
            if not metric:
                raise ValueError(f"{tw}.metric: missing")
            a = Side(Method.parse(t["method"]), metric, source, setting, t.get("model"))
            b = Side(
                Method.parse(t["baseline"]),
                t.get("baseline_metric", metric),
                b_source,
                b_setting,
                t.get("model"),
            )
            margin = t.get("margin")
            paired = t.get("paired", False)
            if not isinstance(paired, bool):
                raise ValueError(f"{tw}.paired: expected true or false, got {paired!r}")
            if paired and (source != b_source or direction == "equal"):
                raise ValueError(
                    f"{tw}.paired: pairs runs of one source by seed, for greater / less / differ "
                    f"(got source {source!r} vs {b_source!r}, direction {direction!r})"
                )
            tests.append(ClaimTest(a, b, direction, None if margin is None else float(margin), paired))
        claims.append(
            Claim(
                str(raw["id"]),
                str(raw["text"]).strip(),
                str(raw["paper"]).strip(),
                tuple(tests),
                str(raw.get("note", "")).strip(),
            )
        )
    return ClaimsFile(
        str(data.get("paper", "")),
        str(data.get("title", "")),
        sources,
        tuple(claims),
        float(data.get("alpha", 0.05)),
    )


@dataclass(frozen=True)
class Outcome:
    test: ClaimTest
    a: Summary | None
    b: Summary | None
    diff: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    detectable: float = math.nan
    verdict: str = "no data"
    kind: str = "welch"  # "welch", or "paired" (over the differences `pairs`, one per seed)
    pairs: Summary | None = None  # the per-seed differences a - b of a paired test


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    tests: tuple[Outcome, ...]
    verdict: str


def _test_verdict(t: ClaimTest, a: Summary, b: Summary, p_holm: float, alpha: float) -> str:
    diff = a.mean - b.mean
    significant = math.isfinite(p_holm) and p_holm < alpha
    if t.direction in ("greater", "less"):
        if not significant:
            return "cannot tell"
        return "supported" if (diff > 0) == (t.direction == "greater") else "contradicted"
    if t.direction == "differ":
        return "supported" if significant else "cannot tell"
    # equal: a significant difference contradicts it; equivalence within the margin (two one-sided
    # tests at alpha = the 1 - 2 alpha Welch interval of the difference inside ±margin) supports it.
    if significant:
        return "contradicted"
    if t.margin is not None and a.n >= 2 and b.n >= 2:
        from scipy import stats

        w = welch_test(a, b)
        if math.isfinite(w.df):
            half = stats.t.ppf(1 - alpha, w.df) * w.se
            if -t.margin < diff - half and diff + half < t.margin:
                return "supported"
    return "cannot tell"


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its tests': contradicted if any test contradicts it, supported if all
    support it, no data if none has data, else cannot tell."""
    if any(v == "contradicted" for v in verdicts):
        return "contradicted"
    if verdicts and all(v == "supported" for v in verdicts):
        return "supported"
    if all(v == "no data" for v in verdicts):
        return "no data"
    return "cannot tell"


def evaluate_claims(
    claims: ClaimsFile, rows_by_source: Mapping[str, Sequence[Row] | None]
) -> list[ClaimResult]:
    """Each test's Welch p over seeds (a ``paired`` test: the paired t-test over the per-seed differences,
    when the rows carry their runs), Holm-corrected over all tests of the file (one family), a
    verdict per test at ``claims.alpha`` and per claim (`combine_verdicts`). A test whose rows are
    missing (source not available, or no such method/setting) is "no data"."""
    found = []
    for claim in claims.claims:
        for t in claim.tests:
            ra, rb = rows_by_source.get(t.a.source), rows_by_source.get(t.b.source)
            row_a = find_row(ra, t.a) if ra is not None else None
            row_b = find_row(rb, t.b) if rb is not None else None
            a, b = row_summary(row_a, t.a.metric), row_summary(row_b, t.b.metric)
            pairs = (
                paired_differences(row_a, t.a.metric, row_b, t.b.metric)
                if t.paired and a is not None and b is not None
                else None
            )
            if pairs is not None and pairs.n > 0:
                w = paired_test(pairs)
            else:  # unpaired, or paired without per-seed values (a CSV): Welch, the conservative test
                pairs = None
                w = welch_test(a, b) if a is not None and b is not None else None
            found.append((claim, t, a, b, w, pairs))
    adjusted = holm([w.p if w is not None else math.nan for *_, w, _ in found])
    by_claim: dict[str, list[Outcome]] = defaultdict(list)
    for (claim, t, a, b, w, pairs), p_holm in zip(found, adjusted, strict=True):
        if w is None:
            by_claim[claim.id].append(Outcome(t, a, b))
            continue
        verdict = _test_verdict(t, a, b, p_holm, claims.alpha)
        if pairs is None:
            mdd, kind = min_detectable_difference(a, b, alpha=claims.alpha), "welch"
        else:
            mdd, kind = min_detectable_difference_paired(pairs, alpha=claims.alpha), "paired"
        by_claim[claim.id].append(Outcome(t, a, b, w.diff, w.p, p_holm, mdd, verdict, kind, pairs))
    return [
        ClaimResult(c, tuple(by_claim[c.id]), combine_verdicts([r.verdict for r in by_claim[c.id]]))
        for c in claims.claims
    ]
