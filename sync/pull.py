"""Pull corrected labels from CVAT into new human revisions, one job at a time.

Incremental: the jobs are listed (one paged request) and a job's annotations are fetched
only when its ``updated_date`` moved since its last pull, so a pull with nothing new sends no
annotation request. Each job is stored in one transaction (`Store.record_human_revision`),
so an interrupted pull (even ``kill -9``) loses nothing and a rerun finishes the remaining
jobs. Shapes of type rectangle, polygon and mask and the job's tags (image-level labels,
stored as rows of shape type ``tag``, `sync.store.convert.tags_to_detections`) are kept with
their attributes; tracks and other shape types are not pulled. A tag or shape left as it was
pushed links to its pre-label by its CVAT id (tags and shapes are numbered apart). Labels
renamed, deleted or added in CVAT since the push are told apart by their ids, reported, and
recorded with each revision (`sync.label_changes`), for shapes and tags alike.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cvat_bridge.annotations import JobAnnotations, job_annotations, shape_type
from cvat_bridge.client import CvatError, CvatSession
from cvat_bridge.jobs import JobInfo, list_jobs
from cvat_bridge.tasks import LabelInfo, get_task, read_task, task_labels
from sync.label_changes import LabelChanges, label_changes

if TYPE_CHECKING:
    from serverless.detections import Detections
    from sync.store import CvatJobInfo, CvatTaskInfo, Store

__all__ = ["PullResult", "job_detections", "job_tags", "pull_jobs", "store_job", "task_gone"]


@dataclass(frozen=True)
class PullResult:
    """Jobs pulled into new revisions, jobs unchanged since their last pull, the revision
    names and the number of shapes and of tags stored."""

    pulled: tuple[int, ...]
    unchanged: tuple[int, ...]
    revisions: tuple[str, ...]
    shapes: int
    tags: int = 0


@dataclass(frozen=True)
class _TaskContext:
    frames: dict[int, int]
    sizes: dict[int, tuple[int, int]]
    labels: dict[str, LabelInfo]
    changes: LabelChanges


def _attributes(shape: Mapping[str, Any], names: Mapping[int, str]) -> dict[str, str] | None:
    values = {names.get(int(a["spec_id"]), str(a["spec_id"])): str(a["value"]) for a in shape.get("attributes") or []}
    return values or None


def job_detections(
    annotations: JobAnnotations,
    labels: Mapping[str, LabelInfo],
    frames: Mapping[int, int],
    sizes: Mapping[int, tuple[int, int]],
    *,
    job_id: int,
    names: Mapping[int, str] | None = None,
) -> tuple[dict[int, Detections], int]:
    """A job's shapes (``job_annotations`` JSON) as `Detections` per sample id, with an
    ``attributes`` data column; frames are task-relative, ``frames`` maps them to samples.
    ``names`` (CVAT label id → name to store; default: the labels' names now) keeps a label
    renamed in CVAT under the name it was pushed with (`sync.label_changes`)."""
    import numpy as np

    from serverless.convert.cvat_shapes import SUPPORTED_SHAPE_TYPES, from_cvat_shapes

    label_names = dict(names) if names is not None else {info.id: name for name, info in labels.items()}
    attribute_names = {spec: attr for info in labels.values() for attr, spec in info.attributes.items()}
    by_frame: dict[int, list[Any]] = defaultdict(list)
    for shape in annotations["shapes"]:
        by_frame[int(shape["frame"])].append(shape)
    result = {}
    count = 0
    for frame, shapes in sorted(by_frame.items()):
        if frame not in frames:
            raise CvatError(f"job {job_id}: frame {frame} is not linked to a sample of the store")
        width, height = sizes[frames[frame]]
        try:
            det = from_cvat_shapes(shapes, label_names, width=width, height=height)
        except ValueError as err:
            raise CvatError(f"job {job_id}, frame {frame}: {err}") from None
        kept = [s for s in shapes if shape_type(s) in SUPPORTED_SHAPE_TYPES]
        attributes = np.empty(len(kept), dtype=object)
        attributes[:] = [_attributes(s, attribute_names) for s in kept]
        result[frames[frame]] = det.with_columns(data={**dict(det.data), "attributes": attributes})
        count += len(det)
    return result, count


def job_tags(
    annotations: JobAnnotations,
    labels: Mapping[str, LabelInfo],
    frames: Mapping[int, int],
    sizes: Mapping[int, tuple[int, int]],
    *,
    job_id: int,
    names: Mapping[int, str] | None = None,
) -> tuple[dict[int, Detections], int]:
    """A job's tags (``job_annotations`` JSON) as store rows per sample id: whole-frame rows
    of shape type ``tag`` (`sync.store.convert.tags_to_detections`) with ``cvat_id`` (the CVAT
    tag id), ``source`` and ``attributes``; ``names`` as in `job_detections`."""
    import numpy as np

    from serverless.convert.cvat_shapes import from_cvat_tags
    from sync.store.convert import tags_to_detections

    label_names = dict(names) if names is not None else {info.id: name for name, info in labels.items()}
    attribute_names = {spec: attr for info in labels.values() for attr, spec in info.attributes.items()}
    by_frame: dict[int, list[Any]] = defaultdict(list)
    for tag in annotations["tags"]:
        by_frame[int(tag["frame"])].append(tag)
    result = {}
    for frame, tags in sorted(by_frame.items()):
        if frame not in frames:
            raise CvatError(f"job {job_id}: frame {frame} is not linked to a sample of the store")
        try:
            found, columns = from_cvat_tags(tags, label_names)
        except ValueError as err:
            raise CvatError(f"job {job_id}, frame {frame}: {err}") from None
        attributes = np.empty(len(tags), dtype=object)
        attributes[:] = [_attributes(t, attribute_names) for t in tags]
        width, height = sizes[frames[frame]]
        columns = {"cvat_id": columns["cvat_id"], "source": columns["source"], "attributes": attributes}
        result[frames[frame]] = tags_to_detections(found, width=width, height=height, data=columns)
    return result, len(annotations["tags"])


def pull_jobs(
    store: Store,
    session: CvatSession,
    *,
    task_id: int | None = None,
    project_id: int | None = None,
    stage: str | None = None,
    state: str | None = None,
    report: Callable[[str], None] = lambda message: None,
) -> PullResult:
    """Pull every matching job that changed since its last pull into a new human revision."""
    if (task_id is None) == (project_id is None):
        raise ValueError("give exactly one of task_id or project_id")
    server = session.server
    if task_id is not None and store.get_cvat_task(server, task_id) is None:
        raise CvatError(_not_pushed(task_id, server))
    jobs = list_jobs(session, task_id=task_id, project_id=project_id, stage=stage, state=state)
    if task_id is not None and not jobs and get_task(session, task_id) is None:
        raise CvatError(task_gone(store, store.get_cvat_task(server, task_id)))
    pulled: list[int] = []
    unchanged: list[int] = []
    revisions: list[str] = []
    shapes = tag_total = 0
    links: dict[int, CvatTaskInfo] = {}
    contexts: dict[int, _TaskContext] = {}
    for job in jobs:
        if job.task_id not in links:
            link = store.get_cvat_task(server, job.task_id)
            if link is None:
                raise CvatError(_not_pushed(job.task_id, server))
            links[job.task_id] = link
        link = links[job.task_id]
        job_link = store_job(store, link, job)
        if not job_link.needs_pull:
            unchanged.append(job.id)
            continue
        if job.task_id not in contexts:
            contexts[job.task_id] = _task_context(store, session, link)
            for line in contexts[job.task_id].changes.messages(f"task {job.task_id}"):
                report(line)
        context = contexts[job.task_id]
        annotations = job_annotations(session, job.id)
        where = (context.labels, context.frames, context.sizes)
        detections, count = job_detections(annotations, *where, job_id=job.id, names=context.changes.names)
        tags, tag_count = job_tags(annotations, *where, job_id=job.id, names=context.changes.names)
        revision = store.record_human_revision(
            job_link,
            detections,
            tags=tags,
            updated_date=job.updated_date,
            assignee=job.assignee,
            stage=job.stage,
            state=job.state,
            params={"label_changes": context.changes.to_params()} if context.changes else None,
        )
        pulled.append(job.id)
        revisions.append(revision.name)
        shapes += count
        tag_total += tag_count
        tagged = f" and {tag_count} tags" if tag_count else ""
        report(f"job {job.id}: {count} shapes{tagged} → revision {revision.name}")
    return PullResult(tuple(pulled), tuple(unchanged), tuple(revisions), shapes, tag_total)


def task_gone(store: Store, link: CvatTaskInfo) -> str:
    """The message for a linked task the server no longer has (it answers 404)."""
    dataset = store.dataset_by_id(link.dataset_id).name
    run = store.run_by_id(link.run_id).name if link.run_id is not None else None
    origin = f"it was pushed from run {run!r} of dataset {dataset!r}" if run else f"it holds dataset {dataset!r}"
    name = f" ({link.name!r})" if link.name else ""
    return (
        f"task {link.task_id}{name} no longer exists on {link.server} (deleted, or this user cannot see it); "
        f"{origin}"
    )


def _not_pushed(task_id: int, server: str) -> str:
    return (
        f"task {task_id} on {server} was not pushed from this store: push it first "
        "(autolabel cvat push) so its frames map to samples"
    )


def _task_context(store: Store, session: CvatSession, link: CvatTaskInfo) -> _TaskContext:
    frames = store.frames_of(link)
    dataset = store.dataset_by_id(link.dataset_id)
    sizes = {s.id: (s.width, s.height) for s in store.samples(dataset, ids=list(frames.values()))}
    labels = task_labels(session, read_task(session, link.task_id))
    changes = label_changes(store.task_labels_at_push(link), {info.id: name for name, info in labels.items()})
    return _TaskContext(frames, sizes, labels, changes)


def store_job(store: Store, link: CvatTaskInfo, job: JobInfo) -> CvatJobInfo:
    """Record a job as just listed on the server (`Store.upsert_cvat_job`)."""
    return store.upsert_cvat_job(
        link,
        job.id,
        start_frame=job.start_frame,
        stop_frame=job.stop_frame,
        assignee=job.assignee,
        stage=job.stage,
        state=job.state,
        updated_date=job.updated_date,
    )
