"""Push a pre-label run into CVAT: task(s) with the samples' images, pre-labels per job,
assignments, and every id recorded in the store.

Idempotent by construction: the task is found by name before one is created, frames and
jobs are upserted, and a job whose annotations are exactly (a prefix of) what this run would
upload is simply (re)written with a ``PUT``. A job that a human has touched — any shape that is
not one of this run's pre-labels, or any tag or track — is refused unless ``force``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvat_bridge.annotations import job_annotations, shape_key, upload_job_shapes
from cvat_bridge.client import CvatError
from cvat_bridge.jobs import JobInfo, assign_jobs, list_jobs, plan_assignments
from cvat_bridge.tasks import SCORE_ATTRIBUTE, LabelInfo, Resources, ensure_task, labels_spec, task_labels

__all__ = ["PushResult", "push_run", "resources_for", "shapes_for_frame"]


@dataclass(frozen=True)
class PushResult:
    task_id: int
    task_link_id: int
    jobs: tuple[int, ...]
    shapes: int
    annotation_requests: int
    skipped_jobs: tuple[int, ...] = ()
    assignments: Mapping[int, str] = field(default_factory=dict)


def resources_for(uris: Sequence[str]) -> Resources:
    """Where the images live: local files, ``share://path`` on the CVAT share, or
    ``cloud://<storage id>/<key>`` in a CVAT cloud storage. One task, one kind."""
    kinds = set()
    paths: list[str] = []
    storage_ids = set()
    for uri in uris:
        if uri.startswith("share://"):
            kinds.add("share")
            paths.append(uri[len("share://") :])
        elif uri.startswith("cloud://"):
            storage, _, key = uri[len("cloud://") :].partition("/")
            if not storage.isdigit() or not key:
                raise CvatError(f"cloud sample URI must be cloud://<storage id>/<key>, got {uri!r}")
            kinds.add("cloud")
            storage_ids.add(int(storage))
            paths.append(key)
        else:
            kinds.add("local")
            paths.append(str(Path(uri)))
    if len(kinds) > 1 or len(storage_ids) > 1:
        raise CvatError("the samples of one task must all be local files, all on the share, or all in one cloud storage")
    kind = kinds.pop()
    return Resources(kind, tuple(paths), storage_ids.pop() if storage_ids else None)


def shapes_for_frame(
    det: Any, frame: int, ontology: Any, labels: Mapping[str, LabelInfo], *, score_field: bool
) -> tuple[list[Any], list[int]]:
    """cvat-sdk shape requests for one frame's detections, and the store annotation id of each.

    The label's type decides the shape: ``rectangle`` boxes, ``mask`` masks (CVAT RLE),
    ``polygon`` polygons from the masks; detections without masks become rectangles. The
    score goes into the ``score`` field where the server has one, and into the ``score``
    attribute where the label has that attribute.
    """
    from serverless.convert.cvat_shapes import to_cvat_shapes

    shapes: list[Any] = []
    annotation_ids: list[int] = []
    type_of = {label.name: label.type for label in ontology.labels}
    label_ids = {name: info.id for name, info in labels.items()}
    for name in dict.fromkeys(det.labels.tolist()):
        if name not in labels:
            raise CvatError(f"label {name!r} is not a label of the CVAT task")
        group = det[det.labels == name]
        kind = type_of.get(name, "rectangle")
        if group.masks is not None:
            if kind == "rectangle":
                group = group.with_columns(masks=None, polygons=None)
            else:
                group = group[group.masks.reshape(len(group), -1).any(axis=1)]
        spec_id = labels[name].attributes.get(SCORE_ATTRIBUTE)
        made = to_cvat_shapes(
            group,
            label_ids,
            frame=frame,
            as_polygons=kind == "polygon" and group.masks is not None,
            score_spec_id=spec_id if (spec_id is not None or not score_field) else None,
        )
        if len(made) != len(group):
            raise CvatError(f"frame {frame}: {len(group) - len(made)} {name!r} detections have no usable shape")
        shapes.extend(made)
        annotation_ids.extend(int(i) for i in group.data["annotation_id"])
    return shapes, annotation_ids


def _job_is_ours(current: Any, expected: Sequence[Any]) -> bool:
    """True when the job holds nothing, or only (a subset of) the shapes this run uploads."""
    if current.tags or current.tracks:
        return False
    if not current.shapes:
        return True
    if any(str(getattr(s, "source", "auto")) != "auto" for s in current.shapes):
        return False
    left = Counter(shape_key(s) for s in expected)
    for shape in current.shapes:
        key = shape_key(shape)
        if left[key] <= 0:
            return False
        left[key] -= 1
    return True


