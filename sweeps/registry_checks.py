"""The sweep checks that need the torch-backed library: registry keys (datasets, models, losses,
similarity sources and their arguments, model arguments) and the word-vector vocabulary.

Slower than `sweeps.validation.validate_spec` (the registries import torch, ~2-3 s) but still before
Ray starts: the CLI runs them right after it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simlab._validate import did_you_mean
from simlab.config import TrainConfig
from sweeps.spec import SpecError, SweepSpec, values_of


def check_registries(spec: SweepSpec) -> None:
    """Check every dataset / model / loss / similarity-source key against the library's registries.

    Slower than `validate_spec` (the registries import torch, ~2-3 s) but still before Ray starts. A
    registry module that is not importable yet is skipped with a warning rather than failing the sweep.
    """
    import importlib
    import logging

    log = logging.getLogger(__name__)
    checks = (
        ("dataset", "simlab.data", "DATASETS"),
        ("model", "simlab.models", "MODELS"),
        ("loss", "simlab.losses", "LOSSES"),
        ("similarity", "simlab.similarity.sources", "SIMILARITIES"),
        ("confidence_source", "simlab.similarity.sources", "SIMILARITIES"),
    )
    for key, module, attr in checks:
        values = values_of(spec, key)
        if not values and key in ("dataset", "model", "loss"):
            values = (getattr(TrainConfig, key),)
        if not values:
            continue
        try:
            registry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            log.warning("%s not checked: %s.%s is not importable (%s)", key, module, attr, err)
            continue
        for value in values:
            if value not in registry:
                raise SpecError(
                    key,
                    f"unknown value {value!r}{did_you_mean(str(value), list(registry))}; "
                    f"valid: {', '.join(map(str, registry))}",
                )
            kind = getattr(registry[value], "kind", None)
            if key in ("similarity", "confidence_source") and hasattr(registry[value], "defaults"):
                from simlab.similarity.sources import resolve_params

                try:
                    resolve_params(registry[value], spec.source_args.get(value, {}))
                except (TypeError, ValueError) as err:
                    raise SpecError(f"source_args.{value}", str(err)) from err
                _check_source_numbers(value, registry[value].defaults, spec.source_args.get(value, {}))
            if key == "similarity" and kind not in (None, "distance"):
                raise SpecError(
                    key, f"source {value!r} gives {kind} scores; label 'similarity' needs distances"
                )
    _check_model_args(spec)
    _check_dataset_args(spec)


def _check_dataset_args(spec: SweepSpec) -> None:
    """``dataset_args`` / ``ood_dataset_args`` against their datasets' loader options (no decoding)."""
    from simlab.data import check_dataset_args

    pairs = (("dataset", "dataset_args"), ("ood_dataset", "ood_dataset_args"))
    for name_key, args_key in pairs:
        names = values_of(spec, name_key) or ((TrainConfig.dataset,) if name_key == "dataset" else ())
        for name in names:
            if name is None:
                continue
            for args in values_of(spec, args_key) or ({},):
                try:
                    check_dataset_args(name, args if isinstance(args, Mapping) else {}, field=args_key)
                except ValueError as err:
                    raise SpecError(args_key if "unknown option" in str(err) else name_key, str(err)) from err
    _check_ood_channels(spec)


def _check_ood_channels(spec: SweepSpec) -> None:
    """The OOD dataset's images have the training images' channels (both known without loading)."""
    import itertools

    from simlab.data import dataset_channels

    combos = itertools.product(
        [o for o in values_of(spec, "ood_dataset") if o is not None],
        values_of(spec, "ood_dataset_args") or ({},),
        values_of(spec, "dataset") or (TrainConfig.dataset,),
        values_of(spec, "dataset_args") or ({},),
    )
    for ood, ood_args, dataset, args in combos:
        ood_channels, channels = dataset_channels(ood, ood_args), dataset_channels(dataset, args)
        if channels != ood_channels:
            raise SpecError(
                "ood_dataset",
                f"{ood!r} gives {ood_channels}-channel images but the model is trained on {channels}-channel "
                f"images ({dataset!r}); choose an OOD dataset with {channels} channels",
            )


