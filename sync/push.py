"""Push a pre-label run into CVAT: task(s) with the samples' images, pre-labels per job,
assignments, and every id recorded in the store.

Idempotent by construction: the task is found by name before one is created, frames and
jobs are upserted, a job that holds exactly what was pushed is left alone, and a job whose
upload was interrupted (it holds nothing, or only some of this run's shapes, and the store
recorded none of them) is simply rewritten with a ``PUT``. A job a human has touched — a
pushed shape moved, relabelled or deleted, a shape added, any tag or track — is refused
unless ``force``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvat_bridge.annotations import (
    DEFAULT_MAX_REQUEST_BYTES,
    JobAnnotations,
    job_annotations,
    shape_key,
    upload_job_shapes,
)
from cvat_bridge.client import CvatError, CvatSession
from cvat_bridge.jobs import JobInfo, assign_jobs, list_jobs, plan_assignments, user_ids
from cvat_bridge.tasks import LabelInfo, Resources, ensure_task, labels_spec, task_labels
from serverless.convert.cvat_contract import SCORE_ATTRIBUTE
from sync.pull import store_job

if TYPE_CHECKING:
    from serverless.detections import Detections
    from serverless.ontology import Ontology
    from sync.store import CvatTaskInfo, RunInfo, Store

__all__ = [
    "PushResult",
    "job_shapes",
    "job_state",
    "push_run",
    "pushed_geometry",
    "resources_for",
    "shapes_for_frame",
    "upload_job",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    """What a push did: the task, its jobs, the pre-labels now in CVAT, the annotation
    requests sent (0 on a rerun with nothing to do), the human-edited jobs left alone."""

    task_id: int
    task_link_id: int
    jobs: tuple[int, ...]
    shapes: int
    annotation_requests: int
    skipped_jobs: tuple[int, ...] = ()
    assignments: Mapping[int, str] = field(default_factory=dict)
    forced_jobs: tuple[int, ...] = ()


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
        raise CvatError(
            "the samples of one task must all be local files, all on the share, or all in one cloud storage"
        )
    kind = kinds.pop()
    return Resources(kind, tuple(paths), storage_ids.pop() if storage_ids else None)


def shapes_for_frame(
    det: Detections,
    frame: int,
    ontology: Ontology,
    labels: Mapping[str, LabelInfo],
    *,
    score_field: bool | None = None,
) -> tuple[list[dict[str, Any]], list[int]]:
    """CVAT shapes (JSON dicts) for one frame's detections, and the store annotation id of each.

    The label's type decides the shape (`serverless.convert.cvat_shapes.delivered_shape_dicts`):
    ``rectangle`` boxes, ``mask`` masks (CVAT RLE), ``polygon`` polygons from the masks;
    detections without masks become rectangles, and mask or polygon detections whose mask is
    empty are left out (no shape to show). The score goes into the ``score`` field where the
    SDK has one (``score_field`` None: `serverless.convert.cvat_contract.sdk_shapes_have_score`;
    no recorded server keeps it) and into the ``score`` attribute where the label has that
    attribute.
    """
    from serverless.convert.cvat_shapes import delivered_shape_dicts

    names = det.labels.tolist()
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise CvatError(f"labels {unknown} are not labels of the CVAT task")
    try:
        shapes, origin = delivered_shape_dicts(
            det,
            {label.name: label.type for label in ontology.labels},
            {name: info.id for name, info in labels.items()},
            frame=frame,
            score_spec_ids={name: info.attributes.get(SCORE_ATTRIBUTE) for name, info in labels.items()},
            score_field=score_field,
        )
    except ValueError as err:
        raise CvatError(str(err)) from None
    annotation_ids = det.data["annotation_id"]
    return shapes, [int(annotation_ids[i]) for i in origin]


def job_shapes(
    dets: Mapping[int, Detections], frames: Mapping[int, int], ontology: Ontology, labels: Mapping[str, LabelInfo]
) -> tuple[list[dict[str, Any]], list[int]]:
    """A job's shapes, frame by frame (`shapes_for_frame`), and the store annotation id of each.

    ``frames`` is the job's ``{frame: sample id}``, ``dets`` the run's `Detections` (with
    masks) of each of those samples."""
    shapes: list[dict[str, Any]] = []
    annotation_ids: list[int] = []
    for frame, sample_id in sorted(frames.items()):
        made, ids = shapes_for_frame(dets[sample_id], frame, ontology, labels)
        shapes.extend(made)
        annotation_ids.extend(ids)
    return shapes, annotation_ids


def pushed_geometry(
    annotation_ids: Sequence[int], shapes: Sequence[Mapping[str, Any]]
) -> dict[int, tuple[str, list[float]]]:
    """``{annotation id: (CVAT shape type, points)}``: what a push sent for each pre-label,
    recorded so that evaluation compares the annotators' shapes with what they were shown."""
    return {int(a): (str(s["type"]), [float(v) for v in s["points"]]) for a, s in zip(annotation_ids, shapes)}