def push_run(
    store: Any,
    client: Any,
    *,
    dataset: str,
    run_name: str,
    task_name: str,
    ontology: Any | None = None,
    project_id: int | None = None,
    segment_size: int | None = None,
    assignees: Sequence[str] | Mapping[int, str] = (),
    force: bool = False,
    status_check_period: float | None = None,
    report: Callable[[str], None] = lambda message: None,
) -> PushResult:
    """Create (or complete) the CVAT task for a finished pre-label run and upload its labels."""
    from serverless.ontology import parse_ontology

    from cvat_bridge.client import public_url

    run = store.get_run(dataset, run_name)
    if run.finished_at is None:
        raise CvatError(f"run {run_name!r} of dataset {dataset!r} is not finished: finish or rerun the pre-labelling")
    if ontology is None:
        if not run.ontology_yaml:
            raise CvatError(f"run {run_name!r} records no ontology: pass --ontology or --project")
        ontology = parse_ontology(run.ontology_yaml, f"run {run_name}")
    sample_ids = sorted(store.covered_samples(run))
    if not sample_ids:
        raise CvatError(f"run {run_name!r} covers no samples")
    samples = {s.id: s for s in store.samples(dataset, ids=sample_ids)}
    resources = resources_for([samples[i].uri for i in sample_ids])
    server = public_url(client.api_map.host)

    task = ensure_task(
        client,
        task_name,
        resources,
        labels=None if project_id is not None else labels_spec(ontology),
        project_id=project_id,
        segment_size=segment_size,
        status_check_period=status_check_period,
    )
    report(f"task {task.id} ({task_name!r}) has {task.size} frames")
    link = store.link_cvat_task(dataset, server, task.id, name=task_name, project_id=project_id, run=run)
    frame_of = {sample_id: frame for frame, sample_id in enumerate(sample_ids)}
    store.link_frames(link, {frame: sample_id for sample_id, frame in frame_of.items()})

    from cvat_sdk.api_client import models

    score_field = "score" in models.LabeledShapeRequest.attribute_map
    labels = task_labels(client, task)
    pushed = store.pushed_shapes(link)  # shape id → annotation id
    jobs = list_jobs(client, task_id=task.id)
    total_shapes = requests = 0
    skipped: list[int] = []
    for job in jobs:
        _upsert(store, link, job)
        frames = range(job.start_frame, job.stop_frame + 1)
        job_samples = [sample_ids[f] for f in frames if f < len(sample_ids)]
        dets = store.annotations_of(run, sample_ids=job_samples, masks=True)
        shapes: list[Any] = []
        annotation_ids: list[int] = []
        for sample_id in job_samples:
            made, ids = shapes_for_frame(dets[sample_id], frame_of[sample_id], ontology, labels, score_field=score_field)
            shapes.extend(made)
            annotation_ids.extend(ids)
        current = job_annotations(client, job.id)
        ours = _job_is_ours(current, shapes)
        current_ids = {int(s.id) for s in current.shapes}
        if ours and shapes and len(current_ids) == len(shapes) and current_ids <= pushed.keys():
            report(f"job {job.id}: already pushed ({len(shapes)} shapes)")
            total_shapes += len(shapes)
            continue
        if not force and not ours:
            report(f"job {job.id}: a human has changed it; not overwritten (use --force)")
            skipped.append(job.id)
            continue
        ids, sent = upload_job_shapes(client, job.id, shapes)
        requests += sent
        total_shapes += len(ids)
        store.record_pushed_shapes(link, dict(zip(annotation_ids, ids)), job_id=job.id)
        report(f"job {job.id}: {len(ids)} shapes in {sent} request(s)")

    applied: dict[int, str] = {}
    plan = plan_assignments([j.id for j in jobs], assignees)
    if plan:
        applied = assign_jobs(client, plan)
    for job in list_jobs(client, task_id=task.id):
        _upsert(store, link, job)
    return PushResult(
        task_id=int(task.id),
        task_link_id=link.id,
        jobs=tuple(j.id for j in jobs),
        shapes=total_shapes,
        annotation_requests=requests,
        skipped_jobs=tuple(skipped),
        assignments=applied,
    )


def _upsert(store: Any, link: Any, job: JobInfo) -> Any:
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
