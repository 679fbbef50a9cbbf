"""What a store holds, in a few numbers (``autolabel store info``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from sync.store.api import Store
from sync.store.migrations import read_version
from sync.store.schema import RUN_KINDS, Annotation, CvatJob, CvatTask, Dataset, Embedding, Run, Sample, TrainingRun

__all__ = ["StoreSummary", "describe_store"]


@dataclass(frozen=True)
class StoreSummary:
    """A store's URL (password hidden), backend, schema version and row counts."""

    url: str
    backend: str
    """``"sqlite"`` or ``"postgresql"``."""
    schema_version: int
    counts: dict[str, int]
    """Rows per kind of object, in display order: datasets, samples, runs of each kind
    (``runs: prelabel`` …), annotations, CVAT tasks, CVAT jobs, training runs and embeddings."""


def describe_store(store: Store) -> StoreSummary:
    """Count what ``store`` holds, in one read transaction."""
    with store.engine.connect() as conn:
        version = read_version(conn, store.url)

        def count(table: type) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        per_kind = dict(conn.execute(select(Run.kind, func.count()).group_by(Run.kind)).all())
        counts = {"datasets": count(Dataset), "samples": count(Sample)}
        counts.update({f"runs: {kind}": int(per_kind.get(kind, 0)) for kind in RUN_KINDS})
        counts.update({"annotations": count(Annotation), "CVAT tasks": count(CvatTask), "CVAT jobs": count(CvatJob)})
        counts["training runs"] = count(TrainingRun)
        counts["embeddings"] = count(Embedding)
    return StoreSummary(url=store.url, backend=store.dialect, schema_version=version, counts=counts)
