"""Training configuration: one frozen dataclass with the papers' defaults.

Ray Tune, Optuna and the command line all hand us plain dicts; `TrainConfig.from_dict` is the one
place they become a config, and it rejects unknown keys (naming the valid ones) and validates every
field before any expensive work starts.

A leaf module: it imports nothing of simlab but the torch-free `simlab._validate`. Registry keys
(dataset, model, loss, similarity source) are checked where the registries are used: `simlab.train.fit`
and the sweep's `sweeps.registry_checks.check_registries`.

Which label methods use a field is metadata on the field (`applies_to`): `TrainConfig.validate`, the
sweep spec (what is sampled / applied per label) and the `--set` pruning all read `FIELD_METHODS`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from simlab._validate import check_choice, did_you_mean

LabelMethod = Literal["onehot", "uniform", "similarity", "confidence", "trusted_only", "onehot_trusted"]
# The names of `simlab.targets.LABEL_REGISTRY` (torch-free here, for fast config checks; a test keeps
# them equal). The last two are paper B's controls, defined by the trusted set (need trusted_size > 0):
# ``trusted_only`` trains on the clean trusted samples alone; ``onehot_trusted`` is one-hot labels on the
# noisy set with the trusted samples' labels clean (what ``onehot`` with a trusted set also gives).
LABEL_METHODS: tuple[str, ...] = (
    "onehot",
    "uniform",
    "similarity",
    "confidence",
    "trusted_only",
    "onehot_trusted",
)
TRUSTED_SET_LABELS: tuple[str, ...] = ("trusted_only", "onehot_trusted")
# Confidence labels (paper B) come from one of these score sources (see simlab.similarity.sources): the
# `confidence_source` field. Distance sources (paper A) are the `similarity` field.
CONFIDENCE_SOURCES: tuple[str, ...] = ("pairs", "predictions")
RELAXATIONS: tuple[str, ...] = ("none", "l2")
# Which distances paper A eq. 17's z-score is taken over (SPEC §1): the whole row, diagonal included
# (the paper's §5.4), or the off-diagonal entries only (SPEC's first version).
SIMILARITY_NORMALISE: tuple[str, ...] = ("row", "off_diagonal")
NOISE_KINDS: tuple[str, ...] = ("none", "symmetric", "asymmetric")
SCHEDULERS: tuple[str, ...] = ("cosine", "plateau", "none")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
# Training precision (simlab.precision resolves it per device): auto = bf16 autocast + channels_last on
# CUDA, and on a CPU where a start-up probe shows it faster; fp32 otherwise.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

# The methods a sweep compares: every label method, plus the baselines defined by other fields. Paper A
# §6.1's mixup baseline is one-hot labels trained with mixup: the `mixup` field (a Beta(a, a)
# coefficient) is its one parameter, DEFAULT_MIXUP when a sweep does not set it (Zhang et al. 2018 use
# a = 0.2 on CIFAR; paper A does not state its value). A config has no "mixup" label: `method_values`
# gives the config values of a method, and such a run logs label=onehot, mixup=<a>.
DEFAULT_MIXUP = 0.2
BASELINES: dict[str, dict[str, Any]] = {"mixup": {"label": "onehot", "mixup": DEFAULT_MIXUP}}
METHODS: tuple[str, ...] = (*LABEL_METHODS, *BASELINES)


def method_values(method: str) -> dict[str, Any]:
    """The config values that make `method` (a label method or a `BASELINES` name)."""
    return dict(BASELINES.get(method, {"label": method}))


def applies_to(*methods: str, exclusive: bool = False) -> dict[str, Any]:
    """Field metadata: the `METHODS` that use the field (a sweep samples / applies it only there).

    ``exclusive``: a config with another label must leave the field at its default (`validate` says
    "<field> only applies to label=..."); other fields are merely unused there (e.g. alpha with one-hot
    labels, mixup as an augmentation under any label).
    """
    return {"applies_to": methods, "exclusive": exclusive}


# Largest count/size a field may hold: counts end up as torch/numpy int32-indexable sizes, and nothing
# this project runs comes near it. Seeds go to `torch.Generator.manual_seed`, which takes 0 .. 2**64 - 1.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**64 - 1


@dataclass(frozen=True)
class Bound:
    """The range a numeric field's consumer accepts: ``kind`` int or float (finite), ``[low, high]`` with
    open ends where ``low_open`` / ``high_open``. `check` raises ValueError naming the field."""

    kind: Literal["int", "float"]
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind == "int" else "a finite number"
        high = "" if math.isinf(self.high) else f"{self.high:g}" if self.kind == "float" else str(self.high)
        low = f"{self.low:g}" if self.kind == "float" else str(int(self.low))
        if not high:
            return f"{what} {'>' if self.low_open else '>='} {low}"
        return f"{what} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            return False  # NaN and +-inf: no field takes them
        low_ok = value > self.low if self.low_open else value >= self.low
        high_ok = value < self.high if self.high_open else value <= self.high
        return low_ok and high_ok

    def check(self, name: str, value: Any) -> None:
        if not self.contains(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")


# Every numeric TrainConfig field and the range its consumer accepts (one table: `TrainConfig.validate`
# and the sweep spec's range checks read it). Optional fields (None allowed) are in OPTIONAL_NUMBERS.
NUMERIC_BOUNDS: dict[str, Bound] = {
    "val_fraction": Bound("float", 0.0, 1.0, high_open=True),
    "subset_per_class": Bound("int", 1, INT32_MAX),
    "alpha": Bound("float", 0.0, 1.0),  # paper A eq. 18: a probability mass
    # softmax(-beta z) over z-scored distances: beyond ~1e6 the rows are one-hot already, and far beyond
    # it beta * |z| overflows float64 (a NaN row)
    "beta": Bound("float", 0.0, 1e6),
    "confidence_own": Bound("float", 0.0, 1.0),
    "confidence_other": Bound("float", 0.0, 1.0),
    "trusted_own": Bound("float", 0.0, 1.0),
    "trusted_other": Bound("float", 0.0, 1.0),
    "mixup": Bound("float", 0.0),
    "noise_rate": Bound("float", 0.0, 1.0),
    "trusted_size": Bound("int", 0, INT32_MAX),
    "epochs": Bound("int", 1, INT32_MAX),
    "batch_size": Bound("int", 1, INT32_MAX),
    "lr": Bound("float", 0.0, low_open=True),
    "momentum": Bound("float", 0.0),
    "weight_decay": Bound("float", 0.0),
    "warmup_epochs": Bound("int", 0, INT32_MAX),
    "plateau_factor": Bound("float", 0.0, 1.0, low_open=True, high_open=True),
    "plateau_patience": Bound("int", 0, INT32_MAX),
    "n_bins": Bound("int", 1, INT32_MAX),
    "eval_every": Bound("int", 1, INT32_MAX),
    "test_accuracy_every": Bound("int", 0, INT32_MAX),
    "ood_samples": Bound("int", 0, INT32_MAX),
    "seed": Bound("int", 0, SEED_MAX),
}
OPTIONAL_NUMBERS: frozenset[str] = frozenset({"subset_per_class", "beta"})


def default_cache_dir() -> str:
    """Where decoded datasets and similarity matrices are cached (``$SIMLAB_CACHE`` overrides)."""
    return os.environ.get("SIMLAB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "simlab"))


@dataclass(frozen=True)
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    dataset: str = "digits"  # a simlab.data.DATASETS key
    data_dir: str | None = None  # raw data (torchvision root, image-folder zip/folder); None = default
    cache_dir: str | None = None  # decoded uint8 tensors + similarity store; None = default_cache_dir()
    val_fraction: float = 0.1  # of the training split, held out (stratified, seeded) for selection/post-hoc
    subset_per_class: int | None = None  # class-balanced training subset (scaled-down runs); None = all
    # the dataset loader's own options (e.g. {"image_size": 32}); part of the data split's identity
    dataset_args: dict[str, Any] = field(default_factory=dict)
    # --- model ------------------------------------------------------------------------------
    model: str = "small_cnn"  # a simlab.models.MODELS key
    model_args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the model
    # --- labels (paper A eq. 17-18, paper B eq. 1-3) ---------------------------------------------
    label: LabelMethod = "onehot"
    # a simlab.similarity.sources.SIMILARITIES distance source (paper A eq. 17), for similarity labels
    similarity: str | None = field(default=None, metadata=applies_to("similarity", exclusive=True))
    # a CONFIDENCE_SOURCES score source (paper B eq. 1-3, §4.1 pairs), for confidence labels
    confidence_source: str | None = field(default=None, metadata=applies_to("confidence", exclusive=True))
    similarity_args: dict[str, Any] = field(default_factory=dict)  # parameters of that source (either)
    # smoothing mass on the other classes (paper A eq. 18; uniform LS too)
    alpha: float = field(default=0.1, metadata=applies_to("uniform", "similarity"))
    # softmax sharpness over z-scored distances (paper A eq. 17)
    beta: float | None = field(default=None, metadata=applies_to("similarity", exclusive=True))
    # z-score over the row / off-diagonal
    similarity_normalise: Literal["row", "off_diagonal"] = field(
        default="row", metadata=applies_to("similarity", exclusive=True)
    )
    # hand-made pair labels for noisy samples (paper B §4.1) ...
    confidence_own: float = field(default=0.6, metadata=applies_to("confidence"))
    confidence_other: float = field(default=0.4, metadata=applies_to("confidence"))
    # ... and for the trusted set
    trusted_own: float = field(default=0.95, metadata=applies_to("confidence"))
    trusted_other: float = field(default=0.05, metadata=applies_to("confidence"))
    # --- loss -------------------------------------------------------------------------------
    loss: str = "ce"  # a simlab.losses.LOSSES key
    # paper B eq. 9, applied to non-trusted samples only
    relaxation: Literal["none", "l2"] = field(
        default="none", metadata=applies_to("confidence", exclusive=True)
    )
    # Beta(mixup, mixup) mixing coefficient when > 0: the mixup baseline's parameter (any label may use it)
    mixup: float = field(default=0.0, metadata=applies_to("mixup"))
    # --- label noise (paper B §4.1) ---------------------------------------------------------------
    noise_kind: Literal["none", "symmetric", "asymmetric"] = "none"
    noise_rate: float = 0.0  # probability that a non-trusted training label flips
    trusted_size: int = 0  # M: class-balanced trusted samples (never flipped, trusted labels)
    # --- optimisation -----------------------------------------------------------------------
    epochs: int = 10
    batch_size: int = 128  # global batch (split across DDP ranks)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    scheduler: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: int = 0  # linear warm-up before the cosine schedule
    plateau_factor: float = 0.5  # ReduceLROnPlateau as in paper B §4.1.1
    plateau_patience: int = 5
    # --- evaluation -------------------------------------------------------------------------
    n_bins: int = 15  # histogram ECE bins (paper A §6.1)
    recalibrate: bool = True  # fit TS, ETS and Dir-ODIR on validation logits at the end
    eval_every: int = 1  # evaluate every this many epochs (and always at the last)
    # Test accuracy alone (a test-split forward) every this many epochs, for paper B's best-epoch
    # protocol (FitResult metrics test_accuracy_best / best_epoch); evaluation epochs always have it.
    # 0 = only on evaluation epochs.
    test_accuracy_every: int = 1
    ood_samples: int = 0  # uniform-noise images scored at the end (paper A §6.4 Fig. 3); 0 = off
    # a real unseen dataset (a simlab.data.DATASETS key) whose test split is scored at the end (paper A
    # §6.4), resized to the training images' size; its files and loader options. None = off
    ood_dataset: str | None = None
    ood_data_dir: str | None = None
    ood_dataset_args: dict[str, Any] = field(default_factory=dict)
    # --- runtime ----------------------------------------------------------------------------
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # see simlab.precision; metrics stay fp32
    amp: bool = True  # allow bf16 autocast (False: precision 'auto' means fp32)
    channels_last: bool = True  # channels_last memory format on CUDA, and on a CPU with bf16
    compile: bool = False  # torch.compile the model
    augment: bool = True  # random crop (4-pixel padding) + horizontal flip, on the training device

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, validate: bool = True) -> TrainConfig:
        """Build from a plain dict (Ray/Optuna/CLI), rejecting unknown keys.

        Configs written before `confidence_source` existed named the confidence source in `similarity`
        (``label=confidence, similarity=pairs``): that spelling is still read, as `confidence_source`.
        """
        if not isinstance(values, Mapping):
            raise TypeError(f"config: expected a mapping, got {type(values).__name__}")
        names = set(cls.field_names())
        unknown = sorted(k for k in values if k not in names)
        if unknown:
            hints = ", ".join(f"{k!r}{did_you_mean(k, names)}" for k in unknown)
            raise ValueError(f"config: unknown key(s) {hints}; valid keys are: {', '.join(sorted(names))}")
        values = dict(values)
        legacy = values.get("label") == "confidence" and values.get("similarity") in CONFIDENCE_SOURCES
        if legacy and values.get("confidence_source") is None:
            values["confidence_source"] = values.pop("similarity")
        cfg = cls(**{k: _coerce(cls, k, v) for k, v in values.items()})
        if validate:
            cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @property
    def resolved_cache_dir(self) -> str:
        return self.cache_dir or default_cache_dir()

    @property
    def source(self) -> str | None:
        """The score source the label method reads: `similarity` or `confidence_source` (None: none)."""
        return self.confidence_source if self.label == "confidence" else self.similarity

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the field for any out-of-range or incompatible setting.

        Registry keys (dataset, model, loss, similarity) are not checked here (see the module doc)."""
        check_choice("label", self.label, LABEL_METHODS)
        check_choice("relaxation", self.relaxation, RELAXATIONS)
        check_choice("similarity_normalise", self.similarity_normalise, SIMILARITY_NORMALISE)
        check_choice("noise_kind", self.noise_kind, NOISE_KINDS)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        if self.precision == "bf16" and not self.amp:
            raise ValueError("precision='bf16' needs amp=True (amp=False turns autocast off); or use 'fp32'")
        for name, bound in NUMERIC_BOUNDS.items():
            value = getattr(self, name)
            if not (value is None and name in OPTIONAL_NUMBERS):
                bound.check(name, value)
        for own, other in (("confidence_own", "confidence_other"), ("trusted_own", "trusted_other")):
            total = getattr(self, own) + getattr(self, other)
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"{own} + {other} must be 1, got {total}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs must be < epochs ({self.epochs}), got {self.warmup_epochs}")
        if not isinstance(self.model_args, dict):
            raise ValueError(f"model_args must be a dict, got {type(self.model_args).__name__}")
        if not isinstance(self.similarity_args, dict):
            raise ValueError(f"similarity_args must be a dict, got {type(self.similarity_args).__name__}")
        for name in ("dataset_args", "ood_dataset_args"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{name} must be a dict of option -> value, got {value!r}")
        if self.ood_dataset is not None and not (isinstance(self.ood_dataset, str) and self.ood_dataset):
            raise ValueError(f"ood_dataset must be a dataset name or None, got {self.ood_dataset!r}")
        if self.ood_dataset is None and (self.ood_data_dir is not None or self.ood_dataset_args):
            raise ValueError("ood_data_dir / ood_dataset_args need ood_dataset (the dataset to score)")

        # Options that only make sense together: a field another label method owns keeps its default.
        for f in dataclasses.fields(self):
            labels = f.metadata.get("applies_to", ())
            if (
                f.metadata.get("exclusive")
                and self.label not in labels
                and getattr(self, f.name) != f.default
            ):
                used_by = " or ".join(map(repr, labels))
                raise ValueError(f"{f.name} only applies to label={used_by}, got label={self.label!r}")
        if self.label == "similarity":
            if self.similarity is None:
                raise ValueError("similarity must name a source (e.g. 'l2', 'we') when label='similarity'")
            if self.similarity in CONFIDENCE_SOURCES:
                raise ValueError(
                    f"similarity {self.similarity!r} gives confidence scores; use label='confidence' with "
                    f"confidence_source={self.similarity!r}"
                )
            if self.beta is None:
                raise ValueError("beta is required when label='similarity' (paper A eq. 17)")
        if self.label == "confidence" and self.confidence_source not in CONFIDENCE_SOURCES:
            raise ValueError(
                f"confidence_source must be one of {', '.join(CONFIDENCE_SOURCES)} when label='confidence', "
                f"got {self.confidence_source!r}"
            )
        if self.label in TRUSTED_SET_LABELS and self.trusted_size == 0:
            raise ValueError(
                f"trusted_size must be > 0 for label={self.label!r} (a trusted-set control), got 0"
            )
        if self.noise_kind == "none" and self.noise_rate != 0:
            raise ValueError(f"noise_rate={self.noise_rate} needs noise_kind 'symmetric' or 'asymmetric'")


# The METHODS each field applies to (fields without `applies_to` metadata apply to every method).
FIELD_METHODS: dict[str, tuple[str, ...]] = {
    f.name: f.metadata["applies_to"] for f in dataclasses.fields(TrainConfig) if "applies_to" in f.metadata
}


# ---------------------------------------------------------------------------------------------
_FIELD_TYPES: dict[str, Any] = {}


def _coerce(cls: type, key: str, value: Any) -> Any:
    """Undo what CLIs and JSON do to numbers (``'0.1'``, ``3.0`` for an int field, numpy scalars)."""
    if not _FIELD_TYPES:
        _FIELD_TYPES.update({f.name: f.type for f in dataclasses.fields(cls)})
    kind = str(_FIELD_TYPES[key])
    if hasattr(value, "item") and not isinstance(value, (dict, list, str)):  # numpy / torch scalar
        value = value.item()
    try:
        if kind in ("int",) and isinstance(value, (str, float)) and float(value).is_integer():
            return int(float(value))
        if kind in ("int | None",) and value is not None and isinstance(value, (str, float)):
            if str(value).lower() == "none":
                return None
            if float(value).is_integer():
                return int(float(value))
        is_number_text = isinstance(value, (str, int)) and not isinstance(value, bool)
        if kind in ("float", "float | None") and is_number_text:
            if kind == "float | None" and str(value).lower() == "none":
                return None
            return float(value)
        if kind == "bool" and isinstance(value, str):
            low = value.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
        if kind == "str | None" and isinstance(value, str) and value.lower() == "none":
            return None
    except ValueError as err:
        raise ValueError(f"{key}: cannot read {value!r} as {kind}") from err
    return value
