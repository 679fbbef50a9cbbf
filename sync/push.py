"""Push a pre-label run into CVAT: task(s) with the samples' images, pre-labels per job,
assignments, and every id recorded in the store.

Idempotent by construction: the task is found by name before one is created, frames and
jobs are upserted, a job that holds exactly what was pushed is left alone, and a job whose
upload was interrupted (it holds nothing, or only some of this run's shapes, and the store
recorded none of them) is simply rewritten with a ``PUT``. A job a human has touched — a
pushed shape moved, relabelled or deleted, a shape added, a pushed tag relabelled or deleted, a
tag added, any track — is refused unless ``force``.

A run's tags (rows of shape type ``tag``: image-level labels) go to CVAT as job tags with the
shapes (`serverless.convert.cvat_shapes.to_cvat_tag_dicts`: the label, source ``auto``, the
score in the label's ``score`` attribute when it has one), and each is recorded by its CVAT tag
id (`sync.store.Store.record_pushed_shapes` ``tags=``).

A review push (``reasons``: annotation id → reason of each annotation ``autolabel qa mistakes
--out`` scored, ``""`` for one no signal suspects) sends the run those annotations are of — a
pre-label or imported run, or a human revision pulled from CVAT — for the selection's samples
where it holds them: every label of a new task declares the text attribute ``qa_reason``
(`serverless.convert.cvat_contract.qa_reason_attribute_spec`) and each suspect shape carries
its reason there; the other shapes go without one (CVAT shows the default ``""``). Samples
whose scored annotations are another run's are left out and that run is named (push them with
it, as another task).
Reasons ride in an attribute, which the job comparison ignores, so reruns, resumes and the
detection of human edits are as for any push; a pull keeps ``qa_reason`` in the revision's
attributes like any other attribute.
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
    tag_key,
    upload_job_annotations,
)
from cvat_bridge.client import CvatError, CvatSession
from cvat_bridge.jobs import JobInfo, assign_jobs, list_jobs, plan_assignments, user_ids
from cvat_bridge.tasks import LabelInfo, Resources, ensure_task, labels_spec, task_labels
from serverless.convert.cvat_contract import (
    QA_REASON_ATTRIBUTE,
    SCORE_ATTRIBUTE,
    TAG_TYPE,
    qa_reason_attribute_spec,
    qa_reason_value,
)
from sync.pull import store_job

if TYPE_CHECKING:
    from serverless.detections import Detections
    from serverless.ontology import Ontology
    from sync.store import CvatTaskInfo, RunInfo, Store

__all__ = [
    "JobPrelabels",
    "PushResult",
    "forget_pushed",
    "job_prelabels",
    "job_state",
    "push_run",
    "pushed_geometry",
    "resources_for",
    "shapes_for_frame",
    "tags_for_frame",
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
    tags: int = 0
    """The pre-label tags now in CVAT (``shapes`` counts the shapes)."""
    reasons: int = 0
    """Review push: the shapes now in CVAT with their reason (``qa_reason``)."""
    left_out: tuple[int, ...] = ()
    """Review push: the selection's samples left out, their scored annotations being another run's."""
    other_runs: tuple[str, ...] = ()
    """Review push: the truth runs that hold the annotations of ``left_out`` (what to push them with)."""


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
    reasons: Mapping[int, str] | None = None,
) -> tuple[list[dict[str, Any]], list[int]]:
    """CVAT shapes (JSON dicts) for one frame's detections, and the store annotation id of each.

    The label's type decides the shape (`serverless.convert.cvat_shapes.delivered_shape_dicts`):
    ``rectangle`` boxes, ``mask`` masks (CVAT RLE), ``polygon`` polygons from the masks;
    detections without masks become rectangles, and mask or polygon detections whose mask is
    empty are left out (no shape to show). The score goes into the ``score`` field where the
    SDK has one (``score_field`` None: `serverless.convert.cvat_contract.sdk_shapes_have_score`;
    no recorded server keeps it) and into the ``score`` attribute where the label has that
    attribute. ``reasons`` (annotation id → text, a review push) puts each detection's reason,
    when it has a non-empty one, into its label's ``qa_reason`` attribute (`CvatError` when the
    label has none).
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
    ids = [int(annotation_ids[i]) for i in origin]
    for shape, annotation_id, index in zip(shapes, ids, origin, strict=True):
        if reasons and reasons.get(annotation_id):
            name = str(names[index])
            spec_id = labels[name].attributes.get(QA_REASON_ATTRIBUTE)
            if spec_id is None:
                raise CvatError(f"label {name!r} of the CVAT task has no {QA_REASON_ATTRIBUTE!r} attribute")
            reason = {"spec_id": int(spec_id), "value": qa_reason_value(reasons[annotation_id])}
            shape["attributes"] = [*shape["attributes"], reason]
    return shapes, ids


