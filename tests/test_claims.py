"""sweeps.claims on a small real sqlite MLflow store with known metrics: every test's Welch p against
scipy.stats.ttest_ind(equal_var=False), Holm over the file by hand, the verdict rules (supported /
contradicted / cannot tell / no data, equivalence margins, claims of several tests), CSV sources and
the claims files shipped with the repository."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import scipy.stats

from sweeps import claims as cl
from sweeps import report as cli
from tests.support import log_run, sweep_store

ROOT = Path(__file__).resolve().parent.parent
ACC = {  # (noise setting, method tag, loss) -> accuracies over 3 seeds
    ("asymmetric", "onehot", "ce"): [0.50, 0.51, 0.49],
    ("asymmetric", "confidence:pairs", "log_projection"): [0.80, 0.82, 0.79],
    ("asymmetric", "confidence:pairs", "projection"): [0.30, 0.31, 0.29],
    ("asymmetric", "uniform", "ce"): [0.50, 0.53, 0.47],
    ("none", "onehot", "ce"): [0.90, 0.91, 0.92],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("claims")
    uri, client, exp, parent = sweep_store(tmp, "b")
    for (kind, method, loss), values in ACC.items():
        for seed, acc in enumerate(values):
            params = {"label": method.split(":")[0], "loss": loss, "model": "m", "seed": str(seed)}
            params.update(noise_kind=kind, noise_rate="0.8" if kind != "none" else "0.0")
            log_run(client, exp, parent, method, params, {"accuracy": acc, "val_accuracy": acc})
    return uri, tmp


CLAIMS = """
paper: B
title: synthetic
sources:
  main:
    tracking_uri: {uri}
    experiment: b
    select: val_accuracy
    group_by: [noise_kind, noise_rate]
  missing:
    csv: {tmp}/nowhere/report.csv
claims:
  - id: lp-beats-ce
    text: LP beats CE at asymmetric 0.8
    paper: "78.13 vs 15.18"
    source: main
    setting: {{noise_kind: asymmetric, noise_rate: 0.8}}
    tests:
      - {{metric: accuracy, method: "confidence:pairs+log_projection", baseline: onehot, direction: greater}}
  - id: p-beats-ce
    text: P beats CE
    paper: "69.33 vs 15.18"
    source: main
    setting: {{noise_kind: asymmetric, noise_rate: 0.8}}
    tests:
      - {{metric: accuracy, method: "confidence:pairs+projection", baseline: onehot, direction: greater}}
  - id: uniform-equals-ce
    text: uniform equals CE within 20 points
    paper: "-"
    source: main
    setting: {{noise_kind: asymmetric, noise_rate: 0.8}}
    tests:
      - {{metric: accuracy, method: uniform, baseline: onehot, direction: equal, margin: 0.2}}
  - id: uniform-beats-ce
    text: uniform beats CE
    paper: "-"
    source: main
    setting: {{noise_kind: asymmetric, noise_rate: 0.8}}
    tests:
      - {{metric: accuracy, method: uniform, baseline: onehot, direction: greater}}
  - id: collapse
    text: CE collapses under noise (across settings)
    paper: "85.81 -> 15.18"
    source: main
    tests:
      - metric: accuracy
        method: onehot
        baseline: onehot
        direction: less
        setting: {{noise_kind: asymmetric}}
        baseline_setting: {{noise_kind: none}}
  - id: both
    text: LP and P both beat CE
    paper: "-"
    source: main
    setting: {{noise_kind: asymmetric, noise_rate: 0.8}}
    tests:
      - {{metric: accuracy, method: "confidence:pairs+log_projection", baseline: onehot, direction: greater}}
      - {{metric: accuracy, method: "confidence:pairs+projection", baseline: onehot, direction: greater}}
  - id: control
    text: needs a run that does not exist
    paper: "-"
    source: missing
    tests:
      - {{metric: accuracy, method: onehot, baseline: onehot, direction: greater}}
