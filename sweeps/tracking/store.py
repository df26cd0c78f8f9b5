"""A new sweep's sqlite MLflow store, seeded from a migrated empty template instead of migrated anew.

MLflow creates a new sqlite store by creating its tables and then running its ~50 alembic migrations,
seconds on a small CPU, most of a new sweep's MLflow set-up; the template is built that way once per
MLflow version under ``<simlab cache>/mlflow`` and copied for every new store (BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from simlab._io import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["seed_sqlite_store"]


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///<path>`` tracking URI (None for any other URI or an in-memory DB)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or "?" in tracking_uri:
        return None
    path = tracking_uri[len(prefix) :]
    return None if path in ("", ":memory:") else Path(path)


def _empty_store_template() -> Path:
    """An sqlite file holding MLflow's tables migrated to this MLflow version's head, and no rows."""
    import mlflow

    from simlab.config import default_cache_dir

    folder = Path(default_cache_dir()) / "mlflow"
    template = folder / f"empty-store-mlflow-{mlflow.__version__}.db"
    if template.exists():
        return template
    # Only to build it (alembic and MLflow's SQL store take seconds to import).
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    # A concurrent builder writes the same content; sqlite takes the empty temp file as a new database.
    with atomic_path(template) as tmp:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
    return template


def seed_sqlite_store(tracking_uri: str) -> bool:
    """Give a not-yet-existing ``sqlite:///`` store a copy of the migrated empty template; True if done.

    Equivalent to what MLflow does to a new file (the same tables at the same schema head; MLflow adds
    its Default experiment on first open, as for a new file) minus the migrations. Never replaces an
    existing file (the copy is linked into place, which fails if another process created the store
    first; `simlab._io`'s ``os.replace`` would overwrite it); any failure leaves the store to MLflow.
    """
    path = _sqlite_path(tracking_uri)
    if path is None or path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        template = _empty_store_template()
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, tmp)
        os.link(tmp, path)  # atomic, and refuses to overwrite
    except Exception as err:  # FileExistsError: someone else made it first; anything else: MLflow will
        logger.debug("MLflow store %s not seeded from the template (%s)", path, err)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("MLflow store %s seeded from the migrated empty template", path)
    return True
