"""sweeps.results / sweeps.report (the scripts/report.py CLI) against a real sqlite MLflow store filled by
hand (no sweep needed): rows per method, mean ± std over seeds computed independently with numpy,
configuration chosen on validation, post-hoc rows from the one-hot runs, the reliability-diagram grid
from the test_probs.npz artifacts; comparisons against a baseline checked with scipy.stats."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from mlflow.tracking import MlflowClient

from sweeps import report as cli
from sweeps import results as report
from sweeps.results import Method
from tests.support import log_run, sweep_store

METRICS = ("accuracy", "ece_hist_prediction", "ece_hist_output", "ece_kde_prediction", "ece_kde_output")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri, client, exp_id, parent = sweep_store(tmp, "exp")
    rng = np.random.default_rng(0)
    truth: dict = {}
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, size=50)
    for seed in range(3):
        onehot = {m: float(rng.uniform(0.05, 0.3)) for m in METRICS}
        onehot.update({f"ts_{m}": float(rng.uniform(0.01, 0.1)) for m in METRICS})
        onehot["val_nll"] = 1.0
        truth.setdefault("onehot", []).append(onehot)
        log_run(
            client,
            exp_id,
            parent,
            "onehot",
            {"label": "onehot", "model": "m", "seed": str(seed)},
            onehot,
            (probs, labels) if seed == 0 else None,
            tmp,
        )
        for beta, val_nll in ((1.0, 0.9), (4.0, 0.5)):  # two configurations; beta=4 wins on validation
            sim = {m: float(rng.uniform(0.01, 0.2)) for m in METRICS}
            sim["val_nll"] = val_nll + 0.01 * seed
            truth.setdefault(("l2", beta), []).append(sim)
            log_run(
                client,
                exp_id,
                parent,
                "similarity:l2",
                {"label": "similarity", "model": "m", "beta": str(beta), "seed": str(seed)},
                sim,
                (probs, labels) if seed == 0 else None,
                tmp,
            )
    # Not counted: a repeat of seed 0's one-hot configuration, a failed run and the parent.
    log_run(
        client,
        exp_id,
        parent,
        "onehot",
        {"label": "onehot", "model": "m", "seed": "0"},
        {**truth["onehot"][0], "accuracy": 0.01},
    )
    log_run(
        client,
        exp_id,
        parent,
        "uniform",
        {"label": "uniform", "model": "m", "seed": "0"},
        {"accuracy": 0.5, "val_nll": 0.1},
        status="FAILED",
    )
    return uri, truth, tmp


def test_rows_match_numpy_mean_and_sample_std(store):
    uri, truth, _ = store
    _, runs = report.load_runs(uri, "exp")
    assert len(runs) == 10  # 4 one-hot (one a repeat) + 6 similarity; FAILED and parent runs left out
    rows = {r.method.display: r for r in report.build_rows(runs)}
    assert list(rows) == ["One-hot", "TS", "L2"] or set(rows) == {"One-hot", "TS", "L2"}
    for name, key, prefix in (("One-hot", "onehot", ""), ("TS", "onehot", "ts_"), ("L2", ("l2", 4.0), "")):
        for metric in METRICS:
            values = np.array([t[prefix + metric] for t in truth[key]])
            cell = rows[name].cells[metric]
            assert cell.n == 3
            assert cell.mean == pytest.approx(values.mean(), abs=1e-12)
            assert cell.std == pytest.approx(values.std(ddof=1), abs=1e-12)


def test_cli_writes_markdown_csv_and_diagram_grid(store, tmp_path):
    uri, truth, _ = store
    assert cli.main(["--tracking-uri", uri, "--experiment", "exp", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| m | One-hot |" in md and "| m | L2 |" in md and "| m | TS |" in md
    acc = np.array([t["accuracy"] for t in truth["onehot"]])
    assert f"{100 * acc.mean():.2f} ± {100 * acc.std(ddof=1):.2f} (3)" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert {r["method"] for r in rows} == {"One-hot", "TS", "L2"}
    png = tmp_path / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0)
    os.umask(umask)
    for name in ("report.md", "report.csv"):  # what open() would give, not mkstemp's 0600
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_default_out_is_the_sweep_folder():
    assert report.default_out("sqlite:////data/sweeps/s1/mlflow.db", "s1") == Path("/data/sweeps/s1/report")
    assert report.default_out("http://head:5000", "s1") == Path("reports/s1")


def test_unknown_experiment_is_a_clear_error(store, tmp_path, capsys):
    uri, _, _ = store
    assert cli.main(["--tracking-uri", uri, "--experiment", "nope", "--out", str(tmp_path)]) == 2
    assert "exp" in capsys.readouterr().err  # lists the experiments that exist


def test_select_must_be_a_validation_metric(store, tmp_path, capsys):
    uri, _, _ = store
    assert cli.main(["--tracking-uri", uri, "--experiment", "exp", "--select", "accuracy"]) == 2
    assert "--select" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# paper B rows (settings x loss), paper A §6.4 noise confidences, warm-start points for re-runs
@pytest.fixture(scope="module")
def noisy_store(tmp_path_factory):
    """Paper B style: CE one-hot vs LP / P confidence runs in two noise settings, 3 seeds each; plus
    paper A rows with uniform-noise confidences (one similarity row clearly best on validation)."""
    tmp = tmp_path_factory.mktemp("report-noisy")
    uri, client, exp_id, parent = sweep_store(tmp, "noisy")
    rng = np.random.default_rng(1)
    truth: dict = {}
    for kind, rate in (("asymmetric", "0.8"), ("symmetric", "0.4")):
        for method, label, loss in (
            ("onehot", "onehot", "ce"),
            ("confidence:pairs", "confidence", "log_projection"),
            ("confidence:pairs", "confidence", "projection"),
        ):
            for seed in range(3):
                metrics = {m: float(rng.uniform(0.1, 0.9)) for m in METRICS}
                metrics["val_accuracy"] = metrics["accuracy"]
                truth.setdefault((kind, rate, loss), []).append(metrics)
                params = {"label": label, "loss": loss, "model": "m", "seed": str(seed)}
                params.update(noise_kind=kind, noise_rate=rate)
                log_run(client, exp_id, parent, method, params, metrics)
    ood_exp = client.create_experiment("ood", artifact_location=str(tmp / "ood-artifacts"))
    ood_parent = client.create_run(ood_exp, tags={"simlab.role": "sweep"}).info.run_id
    for method, label, extra, val_nll in (
        ("onehot", "onehot", {}, 1.0),
        ("uniform", "uniform", {"beta": "None"}, 0.9),
        ("mixup", "onehot", {"mixup": "0.2"}, 0.95),
        ("similarity:l1", "similarity", {"similarity": "l1", "beta": "1.5"}, 0.8),
        ("similarity:we", "similarity", {"similarity": "we", "beta": "3.25"}, 0.7),  # best similarity
    ):
        for seed in range(2):
            conf = rng.uniform(0.1, 1.0, size=40)
            metrics = {m: float(rng.uniform(0.05, 0.3)) for m in METRICS}
            metrics.update(
                val_nll=val_nll,
                ood_noise_confidence_mean=float(conf.mean()),
                ood_noise_confidence_median=float(np.median(conf)),
            )
            truth.setdefault(("ood", method), []).append(metrics)
            rid = log_run(
                client,
                ood_exp,
                ood_parent,
                method,
                {"label": label, "model": "m", "seed": str(seed), **extra},
                metrics,
            )
            path = tmp / rid / "ood_noise_confidences.npz"
            path.parent.mkdir(parents=True)
            np.savez(path, confidences=conf)
            client.log_artifact(rid, str(path))
    return uri, truth


def test_group_by_splits_settings_and_loss_names_paper_b_rows(noisy_store, tmp_path):
    uri, truth = noisy_store
    _, runs = report.load_runs(uri, "noisy")
    rows = report.build_rows(runs, select="val_accuracy", mode="max", group_by=("noise_kind", "noise_rate"))
    got = {(r.setting_text, r.method.display): r for r in rows}
    assert len(got) == 6
    for kind, rate in (("asymmetric", "0.8"), ("symmetric", "0.4")):
        setting = f"noise_kind={kind} noise_rate={rate}"
        for loss, name in (
            ("ce", "One-hot"),
            ("log_projection", "LP (conf pairs)"),
            ("projection", "P (conf pairs)"),
        ):
            acc = np.array([t["accuracy"] for t in truth[(kind, rate, loss)]])
            cell = got[(setting, name)].cells["accuracy"]
            assert cell.n == 3
            assert cell.mean == pytest.approx(acc.mean(), abs=1e-12)
            assert cell.std == pytest.approx(acc.std(ddof=1), abs=1e-12)
    assert (
        cli.main(
            [
                "--tracking-uri",
                uri,
                "--experiment",
                "noisy",
                "--out",
                str(tmp_path),
                "--select",
                "val_accuracy",
                "--group-by",
                "noise_kind,noise_rate",
                "--no-diagrams",
            ]
        )
        == 0
    )
    md = (tmp_path / "report.md").read_text()
    assert "| Setting | Model | Method |" in md
    assert "| noise_kind=symmetric noise_rate=0.4 | m | LP (conf pairs) |" in md
    # Without --group-by the two LP settings would be one method choosing between "configurations".
    flat = {r.method.display for r in report.build_rows(runs, select="val_accuracy", mode="max")}
    assert flat == {"One-hot", "LP (conf pairs)", "P (conf pairs)"}


def test_noise_confidence_table_figure_and_best_similarity(noisy_store, tmp_path):
    uri, truth = noisy_store
    client, runs = report.load_runs(uri, "ood")
    rows = report.build_rows(runs)
    chosen = report.ood_rows(rows)
    assert [name for name, _ in chosen] == ["One-hot", "Uniform", "Mixup", "WE (best similarity)"]
    assert (
        cli.main(
            ["--tracking-uri", uri, "--experiment", "ood", "--out", str(tmp_path), "--show-params", "beta"]
        )
        == 0
    )
    md = (tmp_path / "report.md").read_text()
    means = np.array([t["ood_noise_confidence_mean"] for t in truth[("ood", "similarity:we")]])
    assert f"| m | WE | {100 * means.mean():.2f} ± {100 * means.std(ddof=1):.2f} (2) |" in md
    assert "| m | WE | beta=3.25 |" in md
    assert "| m | Uniform | - |" in md  # no beta: a dash, not "beta=None"
    assert (tmp_path / "ood_confidence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_emit_warm_start_points_feed_a_sweep(noisy_store, tmp_path):
    """The chosen β of each similarity row x seeds, as points the repro-a-cifar10 sweep accepts."""
    uri, _ = noisy_store
    points_file = tmp_path / "points.json"
    assert (
        cli.main(
            [
                "--tracking-uri",
                uri,
                "--experiment",
                "ood",
                "--out",
                str(tmp_path / "r"),
                "--show-params",
                "beta",
                "--no-diagrams",
                "--emit-warm-start",
                str(points_file),
                "--seeds",
                "0,1,2",
            ]
        )
        == 0
    )
    points = json.loads(points_file.read_text())
    assert {"label": "similarity", "similarity": "we", "beta": 3.25, "seed": 2} in points
    assert {"label": "mixup", "seed": 0} in points and {"label": "onehot", "seed": 1} in points
    assert len(points) == 5 * 3
    from sweeps.calibration import build_parser, resolve_spec

    sims = tmp_path / "sims.json"
    sims.write_text(json.dumps([p for p in points if p["label"] == "similarity"]))
    args = build_parser().parse_args(["--preset", "repro-a-cifar10", "--warm-start", str(sims)])
    spec = resolve_spec(args)
    assert len(spec.warm_start) == 9 + 6 and spec.warm_start[-1]["beta"] == 3.25
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"label": "similarity", "beta": 9.0}]))  # outside [0.5, 6]
    from sweeps.spec import SpecError

    with pytest.raises(SpecError, match="warm_start"):
        resolve_spec(build_parser().parse_args(["--preset", "repro-a-cifar10", "--warm-start", str(bad)]))
    with pytest.raises(SpecError, match="--warm-start"):
        resolve_spec(
            build_parser().parse_args(["--preset", "repro-a-cifar10", "--warm-start", str(tmp_path / "no")])
        )


# ---------------------------------------------------------------------------------------------
# Method values, cells, CSV round trip, comparisons against a baseline (scipy), best epoch, bootstrap
@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("onehot", "One-hot"),
        ("uniform", "Uniform"),
        ("mixup", "Mixup"),
        ("similarity:we", "WE"),
        ("similarity:l2", "L2"),
        ("confidence:pairs+log_projection", "LP (conf pairs)"),
        ("confidence:pairs", "CE (conf pairs)"),
        ("onehot+projection", "One-hot P"),
        ("onehot/ts", "TS"),
        ("onehot/dir", "Dir-ODIR"),
    ],
)
def test_method_text_and_display_round_trip(text, display):
    m = Method.parse(text)
    assert str(m) == text
    assert m.display == display
    assert Method.from_display(display) == m


def test_method_parse_rejects_bad_text():
    with pytest.raises(ValueError, match="method"):
        Method.parse("")
    with pytest.raises(ValueError, match="posthoc"):
        Method.parse("onehot/xyz")


def test_cells_single_seed_alone_and_t_interval():
    from simlab.stats import summarise

    assert report.format_cell(summarise([0.1924])) == "19.24"
    vals = [0.5, 0.52, 0.47]
    lo, hi = scipy.stats.t.interval(0.95, 2, loc=np.mean(vals), scale=scipy.stats.sem(vals))
    text = report.format_cell(summarise(vals), interval=True)
    assert text == f"49.67 ± 2.52 (3) [{100 * lo:.2f}, {100 * hi:.2f}]"


def _holm_by_hand(p):
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_comparisons_match_scipy_welch_and_holm(noisy_store):
    uri, truth = noisy_store
    _, runs = report.load_runs(uri, "noisy")
    rows = report.build_rows(runs, select="val_accuracy", mode="max", group_by=("noise_kind", "noise_rate"))
    comps = report.compare(rows, Method("onehot"))
    assert len(comps) == 2 * 2 * 5  # 2 settings x 2 methods x 5 metrics
    losses = {"LP (conf pairs)": "log_projection", "P (conf pairs)": "projection"}
    want_p = []
    for c in comps:
        kind, rate = (v for _, v in c.row.setting)
        a = [t[c.metric] for t in truth[(kind, rate, losses[c.row.method.display])]]
        b = [t[c.metric] for t in truth[(kind, rate, "ce")]]
        ref = scipy.stats.ttest_ind(a, b, equal_var=False)
        assert c.p == pytest.approx(ref.pvalue, rel=1e-9)
        assert c.diff == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
        want_p.append(ref.pvalue)
    for c, want in zip(comps, _holm_by_hand(want_p), strict=True):
        assert c.p_holm == pytest.approx(want, rel=1e-9)
        lower_better = c.metric != "accuracy"
        if c.p_holm < 0.05:
            assert c.verdict == ("better" if (c.diff < 0) == lower_better else "worse")
        else:
            assert c.verdict == "cannot tell"


def test_post_hoc_rows_are_paired_with_the_runs_they_recalibrate(tmp_path):
    """TS against one-hot is the same runs: the paired t-test over seeds (scipy's ttest_rel), pairs
    matched by seed; uniform against one-hot stays Welch's; TS's accuracy (equal on every seed) has no
    test and leaves Holm's family; a CSV (no per-seed values) falls back to Welch."""
    from simlab.stats import min_detectable_difference_paired, summarise

    onehot, ts = [0.10, 0.07, 0.12, 0.08], [0.02, 0.015, 0.03, 0.012]  # by seed
    uniform = [0.03, 0.05, 0.02]
    uri, client, exp, parent = sweep_store(tmp_path, "a")
    for seed in (2, 0, 3, 1):  # logged out of order
        metrics = {"ece_hist_prediction": onehot[seed], "accuracy": 0.6 + seed / 100, "val_nll": 1.0}
        metrics.update(ts_ece_hist_prediction=ts[seed], ts_accuracy=0.6 + seed / 100)
        log_run(client, exp, parent, "onehot", {"label": "onehot", "model": "m", "seed": str(seed)}, metrics)
    for seed, value in enumerate(uniform):
        metrics = {"ece_hist_prediction": value, "accuracy": 0.6, "val_nll": 1.0}
        log_run(
            client, exp, parent, "uniform", {"label": "uniform", "model": "m", "seed": str(seed)}, metrics
        )
    _, runs = report.load_runs(uri, "a")
    rows = report.build_rows(runs)
    metrics = ("ece_hist_prediction", "accuracy")
    got = {
        (c.row.method.display, c.metric): c for c in report.compare(rows, Method("onehot"), metrics=metrics)
    }
    c = got["TS", "ece_hist_prediction"]
    assert c.test == "paired"
    assert c.p == pytest.approx(scipy.stats.ttest_rel(ts, onehot).pvalue, rel=1e-9)
    diffs = summarise(a - b for a, b in zip(ts, onehot, strict=True))
    assert c.detectable == pytest.approx(min_detectable_difference_paired(diffs), rel=1e-9)
    u = got["Uniform", "ece_hist_prediction"]
    assert u.test == "welch"
    assert u.p == pytest.approx(scipy.stats.ttest_ind(uniform, onehot, equal_var=False).pvalue, rel=1e-9)
    same = got["TS", "accuracy"]
    assert same.test == "paired" and same.verdict == "n/a" and np.isnan(same.p_holm)
    tested = [c for c in got.values() if np.isfinite(c.p)]  # Holm over the comparisons with a test
    for c, want in zip(tested, _holm_by_hand([c.p for c in tested]), strict=True):
        assert c.p_holm == pytest.approx(want, rel=1e-9)
    out = tmp_path / "out"
    assert cli.main(["--tracking-uri", uri, "--experiment", "a", "--out", str(out), "--no-diagrams"]) == 0
    delta = 100 * (np.mean(ts) - np.mean(onehot))
    assert f"| m | TS | Hist P | {delta:+.2f} | paired |" in (out / "report.md").read_text()
    back = report.compare(report.read_csv(out / "report.csv"), Method("onehot"), metrics=metrics)
    assert {c.test for c in back} == {"welch"}


def test_verdicts_on_clear_differences(tmp_path):
    """Known truth: a method 30 points better / worse with 1-point seed spread is better / worse."""
    from simlab.stats import Summary

    def row(method, acc):
        return report.Row("m", Method.parse(method), cells={"accuracy": Summary(*acc)})

    rows = [row("onehot", (0.5, 0.01, 3)), row("uniform", (0.8, 0.01, 3)), row("mixup", (0.2, 0.01, 3))]
    rows.append(row("similarity:we", (0.505, 0.01, 3)))
    got = {c.row.method.display: c for c in report.compare(rows, Method("onehot"), metrics=("accuracy",))}
    assert got["Uniform"].verdict == "better" and got["Mixup"].verdict == "worse"
    assert got["WE"].verdict == "cannot tell"
    assert got["WE"].detectable == pytest.approx(
        3.0709 * 0.01,
        rel=1e-3,  # 3.07 sigma at n = 3
    )


def test_csv_round_trip_and_rerender(noisy_store, tmp_path):
    uri, _ = noisy_store
    _, runs = report.load_runs(uri, "noisy")
    rows = report.build_rows(runs, select="val_accuracy", mode="max", group_by=("noise_kind", "noise_rate"))
    path = tmp_path / "report.csv"
    path.write_text(report.to_csv(rows))
    back = report.read_csv(path)
    assert [(r.setting, r.method) for r in back] == [(r.setting, r.method) for r in rows]
    for a, b in zip(rows, back, strict=True):
        for metric, cell in a.cells.items():
            other = b.cells[metric]
            assert other.n == cell.n
            if cell.n:
                assert other.mean == cell.mean and other.std == cell.std
    assert cli.main(["--from-csv", str(path), "--out", str(tmp_path / "re"), "--interval"]) == 0
    md = (tmp_path / "re" / "report.md").read_text()
    assert "### Against One-hot" in md and "Detectable Δ (80 % power)" in md
    # the re-rendered comparisons equal those computed from the runs
    direct = report.comparisons_csv(report.compare(rows, Method("onehot")))
    assert (tmp_path / "re" / "comparisons.csv").read_text() == direct.replace("\r\n", "\n")


def test_best_epoch_from_metric_history_and_bootstrap(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("hist", artifact_location=str(tmp_path / "art"))
    parent = client.create_run(exp, tags={"simlab.role": "sweep"}).info.run_id
    rng = np.random.default_rng(0)
    histories, saved = {}, []
    for seed in range(2):
        curve = rng.uniform(0.2, 0.6, size=6)
        probs = rng.dirichlet(np.ones(3), size=60)
        labels = rng.integers(0, 3, size=60)
        saved.append((probs, labels))
        rid = log_run(
            client,
            exp,
            parent,
            "onehot",
            {"label": "onehot", "model": "m", "seed": str(seed)},
            {"val_nll": 1.0},
            (probs, labels),
            tmp_path,
        )
        for epoch, value in enumerate(curve, start=1):
            client.log_metric(rid, "accuracy", float(value), step=epoch)
        histories[seed] = curve
    _, runs = report.load_runs(uri, "hist", best_epoch_from="accuracy")
    for run in runs:
        curve = histories[int(run.params["seed"])]
        assert run.metrics["best_epoch_accuracy"] == pytest.approx(curve.max())
        assert run.metrics["best_epoch"] == float(np.argmax(curve) + 1)
        assert run.metrics["accuracy"] == pytest.approx(curve[-1])  # the final value
    out = tmp_path / "out"
    argv = [
        "--tracking-uri",
        uri,
        "--experiment",
        "hist",
        "--out",
        str(out),
        "--best-epoch",
        "accuracy",
        "--no-diagrams",
    ]
    assert cli.main([*argv, "--bootstrap", "20"]) == 0
    md = (out / "report.md").read_text()
    assert "Acc best epoch* (%)" in md and "selected on the test set" in md
    assert "### Bootstrap over test samples" in md and md.count("| - | m | One-hot |") == 2 + 1  # runs, seeds
    boot = list(csv.DictReader(io.StringIO((out / "bootstrap.csv").read_text())))
    assert len(boot) == 2 * 6 and {r["n_resamples"] for r in boot} == {"20"}
    assert all(float(r["low"]) <= float(r["high"]) for r in boot)
    # the confidence gap over seeds: brute force on the two runs' saved probabilities
    gaps = [float(np.mean(p.max(axis=1)) - np.mean(p.argmax(axis=1) == y)) for p, y in saved]
    gap_rows = [r for r in boot if r["metric"] == "confidence_gap"]
    assert [float(r["estimate"]) for r in gap_rows] == pytest.approx(gaps, abs=1e-12)
    mean, std = np.mean(gaps), np.std(gaps, ddof=1)
    half = scipy.stats.t.ppf(0.975, 1) * std / np.sqrt(2)
    over = sum(g > 0 for g in gaps)
    want = f"{100 * mean:.2f} ± {100 * std:.2f} (2) [{100 * (mean - half):.2f}, {100 * (mean + half):.2f}]"
    assert f"| - | m | One-hot | {want} | {over} of 2 |" in md


def test_refresh_generated_blocks(tmp_path):
    (tmp_path / "r.md").write_text("## t\n\n| a |\n|---|\n| 1 |\n\ncaption\nmore\n\n### rest\n| x |\n")
    doc = tmp_path / "DOC.md"
    doc.write_text(
        "intro\n<!-- generated: r.md#table -->\nstale\n<!-- end generated -->\n"
        "<!-- generated: r.md -->\n<!-- end generated -->\nend\n"
    )
    got = cli.refresh_generated(doc.read_text(), base=tmp_path)
    assert got == (
        "intro\n<!-- generated: r.md#table -->\n| a |\n|---|\n| 1 |\n\ncaption\nmore\n"
        "<!-- end generated -->\n"
        "<!-- generated: r.md -->\n## t\n\n| a |\n|---|\n| 1 |\n\ncaption\nmore\n\n### rest\n| x |\n"
        "<!-- end generated -->\nend\n"
    )
    assert cli.refresh_generated(got, base=tmp_path) == got  # idempotent
    with pytest.raises(ValueError, match="no closing"):
        cli.refresh_generated("<!-- generated: r.md -->\n", base=tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        cli.refresh_generated("<!-- generated: nope.md -->\n<!-- end generated -->", base=tmp_path)


def test_trial_ids_shown_and_metrics_no_run_has_left_out(tmp_path):
    """The Config column names the trials a row comes from (one per seed) beside the chosen α/β; a
    metric column no run logged (here both KDE ECEs) is left out of the table instead of a row of '-'."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("ids", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp_id, tags={"simlab.role": "sweep"}).info.run_id
    logged = ("accuracy", "ece_hist_prediction", "ece_hist_output")
    for seed, trial in enumerate(("aaaa0001", "aaaa0002")):
        run = client.create_run(
            exp_id,
            tags={
                "mlflow.parentRunId": parent,
                "simlab.role": "trial",
                "simlab.method": "uniform",
                "simlab.trial_id": trial,
            },
        ).info.run_id
        for k, v in {"label": "uniform", "alpha": "0.1", "seed": str(seed), "model": "m"}.items():
            client.log_param(run, k, v)
        for m in (*logged, "val_nll"):
            client.log_metric(run, m, 0.1 + seed / 100, step=1)
        client.set_terminated(run, "FINISHED")
    out = tmp_path / "out"
    assert cli.main(["--tracking-uri", uri, "--experiment", "ids", "--out", str(out), "--no-diagrams"]) == 0
    md = (out / "report.md").read_text()
    table = md.split("\n\n")[1]
    assert "alpha=0.1, trials aaaa0001 aaaa0002" in table
    assert "KDE" not in table and "Hist P (%)" in table and "Acc (%)" in table
    assert "adopted" not in md
    # A trial that adopted a finished run (--reuse) is marked, and the note under the table says why.
    client.set_tag(run, "simlab.reused_from", "sqlite:///elsewhere#0123")
    assert cli.main(["--tracking-uri", uri, "--experiment", "ids", "--out", str(out), "--no-diagrams"]) == 0
    md = (out / "report.md").read_text()
    assert "trials aaaa0001 aaaa0002†" in md
    assert "1 of the runs adopted a finished run of the same configuration" in md
