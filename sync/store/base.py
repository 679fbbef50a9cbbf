"""The plumbing under `sync.store.api.Store`: engine, transactions, lookups, snapshots and
the one place where annotation rows are written (`StoreBase._insert_values`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, Self, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from serverless.detections import Detections
from sync.store.bulk import bulk_insert, fast_insert, first_line
from sync.store.checks import as_int, chunks
from serverless.models.base import Tags
from sync.store.convert import detection_values, split_tags, tags_to_detections
from sync.store.errors import StoreError
from sync.store.records import ANNOTATION_FIELDS, CvatJobInfo, CvatTaskInfo, DatasetInfo, RunInfo, SampleInfo
from sync.store.schema import Annotation, CvatJob, CvatTask, Dataset, Run, RunSample, Sample

__all__ = ["ANNOTATION_INSERT_COLUMNS", "DEFAULT_SOURCE", "StoreBase"]

_T = TypeVar("_T")

DEFAULT_SOURCE = {"prelabel": "auto", "import": "file", "human": "manual"}
"""The ``source`` of annotations whose Detections have no ``source`` column, by run kind."""

ANNOTATION_INSERT_COLUMNS = ("run_id", *ANNOTATION_FIELDS)
"""``run_id`` followed by the `AnnotationIn` fields, in order."""


def snapshot(info_class: type[_T], row: Any) -> _T:
    """The frozen snapshot (a records dataclass) of a row: every field read by name."""
    return info_class(**{f.name: getattr(row, f.name) for f in fields(info_class)})


def dataset_info(row: Dataset) -> DatasetInfo:
    return snapshot(DatasetInfo, row)


def sample_info(row: Any) -> SampleInfo:
    return snapshot(SampleInfo, row)


def run_info(row: Run) -> RunInfo:
    return snapshot(RunInfo, row)


def task_info(row: CvatTask) -> CvatTaskInfo:
    return snapshot(CvatTaskInfo, row)


def job_info(row: CvatJob) -> CvatJobInfo:
    return snapshot(CvatJobInfo, row)


class StoreBase:
    """Engine, transactions and lookups shared by the store's methods."""

    def __init__(self, engine: Engine, display_url: str) -> None:
        self._engine = engine
        self._url = display_url

    @property
    def url(self) -> str:
        """The store's URL with the password hidden."""
        return self._url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for advanced queries and tests)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url!r})"

    def close(self) -> None:
        """Close the pooled connections. The store can still be used (it reconnects)."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A ``Session`` in a transaction: committed when the block ends, rolled back if it
        raises. Database errors become `StoreError` naming the store."""
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                yield session
        except IntegrityError as err:
            raise StoreError(
                f"store at {self._url}: the write conflicts with stored data "
                f"(another process may have written the same object): {first_line(err.orig)}"
            ) from err
        except DBAPIError as err:
            raise StoreError(f"store at {self._url}: {first_line(err.orig)}") from err

    # ---------------------------------------------------------------------- lookups
    def _dataset(self, session: Session, dataset: DatasetInfo | str) -> Dataset:
        if isinstance(dataset, DatasetInfo):
            row, name = session.get(Dataset, dataset.id), dataset.name
        elif isinstance(dataset, str):
            row, name = session.execute(select(Dataset).where(Dataset.name == dataset)).scalar(), dataset
        else:
            raise StoreError(f"a dataset is a DatasetInfo or a name, got {dataset!r}")
        if row is None:
            known = session.execute(select(Dataset.name).order_by(Dataset.name).limit(20)).scalars().all()
            listing = f" (datasets: {', '.join(map(repr, known))})" if known else " (it has no datasets)"
            raise StoreError(f"no dataset {name!r} in the store at {self._url}{listing}")
        return row

    def _run(self, session: Session, run: RunInfo | int) -> Run:
        run_id = run.id if isinstance(run, RunInfo) else as_int(run, "run id")
        row = session.get(Run, run_id)
        if row is None:
            raise StoreError(f"no run with id {run_id} in the store at {self._url}")
        return row

    def _task(self, session: Session, task: CvatTaskInfo | int) -> CvatTask:
        link_id = task.id if isinstance(task, CvatTaskInfo) else as_int(task, "CVAT task link id")
        row = session.get(CvatTask, link_id)
        if row is None:
            raise StoreError(f"no CVAT task link with id {link_id} in the store at {self._url}")
        return row

    def _job(self, session: Session, job: CvatJobInfo | int) -> CvatJob:
        link_id = job.id if isinstance(job, CvatJobInfo) else as_int(job, "CVAT job link id")
        row = session.get(CvatJob, link_id)
        if row is None:
            raise StoreError(f"no CVAT job link with id {link_id} in the store at {self._url}")
        return row

    @staticmethod
    def _check_samples_in(session: Session, dataset_id: int, sample_ids: Iterable[int], where: str) -> None:
        wanted = sorted(set(sample_ids))
        found: set[int] = set()
        for chunk in chunks(wanted):
            found.update(
                session.execute(
                    select(Sample.id).where(Sample.dataset_id == dataset_id, Sample.id.in_(chunk))
                ).scalars()
            )
        missing = [i for i in wanted if i not in found]
        if missing:
            more = " …" if len(missing) > 10 else ""
            raise StoreError(f"{where}: sample ids {missing[:10]}{more} are not samples of dataset id {dataset_id}")

    @staticmethod
    def _unique_run_name(session: Session, dataset_id: int, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``… when taken in the dataset."""
        taken = set(
            session.execute(select(Run.name).where(Run.dataset_id == dataset_id, Run.name.like(f"{base}%"))).scalars()
        )
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        return name

    @staticmethod
    def _detection_values(
        session: Session, dataset_id: int, detections: Mapping[int, Detections], with_scores: bool, source: str
    ) -> list[tuple]:
        """Insert-ready tuples of ``{sample_id: Detections}``; masks must have their sample's size."""
        sample_ids = [as_int(k, "sample id") for k in detections]
        sizes: dict[int, tuple[int, int]] = {}
        if any(getattr(det, "masks", None) is not None for det in detections.values()):
            for chunk in chunks(sorted(set(sample_ids))):
                query = select(Sample.id, Sample.width, Sample.height).where(
                    Sample.dataset_id == dataset_id, Sample.id.in_(chunk)
                )
                sizes.update({r.id: (r.height, r.width) for r in session.execute(query)})
        values: list[tuple] = []
        for sample_id, det in zip(sample_ids, detections.values()):
            masks = getattr(det, "masks", None)
            if masks is not None and sample_id in sizes and masks.shape[1:] != sizes[sample_id]:
                height, width = sizes[sample_id]
                raise StoreError(
                    f"sample {sample_id}: masks have size {masks.shape[1:]}, the sample is "
                    f"{height}x{width} (height x width)"
                )
            values.extend(detection_values(sample_id, det, with_scores=with_scores, source=source))
        return values

    @classmethod
    def _tag_values(
        cls,
        session: Session,
        dataset_id: int,
        tags: Mapping[int, Tags | Detections],
        with_scores: bool,
        source: str,
    ) -> list[tuple]:
        """Insert-ready tuples of ``{sample_id: tags}``: `Tags` become whole-frame rows of their
        sample (`sync.store.convert.tags_to_detections`); `Detections` must be such rows
        already (pulled tags with their CVAT ids)."""
        if not tags:
            return []
        sample_ids = [as_int(k, "sample id") for k in tags]
        sizes: dict[int, tuple[int, int]] = {}
        for chunk in chunks(sorted(set(sample_ids))):
            query = select(Sample.id, Sample.width, Sample.height).where(
                Sample.dataset_id == dataset_id, Sample.id.in_(chunk)
            )
            sizes.update({r.id: (r.width, r.height) for r in session.execute(query)})
        rows: dict[int, Detections] = {}
        for sample_id, value in zip(sample_ids, tags.values()):
            if sample_id not in sizes:
                raise StoreError(f"sample {sample_id} is not a sample of dataset id {dataset_id}")
            if isinstance(value, Tags):
                value = tags_to_detections(value, width=sizes[sample_id][0], height=sizes[sample_id][1])
            elif not isinstance(value, Detections) or len(split_tags(value)[0]):
                raise StoreError(f"sample {sample_id}: tags must be Tags or Detections of shape type 'tag' rows")
            rows[sample_id] = value
        return cls._detection_values(session, dataset_id, rows, with_scores, source)

    # ---------------------------------------------------------------------- the one writer of annotations
    def _insert_values(
        self, session: Session, run: Run, values: Sequence[tuple], cover: Iterable[int], *, skip_covered: bool = False
    ) -> int:
        """Make ``run`` cover the samples of ``values`` and ``cover`` and insert ``values``
        (insert-ready `AnnotationIn` tuples, see `sync.store.convert.row_values`), in the
        caller's transaction; returns the number of rows inserted. `StoreError` if a sample is
        not in the run's dataset or the run already covers it; nothing is written then. With
        ``skip_covered`` the samples the run already covers are left out (their rows too)
        instead: the idempotent write of a batch that may have been written before."""
        covered = sorted({v[0] for v in values} | {as_int(i, "covered sample id") for i in cover})
        self._check_samples_in(session, run.dataset_id, covered, f"run {run.name!r}")
        already: list[int] = []
        for chunk in chunks(covered):
            already.extend(
                session.execute(
                    select(RunSample.sample_id).where(RunSample.run_id == run.id, RunSample.sample_id.in_(chunk))
                ).scalars()
            )
        if already and skip_covered:
            skipped = set(already)
            covered = [sid for sid in covered if sid not in skipped]
            values = [v for v in values if v[0] not in skipped]
        elif already:
            more = " …" if len(already) > 10 else ""
            raise StoreError(
                f"run {run.name!r} already covers sample ids {sorted(already)[:10]}{more}; runs are never overwritten"
            )
        bulk_insert(session, RunSample.__table__, [{"run_id": run.id, "sample_id": sid} for sid in covered])
        run_id = run.id
        fast_insert(
            session,
            Annotation.__table__,
            ANNOTATION_INSERT_COLUMNS,
            [(run_id, *v) for v in values],
            f"run {run.name!r}",
        )
        return len(values)