def tags_for_frame(
    det: Detections, frame: int, labels: Mapping[str, LabelInfo]
) -> tuple[list[dict[str, Any]], list[int]]:
    """CVAT tags (JSON dicts) for one frame's tag rows (shape type ``tag``), and the store
    annotation id of each (`serverless.convert.cvat_shapes.to_cvat_tag_dicts`)."""
    from serverless.convert.cvat_shapes import to_cvat_tag_dicts
    from serverless.models.base import Tags

    unknown = sorted(set(det.labels.tolist()) - set(labels))
    if unknown:
        raise CvatError(f"labels {unknown} are not labels of the CVAT task")
    tags = Tags(class_ids=det.class_ids, scores=det.scores, labels=det.labels)
    made = to_cvat_tag_dicts(
        tags,
        {name: info.id for name, info in labels.items()},
        frame=frame,
        score_spec_ids={name: info.attributes.get(SCORE_ATTRIBUTE) for name, info in labels.items()},
    )
    return made, [int(a) for a in det.data["annotation_id"].tolist()]


@dataclass(frozen=True)
class JobPrelabels:
    """What a push puts into one job: CVAT shapes and tags (JSON dicts) and the store
    annotation id of each, frame by frame."""

    shapes: list[dict[str, Any]]
    shape_annotations: list[int]
    tags: list[dict[str, Any]] = field(default_factory=list)
    tag_annotations: list[int] = field(default_factory=list)


def job_prelabels(
    dets: Mapping[int, Detections],
    frames: Mapping[int, int],
    ontology: Ontology,
    labels: Mapping[str, LabelInfo],
    *,
    reasons: Mapping[int, str] | None = None,
) -> JobPrelabels:
    """A job's shapes (`shapes_for_frame`) and tags (`tags_for_frame`), frame by frame.

    ``frames`` is the job's ``{frame: sample id}``, ``dets`` the run's `Detections` (with
    masks) of each of those samples, tags among them (`sync.store.convert.split_tags`);
    ``reasons`` as in `shapes_for_frame`."""
    from sync.store.convert import split_tags

    made = JobPrelabels([], [], [], [])
    for frame, sample_id in sorted(frames.items()):
        shapes, tags = split_tags(dets[sample_id])
        sent, ids = shapes_for_frame(shapes, frame, ontology, labels, reasons=reasons)
        made.shapes.extend(sent)
        made.shape_annotations.extend(ids)
        sent, ids = tags_for_frame(tags, frame, labels)
        made.tags.extend(sent)
        made.tag_annotations.extend(ids)
    return made


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
    prelabels: JobPrelabels,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> tuple[list[int], list[int], int]:
    """Replace the job's annotations with ``prelabels`` (`upload_job_annotations`) and record
    in the store the CVAT shape id each pre-label shape got with the geometry sent
    (`pushed_geometry`), and the CVAT tag id each tag got (what was sent: ``("tag", [])``);
    the server's shape ids and tag ids (in input order) and the number of requests sent."""
    ids, tag_ids, sent = upload_job_annotations(
        session, job_id, prelabels.shapes, prelabels.tags, max_request_bytes=max_request_bytes
    )
    geometry = pushed_geometry(prelabels.shape_annotations, prelabels.shapes)
    geometry.update({int(a): ("tag", []) for a in prelabels.tag_annotations})
    store.record_pushed_shapes(
        link,
        dict(zip(prelabels.shape_annotations, ids, strict=True)),
        job_id=job_id,
        geometry=geometry,
        tags=dict(zip(prelabels.tag_annotations, tag_ids, strict=True)),
    )
    return ids, tag_ids, sent


def _kind_state(
    now: Mapping[int, Mapping[str, Any]],
    sent: Sequence[Mapping[str, Any]],
    annotation_ids: Sequence[int],
    pushed: Mapping[int, int],
    key: Callable[[Any], tuple[Any, ...]],
) -> tuple[str, bool]:
    """`job_state` for one kind (shapes or tags): the state, and whether the store recorded
    any of this run's ids of that kind in the job."""
    wanted = set(annotation_ids)
    recorded = {cvat_id: ann for cvat_id, ann in pushed.items() if ann in wanted}
    if recorded:
        if set(now) != set(recorded):
            return "human", True  # a pushed one was deleted, or one was added
        expected = {ann: key(item) for ann, item in zip(annotation_ids, sent)}
        if any(key(now[cvat_id]) != expected[ann] for cvat_id, ann in recorded.items()):
            return "human", True  # moved, reshaped or relabelled
        return "pushed", True
    if not now:
        return ("pushed" if not sent else "partial"), False
    if any(str(item.get("source") or "") != "auto" for item in now.values()):
        return "human", False
    left = Counter(key(item) for item in sent)
    for item in now.values():
        if left[key(item)] <= 0:
            return "human", False
        left[key(item)] -= 1
    return "partial", False


