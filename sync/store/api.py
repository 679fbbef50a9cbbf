"""`Store`: every operation of the label store, one transaction per method.

Open a store with `sync.store.open_store`; each method opens its own transaction and
either commits all of its writes or none (an interrupted call loses nothing that was
committed before it and leaves nothing half-written). Methods take and return the frozen
values of `sync.store.records` (never ORM objects), so callers need no SQLAlchemy.

Arguments naming stored objects accept the value a method returned or its id: a dataset is a
`DatasetInfo` or its name, a run a `RunInfo` or its id, a CVAT task link a `CvatTaskInfo` or
its ``id``, a job link a `CvatJobInfo` or its ``id``.

Nothing is overwritten:
- a run is open (annotations may be added to samples it does not cover yet) until
  `Store.finish_run`; afterwards nothing is added to it. Adding annotations for a sample the
  run already covers raises `StoreError` (so a resumed pre-label run never duplicates), or
  with ``add_detections(..., skip_covered=True)`` leaves them out (a retried batch writes
  nothing twice).
- every pull of a CVAT job adds a new, finished ``human`` run
  (`Store.record_human_revision`); earlier revisions stay as they were.
- link records (CVAT tasks, jobs, frames, pushed shapes) are upserted idempotently: doing the
  same push twice adds nothing, and a contradiction (a frame already linked to another
  sample, a shape id already mapped to another annotation) raises `StoreError`.

Datasets, samples, runs and annotations are here; the CVAT link methods are in
`sync.store.cvat_links`, the training runs in `sync.store.training`, the embeddings (vectors
of images and annotation crops) in `sync.store.embeddings`. For queries these
methods do not cover, `Store.session()` yields a
SQLAlchemy ``Session`` on the models of `sync.store.schema`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from sqlalchemy import Text, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serverless.detections import Detections
from serverless.models.base import Tags
from sync.store.base import DEFAULT_SOURCE, dataset_info, run_info, sample_info
from sync.store.bulk import insert_ignore
from sync.store.checks import as_int, chunks, json_value, optional_text
from sync.store.convert import AnnotationColumns, row_values
from sync.store.credentials import check_no_secrets, has_credentials, strip_credentials
from sync.store.cvat_links import CvatLinks
from sync.store.embeddings import Embeddings
from sync.store.training import TrainingRuns
from sync.store.errors import StoreError
from sync.store.records import (
    AnnotationIn,
    DatasetInfo,
    Provenance,
    RunComparison,
    RunInfo,
    SampleIn,
    SampleInfo,
    SamplePair,
)
from sync.store.schema import RUN_KINDS, Annotation, Dataset, Run, RunSample, Sample, utc_now

__all__ = ["Store"]

log = logging.getLogger(__name__)


class Store(CvatLinks, TrainingRuns, Embeddings):
    """A label store on one database (see the module docstring for the rules).

    Made by `sync.store.open_store`; usable as a context manager that disposes of the
    engine's connections on exit. ``repr`` and `url` show the URL with the password hidden.
    """

    # -------------------------------------------------------------------------- datasets
    def get_or_create_dataset(self, name: str) -> DatasetInfo:
        """The dataset called ``name``, created if missing (idempotent)."""
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise StoreError(f"a dataset name must be a non-empty string of <= 255 characters, got {name!r}")
        with self.session() as s:
            insert_ignore(s, Dataset.__table__, [{"name": name, "created_at": utc_now()}], ["name"])
            return dataset_info(s.execute(select(Dataset).where(Dataset.name == name)).scalar_one())

    def get_dataset(self, name: str) -> DatasetInfo:
        """The dataset called ``name``; `StoreError` listing the known names if missing."""
        with self.session() as s:
            return dataset_info(self._dataset(s, name))

    def dataset_by_id(self, dataset_id: int) -> DatasetInfo:
        """The dataset with id ``dataset_id`` (e.g. a CVAT task link's); `StoreError` if none."""
        with self.session() as s:
            row = s.get(Dataset, as_int(dataset_id, "dataset id"))
            if row is None:
                raise StoreError(f"no dataset with id {dataset_id} in the store at {self._url}")
            return dataset_info(row)

    def list_datasets(self) -> list[DatasetInfo]:
        """All datasets, by name."""
        with self.session() as s:
            return [dataset_info(r) for r in s.execute(select(Dataset).order_by(Dataset.name)).scalars()]

    # -------------------------------------------------------------------------- samples
    def add_samples(self, dataset: DatasetInfo | str, samples: Iterable[SampleIn]) -> list[int]:
        """Register images; returns their sample ids in input order.

        Idempotent by URI: a URI already in the dataset returns its existing id. The same URI
        with a different content hash or size (in the batch or in the store) raises
        `StoreError` naming the URI, since stored annotations refer to the old content. A URI
        with ``user:password@`` is refused (credentials are never stored).
        """
        items = list(samples)
        wanted: dict[str, SampleIn] = {}
        for i, item in enumerate(items):
            if not isinstance(item, SampleIn):
                raise StoreError(f"samples[{i}] must be a SampleIn, got {type(item).__name__}")
            if not isinstance(item.uri, str) or not item.uri:
                raise StoreError(f"samples[{i}].uri must be a non-empty string, got {item.uri!r}")
            if has_credentials(item.uri):
                raise StoreError(
                    f"samples[{i}].uri holds credentials (user@ or user:password@); store the URI without them"
                )
            as_int(item.width, f"samples[{i}].width ({item.uri})", minimum=1)
            as_int(item.height, f"samples[{i}].height ({item.uri})", minimum=1)
            if item.content_hash is not None and (
                not isinstance(item.content_hash, str) or len(item.content_hash) > 128
            ):
                raise StoreError(f"samples[{i}].content_hash must be a string of <= 128 characters")
            seen = wanted.setdefault(item.uri, item)
            if seen != item:
                raise StoreError(f"sample {item.uri!r} appears twice with different hash or size: {seen} and {item}")
        with self.session() as s:
            ds = self._dataset(s, dataset)
            uris = list(wanted)
            insert_ignore(
                s,
                Sample.__table__,
                [
                    {
                        "dataset_id": ds.id,
                        "uri": item.uri,
                        "content_hash": item.content_hash,
                        "width": int(item.width),
                        "height": int(item.height),
                    }
                    for item in wanted.values()
                ],
                ["dataset_id", "uri"],
            )
            ids: dict[str, int] = {}
            for chunk in chunks(uris):
                for row in s.execute(
                    select(Sample.id, Sample.uri, Sample.content_hash, Sample.width, Sample.height).where(
                        Sample.dataset_id == ds.id, Sample.uri.in_(chunk)
                    )
                ):
                    item = wanted[row.uri]
                    if (row.content_hash, row.width, row.height) != (
                        item.content_hash,
                        int(item.width),
                        int(item.height),
                    ):
                        raise StoreError(
                            f"sample {row.uri!r} of dataset {ds.name!r} is stored with hash "
                            f"{row.content_hash!r} and size {row.width}x{row.height}, got hash "
                            f"{item.content_hash!r} and size {item.width}x{item.height}; "
                            "stored samples are never changed"
                        )
                    ids[row.uri] = row.id
            return [ids[item.uri] for item in items]

    def samples(self, dataset: DatasetInfo | str, *, ids: Iterable[int] | None = None) -> list[SampleInfo]:
        """The samples of a dataset (only ``ids`` if given), by ascending id."""
        with self.session() as s:
            ds = self._dataset(s, dataset)
            columns = (Sample.id, Sample.dataset_id, Sample.uri, Sample.content_hash, Sample.width, Sample.height)
            if ids is None:
                rows = s.execute(select(*columns).where(Sample.dataset_id == ds.id).order_by(Sample.id)).all()
            else:
                rows = []
                for chunk in chunks(sorted({as_int(i, "sample id") for i in ids})):
                    rows.extend(
                        s.execute(select(*columns).where(Sample.dataset_id == ds.id, Sample.id.in_(chunk))).all()
                    )
                rows.sort(key=lambda r: r.id)
            return [sample_info(r) for r in rows]

    # -------------------------------------------------------------------------- runs
    def create_run(
        self,
        dataset: DatasetInfo | str,
        kind: str,
        *,
        name: str | None = None,
        provenance: Provenance | None = None,
        parent: RunInfo | int | None = None,
    ) -> RunInfo:
        """A new open run of kind ``"prelabel"`` or ``"import"`` with its provenance.

        ``name`` must be unique in the dataset (`StoreError` otherwise); by default it is
        ``"<kind>-<n>"`` with the next free ``n``. Human revisions are made by
        `record_human_revision`, never here. Credentials in the provenance are refused or
        stripped (see `Provenance`).
        """
        with self.session() as s:
            return run_info(self._new_run(s, dataset, kind, name, provenance, parent))

    def add_finished_run(
        self,
        dataset: DatasetInfo | str,
        kind: str,
        rows: Iterable[AnnotationIn],
        *,
        name: str | None = None,
        provenance: Provenance | None = None,
        cover: Iterable[int] = (),
    ) -> RunInfo:
        """`create_run`, `add_annotations` and `finish_run` in one transaction: afterwards the
        run exists, finished, with all of ``rows``, or (on any `StoreError`) not at all."""
        values = [row_values(row, f"rows[{i}]") for i, row in enumerate(rows)]
        with self.session() as s:
            row = self._new_run(s, dataset, kind, name, provenance, None)
            count = self._insert_values(s, row, values, cover)
            row.finished_at = utc_now()
            s.flush()
            log.info("run %r: added %d annotations, finished", row.name, count)
            return run_info(row)

    def _new_run(
        self,
        s: Session,
        dataset: DatasetInfo | str,
        kind: str,
        name: str | None,
        provenance: Provenance | None,
        parent: RunInfo | int | None,
    ) -> Run:
        """The checked, flushed `Run` row of `create_run`, in the caller's transaction."""
        if kind not in ("prelabel", "import"):
            hint = "; human revisions are recorded with record_human_revision" if kind == "human" else ""
            raise StoreError(f"run kind must be 'prelabel' or 'import', got {kind!r}{hint}")
        prov = provenance or Provenance()
        if not isinstance(prov, Provenance):
            raise StoreError(f"provenance must be a Provenance, got {type(prov).__name__}")
        name = optional_text(name, "run name")
        if name is not None and not name.strip():
            raise StoreError("run name must not be empty")
        thresholds = None
        if prov.thresholds is not None:
            thresholds = {}
            for label, value in dict(prov.thresholds).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise StoreError(f"provenance.thresholds[{label!r}] must be a number in 0..1, got {value!r}")
                thresholds[str(label)] = float(value)
        params = None
        if prov.params is not None:
            if not isinstance(prov.params, Mapping):
                raise StoreError(f"provenance.params must be a mapping, got {type(prov.params).__name__}")
            params = json_value(check_no_secrets(prov.params, "provenance.params"), "provenance.params")
        model_id = None if prov.model_id is None else strip_credentials(str(prov.model_id))
        ds = self._dataset(s, dataset)
        parent_id = None
        if parent is not None:
            parent_row = self._run(s, parent)
            if parent_row.dataset_id != ds.id:
                raise StoreError(f"parent run {parent_row.name!r} belongs to another dataset than {ds.name!r}")
            parent_id = parent_row.id
        if name is None:
            count = s.execute(select(func.count()).where(Run.dataset_id == ds.id, Run.kind == kind)).scalar_one()
            name = self._unique_run_name(s, ds.id, f"{kind}-{count + 1}")
        elif s.execute(select(Run.id).where(Run.dataset_id == ds.id, Run.name == name)).first():
            raise StoreError(f"dataset {ds.name!r} already has a run named {name!r}; runs are never overwritten")
        row = Run(
            dataset_id=ds.id,
            name=name,
            kind=kind,
            created_at=utc_now(),
            parent_run_id=parent_id,
            model_id=model_id,
            model_revision=optional_text(prov.model_revision, "model_revision"),
            ontology_yaml=optional_text(prov.ontology_yaml, "ontology_yaml", 10_000_000),
            ontology_hash=optional_text(prov.ontology_hash, "ontology_hash", 128),
            thresholds=thresholds,
            params=params,
        )
        s.add(row)
        s.flush()
        log.info("created %s run %r in dataset %r", kind, name, ds.name)
        return row

    def add_annotations(self, run: RunInfo | int, rows: Iterable[AnnotationIn], *, cover: Iterable[int] = ()) -> int:
        """Bulk-add annotation rows to an open run; returns how many were added.

        The run then covers every sample of ``rows`` plus the sample ids in ``cover`` (samples
        with no annotation). `StoreError` if a row is malformed, the run is finished, a sample
        is not in the run's dataset, or the run already covers one of these samples. All or
        nothing.
        """
        values = [row_values(row, f"rows[{i}]") for i, row in enumerate(rows)]
        with self.session() as s:
            row = self._open_run(s, run)
            count = self._insert_values(s, row, values, cover)
            log.info("run %r: added %d annotations", row.name, count)
            return count

    def add_detections(
        self,
        run: RunInfo | int,
        detections: Mapping[int, Detections],
        *,
        with_scores: bool = True,
        source: str | None = None,
        tags: Mapping[int, Tags] | None = None,
        skip_covered: bool = False,
    ) -> int:
        """Bulk-add `Detections` per sample id (an empty `Detections` marks a sample covered
        with no annotation) and ``tags``, a classifier's `Tags` per sample id, to an open run;
        returns the number of annotations added.

        Rows are made by `sync.store.convert.detections_to_rows`, tags as whole-frame rows of
        shape type ``tag`` (`sync.store.convert.tags_to_detections`); a sample's shapes and
        tags come in the same call (a sample is covered once). ``source`` defaults to
        ``"auto"`` for pre-label runs and ``"file"`` for imports. Masks must have their
        sample's size. Same rules as `add_annotations`, except with ``skip_covered``: the
        samples the run already covers are then left out instead of refused (the idempotent
        write of a batch that a crashed attempt may have written already), and a conflict with
        a writer covering the same samples at the same moment (the run/sample primary key) is
        settled by filtering once more after it committed.
        """
        tags = dict(tags or {})
        try:
            return self._add_detections(run, detections, with_scores, source, tags, skip_covered)
        except StoreError as error:
            if not (skip_covered and isinstance(error.__cause__, IntegrityError)):
                raise
        return self._add_detections(run, detections, with_scores, source, tags, skip_covered)

    def _add_detections(
        self,
        run: RunInfo | int,
        detections: Mapping[int, Detections],
        with_scores: bool,
        source: str | None,
        tags: Mapping[int, Tags],
        skip_covered: bool,
    ) -> int:
        """`add_detections` in one transaction."""
        with self.session() as s:
            row = self._open_run(s, run)
            source = source or DEFAULT_SOURCE[row.kind]
            values = self._detection_values(s, row.dataset_id, detections, with_scores, source)
            values += self._tag_values(s, row.dataset_id, tags, with_scores, source)
            samples = set(detections) | set(tags)
            count = self._insert_values(s, row, values, samples, skip_covered=skip_covered)
            log.info("run %r: added %d annotations on up to %d samples", row.name, count, len(samples))
            return count

    def _open_run(self, session: Session, run: RunInfo | int) -> Run:
        row = self._run(session, run)
        if row.finished_at is not None:
            raise StoreError(f"run {row.name!r} is finished; nothing can be added to it")
        return row

    def finish_run(self, run: RunInfo | int) -> RunInfo:
        """Seal a run (idempotent): nothing can be added to it afterwards."""
        with self.session() as s:
            row = self._run(s, run)
            if row.finished_at is None:
                row.finished_at = utc_now()
                s.flush()
            return run_info(row)

    def get_run(self, dataset: DatasetInfo | str, name: str) -> RunInfo:
        """The run called ``name`` in a dataset; `StoreError` listing some names if missing."""
        with self.session() as s:
            ds = self._dataset(s, dataset)
            row = s.execute(select(Run).where(Run.dataset_id == ds.id, Run.name == name)).scalar()
            if row is None:
                names = (
                    s.execute(select(Run.name).where(Run.dataset_id == ds.id).order_by(Run.id.desc()).limit(10))
                    .scalars()
                    .all()
                )
                raise StoreError(
                    f"dataset {ds.name!r} has no run named {name!r}"
                    + (f" (latest runs: {', '.join(map(repr, names))})" if names else " (it has no runs)")
                )
            return run_info(row)

    def run_by_id(self, run_id: int) -> RunInfo:
        """The run with this id; `StoreError` if missing."""
        with self.session() as s:
            return run_info(self._run(s, run_id))

    def list_runs(self, dataset: DatasetInfo | str, *, kind: str | None = None) -> list[RunInfo]:
        """The runs of a dataset (of one kind if given), oldest first."""
        if kind is not None and kind not in RUN_KINDS:
            raise StoreError(f"run kind must be one of {list(RUN_KINDS)}, got {kind!r}")
        with self.session() as s:
            ds = self._dataset(s, dataset)
            query = select(Run).where(Run.dataset_id == ds.id)
            if kind is not None:
                query = query.where(Run.kind == kind)
            return [run_info(r) for r in s.execute(query.order_by(Run.id)).scalars()]

    def latest_run(self, dataset: DatasetInfo | str, kind: str, *, finished: bool = True) -> RunInfo | None:
        """The newest run of ``kind`` in a dataset (only finished runs unless
        ``finished=False``), or None."""
        if kind not in RUN_KINDS:
            raise StoreError(f"run kind must be one of {list(RUN_KINDS)}, got {kind!r}")
        with self.session() as s:
            ds = self._dataset(s, dataset)
            query = select(Run).where(Run.dataset_id == ds.id, Run.kind == kind)
            if finished:
                query = query.where(Run.finished_at.is_not(None))
            row = s.execute(query.order_by(Run.id.desc()).limit(1)).scalar()
            return None if row is None else run_info(row)

    def covered_samples(self, run: RunInfo | int) -> list[int]:
        """Ids of the samples a run covers, ascending (a resumed pre-label run skips them)."""
        with self.session() as s:
            row = self._run(s, run)
            return list(
                s.execute(
                    select(RunSample.sample_id).where(RunSample.run_id == row.id).order_by(RunSample.sample_id)
                ).scalars()
            )

    def count_annotations(self, run: RunInfo | int) -> int:
        """The number of annotations in a run."""
        with self.session() as s:
            row = self._run(s, run)
            return s.execute(
                select(func.count()).select_from(Annotation).where(Annotation.run_id == row.id)
            ).scalar_one()

    _ANNOTATION_COLUMNS = (
        Annotation.id,
        Annotation.sample_id,
        Annotation.label,
        Annotation.x1,
        Annotation.y1,
        Annotation.x2,
        Annotation.y2,
        Annotation.shape_type,
        Annotation.score,
        cast(Annotation.polygon, Text),
        cast(Annotation.mask_rle, Text),
        cast(Annotation.attributes, Text),
        Annotation.source,
        Annotation.cvat_shape_id,
        Annotation.pre_annotation_id,
    )
    """`sync.store.convert.ROW_FIELDS` in order; JSON read as text and parsed once."""

    def _detections_of(
        self,
        session: Session,
        run: Run,
        sample_ids: Iterable[int] | None,
        masks: bool,
        label_index: Mapping[str, int] | None,
    ) -> dict[int, Detections]:
        sizes_query = (
            select(Sample.id, Sample.width, Sample.height)
            .join(RunSample, RunSample.sample_id == Sample.id)
            .where(RunSample.run_id == run.id)
        )
        ann_query = select(*self._ANNOTATION_COLUMNS).where(Annotation.run_id == run.id)
        conn = session.connection()  # Core rows: no ORM loading overhead per row
        if sample_ids is None:
            sizes = {r[0]: (r[1], r[2]) for r in conn.execute(sizes_query)}
            rows = conn.execute(ann_query.order_by(Annotation.sample_id, Annotation.id)).all()
        else:
            wanted = sorted({as_int(i, "sample id") for i in sample_ids})
            sizes, rows = {}, []
            for chunk in chunks(wanted):
                sizes.update({r[0]: (r[1], r[2]) for r in conn.execute(sizes_query.where(Sample.id.in_(chunk)))})
                rows.extend(
                    conn.execute(
                        ann_query.where(Annotation.sample_id.in_(chunk)).order_by(Annotation.sample_id, Annotation.id)
                    )
                )
        columns = AnnotationColumns.from_tuples(rows)
        bounds = columns.bounds()
        result = {}
        for sample_id in sorted(sizes):
            width, height = sizes[sample_id]
            start, stop = bounds.get(sample_id, (0, 0))
            result[sample_id] = columns.detections(
                start, stop, width=width, height=height, masks=masks, label_index=label_index
            )
        return result

    def annotations_of(
        self,
        run: RunInfo | int,
        *,
        sample_ids: Iterable[int] | None = None,
        masks: bool = False,
        label_index: Mapping[str, int] | None = None,
    ) -> dict[int, Detections]:
        """``{sample_id: Detections}`` for every sample the run covers (only ``sample_ids`` if
        given; ids the run does not cover are left out), by ascending sample id; a covered
        sample without annotations maps to an empty `Detections`.

        Masks are decoded only with ``masks=True``; ``label_index`` (label name →
        class id, e.g. ``{n: i for i, n in enumerate(ontology.label_names)}``) fills
        ``class_ids``. See `sync.store.convert` for the columns.
        """
        with self.session() as s:
            return self._detections_of(s, self._run(s, run), sample_ids, masks, label_index)

    def compare(
        self,
        run_a: RunInfo | int,
        run_b: RunInfo | int,
        *,
        masks: bool = False,
        label_index: Mapping[str, int] | None = None,
    ) -> RunComparison:
        """The annotations of two runs of one dataset side by side (e.g. a pre-label run and
        a human revision): a `SamplePair` for each sample both cover, and the ids covered
        by one run only. Finished runs never change, so comparing them twice gives the same
        result."""
        with self.session() as s:
            a, b = self._run(s, run_a), self._run(s, run_b)
            if a.dataset_id != b.dataset_id:
                raise StoreError(f"runs {a.name!r} and {b.name!r} belong to different datasets")
            covered_a = set(s.execute(select(RunSample.sample_id).where(RunSample.run_id == a.id)).scalars())
            covered_b = set(s.execute(select(RunSample.sample_id).where(RunSample.run_id == b.id)).scalars())
            both = sorted(covered_a & covered_b)
            det_a = self._detections_of(s, a, both, masks, label_index)
            det_b = self._detections_of(s, b, both, masks, label_index)
            return RunComparison(
                run_a=run_info(a),
                run_b=run_info(b),
                pairs=tuple(SamplePair(sample_id=i, a=det_a[i], b=det_b[i]) for i in both),
                only_a=tuple(sorted(covered_a - covered_b)),
                only_b=tuple(sorted(covered_b - covered_a)),
            )
