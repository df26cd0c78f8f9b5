"""The report's OOD rows, table and figure with a real OOD dataset (``ood_<key>_confidence_*`` metrics,
``ood_<key>`` arrays in ``ood_noise_confidences.npz``) and without it (older runs), against a real
sqlite MLflow store filled by hand; numbers checked against numpy (issue 16)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from sweeps import report as cli
from sweeps import results as report
from tests.support import log_run, sweep_store

METRICS = ("accuracy", "ece_hist_prediction", "ece_hist_output", "ece_kde_prediction", "ece_kde_output")


def _log_ood_arrays(client, tmp, rid, arrays) -> None:
    """Attach ``arrays`` to run ``rid`` as its ``ood_noise_confidences.npz``, as a trial logs them."""
    path = tmp / rid / "ood_noise_confidences.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **arrays)
    client.log_artifact(rid, str(path))


def _fill(tmp, experiment: str, *, real: bool):
    uri, client, exp_id, parent = sweep_store(tmp, experiment)
    rng = np.random.default_rng(3)
    truth: dict = {}
    for method, label, extra in (
        ("onehot", "onehot", {}),
        ("similarity:l2", "similarity", {"similarity": "l2", "beta": "2.0"}),
    ):
        for seed in range(2):
            noise, tiny = rng.uniform(0.1, 1.0, size=30), rng.uniform(0.1, 1.0, size=20)
            metrics = {m: float(rng.uniform(0.05, 0.3)) for m in METRICS}
            metrics.update(
                val_nll=1.0,
                ood_noise_confidence_mean=float(noise.mean()),
                ood_noise_confidence_median=float(np.median(noise)),
            )
            arrays = {"confidences": noise}
            if real:
                metrics.update(
                    ood_tinyimagenet_confidence_mean=float(tiny.mean()),
                    ood_tinyimagenet_confidence_median=float(np.median(tiny)),
                )
                arrays["ood_tinyimagenet"] = tiny
            truth.setdefault(method, []).append((metrics, arrays))
            rid = log_run(
                client,
                exp_id,
                parent,
                method,
                {"label": label, "model": "m", "seed": str(seed), **extra},
                metrics,
            )
            _log_ood_arrays(client, tmp, rid, arrays)
    return uri, truth


def test_rows_table_csv_and_figure_include_the_real_ood_dataset(tmp_path, monkeypatch):
    uri, truth = _fill(tmp_path / "store", "real", real=True)
    client, runs = report.load_runs(uri, "real")
    rows = report.build_rows(runs)
    cols = report.ood_columns(rows)
    assert [m for m, _ in cols] == [
        "ood_noise_confidence_mean",
        "ood_noise_confidence_median",
        "ood_tinyimagenet_confidence_mean",
        "ood_tinyimagenet_confidence_median",
    ]
    sim = next(r for r in rows if r.method.display == "L2")
    means = np.array([m["ood_tinyimagenet_confidence_mean"] for m, _ in truth["similarity:l2"]])
    cell = sim.cells["ood_tinyimagenet_confidence_mean"]
    assert cell.n == 2 and cell.mean == pytest.approx(means.mean(), abs=1e-12)
    md = report.to_markdown(rows)
    assert "### Confidence on out-of-distribution images (paper A §6.4)" in md
    assert (
        "| Model | Method | Noise conf mean (%) | Noise conf median (%) | tinyimagenet conf mean (%) |" in md
    )
    assert f"{100 * means.mean():.2f} ± {100 * means.std(ddof=1):.2f} (2)" in md
    # the CSV keeps the columns, and a report re-rendered from it has them
    text = report.to_csv(rows)
    assert "ood_tinyimagenet_confidence_mean_mean" in next(csv.reader(io.StringIO(text)))
    (tmp_path / "r.csv").write_text(text)
    again = report.read_csv(tmp_path / "r.csv")
    assert report.ood_columns(again) == cols

    # the figure: one panel per OOD set, each row's arrays pooled over its seeds
    import simlab.train

    seen = {}
    draw = simlab.train.ood_confidence_panels

    def capture(panels, *, bins):
        seen.update(panels)
        return draw(panels, bins=bins)

    monkeypatch.setattr(simlab.train, "ood_confidence_panels", capture)
    out = report.ood_figure(client, report.ood_rows(rows), tmp_path / "ood.png")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(seen) == ["Confidence on uniform noise", "Confidence on tinyimagenet"]
    pooled = np.concatenate([a["ood_tinyimagenet"] for _, a in truth["similarity:l2"]])
    got = seen["Confidence on tinyimagenet"]["L2 (best similarity) (n=2)"]
    np.testing.assert_array_equal(np.sort(got), np.sort(pooled))

    assert cli.main(["--tracking-uri", uri, "--experiment", "real", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "ood_confidence.png").exists()


def test_runs_without_a_real_ood_dataset_report_as_before(tmp_path):
    uri, _ = _fill(tmp_path / "store", "old", real=False)
    client, runs = report.load_runs(uri, "old")
    rows = report.build_rows(runs)
    assert report.ood_columns(rows) == report.OOD_COLUMNS
    assert report.ood_dataset_columns(m for r in runs for m in r.metrics) == ()
    md = report.to_markdown(rows)
    assert "### Confidence on uniform-noise images (paper A §6.4)" in md
    assert "| Model | Method | Noise conf mean (%) | Noise conf median (%) |\n" in md
    header = next(csv.reader(io.StringIO(report.to_csv(rows))))
    assert not any("tinyimagenet" in h for h in header) and header[-3:] == [
        "best_epoch_accuracy_mean",
        "best_epoch_accuracy_std",
        "best_epoch_accuracy_n",
    ]
    assert report.ood_figure(client, report.ood_rows(rows), tmp_path / "ood.png") is not None


def test_an_ablation_keeps_one_histogram_and_one_table_row_per_setting(tmp_path, monkeypatch):
    """Grouped by α (the §6.3 sweeps), uniform LS and WE exist once per α: each (setting, method) keeps
    its own histogram and its own OOD table row, named by its setting; the best similarity row is chosen
    within each setting. Before, every α's "Uniform" drew under one name and only the last survived."""
    uri, client, exp_id, parent = sweep_store(tmp_path / "store", "abl")
    rng = np.random.default_rng(5)
    pooled: dict = {}
    for alpha in ("0.05", "0.4"):
        for method, label, extra, nll in (
            ("uniform", "uniform", {}, 1.0),
            ("similarity:we", "similarity", {"similarity": "we", "beta": "2.0"}, 0.9),
            ("similarity:l2", "similarity", {"similarity": "l2", "beta": "2.0"}, 1.1),
        ):
            for seed in range(2):
                noise = rng.uniform(0.1, 1.0, size=25)
                metrics = {m: float(rng.uniform(0.05, 0.3)) for m in METRICS}
                metrics.update(val_nll=nll, ood_noise_confidence_mean=float(noise.mean()))
                params = {"label": label, "model": "m", "seed": str(seed), "alpha": alpha, **extra}
                rid = log_run(client, exp_id, parent, method, params, metrics)
                _log_ood_arrays(client, tmp_path, rid, {"confidences": noise})
                pooled.setdefault((alpha, method), []).append(noise)
    _, runs = report.load_runs(uri, "abl")
    rows = report.build_rows(runs, group_by=["alpha"])
    names = [name for name, _ in report.ood_rows(rows)]
    assert names == [
        "Uniform [alpha=0.05]",
        "WE (best similarity) [alpha=0.05]",
        "Uniform [alpha=0.4]",
        "WE (best similarity) [alpha=0.4]",
    ]

    md = report.to_markdown(rows)
    ood_part = md[md.index("### Confidence on") :]
    assert "| Setting | Model | Method | Noise conf mean (%) |" in ood_part
    for alpha in ("0.05", "0.4"):
        means = np.array([a.mean() for a in pooled[(alpha, "uniform")]])
        cell = f"{100 * means.mean():.2f} ± {100 * means.std(ddof=1):.2f} (2)"
        assert f"| alpha={alpha} | m | Uniform | {cell} |" in ood_part

    import simlab.train

    seen = {}
    draw = simlab.train.ood_confidence_figure

    def capture(panel, *, bins, title):
        seen.update(panel)
        return draw(panel, bins=bins, title=title)

    monkeypatch.setattr(simlab.train, "ood_confidence_figure", capture)
    assert report.ood_figure(client, report.ood_rows(rows), tmp_path / "ood.png") is not None
    assert len(seen) == 4
    for alpha in ("0.05", "0.4"):
        got = seen[f"Uniform [alpha={alpha}] (n=2)"]
        np.testing.assert_array_equal(np.sort(got), np.sort(np.concatenate(pooled[(alpha, "uniform")])))
