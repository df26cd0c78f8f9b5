"""Training precision: resolve ``TrainConfig.precision`` (``auto`` | ``fp32`` | ``bf16``) per device.

- ``fp32``: no autocast; channels_last only on CUDA (when ``channels_last``), as before.
- ``bf16``: bf16 autocast on any device, channels_last when ``channels_last`` (CPU or CUDA).
- ``auto``: on CUDA bf16 autocast + channels_last (the trainer's long-standing CUDA path). On a CPU,
  bf16 autocast + channels_last only where a short timed probe (`probe_cpu_bf16`, once per process)
  shows it at least ``min_speedup`` times faster than fp32 on this CPU (AMX / AVX-512 BF16 machines),
  fp32 otherwise (CPUs without native bf16, where autocast would only add casts). ``amp=False`` keeps
  ``auto`` at fp32 everywhere (configs written before this field meant exactly that).

Whatever runs the forward pass, the trainer casts logits to float32 before the loss and the metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from simlab._io import write_text_atomic
from simlab.config import PRECISIONS

__all__ = [
    "MIN_SPEEDUP",
    "PRECISIONS",
    "BF16Probe",
    "ResolvedPrecision",
    "cpu_bf16_probe",
    "probe_cpu_bf16",
    "resolve_precision",
]

log = logging.getLogger(__name__)

# bf16 must beat fp32 by this factor on the probe: a near tie is not worth bf16's 8-bit mantissa, and the
# margin keeps timing noise on a busy machine from flipping the choice.
MIN_SPEEDUP = 1.2


@dataclass(frozen=True)
class BF16Probe:
    """Timing of one small conv net training step (forward + backward) in fp32 and in bf16 + channels_last."""

    fp32_seconds: float  # best of the timed repetitions; nan when bf16 is unsupported (nothing timed)
    bf16_seconds: float
    supported: bool  # oneDNN runs bf16 convolutions on this CPU (False: no timing was done)
    capability: str  # torch.backends.cpu.get_cpu_capability(), for the log

    @property
    def speedup(self) -> float:
        """fp32 time / bf16 time (> 1: bf16 is faster); nan when unsupported."""
        if not self.supported or not self.bf16_seconds > 0:
            return math.nan
        return self.fp32_seconds / self.bf16_seconds


@dataclass(frozen=True)
class ResolvedPrecision:
    """What a run actually uses."""

    dtype: Literal["fp32", "bf16"]  # bf16: torch.autocast(dtype=torch.bfloat16); fp32: no autocast
    channels_last: bool  # model and batches in channels_last memory format
    reason: str  # why, for the log

    @property
    def autocast(self) -> bool:
        return self.dtype == "bf16"

    @property
    def label(self) -> str:
        """``fp32``, ``bf16``, ``fp32+channels_last`` or ``bf16+channels_last`` (logged, checkpointed)."""
        return self.dtype + ("+channels_last" if self.channels_last else "")

    @classmethod
    def from_label(cls, label: str, reason: str = "") -> ResolvedPrecision:
        dtype, _, fmt = label.partition("+")
        if dtype not in ("fp32", "bf16") or fmt not in ("", "channels_last"):
            raise ValueError(f"precision label: expected fp32|bf16[+channels_last], got {label!r}")
        return cls(dtype, fmt == "channels_last", reason or f"from {label!r}")  # type: ignore[arg-type]


def resolve_precision(
    precision: str,
    device: str | torch.device,
    *,
    amp: bool = True,
    channels_last: bool = True,
    probe: BF16Probe | None = None,
    min_speedup: float = MIN_SPEEDUP,
    cache_dir: str | os.PathLike | None = None,
) -> ResolvedPrecision:
    """The precision a run on ``device`` uses for ``precision`` (see the module docstring).

    ``probe``: the CPU measurement ``auto`` decides on; None takes `cpu_bf16_probe(cache_dir=cache_dir)`
    when the decision needs it. Pass one to decide from a known measurement (tests, a cached result).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown value {precision!r}; valid values are: {', '.join(PRECISIONS)}")
    if probe is not None and not isinstance(probe, BF16Probe):
        raise TypeError(f"probe: expected a BF16Probe or None, got {type(probe).__name__}")
    if not (isinstance(min_speedup, (int, float)) and min_speedup > 0):
        raise ValueError(f"min_speedup must be > 0, got {min_speedup!r}")
    dev = torch.device(device)
    if precision == "fp32" or (precision == "auto" and not amp):
        why = "precision='fp32'" if precision == "fp32" else "precision='auto' with amp=False"
        return ResolvedPrecision("fp32", channels_last and dev.type == "cuda", why)
    if precision == "bf16":
        if not amp:
            raise ValueError("precision='bf16' needs amp=True (amp=False turns autocast off)")
        return ResolvedPrecision("bf16", channels_last, "precision='bf16'")
    # auto
    if dev.type == "cuda":
        return ResolvedPrecision("bf16", channels_last, "precision='auto' on CUDA")
    if dev.type != "cpu":
        return ResolvedPrecision("fp32", False, f"precision='auto' on {dev.type}: fp32")
    measured = cpu_bf16_probe(cache_dir=cache_dir) if probe is None else probe
    if not measured.supported:
        return ResolvedPrecision("fp32", False, "precision='auto': this CPU has no bf16 convolutions")
    speedup = measured.speedup
    if speedup >= min_speedup:
        why = f"precision='auto': bf16 + channels_last {speedup:.2f}x fp32 on the probe"
        return ResolvedPrecision("bf16", channels_last, why)
    why = f"precision='auto': bf16 + channels_last only {speedup:.2f}x fp32 on the probe (< {min_speedup})"
    return ResolvedPrecision("fp32", False, why)


