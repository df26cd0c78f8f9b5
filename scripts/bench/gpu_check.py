#!/usr/bin/env python
"""One-command check of a CUDA machine: writes ``gpu_check.json`` and ``gpu_check.log`` into ``--out``.

Parts (each in its own subprocess with its own timeout; one failing records its error and the others
still run; the whole run stays within ``--budget`` seconds, 8 minutes by default):

- ``pytest``: the ``gpu``-marked tests (``pytest -m gpu``); modules whose imports are missing on the
  machine (ray, mlflow, optuna, gensim) are reported as collection errors, the rest still run.
- ``train``: ResNet-18 CIFAR training img/s at batch 128 in fp32, bf16 autocast + channels_last, and
  the same under ``torch.compile`` (the step `simlab.train.fit` takes: `prepare_images` augmentation
  on the GPU, soft cross-entropy on float32 logits, SGD with momentum).
- ``distances``: the ``l1`` and ``l2`` class-distance sources (`simlab.similarity.sources.SIMILARITIES`) on a
  CIFAR-10-sized training set, 50,000 x 3x32x32 uint8, 10 classes, on the GPU: the real images with
  ``--data <cifar10 zip>``, else synthetic uniform uint8 of that exact shape (labelled as such).
- ``sweep``: a 4-trial quickstart sweep at ``--gpus-per-trial 0.25``; the 4 trials' MLflow start/end
  times must all overlap (4 trials at once on one GPU). Skipped, with a note, when ray, mlflow or
  optuna is not importable.

Peak GPU memory: ``torch.cuda.max_memory_allocated`` per part, plus ``nvidia-smi`` polled during the
run (covers the pytest and sweep subprocesses). Without CUDA it prints that it skipped and exits 0.

    PYTHON=/opt/torch/.venv/bin/python3 bash scripts/bench/gpu_check.sh [--out DIR] [--data ZIP]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from simlab._io import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]

PARTS = ("pytest", "train", "distances", "sweep")
# Seconds per part (each also capped by what is left of --budget).
TIMEOUTS = {"pytest": 150, "train": 200, "distances": 120, "sweep": 150}
SWEEP_MODULES = ("ray", "mlflow", "optuna")


# =============================================================================================
# the parts that run in a subprocess: each prints one JSON line prefixed with RESULT
# =============================================================================================
def part_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from simlab.data import prepare_images
    from simlab.losses import soft_cross_entropy
    from simlab.models import build_model, count_parameters

    dev = torch.device(args.device)
    batch, steps, warmup = args.batch_size, args.steps, args.warmup
    g = torch.Generator(device=dev).manual_seed(0)
    pool = torch.randint(0, 256, (8 * batch, 3, 32, 32), dtype=torch.uint8, device=dev, generator=g)
    targets = torch.eye(10, device=dev)[torch.randint(0, 10, (8 * batch,), device=dev, generator=g)]
    out: dict[str, Any] = {"model": "resnet18", "batch_size": batch, "timed_steps": steps, "modes": {}}
    modes = {
        "fp32": dict(amp=False, channels_last=False, compile=False),
        "bf16+channels_last": dict(amp=True, channels_last=True, compile=False),
        "bf16+channels_last+compile": dict(amp=True, channels_last=True, compile=True),
    }
    for name, mode in modes.items():
        try:
            _reset_peak(dev)
            model = build_model("resnet18", 10, generator=torch.Generator(device=dev).manual_seed(0))
            if mode["channels_last"]:
                model = model.to(memory_format=torch.channels_last)
            out["parameters"] = count_parameters(model)
            net = torch.compile(model) if mode["compile"] else model
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

            def step(net=net, opt=opt, mode=mode) -> None:
                idx = torch.randint(0, pool.shape[0], (batch,), device=dev, generator=g)
                x = prepare_images(
                    pool[idx],
                    mean=(0.49, 0.48, 0.45),
                    std=(0.25, 0.24, 0.26),
                    augment=True,
                    generator=g,
                    channels_last=mode["channels_last"],
                )
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode["amp"]):
                    logits = net(x)
                soft_cross_entropy(logits.float(), targets[idx]).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            t0 = time.perf_counter()
            for _ in range(warmup):
                step()
            _sync(dev)
            t1 = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(dev)
            t2 = time.perf_counter()
            out["modes"][name] = {
                "img_per_s": steps * batch / (t2 - t1),
                "warmup_s": t1 - t0,  # includes compilation for the compiled mode
                "peak_memory_allocated_mib": _peak_mib(dev),
            }
        except Exception as err:  # one mode failing (e.g. compile without a C compiler) keeps the others
            out["modes"][name] = {"error": f"{type(err).__name__}: {err}"}
        print(f"train {name}: {out['modes'][name]}", flush=True)
        _emit(out)  # a later mode timing out (compilation) keeps this one
    fp32 = out["modes"]["fp32"].get("img_per_s")
    for row in out["modes"].values():
        if fp32 and "img_per_s" in row:
            row["speedup_vs_fp32"] = row["img_per_s"] / fp32
    return out


def part_distances(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from simlab.data import ImageData, load_dataset
    from simlab.similarity.sources import SIMILARITIES

    if args.data:
        cache = Path(args.out) / "cache"
        t = time.perf_counter()
        data = load_dataset("cifar10", data_dir=args.data, cache_dir=str(cache), val_fraction=0.0)
        source = f"CIFAR-10 training set from {args.data} (decoded in {time.perf_counter() - t:.1f} s)"
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (10 * args.per_class, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.arange(10).repeat_interleave(args.per_class)
        empty_x, empty_y = x[:0], y[:0]
        data = ImageData(
            name="synthetic",
            class_names=[f"class{k}" for k in range(10)],
            train_x=x,
            train_y=y,
            val_x=empty_x,
            val_y=empty_y,
            test_x=empty_x,
            test_y=empty_y,
            mean=(0.5, 0.5, 0.5),
            std=(0.29, 0.29, 0.29),
            identity=f"gpu_check-synthetic-uniform-uint8-{10 * args.per_class}x3x32x32",
        )
        source = (
            f"SYNTHETIC uniform uint8 images, {10 * args.per_class:,} x 3x32x32, 10 classes (no --data given)"
        )
    out: dict[str, Any] = {
        "data": source,
        "synthetic": not args.data,
        "n": int(data.train_x.shape[0]),
        "shape": list(data.train_x.shape[1:]),
        "classes": len(data.class_names),
        "sources": {},
    }
    dev = torch.device(args.device)
    for name in ("l1", "l2"):
        try:
            _reset_peak(dev)
            t = time.perf_counter()
            matrix = SIMILARITIES[name](data, {"device": args.device})  # a numpy result: synchronised
            out["sources"][name] = {
                "seconds": time.perf_counter() - t,
                "peak_memory_allocated_mib": _peak_mib(dev),
                "diagonal_mean": float(matrix.diagonal().mean()),
            }
        except Exception as err:
            out["sources"][name] = {"error": f"{type(err).__name__}: {err}"}
        print(f"distances {name}: {out['sources'][name]}", flush=True)
        _emit(out)
    return out


def part_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    storage = Path(args.out) / "sweep"
    name = "gpu_check_sweep"
    cmd = [
        sys.executable,
        str(ROOT / "sweeps" / "calibration.py"),
        "--preset",
        "quickstart",
        "--name",
        name,
        "--storage",
        str(storage),
        "--num-samples",
        "4",
        "--gpus-per-trial",
        "0.25" if args.device == "cuda" else "0",
        "--cpus-per-trial",
        "1" if args.device == "cuda" else "0.25",  # CPU smoke: 4 trials at once on a small machine
        "--max-concurrent",
        "4",
        "--in-process",
        "--scheduler",
        "none",
        "--set",
        f"device={args.device}",
        "--set",
        f"epochs={args.sweep_epochs}",
    ]
    print("sweep: " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    # Its own timeout, under the part's, so the trial times are still read when the sweep is cut short.
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, start_new_session=True)
    try:
        code: int | None = proc.wait(timeout=args.sweep_timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # the driver and the Ray processes it started
        proc.wait()
        code = None
    cut_at = time.time()
    out: dict[str, Any] = {"command": " ".join(cmd), "returncode": code, "wall_s": time.perf_counter() - t}
    out["cut_short"] = code is None
    client = MlflowClient(f"sqlite:///{storage / name / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    trials = [r for r in runs if r.data.tags.get("simlab.role") == "trial"]
    out.update(trial_overlap([(r.info.start_time, r.info.end_time) for r in trials], cut_at=cut_at))
    if code != 0:
        raise RuntimeError(f"sweep exited {code} (None: cut at {args.sweep_timeout:.0f} s); trials: {out}")
    return out


def trial_overlap(spans_ms: list[tuple[int, int | None]], *, cut_at: float | None = None) -> dict[str, Any]:
    """Did all trials run at one moment? ``spans_ms``: MLflow (start_time, end_time) in ms; a run without
    an end time was still running at ``cut_at`` (s) when the sweep was cut short, else it never ended."""
    spans = sorted(
        (a / 1e3, b / 1e3 if b else (cut_at if cut_at is not None else float("nan"))) for a, b in spans_ms
    )
    if not spans:
        return {"trials": 0, "trial_spans_s": [], "all_overlap_s": None, "four_at_once": False}
    t0 = spans[0][0]
    if any(math.isnan(b) for _, b in spans):  # a run that never ended (crashed): no evidence
        return {"trials": len(spans), "trial_spans_s": None, "all_overlap_s": None, "four_at_once": False}
    overlap = min(b for _, b in spans) - max(a for a, _ in spans)  # > 0: a moment when all were running
    return {
        "trials": len(spans),
        "trial_spans_s": [[round(a - t0, 2), round(b - t0, 2)] for a, b in spans],
        "all_overlap_s": overlap,
        "four_at_once": bool(len(spans) == 4 and overlap > 0),
    }


PART_FUNCS = {"train": part_train, "distances": part_distances, "sweep": part_sweep}


def _emit(result: dict[str, Any]) -> None:
    """Print the part's result so far; the orchestrator keeps the last one (also after a timeout)."""
    print("RESULT " + json.dumps(result, default=str), flush=True)


