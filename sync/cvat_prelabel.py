"""Pre-label an existing CVAT task: its frames through the local models, the results into its jobs.

Flow: read the task, its labels (every ontology label must be one of them, by name) and its
frame sizes; register each frame as a sample ``cvat://<host[:port]>/tasks/<id>/frames/<n>``
(the server's public URL, never credentials) linked to its frame; run the detector over the
frames the run does not cover yet, in batches, storing each batch; upload a job as soon as all
its frames are covered (`cvat_bridge.annotations.upload_job_shapes`) and record the shape ids,
so ``autolabel cvat pull --task ID`` works on the task afterwards.

Resumable: the task's link in the store holds its pre-label run. A rerun resumes that run
(same ontology, model and options): frames it covers are not run again, and a job holding
exactly what was uploaded to it is not uploaded again. A frame that cannot be downloaded or
decoded is reported and left uncovered (the run stays open, the jobs holding it wait), so the
next run retries exactly those frames. A job a human has touched (`sync.push.job_state`) is
left alone unless ``force``; a job without any pre-label gets no request at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cvat_bridge.annotations import job_annotations, upload_job_shapes
from cvat_bridge.api import call
from cvat_bridge.client import CvatError, public_url
from cvat_bridge.jobs import JobInfo, list_jobs
from cvat_bridge.tasks import LabelInfo, task_labels
from sync.pull import store_job
from sync.push import job_state, shapes_for_frame
from sync.store import Provenance, SampleIn, StoreError

__all__ = ["FrameFailure", "TaskPrelabelResult", "default_dataset", "frame_uri", "prelabel_task"]

#: Options that change what the models produce: a resumed run must use the same ones.
RUN_OPTIONS = ("masks", "threshold")


def default_dataset(task_id: int) -> str:
    """The store dataset of a task pre-labelled without ``--dataset``."""
    return f"cvat-task-{task_id}"


def frame_uri(server: str, task_id: int, frame: int) -> str:
    """The sample URI of a task frame: ``cvat://<host[:port]>[/prefix]/tasks/<id>/frames/<n>``.

    Built from the server's public URL, so user info, query and fragment never get in.
    """
    parts = urlsplit(public_url(server))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"cvat://{host}{parts.path}/tasks/{int(task_id)}/frames/{int(frame)}"


@dataclass(frozen=True)
class FrameFailure:
    """A frame that was not pre-labelled, and why (download or decoding error)."""

    frame: int
    reason: str


@dataclass(frozen=True)
class TaskPrelabelResult:
    """What one `prelabel_task` call did, and what is left for a rerun."""

    task_id: int
    dataset: str
    run: str
    frames: int
    """Frames of the task that are not deleted."""
    processed: tuple[int, ...]
    """Frames run through the models by this call."""
    resumed: int
    """Frames the run already covered when this call started."""
    failed: tuple[FrameFailure, ...]
    """Frames left uncovered by this call (a rerun retries them)."""
    uploaded_jobs: tuple[int, ...]
    """Jobs whose pre-labels were uploaded by this call."""
    shapes: int
    """Shapes uploaded by this call."""
    already_uploaded_jobs: tuple[int, ...]
    """Jobs whose pre-labels an earlier call uploaded (never uploaded twice)."""
    empty_jobs: tuple[int, ...]
    """Complete jobs without any pre-label (nothing sent)."""
    skipped_jobs: tuple[int, ...]
    """Jobs a human has changed, left alone (``force`` overwrites them)."""
    waiting_jobs: tuple[int, ...]
    """Jobs with frames not covered yet (failed frames): uploaded by a later run."""
    finished: bool
    """True when the run covers every frame (it is then sealed in the store)."""

    @property
    def complete(self) -> bool:
        """Every frame pre-labelled and every job holding its pre-labels."""
        return self.finished and not self.skipped_jobs and not self.waiting_jobs


def prelabel_task(
    store: Any,
    client: Any,
    task_id: int,
    ontology: Any,
    settings: Any,
    *,
    masks: bool = False,
    threshold: float | None = None,
    batch_size: int = 4,
    dataset: str | None = None,
    run_name: str | None = None,
    force: bool = False,
    report: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> TaskPrelabelResult:
    """Pre-label CVAT task ``task_id`` with the models of ``settings`` (`ModelSettings`).

    ``dataset`` defaults to the dataset the task is already linked to, else
    ``cvat-task-<id>``; ``run_name`` to the task's run, else the store's ``prelabel-<n>``.
    ``progress(done, total)`` follows the frames to run. Raises `CvatError` (server errors,
    labels missing from the task), `StoreError` (a run that cannot be resumed with these
    options) and `ModelLoadError`; a single frame's failure is reported, not raised.
    """
    from cvat_sdk.api_client import models

    from serverless.pipeline import load_detector

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    host = client.api_map.host
    server = public_url(host)
    task = call(f"read task {task_id}", host, client.tasks.retrieve, task_id)
    if not getattr(task, "size", 0):
        raise CvatError(f"{server}: task {task_id} has no frames (its data was never uploaded)")
    labels = task_labels(client, task)
    missing = [name for name in ontology.label_names if name not in labels]
    if missing:
        raise CvatError(
            f"{server}: task {task_id} lacks the ontology's labels {', '.join(missing)} "
            f"(its labels: {', '.join(sorted(labels)) or 'none'})"
        )
    frame_sizes = _frame_sizes(task, call(f"read meta of task {task_id}", host, task.get_meta), server)

    params = {
        "masks": masks,
        "threshold": threshold,
        "batch_size": batch_size,
        "sam_model_type": settings.sam_model_type if masks else None,
        "sam_checkpoint": settings.sam_checkpoint if masks else None,
        "tiny_models": settings.tiny,
        "cvat_server": server,
        "cvat_task_id": int(task.id),
        "frame_quality": "original",
    }
    ds, run, link, created = _open_run(store, server, task, ontology, settings, params, dataset, run_name)
    sample_of = _link_samples(store, ds, link, server, task, frame_sizes)
    sizes = {s.id: (s.width, s.height) for s in store.samples(ds, ids=list(sample_of.values()))}
    covered = set(store.covered_samples(run)) & set(sample_of.values())
    pending = [f for f in sorted(sample_of) if sample_of[f] not in covered]
    if pending and run.finished:
        raise StoreError(
            f"run {run.name!r} of task {task_id} is finished but does not cover frames {pending[:10]}; "
            "pre-label the task into another --dataset"
        )
    if pending and not created:
        _check_same_options(run, settings, params)
    if pending and covered:
        report(f"resuming run {run.name!r}: {len(covered)} frames already done, {len(pending)} to go")

    jobs = list_jobs(client, task_id=task.id)
    for job in jobs:
        store_job(store, link, job)
    job_frames = {j.id: [f for f in range(j.start_frame, j.stop_frame + 1) if f in sample_of] for j in jobs}
    uploader = _JobUploader(
        store=store,
        client=client,
        run=run,
        link=link,
        ontology=ontology,
        labels=labels,
        score_field="score" in models.LabeledShapeRequest.attribute_map,
        force=force,
        report=report,
        pushed=dict(store.pushed_shapes(link)),
    )

    uncovered = {j.id: sum(sample_of[f] not in covered for f in job_frames[j.id]) for j in jobs}
    jobs_of_frame: dict[int, list[int]] = defaultdict(list)  # segments may overlap
    for job_id, frames in job_frames.items():
        for frame in frames:
            jobs_of_frame[frame].append(job_id)

    def upload_ready() -> None:
        for job in jobs:
            if job.id not in uploader.handled and not uncovered[job.id]:
                uploader.upload(job, {f: sample_of[f] for f in job_frames[job.id]})

    processed: list[int] = []
    failed: list[FrameFailure] = []
    detector = load_detector(settings, masks=masks) if pending else None
    progress(0, len(pending))
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        images, readable = [], []
        for frame in batch:
            image, reason = _read_frame(client, task, frame, sizes[sample_of[frame]])
            if image is None:
                failed.append(FrameFailure(frame, reason))
                report(f"frame {frame}: skipped: {reason}")
                continue
            images.append(image)
            readable.append(frame)
        if images:
            outputs = detector.detect(images, ontology, threshold=threshold)
            store.add_detections(run, {sample_of[f]: det for f, det in zip(readable, outputs, strict=True)})
            covered.update(sample_of[f] for f in readable)
            processed.extend(readable)
            for frame in readable:
                for job_id in jobs_of_frame[frame]:
                    uncovered[job_id] -= 1
        progress(start + len(batch), len(pending))
        upload_ready()
    upload_ready()

    finished = all(sid in covered for sid in sample_of.values())
    if finished:
        run = store.finish_run(run)
    for job in list_jobs(client, task_id=task.id):
        store_job(store, link, job)
    return TaskPrelabelResult(
        task_id=int(task.id),
        dataset=ds.name,
        run=run.name,
        frames=len(sample_of),
        processed=tuple(processed),
        resumed=len(sample_of) - len(pending),
        failed=tuple(failed),
        uploaded_jobs=tuple(uploader.uploaded),
        shapes=uploader.shapes,
        already_uploaded_jobs=tuple(uploader.already),
        empty_jobs=tuple(uploader.empty),
        skipped_jobs=tuple(uploader.skipped),
        waiting_jobs=tuple(j.id for j in jobs if j.id not in uploader.handled),
        finished=finished,
    )


def _frame_sizes(task: Any, meta: Any, server: str) -> dict[int, tuple[int, int]]:
    """``{frame: (width, height)}`` of the task's frames that are not deleted."""
    size = int(task.size)
    entries = [(int(f.width), int(f.height)) for f in meta.frames]
    if len(entries) == 1 and size > 1:
        entries = entries * size  # a video: one entry for every frame
    if len(entries) != size:
        raise CvatError(f"{server}: task {task.id} has {size} frames but its meta describes {len(entries)}")
    deleted = {int(f) for f in (getattr(meta, "deleted_frames", None) or ())}
    return {f: entries[f] for f in range(size) if f not in deleted}


