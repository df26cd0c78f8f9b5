#!/usr/bin/env python
"""Per-epoch cost of `simlab.train.fit` against a bare PyTorch training loop, timed in the same run.

Both train the same model on the same device-resident uint8 images with the same batches and
augmentation (`epoch_batches` + `prepare_images`), SGD with momentum and soft cross-entropy. The bare
loop does nothing else. `fit` adds what a trial needs: per-sample target rows, the per-step non-finite
loss check (one host sync per step), the cosine schedule, the epoch checkpoint (atomic write + fsync)
and the `on_epoch_end` report. Evaluation happens at the last epoch (``eval_every = epochs``) and at
the first (fit evaluates the first epoch a process runs), so the timed epochs (between two
``on_epoch_end`` calls, the first excluded as warm-up) are training epochs; the evaluation (validation
+ test forward passes and the SPEC §6 metrics) is timed separately from the last epoch. CPU (process)
time is reported beside wall time: on a shared machine the wall clock mostly measures the other jobs.

    python scripts/bench/bench_train.py                       # small_cnn on digits, 3 rounds
    python scripts/bench/bench_train.py --model resnet18 --dataset cifar10 \\
        --data-dir ../shared/data/cifar10-jpeg.zip --subset-per-class 50

Prints a Markdown table row per measurement plus the machine, torch version, threads and git commit.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time

import torch

from simlab.config import TrainConfig
from simlab.data import epoch_batches, load_split, prepare_images
from simlab.losses import soft_cross_entropy
from simlab.models import build_model
from simlab.train import fit


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return b[0] - a[0], b[1] - a[1]


def bare_epochs(cfg: TrainConfig, data, epochs: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per epoch of the plain loop (same model, batches, augmentation, optimiser)."""
    k = len(data.class_names)
    model = build_model(
        cfg.model,
        k,
        in_channels=data.train_x.shape[1],
        generator=torch.Generator().manual_seed(0),
        **cfg.model_args,
    )
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    onehot = torch.eye(k)[data.train_y]
    g = torch.Generator().manual_seed(1)
    times = []
    model.train()
    for _ in range(epochs):
        t = _now()
        for idx in epoch_batches(len(data.train_y), cfg.batch_size, generator=g):
            x = prepare_images(data.train_x[idx], mean=data.mean, std=data.std, augment=True, generator=g)
            loss = soft_cross_entropy(model(x), onehot[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        times.append(_elapsed(t, _now()))
    return times


def fit_epochs(cfg: TrainConfig, data) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """(wall, CPU) s per training epoch of fit (between on_epoch_end calls) and of the evaluating last one."""
    stamps = []
    with tempfile.TemporaryDirectory() as ck, tempfile.TemporaryDirectory() as art:
        start = _now()
        fit(
            cfg,
            data=data,
            checkpoint_dir=ck,
            artifact_dir=art,
            on_epoch_end=lambda r: stamps.append(_now()),
        )
    edges = [start, *stamps]
    per_epoch = [_elapsed(a, b) for a, b in zip(edges, edges[1:], strict=False)]
    return per_epoch[:-1], per_epoch[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--subset-per-class", type=int, default=60)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--width", type=int, default=16, help="small_cnn width (ignored for other models)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4, help="per round; the first is warm-up")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--test-accuracy-every",
        type=int,
        default=0,
        help="fit's per-epoch test-accuracy forward (1 = paper B's protocol; 0 = off: pure training epochs)",
    )
    args = ap.parse_args()
    if args.epochs < 3:
        ap.error(f"--epochs must be >= 3 (one warm-up, one timed, one evaluating), got {args.epochs}")

    torch.set_num_threads(args.threads)
    model_args = {"width": args.width} if args.model == "small_cnn" else {}
    cfg = TrainConfig.from_dict(
        dict(
            dataset=args.dataset,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            subset_per_class=args.subset_per_class,
            val_fraction=args.val_fraction,
            model=args.model,
            model_args=model_args,
            batch_size=args.batch_size,
            epochs=args.epochs,
            eval_every=args.epochs,
            test_accuracy_every=args.test_accuracy_every,  # 0: timed epochs are pure training epochs
            lr=0.05,
            recalibrate=False,
            device="cpu",
        )
    )
    data = load_split(cfg)
    bare, ours, evals = [], [], []
    for _ in range(args.rounds):  # interleaved, so both see the same machine load
        bare += bare_epochs(cfg, data, args.epochs)[1:]
        train, last = fit_epochs(cfg, data)
        ours += train[1:]
        evals.append(tuple(x - statistics.median(t[i] for t in train[1:]) for i, x in enumerate(last)))

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, commit {commit}, load average {' '.join(load)}"
    )
    print(
        f"data: {cfg.dataset} {len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test, "
        f"{cfg.model} {model_args}, batch {cfg.batch_size}; "
        f"{args.rounds} rounds x {args.epochs - 1} timed epochs"
    )
    n = len(data.train_y)

    def med(rows, i):
        return statistics.median(r[i] for r in rows)

    bw, bc, ow, oc = med(bare, 0), med(bare, 1), med(ours, 0), med(ours, 1)
    print(
        "| loop | median CPU s/epoch | ratio (CPU) | median wall s/epoch | ratio (wall) | images/s (wall) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| bare PyTorch loop (baseline) | {bc:.3f} | 1.00 | {bw:.3f} | 1.00 | {n / bw:.0f} |")
    print(
        f"| simlab.train.fit training epoch | {oc:.3f} | {oc / bc:.2f} | {ow:.3f} | {ow / bw:.2f} "
        f"| {n / ow:.0f} |"
    )
    print(
        f"| fit evaluation (val + test, SPEC §6 metrics) | {med(evals, 1):.3f} | — "
        f"| {med(evals, 0):.3f} | — | — |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