def job_state(
    current: JobAnnotations,
    prelabels: JobPrelabels,
    pushed: Mapping[int, int],
    pushed_tags: Mapping[int, int] | None = None,
) -> str:
    """What a job holds compared with what this run puts there.

    ``"pushed"``: exactly the shapes and tags recorded as pushed, unchanged (nothing to do).
    ``"partial"``: nothing, or only some of this run's pre-labels with none recorded in the
    store (an interrupted upload: safe to rewrite). ``"human"``: anything else (someone edited
    it, or added a track). ``pushed`` and ``pushed_tags`` are the store's ``{CVAT shape id:
    annotation id}`` and ``{CVAT tag id: annotation id}`` of the task.
    """
    if current["tracks"]:
        return "human"
    shapes = _kind_state(
        {int(s["id"]): s for s in current["shapes"]}, prelabels.shapes, prelabels.shape_annotations, pushed, shape_key
    )
    now_tags = {int(t["id"]): t for t in current["tags"]}
    tags = _kind_state(now_tags, prelabels.tags, prelabels.tag_annotations, pushed_tags or {}, tag_key)
    states = {shapes[0], tags[0]}
    if "human" in states:
        return "human"
    if states == {"pushed"}:
        return "pushed"
    # some not there yet: a rewrite is safe only when the store recorded none of this run's ids
    return "human" if shapes[1] or tags[1] else "partial"


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
    reasons: Mapping[int, str] | None = None,
) -> PushResult:
    """Create (or complete) the CVAT task for a finished pre-label run and upload its labels.

    Frames follow the run's sample ids in ascending order. Jobs a human has edited are
    reported in ``skipped_jobs`` and left alone, unless ``force`` (then they are rewritten and
    listed in ``forced_jobs``). Assignments (usernames round-robin, or job id → username) are
    applied last; a job already assigned to its user is not touched. ``sample_ids`` pushes only
    those samples of the run (e.g. the hard samples picked by ``autolabel select``, as a
    review task). ``reasons`` (annotation id → reason, from a ``qa mistakes`` selection) makes
    it a review push of the run holding those annotations (module docstring).
    """
    review = bool(reasons)
    if review and project_id is not None:  # its labels are the project's: no qa_reason to show
        raise CvatError(
            f"a review push makes its own task labels with the {QA_REASON_ATTRIBUTE!r} attribute the reasons go into; "
            "push the review without --project"
        )
    run, ontology, sample_ids, left_out, other_runs = _what_to_push(
        store, dataset, run_name, ontology, sample_ids, reasons or {}
    )
    samples = {s.id: s for s in store.samples(dataset, ids=sample_ids)}
    resources = resources_for([samples[i].uri for i in sample_ids])
    usernames = list(assignees.values()) if isinstance(assignees, Mapping) else list(assignees)
    user_id = user_ids(session, usernames)  # unknown users fail before anything is created

    task = ensure_task(
        session,
        task_name,
        resources,
        labels=None if project_id is not None else _labels_spec(ontology, review=review),
        project_id=project_id,
        segment_size=segment_size,
    )
    report(f"task {task.id} ({task_name!r}) has {task.size} frames")
    labels = task_labels(session, task)
    if review:  # before the store links the task
        _check_review_labels(task.id, task_name, ontology, labels)
    link = store.link_cvat_task(dataset, session.server, task.id, name=task_name, project_id=project_id, run=run)
    frame_of = {sample_id: frame for frame, sample_id in enumerate(sample_ids)}
    store.link_frames(link, {frame: sample_id for sample_id, frame in frame_of.items()})
    store.record_task_labels(link, {info.id: (name, info.type) for name, info in labels.items()})

    pusher = _JobPusher(
        store=store, session=session, link=link, run=run, ontology=ontology, labels=labels, frame_of=frame_of,
        pushed=store.pushed_shapes(link), pushed_tags=store.pushed_shapes(link, kind="tag"), force=force,
        max_request_bytes=max_request_bytes, report=report, reasons=dict(reasons or {}),
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
        tags=pusher.tags,
        reasons=pusher.with_reason,
        left_out=left_out,
        other_runs=other_runs,
    )