def _open_run(
    store: Any,
    server: str,
    task: Any,
    ontology: Any,
    settings: Any,
    params: dict[str, Any],
    dataset: str | None,
    run_name: str | None,
) -> tuple[Any, Any, Any, bool]:
    """The dataset, the pre-label run (resumed or new), the task link, and whether the run is new."""
    link = store.get_cvat_task(server, task.id)
    if link is not None:
        linked = next(d for d in store.list_datasets() if d.id == link.dataset_id)
        if dataset is not None and dataset != linked.name:
            raise StoreError(
                f"task {task.id} on {server} is recorded in dataset {linked.name!r}, not {dataset!r}: "
                f"pass --dataset {linked.name} or leave it out"
            )
        dataset = linked.name
    ds = store.get_or_create_dataset(dataset or default_dataset(task.id))
    run = None
    created = False
    if link is not None and link.run_id is not None:
        run = store.run_by_id(link.run_id)
        if run_name is not None and run_name != run.name:
            raise StoreError(
                f"task {task.id} on {server} holds pre-label run {run.name!r} of dataset {ds.name!r}, "
                f"not {run_name!r}: pass --run {run.name} or leave it out"
            )
    elif run_name is not None:
        run = next((r for r in store.list_runs(ds) if r.name == run_name), None)
        if run is not None and (run.finished or run.kind != "prelabel"):
            raise StoreError(
                f"dataset {ds.name!r} already has a {'finished ' if run.finished else ''}{run.kind} run "
                f"named {run_name!r}; choose another --run name"
            )
    if run is None:
        provenance = Provenance.from_ontology(ontology, model_id=settings.gdino_model, params=params)
        run = store.create_run(ds, "prelabel", name=run_name, provenance=provenance)
        created = True
    elif run.ontology_hash != ontology.content_hash:
        raise StoreError(
            f"run {run.name!r} of task {task.id} was made with another ontology; "
            "pass that ontology, or pre-label into another --dataset"
        )
    link = store.link_cvat_task(ds, server, task.id, name=task.name, project_id=task.project_id, run=run)
    return ds, run, link, created


