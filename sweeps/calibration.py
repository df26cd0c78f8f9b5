#!/usr/bin/env python
"""Run a calibration / noisy-label sweep: Ray Tune + Optuna over simlab trials, tracked in MLflow.

    python sweeps/calibration.py                         # the quickstart preset, on this machine
    python sweeps/calibration.py --preset cifar10-calibration --gpus-per-trial 0.25
    python sweeps/calibration.py --set label=onehot,similarity beta=0.5..6 --dry-run
    python sweeps/calibration.py --name my-sweep --resume   # continue an interrupted sweep

The whole sweep spec is validated before Ray starts; a bad spec prints the offending field on stderr
and exits with code 2. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys

from sweeps.overrides import apply_overrides
from sweeps.preflight import PreflightError, run_preflight
from sweeps.presets import PRESETS, get_preset
from sweeps.spec import SpecError, SweepSpec, parse_objectives
from sweeps.validation import build_spec

EXIT_BAD_SPEC = 2
EXAMPLES = """examples:
  python sweeps/calibration.py                                   # quickstart preset, this machine
  python sweeps/calibration.py --list-presets
  python sweeps/calibration.py --set label=onehot,similarity beta=0.5..6 alpha=0.1 --dry-run
  python sweeps/calibration.py --preset cifar10-calibration --gpus-per-trial 0.25 --trial-scheduler asha
  python sweeps/calibration.py --name my-sweep --resume          # continue an interrupted sweep