def _reset_peak(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mib(dev) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None


def run_part(args: argparse.Namespace) -> int:
    """Subprocess entry: run one part, print ``RESULT <json>`` (with this process's peak GPU memory)."""
    import torch

    result = PART_FUNCS[args.part](args)
    result["device"] = args.device
    result["process_peak_memory_allocated_mib"] = _peak_mib(torch.device(args.device))
    _emit(result)
    return 0


# =============================================================================================
# the orchestrator
# =============================================================================================
class NvidiaSmiPoller:
    """Polls ``nvidia-smi`` for memory.used (MiB) of every GPU; keeps the peak."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.peak_mib, self.total_mib = interval, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _loop(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                lines = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.splitlines()
                for line in lines:
                    used, total = (float(v) for v in line.split(","))
                    self.peak_mib, self.total_mib = max(self.peak_mib, used), total
            self._stop.wait(self.interval)

    def __enter__(self) -> NvidiaSmiPoller:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=10)


def _run_logged(cmd: list[str], timeout: float, log, env: dict[str, str]) -> tuple[int | None, str]:
    """Run ``cmd``; its output goes to the log. Returns (returncode or None on timeout, output)."""
    log.write(f"\n$ {' '.join(cmd)}  (timeout {timeout:.0f} s)\n")
    log.flush()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # the part and everything it started (Ray workers, compile workers)
        output, _ = proc.communicate()
        code = None
    log.write(output)
    log.flush()
    return code, output


def orchestrate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path, json_path = out / "gpu_check.log", out / "gpu_check.json"
    report: dict[str, Any] = {
        "check": "gpu_check",
        "python": sys.executable,
        "platform": platform.platform(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import torch
    except ImportError as err:
        print(f"gpu_check: cannot import torch with {sys.executable}: {err}", file=sys.stderr)
        return 1
    report["torch"] = torch.__version__
    # $SIMLAB_COMMIT: a copy of the tree without its git history (a remote GPU box) names its commit.
    report["commit"] = os.environ.get("SIMLAB_COMMIT", "")
    with contextlib.suppress(Exception):
        report["commit"] = (
            report["commit"]
            or subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
        )
    if args.device == "cpu":
        report["note"] = "CPU smoke run (--device cpu): code paths only, no GPU figures"
    elif not torch.cuda.is_available():
        message = "gpu_check: skipped: no CUDA device is available (torch.cuda.is_available() is False)"
        print(message)
        report.update(skipped=True, reason=message)
        log_path.write_text(message + "\n")
        _write_json(json_path, report)
        return 0
    on_gpu = args.device == "cuda"
    report.update(
        skipped=False,
        device=torch.cuda.get_device_name(0) if on_gpu else "cpu",
        device_count=torch.cuda.device_count() if on_gpu else 0,
        cuda=torch.version.cuda,
        budget_s=args.budget,
        parts={},
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("SIMLAB_CACHE", str(out.resolve() / "cache"))
    t_start = time.perf_counter()
    wanted = [p for p in PARTS if p not in set(args.skip)]
    with open(log_path, "w") as log, NvidiaSmiPoller() as smi:
        log.write(f"gpu_check on {report['device']} (torch {report['torch']}, python {sys.executable})\n")
        for part in wanted:
            left = args.budget - (time.perf_counter() - t_start)
            entry: dict[str, Any] = {}
            report["parts"][part] = entry
            if part == "sweep":
                missing = [m for m in SWEEP_MODULES if importlib.util.find_spec(m) is None]
                if missing:
                    entry.update(status="skipped", note=f"not importable here: {', '.join(missing)}")
                    print(f"gpu_check: {part}: skipped ({entry['note']})", flush=True)
                    continue
            if left < 20:
                entry.update(status="skipped", note=f"budget of {args.budget} s spent")
                print(f"gpu_check: {part}: skipped ({entry['note']})", flush=True)
                continue
            timeout = min(TIMEOUTS[part], left)
            print(f"gpu_check: {part} (timeout {timeout:.0f} s) ...", flush=True)
            t = time.perf_counter()
            try:
                if part == "pytest":
                    marker = "gpu" if on_gpu else "gpu and not gpu"  # CPU smoke: collect, run nothing
                    cmd = [sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider"]
                    cmd += ["--continue-on-collection-errors", "-rfEs", "tests"]
                    code, output = _run_logged(cmd, timeout, log, env)
                    tail = [ln for ln in output.strip().splitlines() if ln.strip()][-1:] or [""]
                    entry.update(returncode=code, summary=tail[0][-300:])
                    lines = output.splitlines()
                    # "ERROR tests/x.py - ..." is a module that failed to collect (it needs a package this
                    # machine lacks: ray, mlflow, ...; the gpu tests of the others still run), listed but
                    # not a failure; "ERROR tests/x.py::test - ..." is a test's error, a failure.
                    errors = [ln[:300] for ln in lines if ln.startswith("ERROR")]
                    failed = [ln[:300] for ln in lines if ln.startswith("FAILED")]
                    failed += [ln for ln in errors if "::" in ln.split(" - ")[0]]
                    entry["failed"] = failed[:30]
                    entry["collection_errors"] = [ln for ln in errors if "::" not in ln.split(" - ")[0]][:30]
                    ran_clean = code == 1 and not entry["failed"] and " passed" in tail[0]
                    if ran_clean:
                        entry["note"] = "gpu tests passed; some test modules could not be collected here"
                    ok = code == 0 or ran_clean or (not on_gpu and code == 5)  # 5: nothing selected
                else:
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--out", str(out)]
                    cmd += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
                    cmd += ["--warmup", str(args.warmup), "--sweep-epochs", str(args.sweep_epochs)]
                    cmd += ["--device", args.device, "--per-class", str(args.per_class)]
                    cmd += ["--sweep-timeout", str(max(10.0, timeout - 25))]
                    if args.data:
                        cmd += ["--data", args.data]
                    code, output = _run_logged(cmd, timeout, log, env)
                    results = [ln[7:] for ln in output.splitlines() if ln.startswith("RESULT ")]
                    if results:
                        entry["result"] = json.loads(results[-1])
                    entry["returncode"] = code
                    ok = code == 0 and bool(results)
                    if not ok and code is not None:
                        entry["error"] = "\n".join(output.strip().splitlines()[-15:])[-3000:]
                entry["status"] = "ok" if ok else ("timeout" if code is None else "error")
            except Exception as err:  # the orchestrator itself must survive any part
                entry.update(status="error", error=f"{type(err).__name__}: {err}")
            entry["seconds"] = round(time.perf_counter() - t, 1)
            print(f"gpu_check: {part}: {entry['status']} in {entry['seconds']} s", flush=True)
            _write_json(json_path, report)  # partial results survive a kill
        report["peak_gpu_memory"] = {
            "nvidia_smi_used_mib": smi.peak_mib if smi.available else None,
            "nvidia_smi_total_mib": smi.total_mib if smi.available else None,
            "torch_max_allocated_mib_by_part": {
                p: e.get("result", {}).get("process_peak_memory_allocated_mib")
                for p, e in report["parts"].items()
            },
        }
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    _write_json(json_path, report)
    print(json.dumps({p: e.get("status") for p, e in report["parts"].items()}))
    print(f"gpu_check: wrote {json_path} and {log_path} ({report['wall_s']} s)")
    return 0


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT", "gpu_check_out"))
    ap.add_argument("--data", default=None, help="CIFAR-10 zip/folder for the distance part (else synthetic)")
    ap.add_argument("--budget", type=float, default=460.0, help="seconds for all parts together")
    ap.add_argument("--timeouts", default="", help="per-part seconds, e.g. train=300,sweep=200")
    ap.add_argument("--skip", default="", help=f"comma-separated parts to skip ({', '.join(PARTS)})")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50, help="timed training steps per mode")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per mode (compilation included)")
    ap.add_argument("--sweep-epochs", type=int, default=8, help="epochs of each sweep trial")
    ap.add_argument("--part", choices=sorted(PART_FUNCS), help=argparse.SUPPRESS)
    # Smoke-testing the parts on a CPU machine (tiny sizes); the real check uses the defaults.
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--per-class", type=int, default=5_000, help=argparse.SUPPRESS)
    ap.add_argument("--sweep-timeout", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.skip = [s for s in args.skip.split(",") if s]
    unknown = [s for s in args.skip if s not in PARTS]
    if unknown:
        ap.error(f"--skip: unknown part(s) {unknown}; valid: {', '.join(PARTS)}")
    for item in (t for t in args.timeouts.split(",") if t):
        part, _, value = item.partition("=")
        try:
            if part not in TIMEOUTS:
                raise ValueError(part)
            TIMEOUTS[part] = float(value)
        except ValueError:
            ap.error(f"--timeouts: expected part=seconds with part in {', '.join(TIMEOUTS)}, got {item!r}")
    if args.data and not os.path.exists(args.data):
        ap.error(f"--data: no such file or folder: {args.data!r}")
    if args.data:
        args.data = os.path.abspath(args.data)
    if args.sweep_timeout is None:
        args.sweep_timeout = TIMEOUTS["sweep"] - 25
    if args.part:
        return run_part(args)
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
