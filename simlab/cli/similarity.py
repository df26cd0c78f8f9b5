"""Compute a class-similarity source for a dataset, print each class's nearest classes, save a heatmap.

Examples (from the repository root)::

    python scripts/similarity.py --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.zip --source l2
    python scripts/similarity.py --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg.zip --source ae \\
        --param epochs=3 --param train_samples=10000 --param latent_dim=256
    python scripts/similarity.py --dataset cifar10 --source we --classes-only \\
        --param vectors=../shared/data/vectors/cifar10-words-300d.txt
    python scripts/similarity.py --classes cifar100 --source we \\
        --param vectors=../shared/data/vectors/cifar100-glove-100d.txt

``--param k=v`` values are read as JSON when they parse (numbers, lists, dicts, null), else as strings.
``--classes cifar10|cifar100`` (or ``--classes-only`` with ``--dataset``) skips loading images, for the
sources that only need class names (``we``, ``wordnet``, ``pairs``). Results go through the
`simlab.similarity.store.SimilarityStore` under ``<cache-dir>/similarity``, so a second run loads them.

Prints, per class, its ``--top`` nearest classes (smallest distance, or largest score for score
sources), the closest pairs overall with their rank, and for CIFAR-100 (or a dataset whose ``info``
carries a ``superclass`` list) the fraction of each class's nearest classes that share its superclass.
Installed as the ``simlab-similarity`` command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simlab._io import atomic_path, write_text_atomic
from simlab.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_SUPERCLASSES
from simlab.config import default_cache_dir
from simlab.similarity.sources import SIMILARITIES
from simlab.similarity.store import SimilarityStore

logger = logging.getLogger("similarity")

CLASS_LISTS = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}


@dataclass
class ClassesOnly:
    """Stand-in for `simlab.data.ImageData` for sources that read only class names."""

    class_names: list[str]
    identity: str
    info: dict[str, Any] = field(default_factory=dict)


def parse_param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param: expected k=v, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def nearest(matrix: np.ndarray, kind: str, top: int) -> list[list[int]]:
    """Per class, the ``top`` other classes ranked nearest first (distance ascending / score descending)."""
    k = matrix.shape[0]
    sign = 1.0 if kind == "distance" else -1.0
    out = []
    for i in range(k):
        row = sign * matrix[i]
        out.append(sorted((j for j in range(k) if j != i), key=lambda j, row=row: row[j])[:top])
    return out


def ranked_pairs(matrix: np.ndarray, kind: str) -> list[tuple[int, int, float]]:
    """Unordered class pairs ranked nearest first by the symmetrised matrix."""
    sym = (matrix + matrix.T) / 2
    pairs = [(i, j, float(sym[i, j])) for i in range(len(sym)) for j in range(i + 1, len(sym))]
    return sorted(pairs, key=lambda p: p[2] if kind == "distance" else -p[2])


def superclass_agreement(neighbours: list[list[int]], superclass: list[int]) -> tuple[float, float]:
    """(fraction of all listed neighbours in the same superclass, fraction of top-1 neighbours)."""
    same = [superclass[j] == superclass[i] for i, ns in enumerate(neighbours) for j in ns]
    top1 = [superclass[ns[0]] == superclass[i] for i, ns in enumerate(neighbours)]
    return float(np.mean(same)), float(np.mean(top1))


def save_heatmap(matrix: np.ndarray, names: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    size = max(5.0, min(0.18 * k + 2, 24.0))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="viridis")
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", help="a simlab.data.DATASETS key (e.g. cifar10, synthetic)")
    ap.add_argument("--data-dir", help="raw data: image-folder zip/folder or torchvision root")
    ap.add_argument("--classes", choices=sorted(CLASS_LISTS), help="class names only (no images)")
    ap.add_argument("--classes-only", action="store_true", help="with --dataset: skip loading its images")
    ap.add_argument("--source", required=True, choices=sorted(SIMILARITIES))
    ap.add_argument(
        "--param",
        action="extend",
        nargs="+",
        default=[],
        type=parse_param,
        help="source parameters k=v [k=v ...]",
    )
    ap.add_argument(
        "--dataset-arg",
        action="extend",
        nargs="+",
        default=[],
        type=parse_param,
        help="dataset options k=v [k=v ...]",
    )
    ap.add_argument("--cache-dir", default=None, help="default: $SIMLAB_CACHE or ~/.cache/simlab")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--subset-per-class", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="split seed of the dataset")
    ap.add_argument("--top", type=int, default=3, help="nearest classes to print per class")
    ap.add_argument("--pairs", type=int, default=10, help="closest pairs to print")
    ap.add_argument("--heatmap", type=Path, default=None, help="PNG path (default: <source>_<dataset>.png)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )

    cache_dir = Path(args.cache_dir or default_cache_dir())
    params = dict(args.param)
    superclass: list[int] | None = None
    if args.classes or args.classes_only:
        which = args.classes or args.dataset
        if which not in CLASS_LISTS:
            ap.error(f"--classes-only needs a dataset with a known class list ({', '.join(CLASS_LISTS)})")
        names = list(CLASS_LISTS[which])
        data: Any = ClassesOnly(names, identity=f"classes:{which}")
        label = which
    else:
        if not args.dataset:
            ap.error("--dataset (or --classes) is required")
        from simlab.data import load_dataset

        t0 = time.perf_counter()
        data = load_dataset(
            args.dataset,
            data_dir=args.data_dir,
            cache_dir=cache_dir,
            val_fraction=args.val_fraction,
            subset_per_class=args.subset_per_class,
            seed=args.seed,
            **dict(args.dataset_arg),
        )
        logger.info(
            "loaded %s: %d training images %s in %.1f s (identity %s)",
            args.dataset,
            data.train_x.shape[0],
            tuple(data.train_x.shape[1:]),
            time.perf_counter() - t0,
            data.identity,
        )
        names = list(data.class_names)
        label = args.dataset
        superclass = (getattr(data, "info", None) or {}).get("superclass")
    if superclass is None and tuple(names) == CIFAR100_CLASSES:
        lookup = {c: g for g, members in enumerate(CIFAR100_SUPERCLASSES.values()) for c in members}
        superclass = [lookup[c] for c in names]

    store = SimilarityStore(cache_dir / "similarity")
    matrix, meta = store.get(data, args.source, params)
    src = SIMILARITIES[args.source]
    state = "computed" if meta["computed"] else "loaded from cache"
    print(
        f"{args.source} on {label}: {state} ({meta['seconds']:.1f} s when computed); key {meta['key'][:12]}"
    )
    if meta.get("info"):
        shown = {k: v for k, v in meta["info"].items() if k not in ("words", "synsets")}
        print(f"info: {json.dumps(shown)}")

    top = min(args.top, len(names) - 1)
    neighbours = nearest(matrix, src.kind, top)
    width = max(len(n) for n in names)
    print(f"\nnearest {top} classes ({'smallest distance' if src.kind == 'distance' else 'largest score'}):")
    for i, ns in enumerate(neighbours):
        cells = ", ".join(f"{names[j]} ({matrix[i, j]:.4g})" for j in ns)
        print(f"  {names[i]:<{width}}  {cells}")
    pairs = ranked_pairs(matrix, src.kind)
    print(f"\nclosest {min(args.pairs, len(pairs))} of {len(pairs)} class pairs:")
    for rank, (i, j, v) in enumerate(pairs[: args.pairs], 1):
        print(f"  {rank:>3}. {names[i]}-{names[j]}  {v:.4g}")
    summary: dict[str, Any] = {
        "source": args.source,
        "dataset": label,
        "params": meta["params"],
        "key": meta["key"],
        "seconds": meta["seconds"],
        "pair_rank": {f"{names[i]}-{names[j]}": r for r, (i, j, _) in enumerate(pairs, 1)},
        "nearest": {names[i]: [names[j] for j in ns] for i, ns in enumerate(neighbours)},
        "info": meta.get("info"),
    }
    if superclass is not None:
        group_size = min(int(np.bincount(superclass).min()) - 1, len(names) - 1)
        if group_size > 0:
            within = nearest(matrix, src.kind, group_size)
            frac, frac1 = superclass_agreement(within, superclass)
            chance = (group_size) / (len(names) - 1)
            print(
                f"\nsuperclass agreement: {frac:.1%} of each class's {group_size} nearest classes share its "
                f"superclass (chance {chance:.1%}); top-1 nearest shares it for {frac1:.1%}"
            )
            summary.update(superclass_fraction=frac, superclass_top1=frac1, superclass_chance=chance)

    heatmap = args.heatmap or Path(f"{args.source}_{label}.png")
    save_heatmap(matrix, names, f"{args.source} ({src.kind}) on {label}", heatmap)
    print(f"\nheatmap: {heatmap}")
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