def _check_same_options(run: Any, settings: Any, params: dict[str, Any]) -> None:
    """A resumed run must go on with the model and options it started with."""
    stored = dict(run.params or {})
    different = [
        f"{key}={stored.get(key)!r} (now {params[key]!r})" for key in RUN_OPTIONS if stored.get(key) != params[key]
    ]
    if run.model_id is not None and run.model_id != settings.gdino_model:
        different.append(f"model {run.model_id!r} (now {settings.gdino_model!r})")
    if different:
        raise StoreError(
            f"run {run.name!r} was started with {', '.join(different)}: resume it with the same options, "
            "or pre-label into another --dataset"
        )


def _link_samples(
    store: Any, ds: Any, link: Any, server: str, task: Any, frame_sizes: dict[int, tuple[int, int]]
) -> dict[int, int]:
    """``{frame: sample id}`` for every frame; frames not linked yet become ``cvat://`` samples."""
    linked = store.frames_of(link)
    new = [f for f in sorted(frame_sizes) if f not in linked]
    if new:
        ids = store.add_samples(ds, [SampleIn(frame_uri(server, task.id, f), *frame_sizes[f]) for f in new])
        store.link_frames(link, dict(zip(new, ids, strict=True)))
        linked.update(zip(new, ids, strict=True))
    return {f: linked[f] for f in sorted(frame_sizes) if f in linked}


