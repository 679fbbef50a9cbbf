"""Pull corrected labels from CVAT into new human revisions, one job at a time.

Incremental: a job is fetched only when its ``updated_date`` moved since its last pull.
Each job is stored in one transaction (`Store.record_human_revision`), so an interrupted pull
(even ``kill -9``) loses nothing and a rerun finishes the remaining jobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvat_bridge.annotations import job_annotations
from cvat_bridge.client import CvatError, public_url
from cvat_bridge.jobs import JobInfo, list_jobs
from cvat_bridge.tasks import task_labels

__all__ = ["PullResult", "pull_jobs"]


@dataclass(frozen=True)
class PullResult:
    pulled: tuple[int, ...]
    unchanged: tuple[int, ...]
    revisions: tuple[str, ...]
    shapes: int


def _attributes(shape: Any, names: dict[int, str]) -> dict[str, str] | None:
    values = {names.get(int(a.spec_id), str(a.spec_id)): str(a.value) for a in (shape.attributes or [])}
    return values or None


def job_detections(client: Any, task: Any, job: JobInfo, frames: dict[int, int], sizes: dict[int, tuple[int, int]]) -> tuple[dict[int, Any], int]:
    """The job's shapes as `Detections` per sample id (frames are task-relative)."""
    import numpy as np

    from serverless.convert.cvat_shapes import from_cvat_shapes

    labels = task_labels(client, task)
    label_names = {info.id: name for name, info in labels.items()}
    attribute_names = {spec: attr for info in labels.values() for attr, spec in info.attributes.items()}
    data = job_annotations(client, job.id)
    by_frame: dict[int, list[Any]] = defaultdict(list)
    for shape in data.shapes:
        by_frame[int(shape.frame)].append(shape)
    result = {}
    count = 0
    for frame, shapes in by_frame.items():
        if frame not in frames:
            raise CvatError(f"job {job.id}: frame {frame} is not linked to a sample of the store")
        width, height = sizes[frames[frame]]
        det = from_cvat_shapes(shapes, label_names, width=width, height=height)
        kept = [s for s in shapes if str(getattr(s.type, "value", s.type)) in {"rectangle", "polygon", "mask"}]
        det = det.with_columns(
            data={**dict(det.data), "attributes": np.array([_attributes(s, attribute_names) for s in kept] or [], dtype=object)}
        )
        result[frames[frame]] = det
        count += len(det)
    return result, count


def pull_jobs(
    store: Any,
    client: Any,
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
    server = public_url(client.api_map.host)
    jobs = list_jobs(client, task_id=task_id, project_id=project_id, stage=stage, state=state)
    pulled: list[int] = []
    unchanged: list[int] = []
    revisions: list[str] = []
    shapes = 0
    tasks: dict[int, tuple[Any, Any, dict[int, int], dict[int, tuple[int, int]]]] = {}
    for job in jobs:
        if job.task_id not in tasks:
            link = store.get_cvat_task(server, job.task_id)
            if link is None:
                raise CvatError(
                    f"task {job.task_id} on {server} was not pushed from this store: push it first "
                    "(autolabel cvat push) so its frames map to samples"
                )
            frames = store.frames_of(link)
            dataset = next(d for d in store.list_datasets() if d.id == link.dataset_id)
            sizes = {s.id: (s.width, s.height) for s in store.samples(dataset, ids=list(frames.values()))}
            tasks[job.task_id] = (link, client.tasks.retrieve(job.task_id), frames, sizes)
        link, task, frames, sizes = tasks[job.task_id]
        job_link = store.upsert_cvat_job(
            link,
            job.id,
            start_frame=job.start_frame,
            stop_frame=job.stop_frame,
            assignee=job.assignee,
            stage=job.stage,
            state=job.state,
            updated_date=job.updated_date,
        )
        if not job_link.needs_pull:
            unchanged.append(job.id)
            continue
        detections, count = job_detections(client, task, job, frames, sizes)
        revision = store.record_human_revision(
            job_link,
            detections,
            updated_date=job.updated_date,
            assignee=job.assignee,
            stage=job.stage,
            state=job.state,
        )
        pulled.append(job.id)
        revisions.append(revision.name)
        shapes += count
        report(f"job {job.id}: {count} shapes → revision {revision.name}")
    return PullResult(tuple(pulled), tuple(unchanged), tuple(revisions), shapes)