def probe_cpu_bf16(*, batch: int = 64, size: int = 16, reps: int = 3) -> BF16Probe:
    """Time a small conv + linear training step on the CPU in fp32 and under bf16 autocast + channels_last.

    Two 3x3 convolutions (16 -> 32 -> 32 channels, ``size`` x ``size``), batch norm, ReLU, global pool
    and a linear layer, forward and backward on ``batch`` images, with the current torch thread count.
    One warm-up step each (oneDNN builds its kernels), then ``reps`` steps alternating the two modes,
    so load from other processes hits both alike; the best time of each is kept. ~0.5 s on one core.
    Uses its own generator (the global RNG is not touched).
    """
    for name, value in (("batch", batch), ("size", size), ("reps", reps)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    capability = _capability()
    if not _bf16_supported():
        return BF16Probe(math.nan, math.nan, False, capability)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 16, size, size, generator=g)
    params = [
        torch.randn(32, 16, 3, 3, generator=g) * 0.1,
        torch.randn(32, 32, 3, 3, generator=g) * 0.1,
        torch.randn(10, 32, generator=g) * 0.1,
    ]

    def step(bf16: bool) -> float:
        fmt = torch.channels_last if bf16 else torch.contiguous_format
        w1, w2, w3 = (p.contiguous(memory_format=fmt) if p.dim() == 4 else p for p in params)
        w1, w2, w3 = (w.detach().requires_grad_() for w in (w1, w2, w3))
        xb = x.contiguous(memory_format=fmt)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = F.relu(F.batch_norm(F.conv2d(xb, w1, padding=1), None, None, training=True))
            h = F.relu(F.batch_norm(F.conv2d(h, w2, padding=1), None, None, training=True))
            out = F.linear(h.mean(dim=(2, 3)), w3)
        out.float().square().mean().backward()
        return time.perf_counter() - t

    try:
        step(False), step(True)  # warm-up
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(reps):
            for mode in (False, True):
                times[mode].append(step(mode))
    except RuntimeError as err:  # a CPU/oneDNN build that cannot run bf16 kernels
        log.info("bf16 probe failed (%s): treating bf16 as unsupported", err)
        return BF16Probe(math.nan, math.nan, False, capability)
    return BF16Probe(min(times[False]), min(times[True]), True, capability)


_PROBE_LOCK = threading.Lock()
_PROBES: dict[str, BF16Probe] = {}  # machine key -> result, this process
PROBE_FILE = "precision_probe.json"


def cpu_bf16_probe(*, cache_dir: str | os.PathLike | None = None) -> BF16Probe:
    """`probe_cpu_bf16`, measured once per machine key (CPU model, capability, torch, threads).

    Cached in this process and, with ``cache_dir``, in ``<cache_dir>/precision_probe.json``, so every
    process on the machine (every trial of a sweep) decides alike and pays the ~0.5 s once. Delete
    the file to measure again (e.g. after the first probe ran on a machine under heavy load).
    """
    key = _machine_key()
    with _PROBE_LOCK:
        path = Path(cache_dir) / PROBE_FILE if cache_dir is not None else None
        stored = _read_probes(path) if path is not None else {}
        if key not in _PROBES and key in stored:
            try:
                _PROBES[key] = BF16Probe(**stored[key])
            except TypeError:
                log.warning("ignoring a malformed bf16 probe entry in %s", path)
        if key not in _PROBES:
            result = probe_cpu_bf16()
            log.info(
                "bf16 probe (%s): fp32 %.1f ms, bf16 + channels_last %.1f ms per step (%.2fx)",
                key,
                result.fp32_seconds * 1e3,
                result.bf16_seconds * 1e3,
                result.speedup,
            )
            _PROBES[key] = result
        if path is not None and key not in stored:
            _write_probe(path, key, _PROBES[key])
        return _PROBES[key]


def _machine_key() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    return f"{model} | {_capability()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _read_probes(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable %s (%s)", path, err)
        return {}


def _write_probe(path: Path, key: str, result: BF16Probe) -> None:
    """Merge ``key`` into the file atomically (`simlab._io`); a failure only costs a re-probe."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**_read_probes(path), key: dataclasses.asdict(result)}
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError as err:
        log.warning("could not store the bf16 probe in %s (%s)", path, err)


def _capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def _bf16_supported() -> bool:
    """oneDNN's own check for native bf16 (AVX-512 BF16 / AMX / AVX-512 emulation it supports)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or non-oneDNN build: let the probe time it
        return torch.backends.mkldnn.is_available()
