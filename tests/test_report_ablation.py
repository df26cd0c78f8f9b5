"""The ablation figure (paper A §6.3, Fig. 2): a report grouped by one numeric param draws each metric
against it. The plotted means, intervals and seed dots are checked against numpy and scipy.stats on
the raw metrics; the CLI on a real sqlite MLflow store, and re-rendered from its CSV."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from matplotlib.container import ErrorbarContainer

from sweeps import report as cli
from sweeps import results as report
from sweeps.results import Method, Run
from tests.support import log_run, sweep_store

ALPHAS = (0.05, 0.1, 0.4)
SEEDS = (0, 1, 2)
PNG = b"\x89PNG\r\n\x1a\n"


def _raw(seed_rng: np.random.Generator) -> dict:
    """method key -> alpha (None: no alpha) -> per-seed metrics."""
    raw: dict = {"onehot": {None: []}, "uniform": {}, "similarity:we": {}}
    for _ in SEEDS:
        m = {k: float(seed_rng.uniform(0.05, 0.2)) for k in ("ece_hist_prediction", "accuracy")}
        m.update({"val_nll": 1.0, "ts_ece_hist_prediction": 0.01, "ts_accuracy": m["accuracy"]})
        raw["onehot"][None].append(m)
        for method in ("uniform", "similarity:we"):
            for alpha in ALPHAS:
                m = {k: float(seed_rng.uniform(0.0, 0.1)) for k in ("ece_hist_prediction", "accuracy")}
                m["val_nll"] = 0.5
                raw[method].setdefault(alpha, []).append(m)
    return raw


def _params(method: str, alpha, seed: int) -> dict[str, str]:
    params = {"label": method.split(":")[0], "model": "resnet20", "seed": str(seed)}
    if ":" in method:
        params["similarity"] = method.split(":")[1]
    if alpha is not None:
        params["alpha"] = str(alpha)
    return params


def _runs(raw: dict) -> list[Run]:
    out = []
    for method, by_alpha in raw.items():
        for alpha, per_seed in by_alpha.items():
            for seed, metrics in zip(SEEDS, per_seed, strict=True):
                out.append(
                    Run(
                        f"{method}-{alpha}-{seed}",
                        Method.parse(method),
                        "resnet20",
                        _params(method, alpha, seed),
                        metrics,
                    )
                )
    return out


@pytest.fixture(scope="module")
def raw():
    return _raw(np.random.default_rng(7))


def test_ablation_param_only_for_one_numeric_param(raw):
    runs = _runs(raw)
    assert report.ablation_param(report.build_rows(runs, group_by=("alpha",))) == "alpha"
    assert report.ablation_param(report.build_rows(runs)) is None  # not grouped
    assert report.ablation_param(report.build_rows(runs, group_by=("alpha", "label"))) is None  # two params
    assert report.ablation_param(report.build_rows(runs, group_by=("label",))) is None  # categorical
    one = [r for r in runs if r.params.get("alpha") in (None, "0.1")]
    assert report.ablation_param(report.build_rows(one, group_by=("alpha",))) is None  # a single value


def _ci(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return scipy.stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=v.std(ddof=1) / math.sqrt(len(v)))


@pytest.mark.parametrize("metric,label", [("ece_hist_prediction", "Hist P"), ("accuracy", "Acc")])
def test_plotted_means_intervals_and_seeds_match_numpy_and_scipy(raw, metric, label):
    rows = report.build_rows(_runs(raw), group_by=("alpha",))
    fig = report.build_ablation_figure(rows, "alpha", metrics=[(metric, label)])
    (ax,) = fig.axes
    assert ax.get_title() == f"{label} (%)" and ax.get_xscale() == "log"  # 0.4 / 0.05 = 8
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert set(bars) == {"Uniform", "WE"}  # TS, a recalibration of the one-hot runs, is not drawn
    for name, key in (("Uniform", "uniform"), ("WE", "similarity:we")):
        line, _, (segments,) = bars[name].lines  # data line, caps, the y bars
        xy = line.get_xydata()
        np.testing.assert_array_equal(xy[:, 0], ALPHAS)
        for i, alpha in enumerate(ALPHAS):
            values = [100 * m[metric] for m in raw[key][alpha]]
            assert xy[i, 1] == pytest.approx(np.mean(values), rel=1e-12)
            (x0, lo), (x1, hi) = segments.get_segments()[i]
            assert x0 == x1 == alpha
            assert (lo, hi) == pytest.approx(_ci(values), rel=1e-9)
    # the seeds as dots
    scattered = sorted(
        tuple(p) for c in ax.collections if c.__class__.__name__ == "PathCollection" for p in c.get_offsets()
    )
    expected = sorted(
        (alpha, 100 * m[metric])
        for key in ("uniform", "similarity:we")
        for alpha in ALPHAS
        for m in raw[key][alpha]
    )
    np.testing.assert_allclose(np.array(scattered), np.array(expected), rtol=1e-12)
    # one-hot has no alpha: a dashed reference at its mean over seeds
    (ref,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert ref.get_label() == "One-hot (no α)"
    onehot = 100 * np.mean([m[metric] for m in raw["onehot"][None]])
    np.testing.assert_allclose(ref.get_ydata(), onehot, rtol=1e-12)


def test_single_seed_points_have_no_bar_and_csv_rows_no_dots(raw, tmp_path):
    runs = [r for r in _runs(raw) if r.params["seed"] == "0"]
    rows = report.build_rows(runs, group_by=("alpha",))
    fig = report.build_ablation_figure(rows, "alpha", metrics=[("accuracy", "Acc")])
    bars = {c.get_label(): c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)}
    for seg in bars["WE"].lines[2][0].get_segments():
        assert seg[0][1] == seg[1][1]  # zero length: one seed, no interval
    path = tmp_path / "report.csv"
    path.write_text(report.to_csv(report.build_rows(_runs(raw), group_by=("alpha",))))
    back = report.read_csv(path)
    assert report.ablation_param(back) == "alpha"
    fig = report.build_ablation_figure(back, "alpha", metrics=[("accuracy", "Acc")])
    assert not [c for c in fig.axes[0].collections if c.__class__.__name__ == "PathCollection"]


def test_a_method_with_and_without_the_param_is_an_error(raw):
    runs = _runs(raw)
    extra = Run(
        "we-none",
        Method.parse("similarity:we"),
        "resnet20",
        _params("similarity:we", None, 0),
        raw["similarity:we"][0.1][0],
    )
    rows = report.build_rows([*runs, extra], group_by=("alpha",))
    with pytest.raises(ValueError, match="WE has rows both with and without"):
        report.ablation_series(rows, "alpha", "accuracy")


def test_cli_writes_the_ablation_figure_from_the_store_and_the_csv(raw, tmp_path):
    uri, client, exp_id, parent = sweep_store(tmp_path, "abl")
    for run in _runs(raw):
        log_run(client, exp_id, parent, str(run.method), run.params, run.metrics)
    out = tmp_path / "out"
    args = ["--tracking-uri", uri, "--experiment", "abl", "--out", str(out), "--group-by", "alpha"]
    assert cli.main(args) == 0
    assert (out / "ablation_alpha.png").read_bytes()[:8] == PNG
    assert cli.main(["--from-csv", str(out / "report.csv"), "--out", str(tmp_path / "re")]) == 0
    assert (tmp_path / "re" / "ablation_alpha.png").read_bytes()[:8] == PNG
    plain = tmp_path / "plain"
    assert cli.main(["--tracking-uri", uri, "--experiment", "abl", "--out", str(plain)]) == 0
    assert not list(plain.glob("ablation_*"))  # not grouped by a numeric param
    skip = tmp_path / "skip"
    assert cli.main([*args[:-3], str(skip), "--group-by", "alpha", "--no-diagrams"]) == 0
    assert not list(skip.glob("ablation_*"))


def _constant_rows(onehot: float) -> list:
    """Uniform at 2, 4, 6 % over alpha (3 seeds each, spread ±0.5), one-hot at ``onehot`` % on every seed."""
    runs = []
    for seed, d in zip(SEEDS, (-0.005, 0.0, 0.005), strict=True):
        runs.append(
            Run(
                f"o{seed}",
                Method.parse("onehot"),
                "m",
                _params("onehot", None, seed),
                {"accuracy": onehot / 100},
            )
        )
        for alpha, v in zip(ALPHAS, (0.02, 0.04, 0.06), strict=True):
            runs.append(
                Run(
                    f"u{alpha}{seed}",
                    Method.parse("uniform"),
                    "m",
                    _params("uniform", alpha, seed),
                    {"accuracy": v + d},
                )
            )
    return report.build_rows(runs, group_by=("alpha",))


def test_an_off_scale_reference_is_named_not_drawn_into_the_axis():
    (ax,) = report.build_ablation_figure(_constant_rows(50.0), "alpha", metrics=[("accuracy", "Acc")]).axes
    lo, hi = ax.get_ylim()
    assert lo < 1.5 and 6.5 < hi < 50  # the series' range (means ± intervals, seeds), not one-hot's 50 %
    assert [t.get_text() for t in ax.texts] == ["One-hot: 50.00 ↑ (off scale)"]
    (ax,) = report.build_ablation_figure(_constant_rows(8.0), "alpha", metrics=[("accuracy", "Acc")]).axes
    assert ax.get_ylim()[1] > 8.0 and not ax.texts  # near the series: the axis takes it in


def test_cli_keeps_its_tables_when_the_rows_cannot_make_a_figure(raw, tmp_path, capsys):
    uri, client, exp_id, parent = sweep_store(tmp_path, "mixed")
    for run in _runs(raw):
        log_run(client, exp_id, parent, str(run.method), run.params, run.metrics)
    log_run(
        client,
        exp_id,
        parent,
        "similarity:we",
        _params("similarity:we", None, 0),
        raw["similarity:we"][0.1][0],
    )
    out = tmp_path / "out"
    assert (
        cli.main(["--tracking-uri", uri, "--experiment", "mixed", "--out", str(out), "--group-by", "alpha"])
        == 0
    )
    assert (
        "no ablation figure: ablation over 'alpha': WE has rows both with and without"
        in capsys.readouterr().err
    )
    assert (out / "report.md").exists() and not list(out.glob("ablation_*"))
