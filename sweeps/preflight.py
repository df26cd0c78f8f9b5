"""Cheap checks of what a sweep needs outside its spec, run by the CLI before Ray starts (and by
``--dry-run``): each failure is a `PreflightError` (a `SpecError`: one line naming what is wrong, exit
code 2), and nothing is created on disk or on a server.

- `check_storage`: the storage root is a folder (or can be made in one), writable; the sweep's name
  and paths fit the filesystem's limits.
- `check_resume`: ``--resume`` names a sweep that exists under the storage (the existing ones listed).
- `check_tracking`: the tracking URI has a scheme MLflow has a store for; an HTTP server answers one
  probe within seconds (no retries: the MLflow client would otherwise retry for minutes); a sqlite
  store's folder is writable.
- `check_data`: every image-folder data source opens, has >= 2 classes and decodes its first images
  (naming a bad file); ``subset_per_class`` and ``trusted_size`` fit its per-class image counts after
  the validation split.
- `check_store_exists`: for read-only tools (report, cleanup): a sqlite store must already exist, so a
  typo never silently creates an empty one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sweeps.search import EXPERIMENT_STATE_GLOB
from sweeps.spec import SpecError, SweepSpec
from sweeps.storage import SPEC_FILE

logger = logging.getLogger(__name__)

# Schemes MLflow 3 has a tracking store for without plugins; others are looked up in MLflow's registry.
_BUILTIN_SCHEMES: tuple[str, ...] = ("", "file", "sqlite", "http", "https")
# Seconds the tracking-server probe waits: an answer of any kind (even 401) proves it is reachable.
PROBE_TIMEOUT_S = 5.0
# Room left under PATH_MAX for what Tune and MLflow write inside the sweep folder (trial folders,
# checkpoints, artifacts): their own names are up to a few hundred bytes.
PATH_HEADROOM = 512


class PreflightError(SpecError):
    """Something outside the spec (filesystem, data, tracking server) stops the sweep from starting."""


def run_preflight(spec: SweepSpec, *, resume: bool = False) -> None:
    """Every check of this module, cheapest first."""
    check_storage(spec)
    check_resume(spec, resume=resume)
    check_tracking(spec.resolved_tracking_uri)
    check_data(spec)


# ---------------------------------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(field: str, path: str | os.PathLike) -> None:
    """``path`` is a folder, or can be created: its nearest existing ancestor is a writable folder;
    every component fits the filesystem's NAME_MAX and the whole leaves `PATH_HEADROOM` under PATH_MAX."""
    path = Path(os.path.abspath(os.path.expanduser(path)))
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise PreflightError(field, f"{str(base)!r} is a file, not a folder (in {str(path)!r})")
    if path.exists() and not path.is_dir():
        raise PreflightError(field, f"{str(path)!r} is a file, not a folder")
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError):  # no limits reported: nothing to check against
        name_max, path_max = 255, 4096
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise PreflightError(
                field,
                f"the name {part[:40]!r}... is {len(os.fsencode(part))} bytes, longer than the "
                f"filesystem's limit of {name_max}",
            )
    if len(os.fsencode(str(path))) > path_max - PATH_HEADROOM:
        raise PreflightError(
            field,
            f"the path is {len(os.fsencode(str(path)))} bytes; with the sweep's own files it would exceed "
            f"the filesystem's limit of {path_max}",
        )
    read_only_fs = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    if read_only_fs or not os.access(base, os.W_OK | os.X_OK):
        raise PreflightError(field, f"{str(base)!r} is not writable")


def check_storage(spec: SweepSpec) -> None:
    """A local storage root and sweep folder that can hold the sweep (remote storage is not probed)."""
    if "://" in spec.storage:
        return
    base = _existing_ancestor(Path(spec.storage_dir))
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX") if base.is_dir() else 255
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(spec.name)) > name_max:
        raise PreflightError(
            "name", f"{len(os.fsencode(spec.name))} bytes, longer than the filesystem's limit of {name_max}"
        )
    check_writable_folder("storage", spec.sweep_dir)