def _read_frame(client: Any, task: Any, frame: int, size: tuple[int, int]) -> tuple[Any, str]:
    """The frame as an RGB array (original quality), or None and the reason it cannot be used."""
    from serverless.images import ImageError, decode_image

    try:
        data = call(
            f"read frame {frame} of task {task.id}", client.api_map.host, task.get_frame, frame, quality="original"
        ).read()
        image = decode_image(data, name=f"task {task.id} frame {frame}")
    except (CvatError, ImageError) as error:
        return None, str(error)
    height, width = image.shape[:2]
    if (width, height) != size:
        return None, f"decoded as {width}x{height} pixels, but CVAT says {size[0]}x{size[1]}"
    return image, ""


@dataclass
class _JobUploader:
    """Uploads complete jobs: once each, never over a human's work unless ``force``
    (`sync.push.job_state` tells a job holding what was pushed, an interrupted upload and a
    human's edits apart)."""

    store: Any
    client: Any
    run: Any
    link: Any
    ontology: Any
    labels: dict[str, LabelInfo]
    score_field: bool
    force: bool
    report: Callable[[str], None]
    pushed: dict[int, int]
    """The store's ``{CVAT shape id: annotation id}`` of the task."""

    def __post_init__(self) -> None:
        self.handled: set[int] = set()
        self.uploaded: list[int] = []
        self.already: list[int] = []
        self.empty: list[int] = []
        self.skipped: list[int] = []
        self.shapes = 0

    def upload(self, job: JobInfo, samples: dict[int, int]) -> None:
        """Upload the pre-labels of ``samples`` (``{frame: sample id}``, all covered) to ``job``."""
        self.handled.add(job.id)
        sample_ids = sorted(samples.values())
        if not any(len(det) for det in self.store.annotations_of(self.run, sample_ids=sample_ids).values()):
            self.report(f"job {job.id}: no pre-labels")  # nothing to send, and a human's work stays
            self.empty.append(job.id)
            return
        dets = self.store.annotations_of(self.run, sample_ids=sample_ids, masks=True)
        shapes: list[Any] = []
        annotation_ids: list[int] = []
        for frame, sample_id in sorted(samples.items()):
            made, ids = shapes_for_frame(
                dets[sample_id], frame, self.ontology, self.labels, score_field=self.score_field
            )
            shapes.extend(made)
            annotation_ids.extend(ids)
        state = job_state(job_annotations(self.client, job.id), shapes, annotation_ids, self.pushed)
        if state == "pushed":
            self.report(f"job {job.id}: already uploaded")
            self.already.append(job.id)
            return
        if state == "human":
            if not self.force:
                self.report(f"job {job.id}: a human has changed it; not overwritten (use --force)")
                self.skipped.append(job.id)
                return
            wanted = set(annotation_ids)
            replaced = [shape_id for shape_id, ann in self.pushed.items() if ann in wanted]
            self.store.forget_pushed_shapes(self.link, replaced)
            for shape_id in replaced:
                del self.pushed[shape_id]
            self.report(f"job {job.id}: a human has changed it; overwriting (--force)")
        ids, requests = upload_job_shapes(self.client, job.id, shapes)
        self.store.record_pushed_shapes(self.link, dict(zip(annotation_ids, ids, strict=True)), job_id=job.id)
        self.pushed.update(zip(ids, annotation_ids, strict=True))
        self.uploaded.append(job.id)
        self.shapes += len(ids)
        self.report(f"job {job.id}: {len(ids)} pre-labels in {requests} request(s)")
