"""Clean up after killed sweeps: deliver spooled MLflow calls, then close runs whose owner died.

    python -m sweeps.cleanup --tracking-uri http://127.0.0.1:5000 [--experiment NAME ...]
                             [--spool-dir DIR] [--sweep-dir DIR] [--heartbeat-timeout S]
                             [--status KILLED|FAILED] [--dry-run]

Order matters: spooled calls are replayed first (a dead trial's last metric points reach its run), and
only then are RUNNING runs of dead owners marked KILLED (RELIABILITY T7). The next sweep start does the
second step itself (`sweeps.tracking.mark_stale_runs`). With ``--sweep-dir`` (a Tune experiment
folder), trial runs whose trial is not in Tune's saved state are deleted recoverably
(`sweeps.tracking.delete_orphan_runs`): what a SIGKILL before Tune's next snapshot leaves.

Exit codes: 0 done, 1 the tracking server could not be reached or refused a call, 2 bad arguments
(including a sqlite store that does not exist: it is never created).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sweeps import tracking as mt
from sweeps.preflight import check_store_exists
from sweeps.storage import tune_trial_ids

logger = logging.getLogger(__name__)


@dataclass
class CleanupReport:
    replayed: dict[str, int] = field(default_factory=dict)  # run id -> spooled calls delivered
    unreplayed: dict[str, str] = field(default_factory=dict)  # run id -> why its spool stays
    stale: dict[str, list[str]] = field(default_factory=dict)  # experiment id -> runs marked
    orphans: list[str] = field(default_factory=list)  # trial runs deleted: not in the sweep's Tune state


def cleanup(
    tracking_uri: str,
    *,
    experiments: Sequence[str] | None = None,
    spool_dir: str | Path | None = None,
    sweep_dir: str | Path | None = None,
    heartbeat_timeout: float = 900.0,
    status: str = "KILLED",
    dry_run: bool = False,
) -> CleanupReport:
    """Replay every spool under ``spool_dir``, then `mark_stale_runs` in each experiment, then (with
    ``sweep_dir``) delete the trial runs the sweep's Tune state does not hold.

    ``experiments`` are names; None means every active experiment (with ``sweep_dir``: the experiment
    named after the folder, as the sweep driver names it). A named experiment that does not exist is a
    ValueError listing the ones that do.
    """
    if experiments is not None and (
        isinstance(experiments, str) or not all(isinstance(e, str) and e for e in experiments)
    ):
        raise TypeError(f"experiments: expected a list of experiment names or None, got {experiments!r}")
    if spool_dir is not None and not Path(spool_dir).is_dir():
        raise ValueError(f"spool_dir: expected an existing folder, got {str(spool_dir)!r}")
    if status not in ("KILLED", "FAILED"):
        raise ValueError(f"status: expected KILLED or FAILED, got {status!r}")
    live_trials = None
    if sweep_dir is not None:
        live_trials = tune_trial_ids(sweep_dir)
        if experiments is None:
            experiments = [Path(sweep_dir).resolve().name]
        if len(experiments) != 1:
            raise ValueError(
                f"experiments: --sweep-dir needs exactly one experiment, got {list(experiments)}"
            )
    # Never create a store: a typo in a sqlite path would otherwise "clean" a new, empty one. (An
    # unreachable server stays exit code 1, below.)
    check_store_exists(tracking_uri, probe_server=False)
    client = mt.mlflow_client(tracking_uri)
    report = CleanupReport()

    if spool_dir is not None:
        for path in sorted(Path(spool_dir).rglob("*.jsonl")):
            run_id = path.stem
            pending = len(mt.pending_spool_records(path.parent, run_id))
            if dry_run:
                report.replayed[run_id] = pending
                continue
            try:
                report.replayed[run_id] = mt.replay_spool(client, path.parent, run_id)
            except Exception as err:  # keep going: one bad spool must not block the others
                if mt.is_transient(err):
                    raise
                report.unreplayed[run_id] = f"{type(err).__name__}: {err}"
                logger.error("spool %s: not replayed (%s); it stays on disk", path, err)

    all_exps = {e.name: e.experiment_id for e in client.search_experiments()}
    if experiments is None:
        exp_ids = list(all_exps.values())
    else:
        missing = [name for name in experiments if name not in all_exps]
        if missing:
            raise ValueError(
                f"experiments: no experiment named {', '.join(map(repr, missing))}; "
                f"existing: {', '.join(sorted(all_exps)) or '(none)'}"
            )
        exp_ids = [all_exps[name] for name in experiments]
    for exp_id in exp_ids:
        report.stale[exp_id] = mt.mark_stale_runs(
            tracking_uri, exp_id, heartbeat_timeout=heartbeat_timeout, status=status, dry_run=dry_run
        )
    if live_trials is not None:
        report.orphans = mt.delete_orphan_runs(
            tracking_uri, exp_ids[0], live_keys=live_trials, dry_run=dry_run
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.cleanup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument(
        "--experiment",
        action="append",
        dest="experiments",
        metavar="NAME",
        help="experiment name (repeatable); default: every active experiment",
    )
    parser.add_argument("--spool-dir", help="folder searched recursively for <run_id>.jsonl spools to replay")
    parser.add_argument(
        "--sweep-dir", help="a sweep's Tune folder: delete trial runs of trials its saved state does not hold"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=900.0,
        help="seconds without a heartbeat after which a run on another host is stale",
    )
    parser.add_argument("--status", choices=("KILLED", "FAILED"), default="KILLED")
    parser.add_argument("--dry-run", action="store_true", help="list what would change; change nothing")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if args.heartbeat_timeout <= 0:
        parser.error(f"--heartbeat-timeout: expected seconds > 0, got {args.heartbeat_timeout}")
    try:
        report = cleanup(
            args.tracking_uri,
            experiments=args.experiments,
            spool_dir=args.spool_dir,
            sweep_dir=args.sweep_dir,
            heartbeat_timeout=args.heartbeat_timeout,
            status=args.status,
            dry_run=args.dry_run,
        )
    except (ValueError, TypeError) as err:
        parser.error(str(err))  # exit code 2
    except Exception as err:
        print(f"error: MLflow at {args.tracking_uri}: {err}", file=sys.stderr)
        return 1
    verb = "would" if args.dry_run else ""
    for run_id, n in report.replayed.items():
        print(f"spool {run_id}: {verb + ' replay' if verb else 'replayed'} {n} call(s)")
    for run_id, why in report.unreplayed.items():
        print(f"spool {run_id}: NOT replayed: {why}")
    for exp_id, runs in report.stale.items():
        for run_id in runs:
            print(f"run {run_id} (experiment {exp_id}): {verb + ' mark' if verb else 'marked'} {args.status}")
    for run_id in report.orphans:
        print(
            f"run {run_id}: {verb + ' delete' if verb else 'deleted'} (its trial is not in the sweep's state)"
        )
    total = sum(len(r) for r in report.stale.values())
    print(
        f"{total} stale run(s) {'found' if args.dry_run else 'closed'}; "
        f"{sum(report.replayed.values())} spooled call(s) {'pending' if args.dry_run else 'delivered'}"
    )
    return 1 if report.unreplayed else 0


if __name__ == "__main__":
    sys.exit(main())