(with the project venv not activated, use its interpreter: .venv/bin/python sweeps/calibration.py ...)
"""

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C'd command

logger = logging.getLogger("sweeps.calibration")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/calibration.py",
        description="Ray Tune + Optuna sweep over simlab trials (paper A calibration, paper B noisy labels).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", default="quickstart", help=f"one of: {', '.join(PRESETS)} (default quickstart)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="fix a field (alpha=0.1), search it (label=onehot,uniform | beta=0.5..6 | lr=1e-3..1e-1:log), "
        "or set source_args.<src>.<arg>=v / model_args.<model>.<arg>=v / a sweep key; several per flag "
        "(--set alpha=0.1 beta=2), repeatable",
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
    p.add_argument(
        "--trial-scheduler",
        dest="scheduler",
        choices=["asha", "none"],
        help="Tune trial scheduler (ASHA stops weak trials early; single objective). Not the LR schedule, "
        "which is --set scheduler=cosine|plateau|none",
    )
    p.add_argument(  # the old name of --trial-scheduler: still accepted, with a deprecation warning
        "--scheduler", dest="scheduler_deprecated", choices=["asha", "none"], help=argparse.SUPPRESS
    )
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once (0 = no limit)")
    p.add_argument(
        "--warm-start",
        metavar="FILE",
        help="JSON list of (partial) configurations Optuna evaluates first, after the preset's own, "
        "e.g. the file `scripts/report.py --emit-warm-start` writes",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="two stages in one resumable sweep: search (as without it), then re-run each method's best "
        "configuration (on the objective) on N seeds; MLflow runs tagged simlab.stage = search | seeds",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="start from a YAML/JSON sweep file instead of --preset, e.g. a saved <sweep>/sweep_spec.json "
        "(flags and --set still apply on top)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved sweep and exit (warns about resources this machine lacks and an existing "
        "sweep folder)",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep <storage>/<name>")
    errored = p.add_mutually_exclusive_group()
    errored.add_argument(
        "--resume-errored",
        action="store_true",
        help="with --resume (implied): also continue errored trials from their last checkpoint",
    )
    errored.add_argument(
        "--restart-errored",
        action="store_true",
        help="with --resume (implied): rerun errored trials from scratch",
    )
    p.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="SOURCE",
        help="a trial whose configuration already finished in SOURCE adopts that run instead of training "
        "(repeatable): 'self' (this sweep, e.g. the seeds stage reuses the search stage's seed), a sweep "
        "folder, or '<tracking uri>#<experiment>'; needs --trial-scheduler none (see sweeps/reuse.py)",
    )
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve_spec(args: argparse.Namespace) -> SweepSpec:
    """Preset + --set overrides + flags -> a validated SweepSpec (raises SpecError naming the field)."""
    raw = get_preset(args.preset) if getattr(args, "config", None) is None else read_config(args)
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
        seeds=args.seeds,
    )


def stage_plan(spec: SweepSpec) -> str:
    """One line on what the sweep runs: the search (Optuna or a grid) and the seeds stage, if any."""
    search = f"{spec.search} search: {spec.num_samples} trials"
    if spec.seeds <= 0:
        return search
    per = "each method" + (f" per {', '.join(spec.seeds_group_by)}" if spec.seeds_group_by else "")
    return (
        f"stage 1 {search}; stage 2 seeds: {per}'s best configuration on {spec.objectives[0]} "
        f"x seeds {list(spec.seed_values)}"
    )


def read_config(args: argparse.Namespace) -> dict:
    """The --config file (YAML or JSON; a saved ``sweep_spec.json`` too) as a raw sweep dict.

    Its ``preset`` and ``name`` become the defaults of --preset / --name (flags still win)."""
    path = args.config
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise SpecError("--config", f"cannot read {path!r}: {err.strerror or err}") from err
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as err:  # noqa: BLE001 - json / yaml parse errors
        raise SpecError(
            "--config", f"{path!r} is not valid {'YAML' if path.endswith(('yaml', 'yml')) else 'JSON'}: {err}"
        ) from err
    if not isinstance(raw, dict):
        raise SpecError("--config", f"{path!r} must hold a mapping of sweep keys")
    raw = dict(raw)
    raw.pop("description", None)
    if isinstance(raw.get("objectives"), list):  # SweepSpec.to_json form
        raw["objective"] = ",".join(map(str, raw.pop("objectives")))
    preset, name = raw.pop("preset", None), raw.pop("name", None)
    if args.preset == "quickstart" and preset:  # --preset not given: the file's
        args.preset = preset
    if args.name is None and name:
        args.name = name
    return raw


def dry_run_warnings(spec: SweepSpec) -> list[str]:
    """What a real run would trip over on this machine: resources Ray cannot schedule here, an existing
    sweep folder (the run refuses without --resume)."""
    import os

    out = []
    need_gpu = spec.gpus_per_trial > 0
    if need_gpu and not os.environ.get("RAY_ADDRESS"):
        try:
            import torch

            gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001
            gpus = 0
        if gpus == 0:
            out.append(
                f"gpus_per_trial={spec.gpus_per_trial} but this machine has no CUDA GPU: trials would never "
                "be scheduled (use --gpus-per-trial 0, or run on a GPU node / with RAY_ADDRESS)"
            )
    cpus = os.cpu_count() or 1
    per_trial = spec.cpus_per_trial * (spec.workers_per_trial if not spec.in_process else 1)
    if per_trial > cpus and not os.environ.get("RAY_ADDRESS"):
        out.append(f"a trial asks for {per_trial:g} CPUs but this machine has {cpus}: it would never start")
    if "://" not in spec.storage and os.path.isdir(spec.sweep_dir) and os.listdir(spec.sweep_dir):
        out.append(
            f"sweep folder {spec.sweep_dir} already exists: the run refuses it; continue it with --resume or "
            "pick another --name"
        )
    return out


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


def _stacks_on_sigusr2() -> None:
    """`kill -USR2 <pid>` writes every thread's Python stack to stderr (where a stuck sweep waits); the
    sweep goes on. Skipped where stderr is no file (an embedding or a test capturing it)."""
    if not hasattr(signal, "SIGUSR2"):
        return
    try:
        faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and ValueError
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _stacks_on_sigusr2()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name:26s} {preset.get('description', '')}")
        return 0
    if args.scheduler_deprecated is not None:
        logger.warning("--scheduler is deprecated: use --trial-scheduler (Tune's trial scheduler)")
        if args.scheduler is None:
            args.scheduler = args.scheduler_deprecated
    try:
        spec = resolve_spec(args)
        # Word vectors and registry keys (models, losses, datasets, sources) need torch-importing library
        # modules: checked after the cheap checks, still before Ray starts.
        from sweeps.registry_checks import check_registries, check_word_vectors

        check_word_vectors(spec)  # class words vs the vector file's vocabulary (no image decoded)
        check_registries(spec)
        # Storage, --resume, tracking server and data source: cheap probes that create nothing.
        run_preflight(spec, resume=args.resume)
        from sweeps.reuse import resolve_sources

        resolve_sources(args.reuse, spec)  # each store and experiment exists (none is created)
    except SpecError as err:
        kind = "cannot start the sweep" if isinstance(err, PreflightError) else "invalid sweep spec"
        print(f"error: {kind}: {err}", file=sys.stderr)
        return EXIT_BAD_SPEC
    if args.dry_run:
        print(json.dumps(spec.to_json(), indent=2, default=str))
        print(f"# storage: {spec.sweep_dir}\n# tracking: {spec.resolved_tracking_uri}")
        print(f"# {stage_plan(spec)}")
        if args.reuse:
            from sweeps.reuse import reuse_preview

            print(f"# {reuse_preview(spec, args.reuse)}")
        for warning in dry_run_warnings(spec):
            print(f"warning: {warning}", file=sys.stderr)
        return 0

    from sweeps.driver import run_staged_sweep
    from sweeps.summary import format_summary, resume_hint

    try:
        errored = {"resume_errored": True} if args.resume_errored else {}
        if args.restart_errored:
            errored = {"restart_errored": True}
        summary = run_staged_sweep(spec, resume=args.resume or bool(errored), reuse=args.reuse, **errored)
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