def existing_sweeps(storage_dir: str | os.PathLike) -> list[str]:
    """Names of the sweeps under a local storage root (folders holding a sweep spec or Tune state: the
    driver writes the spec first)."""
    root = Path(storage_dir)
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and ((d / SPEC_FILE).is_file() or any(d.glob(EXPERIMENT_STATE_GLOB)))
    )


def check_resume(spec: SweepSpec, *, resume: bool) -> None:
    """``--resume`` of a sweep that was never started is an error listing the sweeps that exist.

    A sweep folder with its spec but no Tune state yet (stopped while Ray started) counts as existing:
    the driver starts it afresh.
    """
    if not resume or "://" in spec.storage:
        return
    if spec.name in existing_sweeps(spec.storage_dir):
        return
    names = existing_sweeps(spec.storage_dir)
    raise PreflightError(
        "name",
        f"no sweep {spec.name!r} to resume under {spec.storage_dir!r}; existing: "
        f"{', '.join(names) or '(none)'}",
    )


# ---------------------------------------------------------------------------------------------
def _sqlite_path(uri: str) -> str | None:
    """The file of a ``sqlite:///path`` URI (None for an in-memory database)."""
    path = uri[len("sqlite://") :]
    if path in ("", "/", "/:memory:"):
        return None
    return path[1:] if path.startswith("/") else path


