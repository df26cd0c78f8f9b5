"""The project's argument checks: one module, used by the math modules (similarity, labels, losses,
noise), the config, the registries and the sweep spec.

Every check raises a ``ValueError``/``TypeError`` whose message names the argument, says what was
expected and what was received. Value checks (NaN, ranges) read the tensor back to the host, so the
per-batch loss functions use only the shape/dtype checks.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported inside the tensor checks, not here: the config and the sweep CLI use the name checks
# below and must stay importable without torch (the CLI rejects a bad spec before torch loads).


def did_you_mean(word: object, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), sorted(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(what: str, name: object, valid: Iterable[str]) -> str:
    """The message for an unknown registry key: argument, name, closest match and every valid name."""
    valid = list(valid)
    return f"{what}: unknown {what} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}"


def check_tensor(name: str, value: object) -> torch.Tensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def check_float_tensor(name: str, value: object, *, ndim: int | None = None) -> torch.Tensor:
    t = check_tensor(name, value)
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d tensor, got shape {tuple(t.shape)}")
    return t


def check_finite(name: str, t: torch.Tensor) -> None:
    import torch

    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(
            f"{name}: expected finite values, got {bad} NaN/inf entr{'y' if bad == 1 else 'ies'}"
        )


def check_square(name: str, value: object) -> torch.Tensor:
    t = check_float_tensor(name, value, ndim=2)
    if t.shape[0] != t.shape[1] or t.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty square [K, K] matrix, got shape {tuple(t.shape)}")
    check_finite(name, t)
    return t


def sum_tolerance(dtype: torch.dtype) -> float:
    """Tolerance for "rows sum to 1": a few rounding steps of the dtype, at least 1e-5."""
    import torch

    return max(1e-5, 8 * torch.finfo(dtype).eps)


def check_rows_stochastic(name: str, t: torch.Tensor) -> None:
    """Entries >= 0 and every row sums to 1 (within `sum_tolerance`)."""
    if bool((t < 0).any()):
        raise ValueError(f"{name}: expected non-negative entries, got minimum {float(t.min()):.6g}")
    sums = t.double().sum(dim=-1)
    err = (sums - 1).abs()
    if t.numel() and float(err.max()) > sum_tolerance(t.dtype):
        row = int(err.argmax())
        raise ValueError(
            f"{name}: expected rows summing to 1, got row {row} summing to {float(sums[row]):.8g}"
        )


def check_labels(name: str, value: object, num_classes: int, *, n: int | None = None) -> torch.Tensor:
    """Integer class labels ``[N]`` in ``[0, num_classes)``."""
    import torch

    t = check_tensor(name, value)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name}: expected an integer tensor of class indices, got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-d tensor [N], got shape {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per sample), got {t.shape[0]}")
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name}: expected class indices in [0, {num_classes}), got values in [{lo}, {hi}]"
            )
    return t


def check_num_classes(name: str, value: object, *, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(name: str, value: object, *, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (Python/numpy scalar or 0-d tensor) in ``[low, high]``."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(f"{name}: expected a real number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) and (low is None or v >= low) and (high is None or v <= high)
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name}: expected a finite number in [{lo}, {hi}], got {value!r}")
    return v


def check_choice(name: str, value: object, valid: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name}: unknown value {value!r}; valid values are: {', '.join(valid)}")
    return value


def check_pairs(name: str, pairs: object, num_classes: int) -> list[tuple[int, int]]:
    """Disjoint index pairs ``(a, b)``, ``a != b``, each class in at most one pair."""
    import torch

    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise TypeError(
            f"{name}: expected a sequence of (a, b) class-index pairs, got {type(pairs).__name__}"
        )
    out: list[tuple[int, int]] = []
    seen: dict[int, int] = {}
    for i, pair in enumerate(pairs):  # type: ignore[arg-type]
        if isinstance(pair, torch.Tensor):
            pair = pair.tolist()
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}]: expected a pair (a, b), got {pair!r}") from None
        for v in (a, b):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < num_classes:
                raise ValueError(f"{name}[{i}]: expected class indices in [0, {num_classes}), got {pair!r}")
        a, b = int(a), int(b)
        if a == b:
            raise ValueError(f"{name}[{i}]: expected two different classes, got ({a}, {b})")
        for v in (a, b):
            if v in seen:
                raise ValueError(
                    f"{name}: class {v} appears in pair {seen[v]} and pair {i}; "
                    "each class may be in at most one pair"
                )
            seen[v] = i
        out.append((a, b))
    return out


def as_generator(name: str, generator: object) -> torch.Generator | None:
    """Accept a ``torch.Generator``, an integer seed (a fresh CPU generator) or None (torch's default)."""
    import torch

    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(
        f"{name}: expected a torch.Generator, an integer seed or None, got {type(generator).__name__}"
    )


def generator_device(generator: torch.Generator | None) -> torch.device:
    import torch

    return generator.device if generator is not None else torch.device("cpu")
