"""Benchmark `simlab.similarity.class_distance_matrix` against the naive per-class-pair cdist loop.

Data: the CIFAR-10 test split (10,000 x 3,072 uint8 pixels, 10 classes of 1,000) decoded from
``../shared/data/cifar10-jpeg.zip`` when present, else seeded random uint8 data of that shape
(``--synthetic``). "float" is the same pixels as float32 in [0, 1]; "uint8" the raw pixels.

Baseline (timed in the same run): ``torch.cdist(x[y == k], x[y == j], p).mean()`` for every ordered
class pair on float32 features (cdist takes no uint8, so both feature kinds share it). The p = 1
baseline is slow (O(N^2 D) elementwise), so by default only ``--baseline-pairs-p1`` seeded random
pairs are timed and the total is extrapolated linearly to all K^2 pairs (all pairs have the same
size here); ``--full-baseline`` times them all.

Usage: python scripts/bench/bench_distances.py [--n 10000] [--full-baseline] [--synthetic]
"""

from __future__ import annotations

import argparse
import io
import os
import time
import zipfile

import numpy as np
import torch
from benchenv import git_commit, machine  # scripts/bench/benchenv.py (this script's folder)

from simlab.similarity import class_distance_matrix

ZIP = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "cifar10-jpeg.zip")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10_test(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    xs, ys = [], []
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("cifar10-jpeg/test/") and n.endswith(".jpg"))
        for name in names:
            cls = name.split("/")[2]
            with Image.open(io.BytesIO(zf.read(name))) as im:
                xs.append(np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
            ys.append(CLASSES.index(cls))
    return torch.from_numpy(np.stack(xs)).reshape(len(xs), -1), torch.tensor(ys)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def baseline(x: torch.Tensor, y: torch.Tensor, k: int, p: float, pairs: list[tuple[int, int]]):
    out = torch.full((k, k), float("nan"), dtype=torch.float64)
    blocks = [x[y == c] for c in range(k)]
    t0 = time.perf_counter()
    for a, b in pairs:
        out[a, b] = torch.cdist(blocks[a], blocks[b], p=p).mean().item()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="samples (first n/10 of each class)")
    ap.add_argument("--synthetic", action="store_true", help="random uint8 data instead of CIFAR-10")
    ap.add_argument("--baseline-pairs-p1", type=int, default=10, help="p=1 pairs timed, extrapolated")
    ap.add_argument("--full-baseline", action="store_true", help="time every p=1 baseline pair")
    ap.add_argument("--chunk-size", type=int, default=2048)
    args = ap.parse_args()

    k = 10
    if not args.synthetic and os.path.exists(ZIP):
        x8, y = load_cifar10_test(ZIP)
        source = "CIFAR-10 test split (JPEG zip)"
    else:
        g = torch.Generator().manual_seed(0)
        x8 = torch.randint(0, 256, (10_000, 3072), generator=g, dtype=torch.uint8)
        y = torch.arange(10_000) % k
        source = "synthetic uniform uint8 (seed 0)"
    keep = torch.cat([(y == c).nonzero().flatten()[: args.n // k] for c in range(k)])  # class-balanced
    x8, y = x8[keep], y[keep]
    xf = x8.to(torch.float32) / 255.0
    n, dims = x8.shape
    print(f"machine: {machine()}")
    print(f"commit:  {git_commit('simlab/similarity.py')}")
    print(f"data:    {source}: N={n} D={dims} K={k}, chunk_size={args.chunk_size}")

    all_pairs = [(a, b) for a in range(k) for b in range(k)]
    rows = []
    for p in (2.0, 1.0):
        pairs = all_pairs
        if p == 1.0 and not args.full_baseline:
            rng = np.random.default_rng(0)
            picked = rng.choice(len(all_pairs), args.baseline_pairs_p1, replace=False)
            pairs = [all_pairs[i] for i in sorted(picked)]
        base, t_base = baseline(xf, y, k, p, pairs)
        t_base_all = t_base * len(all_pairs) / len(pairs)
        note = ""
        if len(pairs) != len(all_pairs):
            note = f" (extrapolated from {len(pairs)} of {len(all_pairs)} pairs)"
        rows.append((f"baseline cdist loop, float32, p={p:g}", t_base_all, 1.0, note, float("nan")))
        mask = ~torch.isnan(base)
        for kind, feats, scale in (("float32", xf, 1.0), ("uint8", x8, 255.0)):
            d, t = timed(lambda f=feats, p=p: class_distance_matrix(f, y, k, p=p, chunk_size=args.chunk_size))
            dev = float(((d / scale)[mask] - base[mask]).abs().max() / base[mask].abs().max())
            path = "matmul" if p == 2 else ("histogram" if kind == "uint8" else "sorted")
            rows.append((f"class_distance_matrix {kind}, p={p:g} ({path})", t, t_base_all / t, "", dev))

    print()
    print("| method | time (s) | speed-up vs baseline | max rel. diff vs baseline |")
    print("|---|---:|---:|---:|")
    for name, t, ratio, note, dev in rows:
        diff = "—" if np.isnan(dev) else f"{dev:.1e}"
        print(f"| {name}{note} | {t:.2f} | {ratio:.1f}x | {diff} |")


if __name__ == "__main__":
    main()
