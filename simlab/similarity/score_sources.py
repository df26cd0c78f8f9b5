"""The score sources of `SIMILARITIES` (paper B §4): ``compute(data, **params)`` → float64 numpy
``[K, K]`` class scores ``S`` for confidence labels.

- ``predictions`` (`predictions_source`, §4.2.2): the mean softmax of a trained model (a simlab
  checkpoint) over the training images of each labelled class;
- ``pairs`` (`pairs_source`, §4.1): the 0/1 matrix of hand-made class pairs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from simlab._validate import check_num_classes
from simlab.checkpoint import load_checkpoint
from simlab.config import TrainConfig
from simlab.data import prepare_images
from simlab.labels import class_pairs, prediction_similarity
from simlab.models import build_model
from simlab.similarity.inputs import num_classes, put_info, resolve_device, train_xy

__all__ = ["pairs_source", "predictions_source"]


def predictions_source(
    data: Any,
    *,
    checkpoint: str,
    batch_size: int = 512,
    device: str = "auto",
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Paper B §4.2.2: S[a] = mean softmax output of a trained model over training images labelled a.

    The model is rebuilt from the checkpoint's ``config`` (a `TrainConfig` dict) and ``model`` state,
    and run over ``data.train_x`` without augmentation, normalised with ``data.mean``/``data.std``
    as the trainer does. Returns the scores; the trainer derives τ from them (SPEC §2
    `prediction_similarity`: mean + population std of each row).
    """
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint: expected a path to a simlab checkpoint, got {type(checkpoint).__name__}"
        )
    check_num_classes("batch_size", batch_size)
    dev = resolve_device(device)
    x, y = train_xy(data)
    k = num_classes(data)
    state = load_checkpoint(checkpoint, map_location="cpu")
    for key in ("config", "model"):
        if key not in state:
            raise ValueError(
                f"checkpoint: {os.fspath(checkpoint)!r} has no {key!r} entry (keys: {sorted(state)})"
            )
    saved_names = state.get("class_names")
    if saved_names is not None and list(saved_names) != list(data.class_names):
        raise ValueError(
            f"checkpoint: trained on classes {list(saved_names)}, but data has {list(data.class_names)}"
        )
    cfg = TrainConfig.from_dict(state["config"], validate=False)
    # Any seeded generator: the weights are overwritten by the checkpoint, and the global RNG is untouched.
    model = build_model(
        cfg.model,
        k,
        in_channels=int(x.shape[1]),
        generator=torch.Generator().manual_seed(0),
        **cfg.model_args,
    )
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    probs = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            # The trainer's own normalisation, without augmentation.
            xb = prepare_images(
                x[start : start + batch_size].to(dev),
                mean=data.mean,
                std=data.std,
                augment=False,
                generator=None,
            )
            probs.append(torch.softmax(model(xb).to(torch.float64), dim=1).cpu())
    scores, _tau = prediction_similarity(torch.cat(probs), y, k)
    put_info(info, checkpoint_epoch=state.get("epoch"), model=cfg.model, n_train=int(x.shape[0]))
    return scores.detach().to("cpu", torch.float64).numpy()


def pairs_source(
    data: Any,
    *,
    pairs: Sequence[Sequence[str]] | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """Paper B §4.1 hand-made pairs as a symmetric 0/1 matrix.

    ``M[a, b] = 1`` when classes a != b form a pair, else 0 (diagonal 0). The trainer builds the
    labels from `simlab.labels.class_pairs` and the config's own/other values (`pair_confidence_labels`);
    this matrix records which pairs those are (recover them as ``{(a, b) : a < b, M[a, b] == 1}``).
    ``pairs``: a list of ``[name_a, name_b]``; None means `simlab.labels.class_pairs`' default for the
    class names (for CIFAR-10 the pairs truck-automobile, bird-airplane, deer-horse, cat-dog,
    frog-ship), which is also what the trainer uses.
    """
    names = list(data.class_names)
    k = len(names)
    if pairs is not None and (isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence)):
        raise TypeError(f"pairs: expected a list of [class_a, class_b] names, got {type(pairs).__name__}")
    if pairs is not None:
        bad = [p for p in pairs if isinstance(p, str) or not isinstance(p, Sequence) or len(p) != 2]
        if bad:
            raise ValueError(f"pairs: expected [class_a, class_b] entries, got {bad}")
    index_pairs = [
        (int(a), int(b)) for a, b in class_pairs(names, None if pairs is None else [tuple(p) for p in pairs])
    ]
    matrix = np.zeros((k, k), dtype=np.float64)
    seen: set[int] = set()
    for a, b in index_pairs:
        if a == b:
            raise ValueError(f"pairs: a class cannot pair with itself, got {names[a]!r}")
        if a in seen or b in seen:
            raise ValueError(
                f"pairs: each class may be in one pair only; {names[a]!r}-{names[b]!r} repeats one"
            )
        seen.update((a, b))
        matrix[a, b] = matrix[b, a] = 1.0
    put_info(info, pairs=[[names[a], names[b]] for a, b in index_pairs])
    return matrix