def upload_job(
    store: Store,
    session: CvatSession,
    link: CvatTaskInfo,
    job_id: int,
    shapes: Sequence[Mapping[str, Any]],
    annotation_ids: Sequence[int],
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> tuple[list[int], int]:
    """Replace the job's annotations with ``shapes`` (`upload_job_shapes`) and record in the
    store the CVAT shape id each pre-label got and the geometry sent (`pushed_geometry`);
    the server's shape ids (in ``shapes`` order) and the number of requests sent."""
    ids, sent = upload_job_shapes(session, job_id, shapes, max_request_bytes=max_request_bytes)
    store.record_pushed_shapes(
        link,
        dict(zip(annotation_ids, ids, strict=True)),
        job_id=job_id,
        geometry=pushed_geometry(annotation_ids, shapes),
    )
    return ids, sent


def job_state(
    current: JobAnnotations,
    shapes: Sequence[Mapping[str, Any]],
    annotation_ids: Sequence[int],
    pushed: Mapping[int, int],
) -> str:
    """What a job holds compared with what this run puts there.

    ``"pushed"``: exactly the shapes recorded as pushed, unchanged (nothing to do).
    ``"partial"``: nothing, or only some of this run's shapes with none recorded in the store
    (an interrupted upload: safe to rewrite). ``"human"``: anything else (someone edited it).
    ``pushed`` is the store's ``{CVAT shape id: annotation id}`` of the task.
    """
    wanted = set(annotation_ids)
    recorded = {shape_id: ann for shape_id, ann in pushed.items() if ann in wanted}
    if current["tags"] or current["tracks"]:
        return "human"
    now = {int(s["id"]): s for s in current["shapes"]}
    if recorded:
        if set(now) != set(recorded):
            return "human"  # a pushed shape was deleted, or a shape was added
        expected = {ann: shape_key(shape) for ann, shape in zip(annotation_ids, shapes)}
        if any(shape_key(now[shape_id]) != expected[ann] for shape_id, ann in recorded.items()):
            return "human"  # moved, reshaped or relabelled
        return "pushed"
    if not now:
        return "pushed" if not shapes else "partial"
    if any(str(s.get("source") or "") != "auto" for s in now.values()):
        return "human"
    left = Counter(shape_key(s) for s in shapes)
    for shape in now.values():
        key = shape_key(shape)
        if left[key] <= 0:
            return "human"
        left[key] -= 1
    return "partial"


def push_run(
    store: Store,
    session: CvatSession,
    *,
    dataset: str,
    run_name: str,
    task_name: str,
    ontology: Ontology | None = None,
    project_id: int | None = None,
    segment_size: int | None = None,
    assignees: Sequence[str] | Mapping[int, str] = (),
    force: bool = False,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    report: Callable[[str], None] = lambda message: None,
    sample_ids: Sequence[int] | None = None,
) -> PushResult:
    """Create (or complete) the CVAT task for a finished pre-label run and upload its labels.

    Frames follow the run's sample ids in ascending order. Jobs a human has edited are
    reported in ``skipped_jobs`` and left alone, unless ``force`` (then they are rewritten and
    listed in ``forced_jobs``). Assignments (usernames round-robin, or job id → username) are
    applied last; a job already assigned to its user is not touched. ``sample_ids`` pushes only
    those samples of the run (e.g. the hard samples picked by ``autolabel select``, as a
    review task).
    """
    run, ontology, sample_ids = _run_to_push(store, dataset, run_name, ontology, sample_ids)
    samples = {s.id: s for s in store.samples(dataset, ids=sample_ids)}
    resources = resources_for([samples[i].uri for i in sample_ids])
    usernames = list(assignees.values()) if isinstance(assignees, Mapping) else list(assignees)
    user_id = user_ids(session, usernames)  # unknown users fail before anything is created

    task = ensure_task(
        session,
        task_name,
        resources,
        labels=None if project_id is not None else labels_spec(ontology),
        project_id=project_id,
        segment_size=segment_size,
    )
    report(f"task {task.id} ({task_name!r}) has {task.size} frames")
    link = store.link_cvat_task(dataset, session.server, task.id, name=task_name, project_id=project_id, run=run)
    frame_of = {sample_id: frame for frame, sample_id in enumerate(sample_ids)}
    store.link_frames(link, {frame: sample_id for sample_id, frame in frame_of.items()})
    labels = task_labels(session, task)
    store.record_task_labels(link, {info.id: (name, info.type) for name, info in labels.items()})

    pusher = _JobPusher(
        store=store, session=session, link=link, run=run, ontology=ontology, labels=labels, frame_of=frame_of,
        pushed=store.pushed_shapes(link), force=force, max_request_bytes=max_request_bytes, report=report,
    )
    jobs = list_jobs(session, task_id=task.id)
    for job in jobs:
        pusher.push([sample_ids[f] for f in range(job.start_frame, job.stop_frame + 1) if f < len(sample_ids)], job)

    applied: dict[int, str] = {}
    try:
        plan = plan_assignments([j.id for j in jobs], assignees)
    except ValueError as err:
        raise CvatError(f"task {task.id}: {err}") from None
    if plan:
        applied = assign_jobs(session, plan, ids=user_id, jobs={j.id: j for j in jobs})
    for job in list_jobs(session, task_id=task.id):
        store_job(store, link, job)
    return PushResult(
        task_id=int(task.id),
        task_link_id=link.id,
        jobs=tuple(j.id for j in jobs),
        shapes=pusher.shapes,
        annotation_requests=pusher.requests,
        skipped_jobs=tuple(pusher.skipped),
        assignments=applied,
        forced_jobs=tuple(pusher.forced),
    )


def _run_to_push(
    store: Store, dataset: str, run_name: str, ontology: Ontology | None, sample_ids: Sequence[int] | None
) -> tuple[RunInfo, Ontology, list[int]]:
    """The finished, non-human run, its ontology (the one given, else the run's) and the
    samples to push (those of ``sample_ids`` it covers, else all it covers), ascending."""
    from serverless.ontology import parse_ontology

    run = store.get_run(dataset, run_name)
    if run.kind == "human":
        raise CvatError(f"run {run_name!r} of dataset {dataset!r} is a human revision pulled from CVAT; "
                        "push a prelabel (or import) run")
    if run.finished_at is None:
        raise CvatError(f"run {run_name!r} of dataset {dataset!r} is not finished: finish or rerun the pre-labelling")
    if ontology is None:
        if not run.ontology_yaml:
            raise CvatError(f"run {run_name!r} records no ontology: pass --ontology or --project")
        ontology = parse_ontology(run.ontology_yaml, f"run {run_name}")
    covered = sorted(store.covered_samples(run))
    if sample_ids is not None:
        wanted = set(sample_ids)
        missing = sorted(wanted - set(covered))
        if missing:
            raise CvatError(f"run {run_name!r} does not cover samples {missing[:10]}")
        covered = [i for i in covered if i in wanted]
    if not covered:
        raise CvatError(f"run {run_name!r} covers no samples" if sample_ids is None else "no sample to push was given")
    return run, ontology, covered


@dataclass
class _JobPusher:
    """Pushes a run's pre-labels job by job: a job holding them is left as it is, an
    interrupted upload rewritten, a human's edits kept unless ``force``."""

    store: Store
    session: CvatSession
    link: CvatTaskInfo
    run: RunInfo
    ontology: Ontology
    labels: Mapping[str, LabelInfo]
    frame_of: Mapping[int, int]
    pushed: Mapping[int, int]
    """The store's ``{CVAT shape id: annotation id}`` of the task."""
    force: bool
    max_request_bytes: int
    report: Callable[[str], None]
    shapes: int = 0
    requests: int = 0
    skipped: list[int] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)

    def push(self, job_samples: list[int], job: JobInfo) -> None:
        """Push the pre-labels of ``job_samples`` (the job's frames' samples) to ``job``."""
        dets = self.store.annotations_of(self.run, sample_ids=job_samples, masks=True)
        frames = {self.frame_of[sample_id]: sample_id for sample_id in job_samples}
        shapes, annotation_ids = job_shapes(dets, frames, self.ontology, self.labels)
        state = job_state(job_annotations(self.session, job.id), shapes, annotation_ids, self.pushed)
        if state == "pushed":
            self.report(f"job {job.id}: already pushed ({len(shapes)} shapes)")
            self.shapes += len(shapes)
            return
        if state == "human":
            if not self.force:
                self.report(f"job {job.id}: a human has changed it; not overwritten (use --force)")
                self.skipped.append(job.id)
                return
            wanted = set(annotation_ids)
            self.store.forget_pushed_shapes(self.link, [sid for sid, ann in self.pushed.items() if ann in wanted])
            self.forced.append(job.id)
            self.report(f"job {job.id}: a human has changed it; overwriting (--force)")
        ids, sent = upload_job(
            self.store, self.session, self.link, job.id, shapes, annotation_ids, max_request_bytes=self.max_request_bytes
        )
        self.requests += sent
        self.shapes += len(ids)
        self.report(f"job {job.id}: {len(ids)} shapes in {sent} request(s)")