def check_tracking(uri: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A tracking URI MLflow can open; an HTTP(S) server must answer one request within ``timeout``."""
    if not isinstance(uri, str) or not uri:
        raise PreflightError("tracking_uri", f"expected a URI string, got {uri!r}")
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme not in _BUILTIN_SCHEMES:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
        from mlflow.utils.uri import get_uri_scheme

        known = sorted(s for s in _tracking_store_registry._registry if s)
        if get_uri_scheme(uri) not in _tracking_store_registry._registry:
            raise PreflightError(
                "tracking_uri", f"unknown scheme {scheme!r} in {uri!r}; MLflow knows: {', '.join(known)}"
            )
    if scheme in ("http", "https"):
        probe(uri, timeout=timeout)
    elif scheme == "sqlite":
        path = _sqlite_path(uri)
        if path is not None:
            if os.path.isdir(path):
                raise PreflightError("tracking_uri", f"{path!r} is a folder, not a sqlite database file")
            if os.path.exists(path):
                if not os.access(path, os.W_OK):
                    raise PreflightError("tracking_uri", f"the sqlite database {path!r} is not writable")
            else:
                check_writable_folder("tracking_uri", os.path.dirname(os.path.abspath(path)))


# HTTP statuses that prove an MLflow server (or the auth in front of it) answered.
_SERVER_ANSWERS: tuple[int, ...] = (200, 401, 403)


def probe(uri: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One request, no retries: the server's ``/health`` (unauthenticated in MLflow's auth app) or, if
    that is not 200 (a path prefix, a proxy), the experiments-search API the sweep itself calls. A
    refused or timed-out connection, or an HTTP error from both (a proxy's 404, a 502), is refused."""
    base = uri.rstrip("/")
    status = None
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        try:
            with urllib.request.urlopen(base + path, timeout=timeout) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise PreflightError(
                "tracking_uri", f"cannot reach the MLflow server at {uri} within {timeout:g} s ({reason})"
            ) from err
        if status in _SERVER_ANSWERS:
            return
    raise PreflightError(
        "tracking_uri", f"{uri} answers HTTP {status}, not as an MLflow tracking server (tried {path})"
    )


def check_store_exists(uri: str, *, flag: str = "--tracking-uri", probe_server: bool = True) -> None:
    """For read-only tools: a sqlite store must exist (opening a missing one would create it empty);
    with ``probe_server``, the rest of `check_tracking` too."""
    if probe_server:
        check_tracking(uri)
    if isinstance(uri, str) and urllib.parse.urlparse(uri).scheme.lower() == "sqlite":
        path = _sqlite_path(uri)
        if path is not None and not os.path.isfile(path):
            raise PreflightError(flag, f"no MLflow sqlite store at {path!r} (a typo?)")


# ---------------------------------------------------------------------------------------------
# Datasets read from an image-folder zip/folder (a data_dir); others are built in (digits, synthetic:
# loaded here, cheaply and cached) or downloaded / laid out otherwise (checked by their loaders).
_FOLDER_DATASETS: tuple[str, ...] = ("cifar10", "imagefolder")
_BUILT_IN_DATASETS: tuple[str, ...] = ("digits", "synthetic")


def check_data(spec: SweepSpec) -> None:
    """Each data source at every corner of the space: opens, >= 2 classes, first images decode; then
    ``subset_per_class`` and ``trusted_size`` against its per-class training counts."""
    from sweeps.space import corner_configs, train_config_dict

    counts: dict[tuple[Any, ...], dict[str, int] | None] = {}
    seen = set()
    for params in corner_configs(spec):
        cfg = train_config_dict(spec, params)
        key = tuple(
            json.dumps(cfg.get(k), sort_keys=True, default=str)
            for k in ("dataset", "data_dir", "val_fraction", "subset_per_class", "seed", "dataset_args")
        )
        trusted = int(cfg.get("trusted_size", 0) or 0)
        if (key, trusted) in seen:
            continue
        seen.add((key, trusted))
        if key not in counts:
            counts[key] = _train_counts(cfg)
        if counts[key] is not None and trusted:
            _check_trusted(trusted, counts[key], cfg)


def _train_counts(cfg: dict[str, Any]) -> dict[str, int] | None:
    """Training images per class after the validation split and subset, or None when not cheap."""
    from simlab.config import TrainConfig

    dataset = cfg.get("dataset", TrainConfig.dataset)
    data_dir = cfg.get("data_dir")
    val_fraction = cfg.get("val_fraction", TrainConfig.val_fraction)
    subset = cfg.get("subset_per_class")
    if dataset == "imagefolder" and data_dir is None:
        raise PreflightError("data_dir", "dataset 'imagefolder' needs data_dir (a zip or folder of images)")
    if dataset in _FOLDER_DATASETS and data_dir is not None:
        from simlab.data.readers import probe_image_folder

        try:
            raw = probe_image_folder(os.path.expanduser(str(data_dir)))
        except (OSError, ValueError) as err:
            raise PreflightError("data_dir", str(err).removeprefix("data_dir: ")) from err
        out = {}
        for name, n in raw.items():
            left = n - math.floor(n * val_fraction + 0.5)  # simlab.data.splits.split_dataset's rule
            if subset is not None and left < subset:
                raise PreflightError(
                    "subset_per_class",
                    f"{subset} per class, but class {name!r} has only {left} training images after the "
                    f"validation split (val_fraction={val_fraction})",
                )
            out[name] = left if subset is None else subset
        return out
    if dataset in _BUILT_IN_DATASETS:
        from simlab.data import load_dataset

        try:
            data = load_dataset(
                dataset,
                data_dir=data_dir,
                cache_dir=cfg.get("cache_dir"),
                val_fraction=val_fraction,
                subset_per_class=subset,
                seed=cfg.get("seed", 0),
                **(cfg.get("dataset_args") or {}),
            )
        except (OSError, ValueError) as err:
            field = "subset_per_class" if "subset_per_class" in str(err) else "dataset"
            raise PreflightError(field, str(err)) from err
        per_class = data.train_y.bincount(minlength=data.num_classes).tolist()
        return dict(zip(data.class_names, per_class, strict=True))
    logger.debug("data of %s (%s) not checked before the sweep: its loader checks it", dataset, data_dir)
    return None


def _check_trusted(trusted: int, counts: dict[str, int], cfg: dict[str, Any]) -> None:
    k = len(counts)
    if trusted % k:
        raise PreflightError(
            "trusted_size",
            f"{trusted} is not a multiple of the {k} classes (a class-balanced set)",
        )
    need = trusted // k
    short = {name: n for name, n in counts.items() if n < need}
    if short:
        name, n = min(short.items(), key=lambda item: item[1])
        raise PreflightError(
            "trusted_size",
            f"{trusted} trusted samples need {need} per class, but class {name!r} has only {n} training "
            f"images (after the validation split; at most {k * min(counts.values())} for this data)",
        )