def _run_to_push(
    store: Store,
    dataset: str,
    run_name: str,
    ontology: Ontology | None,
    sample_ids: Sequence[int] | None,
    *,
    review: bool = False,
) -> tuple[RunInfo, Ontology, list[int]]:
    """The finished run (a human revision only for a ``review``), its ontology (the one given,
    else the run's, else for a human revision that of the run it was pushed from) and the
    samples to push (those of ``sample_ids`` it covers, else all it covers; a review: those of
    ``sample_ids`` it covers, `_what_to_push` telling which hold its annotations), ascending."""
    from serverless.ontology import parse_ontology

    run = store.get_run(dataset, run_name)
    if run.kind == "human" and not review:
        raise CvatError(f"run {run_name!r} of dataset {dataset!r} is a human revision pulled from CVAT; "
                        "push a prelabel (or import) run, or its suspects for review (--samples of "
                        "`autolabel qa mistakes --out`)")
    if run.finished_at is None:
        raise CvatError(f"run {run_name!r} of dataset {dataset!r} is not finished: finish or rerun the pre-labelling")
    if ontology is None:
        source = run
        if not run.ontology_yaml and run.kind == "human" and run.parent_run_id is not None:
            source = store.run_by_id(run.parent_run_id)
        if not source.ontology_yaml:
            raise CvatError(f"run {run_name!r} records no ontology: pass --ontology or --project")
        ontology = parse_ontology(source.ontology_yaml, f"run {source.name}")
    covered = sorted(store.covered_samples(run))
    if review and sample_ids is not None:
        wanted = set(sample_ids)
        covered = [i for i in covered if i in wanted]
    elif sample_ids is not None:
        wanted = set(sample_ids)
        missing = sorted(wanted - set(covered))
        if missing:
            raise CvatError(f"run {run_name!r} does not cover samples {missing[:10]}")
        covered = [i for i in covered if i in wanted]
    if not covered and not review:
        raise CvatError(f"run {run_name!r} covers no samples" if sample_ids is None else "no sample to push was given")
    return run, ontology, covered


def _what_to_push(
    store: Store,
    dataset: str,
    run_name: str,
    ontology: Ontology | None,
    sample_ids: Sequence[int] | None,
    reasons: Mapping[int, str],
) -> tuple[RunInfo, Ontology, list[int], tuple[int, ...], tuple[str, ...]]:
    """`_run_to_push`'s run, ontology and samples; for a review (``reasons``) only the samples
    where the run holds an annotation of ``reasons``, then the selection's samples left out and
    the truth runs that hold their annotations (`_suspect_runs`). `CvatError` naming those runs
    when the run holds none."""
    run, ontology, covered = _run_to_push(store, dataset, run_name, ontology, sample_ids, review=bool(reasons))
    if not reasons:
        return run, ontology, covered, (), ()
    dets = store.annotations_of(run, sample_ids=covered) if covered else {}
    held = {sid for sid, det in dets.items() if set(det.data["annotation_id"].tolist()) & set(reasons)}
    if not held:
        others = _suspect_runs(store, dataset, sample_ids, reasons)
        hint = f": they are annotations of run {', '.join(map(repr, others))}; push with --run naming it"
        hint = hint if others else ""
        raise CvatError(f"none of the {len(reasons)} annotations the selection scores is of run {run_name!r}{hint}")
    left_out = tuple(dict.fromkeys(sid for sid in (sample_ids or ()) if sid not in held))
    others = _suspect_runs(store, dataset, left_out, reasons) if left_out else ()
    return run, ontology, sorted(held), left_out, others


def _suspect_runs(
    store: Store, dataset: str, sample_ids: Sequence[int] | None, reasons: Mapping[int, str]
) -> tuple[str, ...]:
    """The names of the truth runs (`sync.views.latest_truth_per_sample`: whose annotations
    ``qa mistakes`` scores by default) that hold annotations of ``reasons`` on ``sample_ids``
    (None: any sample), by name."""
    from sync.views import group_by_run, latest_truth_per_sample

    chosen, _ = latest_truth_per_sample(store, dataset)
    if sample_ids is not None:
        chosen = {sid: chosen[sid] for sid in sample_ids if sid in chosen}
    names = set()
    for truth, ids in group_by_run(chosen):
        for det in store.annotations_of(truth, sample_ids=ids).values():
            if set(det.data["annotation_id"].tolist()) & set(reasons):
                names.add(truth.name)
                break
    return tuple(sorted(names))