def _check_source_numbers(source: str, defaults: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    """A source argument is a finite number, and an integer where its default is one (``epochs=inf``
    would otherwise fail inside the matrix computation, after Ray started)."""
    for arg, value in args.items():
        default = defaults.get(arg)
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"source_args.{source}.{arg}", f"expected a finite number, got {value!r}")
        int_default = isinstance(default, int) and not isinstance(default, bool)
        if int_default and value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
            raise SpecError(f"source_args.{source}.{arg}", f"expected an integer, got {value!r}")


def _check_model_args(spec: SweepSpec) -> None:
    """``model_args`` against each model's builder signature (keys, annotated types, its own checks)."""
    from simlab.models import MODELS, check_model_args

    for model in spec.model_args:
        if model not in MODELS:
            raise SpecError(
                f"model_args.{model}",
                f"unknown model{did_you_mean(str(model), list(MODELS))}; valid: {', '.join(MODELS)}",
            )
    fixed_args = spec.fixed.get("model_args") or {}
    for model in values_of(spec, "model") or (TrainConfig.model,):
        if model not in MODELS:
            continue  # named by the registry check above
        try:
            check_model_args(model, {**spec.model_args.get(model, {}), **fixed_args})
        except ValueError as err:
            raise SpecError(str(err).split(":", 1)[0], str(err)) from err  # the message names the entry


def check_word_vectors(spec: SweepSpec) -> None:
    """Every class name of the sweep's dataset(s) must resolve to words of the ``we`` vector file.

    Reads only the class names (a constant list or a zip's / folder's class-folder listing; other
    datasets are checked when the matrix is computed: their names need the data, and reading
    torchvision's pickled CIFAR-100 meta here would unpickle a file) and the vector file's vocabulary
    (first token per line), so a missing word is reported before any image is decoded;
    `simlab.similarity.word_vectors.check_vocabulary` applies the same rules (and ``mapping``) as the distance
    computation.
    """
    import logging

    if "we" not in values_of(spec, "similarity"):
        return
    from simlab.similarity.word_vectors import MissingWordsError, check_vocabulary

    args = spec.source_args.get("we", {})
    datasets = values_of(spec, "dataset") or (TrainConfig.dataset,)
    data_dirs = values_of(spec, "data_dir") or (None,)
    for dataset in datasets:
        for data_dir in data_dirs:
            names = _dataset_class_names(dataset, data_dir)
            if names is None:
                logging.getLogger(__name__).warning(
                    "class names of %s (%s) not known before decoding: word vectors checked later",
                    dataset,
                    data_dir,
                )
                continue
            try:
                check_vocabulary(names, args.get("vectors"), mapping=args.get("mapping"))
            except MissingWordsError as err:
                raise SpecError("source_args.we.vectors", str(err)) from err
            except (TypeError, ValueError, OSError) as err:
                raise SpecError("source_args.we", str(err)) from err


def _dataset_class_names(dataset: str, data_dir: str | None) -> list[str] | None:
    """Class names without decoding images; None when that needs the data itself."""
    import zipfile

    path = Path(os.path.expanduser(data_dir)) if data_dir else None
    if dataset in ("cifar10", "cifar100", "imagefolder") and path is not None and path.exists():
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                parts = (name.split("/") for name in zf.namelist())
                names = {
                    p[p.index("train") + 1]
                    for p in parts
                    if "train" in p[:-1] and p.index("train") + 2 <= len(p) - 1
                }
        else:
            train = next((d for d in (path / "train", *path.glob("*/train")) if d.is_dir()), None)
            names = {d.name for d in train.iterdir() if d.is_dir()} if train else set()
        if names:
            return sorted(names)
    from simlab.class_names import CIFAR10_CLASSES, CIFAR100_CLASSES

    known = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
    return list(known[dataset]) if dataset in known else None