"""


def _holm_by_hand(p):
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_verdicts_against_scipy(store, tmp_path):
    uri, tmp = store
    path = tmp_path / "claims.yaml"
    path.write_text(CLAIMS.format(uri=uri, tmp=tmp))
    claims = cl.load_claims(path)
    rows = {name: cl.load_source_rows(s)[0] for name, s in claims.sources.items()}
    assert rows["missing"] is None
    results = {r.claim.id: r for r in cl.evaluate_claims(claims, rows)}
    asym = ("asymmetric",)
    pairs = {
        "lp-beats-ce": [(ACC[(*asym, "confidence:pairs", "log_projection")], ACC[(*asym, "onehot", "ce")])],
        "p-beats-ce": [(ACC[(*asym, "confidence:pairs", "projection")], ACC[(*asym, "onehot", "ce")])],
        "uniform-equals-ce": [(ACC[(*asym, "uniform", "ce")], ACC[(*asym, "onehot", "ce")])],
        "uniform-beats-ce": [(ACC[(*asym, "uniform", "ce")], ACC[(*asym, "onehot", "ce")])],
        "collapse": [(ACC[(*asym, "onehot", "ce")], ACC[("none", "onehot", "ce")])],
        "both": [
            (ACC[(*asym, "confidence:pairs", "log_projection")], ACC[(*asym, "onehot", "ce")]),
            (ACC[(*asym, "confidence:pairs", "projection")], ACC[(*asym, "onehot", "ce")]),
        ],
    }
    # Holm's family: every test with data, in file order
    raw = [scipy.stats.ttest_ind(a, b, equal_var=False).pvalue for tests in pairs.values() for a, b in tests]
    adjusted = iter(_holm_by_hand(raw))
    for cid, tests in pairs.items():
        for outcome, (a, b) in zip(results[cid].tests, tests, strict=True):
            ref = scipy.stats.ttest_ind(a, b, equal_var=False)
            assert outcome.p == pytest.approx(ref.pvalue, rel=1e-9), cid
            assert outcome.p_holm == pytest.approx(next(adjusted), rel=1e-9), cid
            assert outcome.a.n == 3 and outcome.b.n == 3
    verdicts = {cid: r.verdict for cid, r in results.items()}
    assert verdicts == {
        "lp-beats-ce": "supported",
        "p-beats-ce": "contradicted",
        "uniform-equals-ce": "supported",  # 90 % Welch interval of 0.00 is well inside ±0.20
        "uniform-beats-ce": "cannot tell",
        "collapse": "supported",
        "both": "contradicted",  # one of its tests is
        "control": "no data",
    }
    assert [t.verdict for t in results["both"].tests] == ["supported", "contradicted"]


def test_equivalence_needs_the_margin():
    from simlab.stats import Summary

    a, b = Summary(0.50, 0.03, 3), Summary(0.50, 0.01, 3)
    side = cl.Side(cl.Method.parse("uniform"), "accuracy", "s")
    w = scipy.stats.ttest_ind_from_stats(0.5, 0.03, 3, 0.5, 0.01, 3, equal_var=False)
    assert w.pvalue == pytest.approx(1.0)
    # the 90 % Welch interval of the difference, computed with scipy
    se = math.sqrt(0.03**2 / 3 + 0.01**2 / 3)
    df = se**4 / ((0.03**2 / 3) ** 2 / 2 + (0.01**2 / 3) ** 2 / 2)
    half = scipy.stats.t.ppf(0.95, df) * se
    for margin, want in ((half * 1.01, "supported"), (half * 0.99, "cannot tell"), (None, "cannot tell")):
        test = cl.ClaimTest(side, side, "equal", margin)
        assert cl._test_verdict(test, a, b, 1.0, 0.05) == want


def test_combine_verdicts():
    assert cl.combine_verdicts(["supported", "supported"]) == "supported"
    assert cl.combine_verdicts(["supported", "cannot tell"]) == "cannot tell"
    assert cl.combine_verdicts(["supported", "contradicted", "no data"]) == "contradicted"
    assert cl.combine_verdicts(["no data", "no data"]) == "no data"
    assert cl.combine_verdicts(["no data", "supported"]) == "cannot tell"


def test_bad_claims_file_names_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "sources: {s: {csv: x.csv}}\nclaims:\n  - {id: a, text: t, paper: p, tests: [{metric: accuracy, "
        "method: onehot, baseline: onehot, direction: sideways, source: s}]}\n"
    )
    with pytest.raises(ValueError, match=r"tests\[0\]\.direction"):
        cl.load_claims(path)
    path.write_text(
        "sources: {s: {csv: x.csv}}\nclaims:\n  - {id: a, text: t, paper: p, tests: [{metric: accuracy, "
        "method: onehot, baseline: onehot, direction: less, source: elsewhere}]}\n"
    )
    with pytest.raises(ValueError, match="elsewhere"):
        cl.load_claims(path)


@pytest.mark.parametrize("name", ["paper_a", "paper_b"])
def test_shipped_claims_files_evaluate(name, tmp_path):
    """The repository's claims files load, every method they name exists in their CSV sources (or the
    test is a documented 'no data'), and the CLI writes the claims table."""
    path = ROOT / "claims" / f"{name}.yaml"
    claims = cl.load_claims(path)
    assert claims.claims and len({c.id for c in claims.claims}) == len(claims.claims)
    assert cli.main(["--claims", str(path), "--out", str(tmp_path)]) == 0
    md = (tmp_path / f"claims_{name}.md").read_text()
    for claim in claims.claims:
        assert f"**{claim.id}**" in md


def test_source_stage_and_best_epoch(tmp_path):
    """A source's ``stage`` keeps only that stage's runs (a two-stage sweep's "seeds"), and
    ``best_epoch: true`` loads each run's test_accuracy_best as best_epoch_accuracy (paper B's protocol)."""
    uri, client, exp, parent = sweep_store(tmp_path, "staged")
    values = {  # (stage, method) -> (accuracy, test_accuracy_best) per seed
        ("seeds", "onehot"): [(0.50, 0.60), (0.52, 0.61), (0.48, 0.59)],
        ("seeds", "uniform"): [(0.40, 0.70), (0.41, 0.71), (0.39, 0.72)],
        ("search", "uniform"): [(0.99, 0.99)],  # the beta search: must not count
    }
    for (stage, method), runs in values.items():
        for seed, (acc, best) in enumerate(runs):
            rid = log_run(
                client, exp, parent, method, {"label": method, "model": "m", "seed": str(seed)},
                {"accuracy": acc, "test_accuracy_best": best, "val_nll": 1.0},
            )  # fmt: skip
            client.set_tag(rid, "simlab.stage", stage)
    path = tmp_path / "c.yaml"
    path.write_text(
        f"sources:\n  s: {{tracking_uri: '{uri}', experiment: staged, stage: seeds, best_epoch: true}}\n"
        "claims:\n  - {id: a, text: t, paper: p, source: s, tests: ["
        "{metric: accuracy, method: uniform, baseline: onehot, direction: less},"
        "{metric: best_epoch_accuracy, method: uniform, baseline: onehot, direction: greater}]}\n"
    )
    claims = cl.load_claims(path)
    assert claims.sources["s"].stage == "seeds" and claims.sources["s"].best_epoch
    rows, origin = cl.load_source_rows(claims.sources["s"])
    assert "stage seeds" in origin and "(6 runs)" in origin
    uniform = next(r for r in rows if str(r.method) == "uniform")
    assert uniform.cells["accuracy"].n == 3
    assert uniform.cells["accuracy"].mean == pytest.approx(0.40)
    assert uniform.cells["best_epoch_accuracy"].mean == pytest.approx(0.71)
    (result,) = cl.evaluate_claims(claims, {"s": rows})
    expected = [
        scipy.stats.ttest_ind([0.40, 0.41, 0.39], [0.50, 0.52, 0.48], equal_var=False).pvalue,
        scipy.stats.ttest_ind([0.70, 0.71, 0.72], [0.60, 0.61, 0.59], equal_var=False).pvalue,
    ]
    assert [o.p for o in result.tests] == pytest.approx(expected)
    assert result.verdict == "supported"


PAIRED = """
paper: A
sources:
  main: {{tracking_uri: {uri}, experiment: a}}
  csv: {{csv: {csv}}}