def _labels_spec(ontology: Ontology, *, review: bool) -> list[dict[str, Any]]:
    """The task's label specs (`cvat_bridge.tasks.labels_spec`), for a review with the
    ``qa_reason`` attribute on every label that is not a tag."""
    specs = labels_spec(ontology)
    if review:
        for spec in specs:
            if spec["type"] != TAG_TYPE:
                spec["attributes"] = [*spec["attributes"], qa_reason_attribute_spec()]
    return specs


def _check_review_labels(task_id: int, task_name: str, ontology: Ontology, labels: Mapping[str, LabelInfo]) -> None:
    """`CvatError` when a shape label of the ontology has no ``qa_reason`` attribute in the task
    (a task of that name made before, not for review, or a task of a project)."""
    missing = sorted(
        label.name for label in ontology.labels
        if label.type != TAG_TYPE and label.name in labels and QA_REASON_ATTRIBUTE not in labels[label.name].attributes
    )
    if missing:
        raise CvatError(
            f"task {task_id} ({task_name!r}): labels {missing} have no text attribute {QA_REASON_ATTRIBUTE!r} to show "
            "the review reasons (a task of that name made before, or a project's labels): push the review with another "
            "--task-name, without --project"
        )


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
    pushed: dict[int, int]
    """The store's ``{CVAT shape id: annotation id}`` of the task."""
    pushed_tags: dict[int, int]
    """The store's ``{CVAT tag id: annotation id}`` of the task."""
    force: bool
    max_request_bytes: int
    report: Callable[[str], None]
    reasons: dict[int, str] = field(default_factory=dict)
    """Review push: annotation id → the reason its shape carries (``qa_reason``)."""
    shapes: int = 0
    with_reason: int = 0
    tags: int = 0
    requests: int = 0
    skipped: list[int] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)

    def push(self, job_samples: list[int], job: JobInfo) -> None:
        """Push the pre-labels of ``job_samples`` (the job's frames' samples) to ``job``."""
        dets = self.store.annotations_of(self.run, sample_ids=job_samples, masks=True)
        frames = {self.frame_of[sample_id]: sample_id for sample_id in job_samples}
        prelabels = job_prelabels(dets, frames, self.ontology, self.labels, reasons=self.reasons)
        with_reason = sum(bool(self.reasons.get(annotation)) for annotation in prelabels.shape_annotations)
        current = job_annotations(self.session, job.id)
        state = job_state(current, prelabels, self.pushed, self.pushed_tags)
        if state == "pushed":
            self.report(f"job {job.id}: already pushed ({_counted(len(prelabels.shapes), len(prelabels.tags))})")
            self.shapes += len(prelabels.shapes)
            self.tags += len(prelabels.tags)
            self.with_reason += with_reason
            return
        if state == "human":
            if not self.force:
                self.report(f"job {job.id}: a human has changed it; not overwritten (use --force)")
                self.skipped.append(job.id)
                return
            forget_pushed(self.store, self.link, prelabels, self.pushed, self.pushed_tags)
            self.forced.append(job.id)
            self.report(f"job {job.id}: a human has changed it; overwriting (--force)")
        ids, tag_ids, sent = upload_job(
            self.store, self.session, self.link, job.id, prelabels, max_request_bytes=self.max_request_bytes
        )
        self.requests += sent
        self.shapes += len(ids)
        self.tags += len(tag_ids)
        self.with_reason += with_reason
        self.report(f"job {job.id}: {_counted(len(ids), len(tag_ids))} in {sent} request(s)")


def forget_pushed(
    store: Store, link: CvatTaskInfo, prelabels: JobPrelabels, pushed: dict[int, int], pushed_tags: dict[int, int]
) -> None:
    """Drop the links of a job's pre-labels (shapes and tags) before they are replaced
    (``--force``), in the store and in ``pushed`` / ``pushed_tags`` (its maps of the task)."""
    for kind, ids, annotations in (
        ("shape", pushed, set(prelabels.shape_annotations)),
        ("tag", pushed_tags, set(prelabels.tag_annotations)),
    ):
        replaced = [cvat_id for cvat_id, ann in ids.items() if ann in annotations]
        store.forget_pushed_shapes(link, replaced, kind=kind)
        for cvat_id in replaced:
            del ids[cvat_id]


def _counted(shapes: int, tags: int) -> str:
    """``"5 shapes"``, or ``"5 shapes and 2 tags"`` when there are tags."""
    return f"{shapes} shapes" + (f" and {tags} tag{'' if tags == 1 else 's'}" if tags else "")
