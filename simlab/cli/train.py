"""Train one configuration with `simlab.train.fit` and print its final metrics.

    python scripts/train.py --set dataset=digits model=small_cnn lr=0.05 --epochs 3
    python scripts/train.py --set dataset=cifar10 data_dir=../shared/data/cifar10-jpeg.zip \\
        model=resnet18 subset_per_class=100 batch_size=64 --epochs 2

``--set key=value`` takes any `simlab.config.TrainConfig` field (repeatable, several per flag); values
are read as YAML scalars/mappings (``0.1``, ``true``, ``null``, ``{width: 8}``), and the config rejects
unknown keys, naming the valid ones. Metrics go to stdout (one ``name value`` line each, or JSON with
``--json``); progress is logged to stderr. Installed as the ``simlab-train`` command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import yaml

from simlab.config import TrainConfig
from simlab.train import fit


def parse_sets(items: list[str]) -> dict:
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected key=value, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ValueError(f"--set {key}: cannot read {raw!r}: {err}") from err
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--set",
        dest="sets",
        nargs="+",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field (repeatable)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="shortcut for --set epochs=N")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint (and resume) folder")
    parser.add_argument("--artifact-dir", default=None, help="artifact folder (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    parser.add_argument("--log-level", default="INFO", help="logging level for progress (stderr)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        values = parse_sets([item for group in args.sets for item in group])
        if args.epochs is not None:
            values["epochs"] = args.epochs
        cfg = TrainConfig.from_dict(values)
        result = fit(cfg, checkpoint_dir=args.checkpoint_dir, artifact_dir=args.artifact_dir)
    except (TypeError, ValueError, KeyError, OSError) as err:
        # Bad config or bad data (a missing or corrupt file, a missing word): one line, exit 2. A bug
        # raising one of these would hide here too: --log-level DEBUG shows its traceback.
        logging.getLogger("scripts.train").debug("traceback", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.metrics, indent=2, sort_keys=True))
    else:
        width = max(map(len, result.metrics))
        for key in sorted(result.metrics):
            print(f"{key:<{width}}  {result.metrics[key]:.6g}")
        for name, path in sorted(result.artifacts.items()):
            print(f"artifact {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
