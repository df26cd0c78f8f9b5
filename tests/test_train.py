"""simlab.train.fit on tiny digits runs: metrics, artifacts, determinism, resume, NaN guard, targets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simlab.calibration import DirichletCalibration, EnsembleTemperatureScaling, TemperatureScaling
from simlab.checkpoint import checkpoint_paths, load_checkpoint
from simlab.config import TrainConfig
from simlab.data import load_dataset, uniform_noise_images
from simlab.models import build_model
from simlab.seeds import derive_seed
from simlab.train import (
    METRIC_NAMES,
    EpochReport,
    NonFiniteLossError,
    evaluate_ood,
    fit,
    ood_confidence_figure,
    training_targets,
)
from simlab.train.epoch import mixup
from simlab.train.schedule import make_scheduler
from tests.support import TINY, RecordingTracker

# Exercises every random stream: augmentation, mixup, label noise and the trusted set.
RICH = dict(
    TINY,
    epochs=2,
    label="confidence",
    similarity="pairs",
    loss="log_projection",
    relaxation="l2",
    noise_kind="asymmetric",
    noise_rate=0.3,
    trusted_size=20,
    mixup=0.3,
)
# Cheap stand-ins with the same interface (the default Dir-ODIR grid search takes minutes on 2 cores).
CHEAP_RECALIBRATORS = {
    "ts": TemperatureScaling,
    "ets": EnsembleTemperatureScaling,
    "dir": lambda: DirichletCalibration(lambdas=(1e-2,), mus=(1e-2,), max_iter=50),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("simlab-cache"))


@pytest.fixture(scope="module")
def digits(cache_dir):
    return load_dataset("digits", cache_dir=cache_dir, subset_per_class=8, seed=0)


def _cfg(cache_dir, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "cache_dir": cache_dir, **kw})


# ---------------------------------------------------------------------------------------------
# smoke: all metrics, artifacts, tracker calls
@pytest.fixture(scope="module")
def smoke(digits, cache_dir, tmp_path_factory):
    tracker = RecordingTracker()
    reports = []
    art = tmp_path_factory.mktemp("artifacts")
    ck = tmp_path_factory.mktemp("ck")
    cfg = _cfg(cache_dir, recalibrate=True)
    global_rng = torch.get_rng_state()
    result = fit(
        cfg,
        data=digits,
        tracker=tracker,
        on_epoch_end=reports.append,
        artifact_dir=art,
        checkpoint_dir=ck,
        recalibrators=CHEAP_RECALIBRATORS,
    )
    # fit seeds the global RNG (for dropout) only inside torch.random.fork_rng: the caller's is untouched.
    assert torch.equal(torch.get_rng_state(), global_rng)
    return cfg, result, tracker, reports, art, ck


def test_smoke_metrics_present_and_finite(smoke):
    cfg, result, *_ = smoke
    expected = {"epoch", "train_loss", "lr"}
    expected |= set(METRIC_NAMES) | {f"val_{m}" for m in METRIC_NAMES}
    expected |= {f"{p}_{m}" for p in ("ts", "ets", "dir") for m in METRIC_NAMES}
    assert expected <= set(result.metrics), sorted(expected - set(result.metrics))
    for key, value in result.metrics.items():
        assert isinstance(value, float) and math.isfinite(value), (key, value)
    assert result.metrics["epoch"] == 2.0
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    # Temperature scaling never changes the argmax.
    assert result.metrics["ts_accuracy"] == result.metrics["accuracy"]


def test_smoke_metrics_match_independent_reference(smoke, digits):
    from torchmetrics.functional.classification import multiclass_calibration_error

    _, result, *_ = smoke
    for probs, y, prefix in (
        (result.test_probs, digits.test_y, ""),
        (result.val_probs, digits.val_y, "val_"),
    ):
        p = probs.double()
        assert p.shape == (len(y), 10)
        torch.testing.assert_close(p.sum(1), torch.ones(len(y), dtype=torch.float64), atol=1e-5, rtol=0)
        m = result.metrics
        assert m[prefix + "accuracy"] == pytest.approx((p.argmax(1) == y).double().mean().item(), abs=1e-12)
        assert m[prefix + "nll"] == pytest.approx(F.nll_loss(p.log(), y).item(), abs=1e-5)
        onehot = F.one_hot(y, 10).double()
        assert m[prefix + "brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean().item(), abs=1e-5)
        ece = multiclass_calibration_error(p.float(), y, num_classes=10, n_bins=15, norm="l1").item()
        assert m[prefix + "ece_hist_prediction"] == pytest.approx(ece, abs=1e-5)
        gap = p.max(1).values.mean().item() - (p.argmax(1) == y).double().mean().item()
        assert m[prefix + "confidence_gap"] == pytest.approx(gap, abs=1e-6)
    assert torch.equal(result.test_labels, digits.test_y)
    assert torch.equal(result.val_labels, digits.val_y)


def test_smoke_artifacts(smoke):
    cfg, result, tracker, _, art, _ = smoke
    names = {
        "reliability_raw_prediction",
        "reliability_raw_output",
        "reliability_ts_prediction",
        "reliability_ts_output",
        "label_matrix",
        "label_matrix_png",
        "test_probs",
        "config",
    }
    assert names <= set(result.artifacts)
    for name, path in result.artifacts.items():
        assert path.parent == art and path.is_file() and path.stat().st_size > 0, name
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC, name
    np.testing.assert_array_equal(np.load(result.artifacts["label_matrix"]), np.eye(10))
    with np.load(result.artifacts["test_probs"]) as npz:
        np.testing.assert_array_equal(npz["probs"], result.test_probs.numpy())
        np.testing.assert_array_equal(npz["labels"], result.test_labels.numpy())
    saved = json.loads(result.artifacts["config"].read_text())
    assert TrainConfig.from_dict(saved) == cfg
    assert sorted(tracker.artifacts) == sorted(str(p) for p in result.artifacts.values())
    assert not [p for p in art.iterdir() if p.name.endswith(".tmp")]


def test_smoke_tracker_and_reports(smoke, digits):
    cfg, result, tracker, reports, _, ck = smoke
    assert len(tracker.params) == 1
    params = tracker.params[0]
    assert params["model_args.width"] == 8 and params["lr"] == 0.05 and params["dataset"] == "digits"
    steps = [s for s, _ in tracker.metrics]
    assert steps == [1, 2, 2]  # per epoch, then the recalibrated metrics at the last epoch
    assert tracker.metrics[1][1] == result.history[1]
    assert set(tracker.metrics[2][1]) == {f"{p}_{m}" for p in ("ts", "ets", "dir") for m in METRIC_NAMES} | {
        "test_accuracy_best",
        "best_epoch",
    }
    assert params["train_samples"] == len(digits.train_y)
    assert [r.epoch for r in reports] == [1, 2]
    assert all(isinstance(r, EpochReport) and r.checkpoint_dir == ck for r in reports)
    assert reports[1].metrics == result.history[1]
    state = load_checkpoint(checkpoint_paths(ck)[0])
    assert state["epoch"] == 2 and state["history"] == result.history
    assert state["class_names"] == [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
    ]
    assert TrainConfig.from_dict(state["config"]) == cfg
    assert set(state["rng"]["states"]) == {"shuffle", "augment", "mixup", "torch"}
    assert all(isinstance(t, torch.Tensor) for t in state["rng"]["states"].values())


# ---------------------------------------------------------------------------------------------
# determinism and resume
@pytest.fixture(scope="module")
def rich_reference(digits, cache_dir):
    return fit(_cfg(cache_dir, **RICH), data=digits)


def _assert_same_result(a, b):
    assert a.metrics == b.metrics
    assert a.history == b.history
    assert torch.equal(a.test_probs, b.test_probs)
    assert torch.equal(a.val_probs, b.val_probs)


def test_same_seed_twice_is_identical(rich_reference, digits, cache_dir):
    again = fit(_cfg(cache_dir, **RICH), data=digits)
    _assert_same_result(rich_reference, again)
    for key in METRIC_NAMES:
        assert math.isfinite(again.metrics[key])


def test_other_seed_differs(rich_reference, digits, cache_dir):
    other = fit(_cfg(cache_dir, **dict(RICH, seed=1, epochs=1)), data=digits)
    assert other.history[0]["train_loss"] != rich_reference.history[0]["train_loss"]


class _Interrupt(Exception):
    pass


def _interrupt_after(epoch):
    def hook(report: EpochReport):
        if report.epoch == epoch:
            raise _Interrupt(f"stop after epoch {epoch}")

    return hook


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_equals_uninterrupted(rich_reference, digits, cache_dir, tmp_path, precision):
    cfg = _cfg(cache_dir, **dict(RICH, precision=precision))
    reference = rich_reference if precision == "fp32" else fit(cfg, data=digits)
    with pytest.raises(_Interrupt):
        fit(cfg, data=digits, checkpoint_dir=tmp_path, on_epoch_end=_interrupt_after(1))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    seen = []
    resumed = fit(cfg, data=digits, checkpoint_dir=tmp_path, on_epoch_end=lambda r: seen.append(r.epoch))
    assert seen == [2]  # epoch 1 was not trained again
    _assert_same_result(reference, resumed)
    assert resumed.precision == reference.precision


def test_resume_falls_back_to_prev_when_checkpoint_truncated(rich_reference, digits, cache_dir, tmp_path):
    cfg = _cfg(cache_dir, **RICH)
    with pytest.raises(_Interrupt):
        fit(cfg, data=digits, checkpoint_dir=tmp_path, on_epoch_end=_interrupt_after(2))
    main, prev = checkpoint_paths(tmp_path)
    blob = main.read_bytes()
    main.write_bytes(blob[: len(blob) // 3])
    seen = []
    resumed = fit(cfg, data=digits, checkpoint_dir=tmp_path, on_epoch_end=lambda r: seen.append(r.epoch))
    assert seen == [2]  # restarted from the epoch-1 checkpoint in .prev
    _assert_same_result(rich_reference, resumed)


def test_resume_of_finished_run_returns_its_result(digits, cache_dir, tmp_path):
    cfg = _cfg(cache_dir, epochs=1)
    first = fit(cfg, data=digits, checkpoint_dir=tmp_path)
    seen = []
    again = fit(cfg, data=digits, checkpoint_dir=tmp_path, on_epoch_end=seen.append)
    assert seen == []
    _assert_same_result(first, again)


def test_resume_rejects_a_different_config(digits, cache_dir, tmp_path):
    fit(_cfg(cache_dir, epochs=1), data=digits, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint_dir: .*different config.*\blr\b"):
        fit(_cfg(cache_dir, epochs=1, lr=0.01), data=digits, checkpoint_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# NaN guard
def test_non_finite_loss_raises_naming_epoch_step_value(digits, cache_dir):
    cfg = _cfg(cache_dir, lr=1e30, weight_decay=0.0, augment=False)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d+/5: (nan|inf|-inf)") as info:
        fit(cfg, data=digits)
    assert isinstance(info.value, FloatingPointError)


def test_non_finite_loss_from_poisoned_weights(digits, cache_dir, monkeypatch):
    # A NaN weight (a poisoned input to the very first step) must stop training at step 1.
    import simlab.train.state

    real = simlab.train.state.build_model

    def poisoned(*args, **kwargs):
        model = real(*args, **kwargs)
        with torch.no_grad():
            model.fc.bias[0] = float("nan")
        return model

    monkeypatch.setattr(simlab.train.state, "build_model", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1/5: nan"):
        fit(_cfg(cache_dir), data=digits)


# ---------------------------------------------------------------------------------------------
# scheduler, OOD helpers, argument checks
def test_cosine_schedule_with_warmup_matches_closed_form():
    cfg = TrainConfig.from_dict({"epochs": 4, "warmup_epochs": 1, "lr": 0.2}, validate=False)
    steps = 5
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.lr)
    sched = make_scheduler(cfg, opt, steps)
    seen = []
    for _ in range(cfg.epochs * steps):
        seen.append(opt.param_groups[0]["lr"])  # the lr used by this step
        opt.step()
        sched.step()
    warm, total = steps, cfg.epochs * steps
    expected = [0.2 * (s + 1) / warm for s in range(warm)]
    expected += [
        0.2 * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))) for s in range(warm, total)
    ]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)


def test_evaluate_ood_matches_manual_softmax():
    gen = torch.Generator().manual_seed(0)
    model = build_model("small_cnn", 10, in_channels=3, width=8, generator=gen)
    noise = uniform_noise_images(12, (3, 16, 16), generator=gen)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    conf = evaluate_ood(model, noise, mean=mean, std=std, batch_size=5)
    x = (noise.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(x.float()).double(), 1).max(1).values
    assert conf.shape == (12,)
    torch.testing.assert_close(conf.double(), expected, atol=1e-5, rtol=0)
    assert bool(((conf >= 0.1 - 1e-6) & (conf <= 1)).all())


def test_fit_scores_uniform_noise_with_the_final_weights(digits, cache_dir, tmp_path):
    """ood_samples > 0: the final model's max-softmax on a fixed uniform-noise set (paper A §6.4), as an
    artifact and two metrics; the reference recomputes it from the checkpointed weights by hand."""
    tracker = RecordingTracker()
    cfg = _cfg(cache_dir, ood_samples=64, recalibrate=False)
    result = fit(
        cfg, data=digits, tracker=tracker, artifact_dir=tmp_path / "art", checkpoint_dir=tmp_path / "ck"
    )
    with np.load(result.artifacts["ood_noise_confidences"]) as npz:
        conf = torch.from_numpy(npz["confidences"]).double()
    assert conf.shape == (64,)
    state = load_checkpoint(checkpoint_paths(tmp_path / "ck")[0])
    channels = int(digits.test_x.shape[1])
    model = build_model(
        cfg.model, 10, in_channels=channels, generator=torch.Generator().manual_seed(0), **cfg.model_args
    )
    model.load_state_dict(state["model"])
    model.eval()
    gen = torch.Generator().manual_seed(derive_seed(0, "ood-noise"))
    noise = torch.randint(0, 256, (64, *digits.test_x.shape[1:]), generator=gen, dtype=torch.uint8)
    mean = torch.tensor(digits.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(digits.std, dtype=torch.float64).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = (
            torch.softmax(model(((noise.double() / 255 - mean) / std).float()).double(), 1).max(1).values
        )
    torch.testing.assert_close(conf, expected, atol=1e-5, rtol=0)
    assert result.metrics["ood_noise_confidence_mean"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert result.metrics["ood_noise_confidence_median"] == pytest.approx(float(expected.median()), abs=1e-5)
    logged = {k for _, m in tracker.metrics for k in m}
    assert {"ood_noise_confidence_mean", "ood_noise_confidence_median"} <= logged
    # Off by default: no artifact, no metric.
    plain = fit(_cfg(cache_dir, recalibrate=False), data=digits, artifact_dir=tmp_path / "art2")
    assert "ood_noise_confidences" not in plain.artifacts and "ood_noise_confidence_mean" not in plain.metrics


def test_ood_confidence_figure(tmp_path):
    fig = ood_confidence_figure({"one_hot": torch.rand(50), "ours": np.random.default_rng(0).random(30)})
    path = tmp_path / "ood.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="confidences"):
        ood_confidence_figure({})


def test_bad_arguments(digits, cache_dir):
    cfg = _cfg(cache_dir)
    with pytest.raises(TypeError, match="cfg: expected a simlab.config.TrainConfig"):
        fit(dict(TINY))
    with pytest.raises(TypeError, match="data: expected a simlab.data.ImageData"):
        fit(cfg, data={"train_x": 1})
    with pytest.raises(TypeError, match="tracker: expected"):
        fit(cfg, data=digits, tracker=object())
    with pytest.raises(TypeError, match="on_epoch_end: expected a callable"):
        fit(cfg, data=digits, on_epoch_end=3)
    with pytest.raises(TypeError, match="checkpoint_dir: expected"):
        fit(cfg, data=digits, checkpoint_dir=5)
    with pytest.raises(ValueError, match="nesterov: needs momentum > 0"):
        fit(_cfg(cache_dir, nesterov=True, momentum=0.0), data=digits)
    with pytest.raises(TypeError, match="source_matrix: expected"):
        fit(cfg, data=digits, source_matrix=[[1.0]])
    with pytest.raises(TypeError, match="recalibrators: expected"):
        fit(cfg, data=digits, recalibrators=["ts"])
    with pytest.raises(ValueError, match="images_uint8: expected a uint8"):
        evaluate_ood(torch.nn.Linear(2, 2), torch.zeros(2, 3, 4, 4), mean=(0,) * 3, std=(1,) * 3)


@pytest.mark.slow
def test_fit_with_default_recalibrators(digits, cache_dir):
    result = fit(_cfg(cache_dir, epochs=1, recalibrate=True), data=digits)
    for prefix in ("ts_", "ets_", "dir_"):
        for name in METRIC_NAMES:
            assert math.isfinite(result.metrics[prefix + name]), prefix + name


def test_mixup_mixes_images_and_targets_with_one_beta_lambda():
    from scipy import stats

    b = 6
    x = torch.eye(b).view(b, 1, b, 1)  # image i is the indicator of i: the mix reveals lam and the partner
    targets = torch.eye(b)
    gen = torch.Generator().manual_seed(0)
    mixed_x, mixed_t = mixup(x, targets, 0.4, gen)
    torch.testing.assert_close(mixed_x.view(b, b), mixed_t)  # same lam and same partner for both
    torch.testing.assert_close(mixed_t.sum(1), torch.ones(b))
    # Row i is lam e_i + (1 - lam) e_perm(i): the diagonal is 1 (perm(i) = i) or one common lam.
    moved = torch.diagonal(mixed_t)[torch.diagonal(mixed_t) < 1 - 1e-6]
    assert moved.numel() == 0 or torch.allclose(moved, moved[:1].expand_as(moved), atol=1e-6)

    # lam ~ Beta(alpha, alpha): Kolmogorov-Smirnov against scipy's Beta. With B=2 the permutation is
    # the identity or the swap (drawn independently of lam); a swap shows lam as t[0, 0].
    lams = []
    for _ in range(400):
        _, t = mixup(torch.zeros(2, 1, 1, 1), torch.eye(2), 0.4, gen)
        if not torch.equal(t, torch.eye(2)):
            lams.append(t[0, 0].item())
    assert len(lams) > 100
    assert stats.kstest(lams, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3


def test_plateau_scheduler_halves_lr_when_val_accuracy_stalls(digits, cache_dir):
    cfg = _cfg(cache_dir, epochs=2, scheduler="plateau", plateau_patience=0, plateau_factor=0.5)
    result = fit(cfg, data=digits)
    lrs = [h["lr"] for h in result.history]
    accs = [h["val_accuracy"] for h in result.history]
    # ReduceLROnPlateau(mode="max", patience=0, threshold=1e-4 relative): written out by hand.
    expected, best, lr = [], -math.inf, 0.05
    for acc in accs:
        if acc > best * (1 + 1e-4):
            best = acc
        else:
            lr *= 0.5
        expected.append(lr)
    assert lrs == pytest.approx(expected, rel=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_bf16_channels_last(digits, cache_dir, tmp_path):
    cfg = _cfg(
        cache_dir,
        device="cuda",
        amp=True,
        channels_last=True,
        **{k: v for k, v in RICH.items() if k not in TINY or k == "epochs"},
    )
    result = fit(cfg, data=digits, checkpoint_dir=tmp_path, recalibrators=CHEAP_RECALIBRATORS)
    for key in METRIC_NAMES:
        assert math.isfinite(result.metrics[key]) and math.isfinite(result.metrics["val_" + key]), key
    assert result.test_probs.device.type == "cpu" and result.test_probs.shape == (len(digits.test_y), 10)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == cfg.epochs


def test_eval_every_also_evaluates_the_first_and_last_epoch(digits, cache_dir, tmp_path):
    """Every per-epoch report has the objective from the start (a Tune reporter needs it): with
    eval_every=3 over 4 epochs, epochs 1, 3 and 4 are evaluated."""
    result = fit(_cfg(cache_dir, epochs=4, eval_every=3), data=digits, checkpoint_dir=tmp_path)
    evaluated = [int(h["epoch"]) for h in result.history if "val_nll" in h]
    assert evaluated == [1, 3, 4]
    assert "val_nll" not in result.history[1]


def test_test_accuracy_every_epoch_and_best_epoch(digits, cache_dir, tmp_path):
    """test_accuracy is logged every epoch (step = epoch), equal to a direct evaluation of that epoch's
    weights (checkpoint), also between evaluations (eval_every=3); final metrics carry the last-epoch
    and best-epoch values (paper B's test-selected protocol)."""
    tracker = RecordingTracker()
    cfg = _cfg(cache_dir, epochs=4, eval_every=3, recalibrate=False)
    snapshots = []

    def keep(report):  # the weights at the end of each epoch
        snapshots.append(load_checkpoint(checkpoint_paths(report.checkpoint_dir)[0])["model"])

    result = fit(cfg, data=digits, tracker=tracker, checkpoint_dir=tmp_path, on_epoch_end=keep)
    per_epoch = {s: m["test_accuracy"] for s, m in tracker.metrics if "test_accuracy" in m}
    assert sorted(per_epoch) == [1, 2, 3, 4]
    x = (digits.test_x.float() / 255 - torch.tensor(digits.mean)[:, None, None]) / torch.tensor(digits.std)[
        :, None, None
    ]
    for epoch, state in enumerate(snapshots, start=1):
        model = build_model(cfg.model, 10, in_channels=1, **cfg.model_args)
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            direct = (model(x).argmax(1) == digits.test_y).double().mean().item()
        assert per_epoch[epoch] == pytest.approx(direct, abs=1e-12), epoch
    assert result.metrics["test_accuracy"] == per_epoch[4] == result.metrics["accuracy"]
    best_epoch = max(sorted(per_epoch), key=lambda e: (per_epoch[e], -e))
    assert result.metrics["best_epoch"] == best_epoch
    assert result.metrics["test_accuracy_best"] == per_epoch[best_epoch] >= result.metrics["test_accuracy"]
    # test_accuracy_every=0: only evaluation epochs have it.
    quiet = fit(
        _cfg(cache_dir, epochs=4, eval_every=3, recalibrate=False, test_accuracy_every=0), data=digits
    )
    assert [int(h["epoch"]) for h in quiet.history if "test_accuracy" in h] == [1, 3, 4]


def test_best_test_accuracy_picks_the_first_best_epoch():
    from simlab.train import best_test_accuracy

    hist = [{"epoch": 1.0, "test_accuracy": 0.5}, {"epoch": 2.0}, {"epoch": 3.0, "test_accuracy": 0.7}]
    hist.append({"epoch": 4.0, "test_accuracy": 0.7})
    assert best_test_accuracy(hist) == {"test_accuracy_best": 0.7, "best_epoch": 3.0}
    assert best_test_accuracy([{"epoch": 1.0}]) == {}


def test_trusted_only_trains_on_exactly_the_trusted_samples(digits, cache_dir):
    """label=trusted_only with M trusted samples == one-hot training on a dataset holding only those M
    samples (an independent construction): same seed, so the same weights and metrics."""
    import dataclasses

    cfg = _cfg(cache_dir, label="trusted_only", trusted_size=20, noise_kind="symmetric", noise_rate=0.8)
    t = training_targets(cfg, digits.train_y, digits.class_names)
    idx = torch.nonzero(t.trusted).squeeze(1)
    assert torch.equal(t.train_indices, idx) and idx.numel() == 20
    assert torch.bincount(digits.train_y[idx], minlength=10).tolist() == [2] * 10  # class-balanced
    # Trusted samples: their clean one-hot labels, whatever the noise did elsewhere.
    torch.testing.assert_close(t.rows[idx], F.one_hot(digits.train_y[idx], 10).double())
    tracker = RecordingTracker()
    got = fit(cfg, data=digits, tracker=tracker, recalibrators=CHEAP_RECALIBRATORS)
    assert tracker.params[0]["train_samples"] == 20
    subset = dataclasses.replace(
        digits, train_x=digits.train_x[idx].clone(), train_y=digits.train_y[idx].clone()
    )
    ref = fit(_cfg(cache_dir), data=subset, recalibrators=CHEAP_RECALIBRATORS)
    assert torch.equal(got.test_probs, ref.test_probs)
    assert got.metrics["accuracy"] == ref.metrics["accuracy"]


def test_resume_with_eval_every_keeps_the_plateau_schedule(digits, cache_dir, tmp_path):
    """The extra evaluation a resumed process makes (its first epoch) must not step ReduceLROnPlateau:
    the lr schedule and final weights equal an uninterrupted run's (eval_every=2, patience 0)."""
    kw = dict(epochs=5, eval_every=2, scheduler="plateau", plateau_patience=0, plateau_factor=0.5)
    reference = fit(_cfg(cache_dir, **kw), data=digits)
    cfg = _cfg(cache_dir, **kw)
    with pytest.raises(_Interrupt):
        fit(cfg, data=digits, checkpoint_dir=tmp_path, on_epoch_end=_interrupt_after(2))
    resumed = fit(cfg, data=digits, checkpoint_dir=tmp_path)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in reference.history]
    assert torch.equal(resumed.test_probs, reference.test_probs)
    assert "val_nll" in resumed.history[2]  # epoch 3: the resumed process's first, evaluated
    assert "val_nll" not in reference.history[2]  # ... which the uninterrupted run skipped


def test_a_checkpoint_written_with_the_old_confidence_spelling_resumes(tmp_path):
    """Checkpoints written before `confidence_source` existed saved ``similarity='pairs'``: the resume
    reads them in the current spelling instead of refusing a "different config"."""
    import torch as _torch

    values = dict(TINY, label="confidence", confidence_source="pairs", trusted_size=20)
    first = fit(TrainConfig.from_dict(values), checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    state = _torch.load(path, weights_only=True)
    old = dict(state["config"])
    old["similarity"] = old.pop("confidence_source")  # the pre-rename spelling
    state["config"] = old
    _torch.save(state, path)
    resumed = fit(TrainConfig.from_dict(values), checkpoint_dir=tmp_path)  # finished: nothing left to train
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in first.history]
