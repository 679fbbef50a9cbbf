"""The CVAT link methods of `sync.store.api.Store`: tasks, jobs, frames, pushed shapes and
human revisions (fiftyone's annotation-run model: task/job ids, a frame map and a
local↔server id map, here as tables).

Upserts are idempotent (unique constraints plus ``INSERT … ON CONFLICT DO NOTHING``, then a
read back that raises `StoreError` on any contradiction), so a rerun of a push never
duplicates anything. `CvatLinks.record_human_revision` writes a whole job in one transaction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from serverless.detections import Detections
from sync.store.base import DEFAULT_SOURCE, StoreBase, job_info, run_info, task_info
from sync.store.bulk import insert_ignore
from sync.store.checks import as_aware, as_int, chunks, optional_text
from sync.store.convert import TAG
from sync.store.credentials import strip_credentials
from sync.store.errors import StoreError
from sync.store.records import CvatJobInfo, CvatTaskInfo, DatasetInfo, RunInfo
from sync.store.schema import (
    PUSHED_KINDS,
    SHAPE_TYPES,
    Annotation,
    CvatFrame,
    CvatJob,
    CvatTask,
    PushedShape,
    Run,
    utc_now,
)

__all__ = ["CvatLinks"]

log = logging.getLogger(__name__)


def _kind(kind: str) -> str:
    if kind not in PUSHED_KINDS:
        raise StoreError(f"kind must be one of {list(PUSHED_KINDS)}, got {kind!r}")
    return kind


def _pushed_ids(shapes: Mapping[int, int], tags: Mapping[int, int]) -> dict[int, tuple[str, int]]:
    """``{annotation id: (kind, CVAT id)}`` of the shapes and tags a push recorded, checked."""
    wanted: dict[int, tuple[str, int]] = {}
    for kind, given in (("shape", shapes), ("tag", tags)):
        for ann, cvat_id in given.items():
            ann = as_int(ann, "annotation id")
            if ann in wanted:
                raise StoreError(f"annotation {ann} cannot be pushed both as a CVAT shape and as a tag")
            wanted[ann] = (kind, as_int(cvat_id, f"CVAT {kind} id", minimum=0))
    if len(set(wanted.values())) != len(wanted):
        raise StoreError("two annotations cannot map to the same CVAT shape (or tag) id")
    return wanted


def _linked(value: tuple, pushed: Mapping[str, Mapping[int, int]]) -> tuple:
    """An insert-ready annotation tuple with ``pre_annotation_id`` set from the pushed ids of
    its kind (a ``tag`` row's CVAT id is a tag id), unless it has one or was not pushed."""
    cvat_id, pre_id = value[12], value[13]
    linked = pushed["tag" if value[6] == TAG else "shape"].get(cvat_id) if cvat_id is not None else None
    return value if pre_id is not None or linked is None else (*value[:13], linked)


def _checked_geometry(
    geometry: Mapping[int, tuple[str, Sequence[float]]],
) -> dict[int, tuple[str, list[float]]]:
    checked = {}
    for ann, value in geometry.items():
        try:
            kind, points = value
            numbers = [float(v) for v in points]
        except (TypeError, ValueError):
            raise StoreError(f"pushed geometry of annotation {ann} must be (shape type, points)") from None
        if kind not in SHAPE_TYPES or not all(math.isfinite(v) for v in numbers):
            raise StoreError(f"pushed geometry of annotation {ann}: {kind!r} with finite points expected")
        checked[as_int(ann, "annotation id")] = (str(kind), numbers)
    return checked


class CvatLinks(StoreBase):
    """CVAT tasks, jobs, frames, pushed shapes and human revisions (mixed into `Store`)."""

    def link_cvat_task(
        self,
        dataset: DatasetInfo | str,
        server: str,
        task_id: int,
        *,
        name: str = "",
        project_id: int | None = None,
        run: RunInfo | int | None = None,
        replace_run: bool = False,
    ) -> CvatTaskInfo:
        """Record (idempotently) that CVAT task ``task_id`` on ``server`` holds samples of the
        dataset and, with ``run``, the pre-label run pushed into it.

        ``server`` is stored without credentials. Re-linking updates ``name`` and
        ``project_id``; linking the task to another dataset raises `StoreError`, and so does
        linking it to another run than the one it holds unless ``replace_run`` (a new run of
        the same dataset takes the task over: `autolabel cvat prelabel --run NEW`).
        """
        server = strip_credentials(server)
        if not server:
            raise StoreError("CVAT server URL must not be empty")
        task_id = as_int(task_id, "CVAT task id", minimum=0)
        if project_id is not None:
            project_id = as_int(project_id, "CVAT project id", minimum=0)
        if not isinstance(name, str):
            raise StoreError(f"CVAT task name must be a string, got {type(name).__name__}")
        with self.session() as s:
            ds = self._dataset(s, dataset)
            run_id = None
            if run is not None:
                run_row = self._run(s, run)
                if run_row.dataset_id != ds.id:
                    raise StoreError(f"run {run_row.name!r} does not belong to dataset {ds.name!r}")
                run_id = run_row.id
            insert_ignore(
                s,
                CvatTask.__table__,
                [
                    {
                        "dataset_id": ds.id,
                        "server": server,
                        "task_id": task_id,
                        "name": name,
                        "project_id": project_id,
                        "run_id": run_id,
                        "created_at": utc_now(),
                    }
                ],
                ["server", "task_id"],
            )
            row = s.execute(select(CvatTask).where(CvatTask.server == server, CvatTask.task_id == task_id)).scalar_one()
            if row.dataset_id != ds.id:
                raise StoreError(
                    f"CVAT task {task_id} on {server} is linked to another dataset "
                    f"(id {row.dataset_id}), not {ds.name!r}"
                )
            if run_id is not None and row.run_id not in (None, run_id) and not replace_run:
                raise StoreError(
                    f"CVAT task {task_id} on {server} already holds pre-label run id {row.run_id}, not {run_id}"
                )
            row.name = name or row.name
            if project_id is not None:
                row.project_id = project_id
            if run_id is not None:
                row.run_id = run_id
            s.flush()
            return task_info(row)

    def get_cvat_task(self, server: str, task_id: int) -> CvatTaskInfo | None:
        """The link of CVAT task ``task_id`` on ``server`` (credentials ignored), or None."""
        server = strip_credentials(server)
        with self.session() as s:
            row = s.execute(
                select(CvatTask).where(CvatTask.server == server, CvatTask.task_id == as_int(task_id, "CVAT task id"))
            ).scalar()
            return None if row is None else task_info(row)

    def cvat_tasks(self, dataset: DatasetInfo | str) -> list[CvatTaskInfo]:
        """The CVAT tasks linked to a dataset, oldest first."""
        with self.session() as s:
            ds = self._dataset(s, dataset)
            return [
                task_info(r)
                for r in s.execute(select(CvatTask).where(CvatTask.dataset_id == ds.id).order_by(CvatTask.id)).scalars()
            ]

    def link_frames(self, task: CvatTaskInfo | int, frames: Mapping[int, int]) -> None:
        """Record ``{task-relative frame: sample_id}`` for a task (idempotent). A frame already
        linked to another sample, or a sample already at another frame, raises `StoreError`."""
        wanted = {as_int(f, "frame", minimum=0): as_int(sid, "sample id") for f, sid in frames.items()}
        by_sample: dict[int, int] = {}
        for frame, sid in wanted.items():
            other = by_sample.setdefault(sid, frame)
            if other != frame:
                raise StoreError(f"sample {sid} cannot be both frame {other} and frame {frame}")
        with self.session() as s:
            task_row = self._task(s, task)
            where = f"CVAT task {task_row.task_id} on {task_row.server}"
            self._check_samples_in(s, task_row.dataset_id, wanted.values(), where)
            stored = self._frames(s, task_row.id)
            stored_by_sample = {sid: f for f, sid in stored.items()}
            for frame, sid in wanted.items():
                if frame in stored and stored[frame] != sid:
                    raise StoreError(f"{where}: frame {frame} is already linked to sample {stored[frame]}, not {sid}")
                if sid in stored_by_sample and stored_by_sample[sid] != frame:
                    raise StoreError(f"{where}: sample {sid} is already frame {stored_by_sample[sid]}, not {frame}")
            insert_ignore(
                s,
                CvatFrame.__table__,
                [
                    {"task_link_id": task_row.id, "frame": f, "sample_id": sid}
                    for f, sid in wanted.items()
                    if f not in stored
                ],
                ["task_link_id", "frame"],
            )

    @staticmethod
    def _frames(session: Session, task_link_id: int) -> dict[int, int]:
        return {
            r.frame: r.sample_id
            for r in session.execute(
                select(CvatFrame.frame, CvatFrame.sample_id).where(CvatFrame.task_link_id == task_link_id)
            )
        }

    def frames_of(self, task: CvatTaskInfo | int) -> dict[int, int]:
        """``{task-relative frame: sample_id}`` of a task, by frame."""
        with self.session() as s:
            return dict(sorted(self._frames(s, self._task(s, task).id).items()))

    def upsert_cvat_job(
        self,
        task: CvatTaskInfo | int,
        job_id: int,
        *,
        start_frame: int,
        stop_frame: int,
        assignee: str | None = None,
        stage: str | None = None,
        state: str | None = None,
        updated_date: datetime | str | None = None,
    ) -> CvatJobInfo:
        """Record a job of a task as just seen on the server (frame range inclusive,
        task-relative). Idempotent; later calls update the assignee, stage, state and
        ``updated_date``, never the pull bookkeeping. A changed frame range raises `StoreError`."""
        job_id = as_int(job_id, "CVAT job id", minimum=0)
        start_frame = as_int(start_frame, "start_frame", minimum=0)
        stop_frame = as_int(stop_frame, "stop_frame", minimum=start_frame)
        values = {
            "assignee": optional_text(assignee, "assignee"),
            "stage": optional_text(stage, "stage", 64),
            "state": optional_text(state, "state", 64),
            "updated_date": as_aware(updated_date, "updated_date"),
        }
        with self.session() as s:
            task_row = self._task(s, task)
            insert_ignore(
                s,
                CvatJob.__table__,
                [
                    {
                        "task_link_id": task_row.id,
                        "job_id": job_id,
                        "start_frame": start_frame,
                        "stop_frame": stop_frame,
                        **values,
                    }
                ],
                ["task_link_id", "job_id"],
            )
            row = s.execute(
                select(CvatJob).where(CvatJob.task_link_id == task_row.id, CvatJob.job_id == job_id)
            ).scalar_one()
            if (row.start_frame, row.stop_frame) != (start_frame, stop_frame):
                raise StoreError(
                    f"CVAT job {job_id} of task {task_row.task_id} is stored with frames "
                    f"{row.start_frame}..{row.stop_frame}, got {start_frame}..{stop_frame}"
                )
            for key, value in values.items():
                setattr(row, key, value)
            s.flush()
            return job_info(row)

    def get_cvat_job(self, task: CvatTaskInfo | int, job_id: int) -> CvatJobInfo:
        """A job of a task by CVAT job id; `StoreError` if it was never recorded."""
        with self.session() as s:
            task_row = self._task(s, task)
            row = s.execute(
                select(CvatJob).where(
                    CvatJob.task_link_id == task_row.id, CvatJob.job_id == as_int(job_id, "CVAT job id")
                )
            ).scalar()
            if row is None:
                raise StoreError(
                    f"CVAT job {job_id} of task {task_row.task_id} on {task_row.server} is not in the store"
                )
            return job_info(row)

    def jobs_of(self, task: CvatTaskInfo | int) -> list[CvatJobInfo]:
        """The recorded jobs of a task, by CVAT job id."""
        with self.session() as s:
            task_row = self._task(s, task)
            return [
                job_info(r)
                for r in s.execute(
                    select(CvatJob).where(CvatJob.task_link_id == task_row.id).order_by(CvatJob.job_id)
                ).scalars()
            ]

    def record_pushed_shapes(
        self,
        task: CvatTaskInfo | int,
        shapes: Mapping[int, int],
        *,
        job_id: int | None = None,
        geometry: Mapping[int, tuple[str, Sequence[float]]] | None = None,
        tags: Mapping[int, int] | None = None,
    ) -> None:
        """Record ``{pre-label annotation id: CVAT shape id}`` for shapes created in a task and
        ``tags`` ``{annotation id: CVAT tag id}`` for tags (idempotent, one transaction), with
        ``geometry`` ``{annotation id: (CVAT shape type, points)}``: what was sent (a tag's is
        ``("tag", [])``). CVAT numbers shapes and tags apart, so a shape and a tag may share an
        id; within a kind, an id already mapped to another annotation, or an annotation already
        pushed as something else, raises `StoreError`."""
        wanted = _pushed_ids(shapes, tags or {})
        sent = _checked_geometry(geometry or {})
        with self.session() as s:
            task_row = self._task(s, task)
            where = f"CVAT task {task_row.task_id} on {task_row.server}"
            self._check_annotations_of(s, task_row, sorted(wanted), where)
            stored = {
                (kind, cvat_id): ann
                for kind in PUSHED_KINDS
                for cvat_id, ann in self._pushed(s, task_row.id, kind).items()
            }
            stored_by_ann = {a: key for key, a in stored.items()}
            for ann, key in wanted.items():
                if key in stored and stored[key] != ann:
                    raise StoreError(
                        f"{where}: CVAT {key[0]} {key[1]} is already mapped to annotation {stored[key]}, not {ann}"
                    )
                if ann in stored_by_ann and stored_by_ann[ann] != key:
                    was = stored_by_ann[ann]
                    raise StoreError(
                        f"{where}: annotation {ann} was already pushed as CVAT {was[0]} {was[1]}, not {key[0]} {key[1]}"
                    )
            insert_ignore(
                s,
                PushedShape.__table__,
                [
                    {
                        "task_link_id": task_row.id,
                        "kind": kind,
                        "cvat_shape_id": cvat_id,
                        "annotation_id": a,
                        "job_id": job_id,
                        "shape_type": sent.get(a, (None, None))[0],
                        "points": sent.get(a, (None, None))[1],
                    }
                    for a, (kind, cvat_id) in wanted.items()
                    if (kind, cvat_id) not in stored
                ],
                ["task_link_id", "kind", "cvat_shape_id"],
            )

    def _check_annotations_of(self, s: Session, task_row: CvatTask, ann_ids: list[int], where: str) -> None:
        """`StoreError` unless every id is an annotation of the task's dataset."""
        found: dict[int, int] = {}
        for chunk in chunks(ann_ids):
            for r in s.execute(
                select(Annotation.id, Run.dataset_id)
                .join(Run, Run.id == Annotation.run_id)
                .where(Annotation.id.in_(chunk))
            ):
                found[r.id] = r.dataset_id
        bad = [a for a in ann_ids if found.get(a) != task_row.dataset_id]
        if bad:
            raise StoreError(f"{where}: annotation ids {bad[:10]} are not annotations of the task's dataset")

    @staticmethod
    def _pushed(session: Session, task_link_id: int, kind: str = "shape") -> dict[int, int]:
        """``{CVAT id: annotation id}`` of one kind (``shape`` or ``tag``) pushed into a task."""
        return {
            r.cvat_shape_id: r.annotation_id
            for r in session.execute(
                select(PushedShape.cvat_shape_id, PushedShape.annotation_id).where(
                    PushedShape.task_link_id == task_link_id, PushedShape.kind == kind
                )
            )
        }

    def pushed_geometry(
        self, task: CvatTaskInfo | int, annotation_ids: Iterable[int]
    ) -> dict[int, tuple[str, list[float]]]:
        """``{annotation id: (CVAT shape type, points)}`` as pushed into a task, for those of
        ``annotation_ids`` pushed there with their shape recorded (schema version 2 on)."""
        ids = sorted({as_int(a, "annotation id") for a in annotation_ids})
        found: dict[int, tuple[str, list[float]]] = {}
        with self.session() as s:
            task_link_id = self._task(s, task).id
            for chunk in chunks(ids):
                for r in s.execute(
                    select(PushedShape.annotation_id, PushedShape.shape_type, PushedShape.points).where(
                        PushedShape.task_link_id == task_link_id,
                        PushedShape.annotation_id.in_(chunk),
                        PushedShape.shape_type.is_not(None),
                    )
                ):
                    found[r.annotation_id] = (r.shape_type, list(r.points))
        return found

    def record_task_labels(self, task: CvatTaskInfo | int, labels: Mapping[int, tuple[str, str]]) -> None:
        """Record the task's labels ``{CVAT label id: (name, type)}`` as they are at push time
        (replacing what an earlier push recorded)."""
        value = {
            str(as_int(label_id, "CVAT label id", minimum=0)): {"name": str(name), "type": str(kind)}
            for label_id, (name, kind) in labels.items()
        }
        with self.session() as s:
            s.execute(update(CvatTask).where(CvatTask.id == self._task(s, task).id).values(labels=value))

    def task_labels_at_push(self, task: CvatTaskInfo | int) -> dict[int, tuple[str, str]] | None:
        """``{CVAT label id: (name, type)}`` recorded by the last push into the task, or None
        when none was recorded (a task pushed before schema version 2)."""
        with self.session() as s:
            labels = self._task(s, task).labels
        if labels is None:
            return None
        return {int(label_id): (entry["name"], entry["type"]) for label_id, entry in labels.items()}

    def pushed_shapes(self, task: CvatTaskInfo | int, *, kind: str = "shape") -> dict[int, int]:
        """``{CVAT shape id: pre-label annotation id}`` of a task; ``kind="tag"``: ``{CVAT tag
        id: annotation id}`` of the tags pushed (CVAT numbers shapes and tags apart)."""
        kind = _kind(kind)
        with self.session() as s:
            return dict(sorted(self._pushed(s, self._task(s, task).id, kind).items()))

    def forget_pushed_shapes(self, task: CvatTaskInfo | int, shape_ids: Iterable[int], *, kind: str = "shape") -> None:
        """Drop the links of CVAT shapes (``kind="tag"``: tags) about to be replaced (a forced push)."""
        kind = _kind(kind)
        ids = [as_int(i, f"CVAT {kind} id", minimum=0) for i in shape_ids]
        with self.session() as s:
            task_link_id = self._task(s, task).id
            for chunk in chunks(ids):
                s.execute(
                    delete(PushedShape).where(
                        PushedShape.task_link_id == task_link_id,
                        PushedShape.kind == kind,
                        PushedShape.cvat_shape_id.in_(chunk),
                    )
                )

    def record_human_revision(
        self,
        job: CvatJobInfo | int,
        detections: Mapping[int, Detections],
        *,
        updated_date: datetime | str,
        assignee: str | None = None,
        stage: str | None = None,
        state: str | None = None,
        name: str | None = None,
        with_scores: bool = False,
        params: Mapping[str, object] | None = None,
        tags: Mapping[int, Detections] | None = None,
    ) -> RunInfo:
        """Store what a CVAT job holds now as a new finished ``human`` run, in one transaction.

        ``detections`` maps sample ids to the job's `Detections` (``data`` columns
        ``cvat_id``, ``source``, ``shape_type``, ``attributes`` are kept; see
        `sync.store.convert`), ``tags`` to its tags as rows of shape type ``tag``
        (`sync.store.convert.tags_to_detections`, ``cvat_id`` the CVAT tag id). The revision
        covers these samples and every sample linked to a frame in the job's range (frames
        without shapes are covered, empty). Annotations whose CVAT shape id (tags: tag id) was
        pushed from a pre-label run get ``pre_annotation_id`` from `record_pushed_shapes`;
        shape and tag ids are never confused. The run records the server (without credentials), task, job,
        ``assignee``, ``stage``, ``state`` (each defaults to what `upsert_cvat_job` last saw)
        and ``updated_date``; its parent is the task's
        pre-label run; its name defaults to ``"job<job_id>-rev<n>"``. The job link's pull
        bookkeeping is updated in the same transaction. Scores are dropped unless
        ``with_scores``. ``params`` (JSON-ready) is kept with the run, e.g. the label changes
        the pull noticed. Every call adds a revision; earlier ones are untouched.
        """
        updated = as_aware(updated_date, "updated_date")
        if updated is None:
            raise StoreError("updated_date is required: it identifies the state of the job that was pulled")
        name = optional_text(name, "run name")
        assignee = optional_text(assignee, "assignee")
        stage = optional_text(stage, "stage", 64)
        state = optional_text(state, "state", 64)
        with self.session() as s:
            job_row = self._job(s, job)
            task_row = s.get(CvatTask, job_row.task_link_id)
            where = f"CVAT job {job_row.job_id} of task {task_row.task_id} on {task_row.server}"
            frames = self._frames(s, task_row.id)
            in_range = {sid for f, sid in frames.items() if job_row.start_frame <= f <= job_row.stop_frame}
            values = self._revision_values(s, task_row, detections, dict(tags or {}), with_scores)
            name = self._revision_name(s, task_row, job_row, name, where)
            now = utc_now()
            run = Run(
                dataset_id=task_row.dataset_id,
                name=name,
                kind="human",
                created_at=now,
                finished_at=now,
                parent_run_id=task_row.run_id,
                cvat_server=task_row.server,
                cvat_task_id=task_row.task_id,
                cvat_job_id=job_row.job_id,
                assignee=job_row.assignee if assignee is None else assignee,
                stage=job_row.stage if stage is None else stage,
                state=job_row.state if state is None else state,
                cvat_updated_date=updated,
                params=dict(params) if params else None,
            )
            s.add(run)
            s.flush()
            count = self._insert_values(s, run, values, set(detections) | set(tags or {}) | in_range)
            s.execute(
                update(CvatJob)
                .where(CvatJob.id == job_row.id)
                .values(
                    assignee=run.assignee,
                    stage=run.stage,
                    state=run.state,
                    updated_date=updated if job_row.updated_date is None else max(updated, job_row.updated_date),
                    last_pulled_at=now,
                    last_pulled_updated_date=updated,
                    last_revision_id=run.id,
                )
            )
            log.info("%s: recorded revision %r with %d annotations", where, name, count)
            return run_info(run)

    def _revision_values(
        self,
        s: Session,
        task_row: CvatTask,
        detections: Mapping[int, Detections],
        tags: Mapping[int, Detections],
        with_scores: bool,
    ) -> list[tuple]:
        """Insert-ready rows of a revision's shapes and tags, each linked to the pre-label it was
        pushed as (by kind: a tag's CVAT id is a tag id)."""
        source = DEFAULT_SOURCE["human"]
        values = self._detection_values(s, task_row.dataset_id, detections, with_scores, source)
        values += self._tag_values(s, task_row.dataset_id, tags, with_scores, source)
        pushed = {kind: self._pushed(s, task_row.id, kind) for kind in PUSHED_KINDS}
        return [_linked(v, pushed) for v in values]

    def _revision_name(self, s: Session, task_row: CvatTask, job_row: CvatJob, name: str | None, where: str) -> str:
        """``name`` if the dataset has no run of that name, else `StoreError`; without a name,
        ``job<id>-rev<n>`` (n: the job's revisions so far + 1, made unique)."""
        if name is not None:
            if s.execute(select(Run.id).where(Run.dataset_id == task_row.dataset_id, Run.name == name)).first():
                raise StoreError(f"{where}: the dataset already has a run named {name!r}")
            return name
        count = s.execute(
            select(func.count()).where(
                Run.kind == "human",
                Run.cvat_server == task_row.server,
                Run.cvat_task_id == task_row.task_id,
                Run.cvat_job_id == job_row.job_id,
            )
        ).scalar_one()
        return self._unique_run_name(s, task_row.dataset_id, f"job{job_row.job_id}-rev{count + 1}")

    def revisions_of(self, job: CvatJobInfo | int) -> list[RunInfo]:
        """The human revisions pulled from a job, oldest first."""
        with self.session() as s:
            job_row = self._job(s, job)
            task_row = s.get(CvatTask, job_row.task_link_id)
            query = select(Run).where(
                Run.kind == "human",
                Run.dataset_id == task_row.dataset_id,
                Run.cvat_server == task_row.server,
                Run.cvat_task_id == task_row.task_id,
                Run.cvat_job_id == job_row.job_id,
            )
            return [run_info(r) for r in s.execute(query.order_by(Run.id)).scalars()]
