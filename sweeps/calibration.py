#!/usr/bin/env python
"""Run a calibration / noisy-label sweep: Ray Tune + Optuna over simlab trials, tracked in MLflow.

    python sweeps/calibration.py                         # the quickstart preset, on this machine
    python sweeps/calibration.py --preset cifar10-calibration --gpus-per-trial 0.25
    python sweeps/calibration.py --set label=onehot,similarity --set beta=0.5..6 --dry-run
    python sweeps/calibration.py --name my-sweep --resume   # continue an interrupted sweep

The whole sweep spec is validated before Ray starts; a bad spec prints the offending field on stderr
and exits with code 2. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `sweeps` and `simlab` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.presets import PRESETS, get_preset  # noqa: E402
from sweeps.spec import SpecError, SweepSpec, apply_overrides, build_spec, parse_objectives  # noqa: E402

EXIT_BAD_SPEC = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C'd command

logger = logging.getLogger("sweeps.calibration")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/calibration.py",
        description="Ray Tune + Optuna sweep over simlab trials (paper A calibration, paper B noisy labels).",
    )
    p.add_argument(
        "--preset", default="quickstart", help=f"one of: {', '.join(PRESETS)} (default quickstart)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a field (alpha=0.1), search it (label=onehot,uniform | beta=0.5..6 | lr=1e-3..1e-1:log), "
        "or set source_args.<src>.<arg>=v / model_args.<model>.<arg>=v / a sweep key; repeatable",
    )
    p.add_argument("--num-samples", type=int, help="number of trials")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per worker (0.25 packs 4 trials on a GPU)")
    p.add_argument("--workers-per-trial", type=int, help="Ray Train workers (DDP ranks) per trial")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per worker")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--in-process",
        dest="in_process",
        action="store_const",
        const=True,
        help="trials call fit inside the Tune actor (fast start-up; small local sweeps)",
    )
    mode.add_argument(
        "--train-workers",
        dest="in_process",
        action="store_const",
        const=False,
        help="each trial runs a Ray Train TorchTrainer (DDP, Train-level fault tolerance)",
    )
    p.add_argument("--data-dir", help="raw data file/folder of the dataset (sets the data_dir field)")
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default sqlite:///<storage>/<name>/mlflow.db)"
    )
    p.add_argument("--storage", help="sweep storage root, local folder or s3://... (default ~/simlab_sweeps)")
    p.add_argument("--name", help="sweep name (default: the preset name); folder <storage>/<name>")
    p.add_argument(
        "--objective",
        help="metric[:min|max][,metric:dir...] on the validation split, "
        "e.g. val_accuracy:max,val_ece_hist_output:min (several = Optuna multi-objective)",
    )
    p.add_argument("--scheduler", choices=["asha", "none"], help="trial scheduler (ASHA: single objective)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once (0 = no limit)")
    p.add_argument(
        "--warm-start",
        metavar="FILE",
        help="JSON list of (partial) configurations Optuna evaluates first, after the preset's own, "
        "e.g. the file `scripts/report.py --emit-warm-start` writes",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved sweep and exit")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep <storage>/<name>")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve_spec(args: argparse.Namespace) -> SweepSpec:
    """Preset + --set overrides + flags -> a validated SweepSpec (raises SpecError naming the field)."""
    raw = get_preset(args.preset)
    overrides = list(args.overrides)
    if args.data_dir is not None:
        overrides.append(f"data_dir={args.data_dir}")
    raw = apply_overrides(raw, overrides)
    if args.warm_start is not None:
        raw["warm_start"] = [*raw.get("warm_start", []), *read_warm_start(args.warm_start)]
    if args.objective is not None:
        parse_objectives(args.objective)  # fail early with the field named
    return build_spec(
        raw,
        preset=args.preset,
        name=args.name or args.preset,
        objective=args.objective,
        num_samples=args.num_samples,
        gpus_per_trial=args.gpus_per_trial,
        workers_per_trial=args.workers_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        in_process=args.in_process,
        tracking_uri=args.tracking_uri,
        storage=args.storage,
        scheduler=args.scheduler,
        max_concurrent=args.max_concurrent,
    )


def read_warm_start(path: str) -> list[dict]:
    """The --warm-start file: a JSON list of objects (param -> value); SpecError naming the flag."""
    try:
        with open(path, encoding="utf-8") as fh:
            points = json.load(fh)
    except OSError as err:
        raise SpecError("--warm-start", f"cannot read {path!r}: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise SpecError("--warm-start", f"{path!r} is not valid JSON: {err}") from err
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise SpecError("--warm-start", f"{path!r} must hold a JSON list of objects (param -> value)")
    return points


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name:26s} {preset.get('description', '')}")
        return 0
    try:
        spec = resolve_spec(args)
        # Word vectors and registry keys (models, losses, datasets, sources) need torch-importing library
        # modules: checked after the cheap checks, still before Ray starts.
        from sweeps.spec import check_registries, check_word_vectors

        check_word_vectors(spec)  # class words vs the vector file's vocabulary (no image decoded)
        check_registries(spec)
    except SpecError as err:
        print(f"error: invalid sweep spec: {err}", file=sys.stderr)
        return EXIT_BAD_SPEC
    if args.dry_run:
        print(json.dumps(spec.to_json(), indent=2, default=str))
        print(f"# storage: {spec.sweep_dir}\n# tracking: {spec.resolved_tracking_uri}")
        return 0

    from sweeps.driver import format_summary, resume_hint, run_sweep

    try:
        summary = run_sweep(spec, resume=args.resume)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except KeyboardInterrupt:  # Ctrl-C before the trials ran (Ray start-up, matrices) or a second one
        print(f"\n{resume_hint(spec)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(spec, summary))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 0 if summary.num_finished > 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before the sweep started: nothing to resume
        print("\ninterrupted before the sweep started", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
