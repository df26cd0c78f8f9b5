#!/usr/bin/env python
"""CPU training throughput (img/s) in fp32, bf16 autocast, bf16 + channels_last, and what ``auto`` picks.

One run measures every model in every mode, interleaved round by round so all see the same machine
load. A step is what `simlab.train.fit` does per batch: `prepare_images` (crop + flip augmentation) of
device-resident uint8 images, the forward pass under the mode's autocast, soft cross-entropy on
float32 logits, backward, SGD with momentum. ``auto`` is `simlab.precision.resolve_precision("auto",
"cpu")` on this machine: its probe result is recorded, and its img/s is the figure of the mode it
resolves to (the ratio auto / fp32 is the speed-up a default run gets here).

    python scripts/bench/bench_precision.py                      # full: small_cnn, resnet20, resnet18
    python scripts/bench/bench_precision.py --models small_cnn --batch-size 8 --steps 1 --rounds 1 \\
        --warmup 1 --out /tmp/bench_precision_smoke.json        # smoke

Writes a JSON (``--out``) with the machine (CPU model, threads, torch), the load average at start and
end, the commit, the probe and one row per (model, mode): median and best img/s over the rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
from benchenv import git_commit, machine  # scripts/bench/benchenv.py (this script's folder)

from simlab._io import write_text_atomic
from simlab.data import prepare_images
from simlab.losses import soft_cross_entropy
from simlab.models import build_model, count_parameters
from simlab.precision import cpu_bf16_probe, resolve_precision

MODES = {  # name -> (bf16 autocast, channels_last)
    "fp32": (False, False),
    "bf16": (True, False),
    "bf16+channels_last": (True, True),
}
MODEL_ARGS = {"small_cnn": {"width": 16}}  # the width the repro presets used with small_cnn


class Bench:
    """One model in one mode: built once, stepped in every round."""

    def __init__(self, name: str, mode: str, batch: int, pool: int) -> None:
        self.autocast, self.channels_last = MODES[mode]
        g = torch.Generator().manual_seed(0)
        self.model = build_model(name, 10, generator=g, **MODEL_ARGS.get(name, {}))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.x = torch.randint(0, 256, (pool, 3, 32, 32), dtype=torch.uint8, generator=g)
        self.targets = torch.eye(10)[torch.randint(0, 10, (pool,), generator=g)]
        self.g, self.batch, self.params = g, batch, count_parameters(self.model)

    def steps(self, n: int) -> float:
        """Seconds for ``n`` training steps."""
        t = time.perf_counter()
        for _ in range(n):
            idx = torch.randint(0, self.x.shape[0], (self.batch,), generator=self.g)
            xb = prepare_images(
                self.x[idx],
                mean=(0.5, 0.5, 0.5),
                std=(0.25, 0.25, 0.25),
                augment=True,
                generator=self.g,
                channels_last=self.channels_last,
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(xb)
            loss = soft_cross_entropy(logits.float(), self.targets[idx])
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="small_cnn,resnet20,resnet18")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the first round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="bench_precision.json")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; valid: {', '.join(MODES)}")
    for name in ("batch_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    load_start = os.getloadavg()
    machine_text = machine()
    probe = cpu_bf16_probe()
    auto = resolve_precision("auto", "cpu", probe=probe)
    benches = {
        (m, mode): Bench(m, mode, args.batch_size, pool=4 * args.batch_size) for m in models for mode in modes
    }
    for bench in benches.values():
        bench.steps(args.warmup)
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in benches}
    for r in range(args.rounds):  # interleaved: every (model, mode) sees each round's load
        for key, bench in benches.items():
            seconds[key].append(bench.steps(args.steps))
            rate = args.steps * args.batch_size / seconds[key][-1]
            print(f"round {r + 1}/{args.rounds} {key[0]} {key[1]}: {rate:.0f} img/s", flush=True)
    load_end = os.getloadavg()

    rows = []
    for (model, mode), secs in seconds.items():
        rates = [args.steps * args.batch_size / s for s in secs]
        rows.append(
            {
                "model": model,
                "model_args": MODEL_ARGS.get(model, {}),
                "parameters": benches[(model, mode)].params,
                "mode": mode,
                "img_per_s_median": statistics.median(rates),
                "img_per_s_best": max(rates),
                "img_per_s_rounds": rates,
            }
        )
    by = {(r["model"], r["mode"]): r for r in rows}
    summary = []
    for model in models:
        fp32 = by.get((model, "fp32"))
        picked = by.get((model, auto.label))
        summary.append(
            {
                "model": model,
                "fp32_img_per_s": fp32["img_per_s_median"] if fp32 else None,
                "auto_resolves_to": auto.label,
                "auto_img_per_s": picked["img_per_s_median"] if picked else None,
                "auto_over_fp32": (picked["img_per_s_median"] / fp32["img_per_s_median"])
                if fp32 and picked
                else None,
            }
        )
    result = {
        "benchmark": "bench_precision",
        "machine": machine_text,
        "cpu_capability": probe.capability,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": git_commit("simlab", "scripts/bench/bench_precision.py"),
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "batch_size": args.batch_size,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "probe": {
            "fp32_seconds": probe.fp32_seconds,
            "bf16_channels_last_seconds": probe.bf16_seconds,
            "speedup": probe.speedup,
            "supported": probe.supported,
        },
        "auto": {"resolves_to": auto.label, "reason": auto.reason},
        "rows": rows,
        "summary": summary,
    }
    out = Path(args.out)
    write_text_atomic(out, json.dumps(result, indent=2, default=str))

    print(f"machine: {machine_text}; commit {result['commit']}")
    print(
        f"load average start {load_start[0]:.2f} end {load_end[0]:.2f}; auto -> {auto.label} ({auto.reason})"
    )
    print(f"| model | params | {' | '.join(f'{m} img/s' for m in modes)} | auto ({auto.label}) / fp32 |")
    print("|---|---:|" + "---:|" * len(modes) + "---:|")
    for model, s in zip(models, summary, strict=True):
        cells = " | ".join(f"{by[(model, m)]['img_per_s_median']:.0f}" for m in modes)
        ratio = f"{s['auto_over_fp32']:.2f}x" if s["auto_over_fp32"] else "-"
        print(f"| {model} | {benches[(model, modes[0])].params:,} | {cells} | {ratio} |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