claims:
  - id: kde-vs-hist
    text: two estimates of one metric differ
    paper: "-"
    source: main
    tests:
      - {{metric: ece_kde_output, method: onehot, baseline: onehot,
          baseline_metric: ece_hist_output, direction: differ, paired: true}}
      - {{metric: ece_kde_output, method: onehot, baseline: onehot,
          baseline_metric: ece_hist_output, direction: differ}}
  - id: ts-below
    text: TS (post-hoc on the same runs) lowers the ECE
    paper: "-"
    source: main
    tests:
      - {{metric: ece_hist_prediction, method: onehot/ts, baseline: onehot, direction: less, paired: true}}
  - id: from-csv
    text: a CSV has no runs to pair
    paper: "-"
    source: csv
    tests:
      - {{metric: ece_kde_output, method: onehot, baseline: onehot,
          baseline_metric: ece_hist_output, direction: differ, paired: true}}
"""
# One-hot runs over 4 seeds: a large seed-to-seed spread shared by both estimates, a small steady gap.
KDE_O = [0.020, 0.035, 0.025, 0.041]
HIST_O = [0.017, 0.031, 0.023, 0.037]
HIST_P = [0.090, 0.110, 0.095, 0.120]
TS_HIST_P = [0.012, 0.016, 0.011, 0.019]


def test_paired_tests_pair_by_seed_against_scipy_ttest_rel(tmp_path):
    """``paired: true``: the paired t-test over per-seed differences (scipy's ttest_rel), Holm over the
    file, a post-hoc row's prefixed metric; the same comparison unpaired is Welch's; a CSV source (no
    runs) falls back to Welch."""
    from simlab.stats import min_detectable_difference_paired, summarise
    from sweeps.claims_tables import claims_csv, claims_markdown

    uri, client, exp, parent = sweep_store(tmp_path, "a")
    for seed in (2, 0, 3, 1):  # logged out of order: pairs are matched by seed, not by position
        metrics = {
            "ece_kde_output": KDE_O[seed],
            "ece_hist_output": HIST_O[seed],
            "ece_hist_prediction": HIST_P[seed],
            "ts_ece_hist_prediction": TS_HIST_P[seed],
            "ts_accuracy": 0.6,
            "val_nll": 1.0,
        }
        log_run(client, exp, parent, "onehot", {"label": "onehot", "model": "m", "seed": str(seed)}, metrics)
    out = tmp_path / "r"
    assert cli.main(["--tracking-uri", uri, "--experiment", "a", "--out", str(out), "--no-diagrams"]) == 0
    path = tmp_path / "claims.yaml"
    path.write_text(PAIRED.format(uri=uri, csv=out / "report.csv"))
    claims = cl.load_claims(path)
    rows = {name: cl.load_source_rows(s)[0] for name, s in claims.sources.items()}
    results = cl.evaluate_claims(claims, rows)
    res = {r.claim.id: r for r in results}
    paired, welch = res["kde-vs-hist"].tests
    assert paired.kind == "paired" and paired.pairs.n == 4
    assert paired.p == pytest.approx(scipy.stats.ttest_rel(KDE_O, HIST_O).pvalue, rel=1e-9)
    diffs = summarise(a - b for a, b in zip(KDE_O, HIST_O, strict=True))
    assert paired.detectable == pytest.approx(min_detectable_difference_paired(diffs), rel=1e-9)
    assert welch.kind == "welch"
    assert welch.p == pytest.approx(scipy.stats.ttest_ind(KDE_O, HIST_O, equal_var=False).pvalue, rel=1e-9)
    assert paired.p < 0.01 < 0.3 < welch.p  # the pairing removes the spread both estimates share
    (ts,) = res["ts-below"].tests
    assert ts.kind == "paired"
    assert ts.p == pytest.approx(scipy.stats.ttest_rel(TS_HIST_P, HIST_P).pvalue, rel=1e-9)
    (from_csv,) = res["from-csv"].tests
    assert from_csv.kind == "welch" and from_csv.p == pytest.approx(welch.p, rel=1e-6)
    raw = [paired.p, welch.p, ts.p, from_csv.p]
    for outcome, want in zip((paired, welch, ts, from_csv), _holm_by_hand(raw), strict=True):
        assert outcome.p_holm == pytest.approx(want, rel=1e-9)
    assert paired.verdict == "supported" and welch.verdict == "cannot tell"
    assert "paired, Δ" in claims_markdown(claims, results)
    lines = claims_csv(results).splitlines()
    assert lines[0].endswith(",verdict,test,pairs_mean,pairs_std,pairs_n")
    assert lines[1].split(",")[-4] == "paired" and lines[1].endswith(",4")


@pytest.mark.parametrize(
    ("test", "message"),
    [
        (
            "{metric: accuracy, method: uniform, baseline: onehot, direction: equal, margin: 0.1, "
            "paired: true}",
            "pairs runs of one source",
        ),
        (
            "{metric: accuracy, method: uniform, baseline: onehot, direction: less, paired: yes please}",
            "expected true or false",
        ),
        (
            "{metric: accuracy, method: uniform, baseline: onehot, direction: less, paired: true, "
            "baseline_source: other}",
            "pairs runs of one source",
        ),
    ],
)
def test_paired_needs_one_source_and_a_direction_it_can_test(tmp_path, test, message):
    text = (
        "paper: A\nsources:\n  main: {csv: a.csv}\n  other: {csv: b.csv}\nclaims:\n"
        f"  - id: x\n    text: t\n    paper: p\n    source: main\n    tests:\n      - {test}\n"
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"claims\[0\]\.tests\[0\]\.paired: .*" + message):
        cl.load_claims(path)
