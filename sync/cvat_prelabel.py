"""Pre-label an existing CVAT task: its frames through the local models, the results into its jobs.

Flow: read the task, its labels (every ontology label must be one of them, by name) and its
frame sizes; register each frame as a sample ``cvat://<host[:port]>/tasks/<id>/frames/<n>``
(the server's public URL, never credentials) linked to its frame; run the detector over the
frames the run does not cover yet, in batches, storing each batch; upload a job as soon as all
its frames are covered (`cvat_bridge.annotations.upload_job_annotations`) and record the shape
and tag ids, so ``autolabel cvat pull --task ID`` works on the task afterwards. The ontology's
object labels go to the detector, its tag labels to the classifier (`serverless.pipeline`):
tags are uploaded as job tags with the shapes, or alone for an ontology of tags.

Resumable: the task's link in the store holds its pre-label run. A rerun resumes that run
and must use the ontology, model and options it was made with (anything else is refused
before any work, finished run or not): frames it covers are not run again, and a job holding
exactly what was uploaded to it is not uploaded again. A frame that cannot be downloaded or
decoded is reported and left uncovered (the run stays open, the jobs holding it wait), so the
next run retries exactly those frames. A job a human has touched (`sync.push.job_state`) is
left alone unless ``force``; a job without any pre-label gets no request at all.

Before the models run, the jobs still to pre-label are read: a job already holding
annotations this store did not upload (drawn by hand, or made by another tool with
``source: auto``) is left alone unless ``force``, and its frames are not run; when that is
every job of the task, nothing is run and the call raises `CvatError` saying what the jobs hold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cvat_bridge.annotations import JobAnnotations, job_annotations, shape_key, tag_key
from cvat_bridge.client import CvatError, CvatSession, public_url
from cvat_bridge.jobs import JobInfo, list_jobs
from cvat_bridge.tasks import LabelInfo, TaskInfo, TaskMeta, frame_bytes, read_task, task_labels, task_meta
from serverless.read_ahead import read_ahead
from sync.pull import store_job
from sync.push import JobPrelabels, forget_pushed, job_prelabels, job_state, upload_job
from sync.store import Provenance, SampleIn, StoreError

if TYPE_CHECKING:
    import numpy as np

    from serverless.models.base import Classifier, Detector
    from serverless.ontology import Ontology
    from serverless.pipeline import ModelSettings
    from sync.store import CvatTaskInfo, DatasetInfo, RunInfo, Store

__all__ = [
    "FrameFailure",
    "TaskPrelabelResult",
    "default_dataset",
    "describe_job_content",
    "frame_uri",
    "prelabel_task",
]

#: Options that change what the models produce: a resumed run must use the same ones
#: (the SAM ones only with masks), with the command-line option that sets each.
RUN_OPTIONS = {
    "masks": "--masks",
    "threshold": "--threshold",
    "sam_model_type": "--sam-model-type",
    "sam_checkpoint": "--sam-checkpoint",
    "classifier": "--classifier",
}


def default_dataset(task_id: int) -> str:
    """The store dataset of a task pre-labelled without ``--dataset``."""
    return f"cvat-task-{task_id}"


def frame_uri(server: str, task_id: int, frame: int) -> str:
    """The sample URI of a task frame: ``cvat://<host[:port]>[/prefix]/tasks/<id>/frames/<n>``.

    Built from the server's public URL, so user info, query and fragment never get in.
    """
    parts = urlsplit(public_url(server))  # its netloc is host[:port], nothing else
    return f"cvat://{parts.netloc}{parts.path}/tasks/{int(task_id)}/frames/{int(frame)}"


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
    tags: int
    """Tags uploaded by this call."""
    already_uploaded_jobs: tuple[int, ...]
    """Jobs whose pre-labels an earlier call uploaded (never uploaded twice)."""
    empty_jobs: tuple[int, ...]
    """Complete jobs without any pre-label (nothing sent)."""
    skipped_jobs: tuple[int, ...]
    """Jobs holding a human's changes or annotations this store did not upload, left alone
    (``force`` overwrites them)."""
    waiting_jobs: tuple[int, ...]
    """Jobs with frames not covered yet (failed frames): uploaded by a later run."""
    finished: bool
    """True when the run covers every frame (it is then sealed in the store)."""

    @property
    def complete(self) -> bool:
        """Every frame pre-labelled and every job holding its pre-labels."""
        return self.finished and not self.skipped_jobs and not self.waiting_jobs


def prelabel_task(
    store: Store,
    session: CvatSession,
    task_id: int,
    ontology: Ontology,
    settings: ModelSettings,
    *,
    masks: bool = False,
    threshold: float | None = None,
    batch_size: int = 4,
    workers: int = 0,
    dataset: str | None = None,
    run_name: str | None = None,
    force: bool = False,
    report: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> TaskPrelabelResult:
    """Pre-label CVAT task ``task_id`` with the models of ``settings`` (`ModelSettings`).

    ``dataset`` defaults to the dataset the task is already linked to, else
    ``cvat-task-<id>``; ``run_name`` to the task's run, else the store's ``prelabel-<n>``.
    ``progress(done, total)`` follows the frames to run. ``workers`` threads download and
    decode frames ahead of the models (0: one at a time, in this thread); it is not one of the
    run's parameters (a run resumes with any number). Raises `CvatError` (server errors,
    labels missing from the task, every job already holding annotations this store did not
    upload), `StoreError` (a run that cannot be resumed with these options) and
    `ModelLoadError`, all before any frame is run; a single frame's failure is reported, not
    raised.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be at least 0, got {workers}")
    server = session.server
    task, labels, frame_sizes = _read_task(session, task_id, ontology, server)
    params = _run_params(settings, ontology, server, task, masks=masks, threshold=threshold, batch_size=batch_size)
    jobs = list_jobs(session, task_id=task.id)
    job_frames = {j.id: [f for f in range(j.start_frame, j.stop_frame + 1) if f in frame_sizes] for j in jobs}
    link = store.get_cvat_task(server, task.id)
    pushed = dict(store.pushed_shapes(link)) if link is not None else {}
    pushed_tags = dict(store.pushed_shapes(link, kind="tag")) if link is not None else {}
    covered_now = set() if _replaces_run(store, link, run_name) else _covered_frames(store, link)
    foreign = {} if force else _taken_jobs(session, jobs, job_frames, covered_now, pushed, pushed_tags)
    if foreign and len(foreign) == len(jobs):
        raise CvatError(_nothing_to_do(server, task, foreign, pushed, pushed_tags))

    ds, run, link, previous = _open_run(store, server, task, ontology, settings, params, dataset, run_name)
    if previous is not None:
        report(f"run {run.name!r} takes task {task.id} over from run {previous.name!r}: jobs holding its "
               "untouched pre-labels get the new ones")
    sample_of = _link_samples(store, ds, link, server, task, frame_sizes)
    store.record_task_labels(link, {info.id: (name, info.type) for name, info in labels.items()})
    for job in jobs:
        store_job(store, link, job)
    needed = {f for job in jobs if job.id not in foreign for f in job_frames[job.id]}
    covered, pending = _frames_to_run(store, run, task, sample_of, needed, report)
    resumed = len(covered)

    uploader = _JobUploader(
        store=store, session=session, run=run, link=link, ontology=ontology, labels=labels,
        force=force, report=report, pushed=pushed, pushed_tags=pushed_tags, previous=previous,
    )
    for job in jobs:
        if job.id in foreign:
            uploader.leave(job, describe_job_content(foreign[job.id], pushed, pushed_tags=pushed_tags) or "annotations")
    sizes = {sample.id: (sample.width, sample.height) for sample in store.samples(ds, ids=list(sample_of.values()))}
    frames = _FrameRunner(session, task, store, run, ontology, sample_of, sizes, covered, jobs, job_frames, uploader)
    processed, failed = frames.run_frames(pending, settings, masks=masks, threshold=threshold, batch_size=batch_size,
                                          report=report, progress=progress, workers=workers)

    finished = all(sid in covered for sid in sample_of.values())
    if finished:
        run = store.finish_run(run)
    for job in list_jobs(session, task_id=task.id):
        store_job(store, link, job)
    return TaskPrelabelResult(
        task_id=int(task.id),
        dataset=ds.name,
        run=run.name,
        frames=len(sample_of),
        processed=tuple(processed),
        resumed=resumed,
        failed=tuple(failed),
        finished=finished,
        waiting_jobs=tuple(j.id for j in jobs if j.id not in uploader.handled),
        **uploader.outcome(),
    )


def _frames_to_run(
    store: Store,
    run: RunInfo,
    task: TaskInfo,
    sample_of: Mapping[int, int],
    needed: set[int],
    report: Callable[[str], None],
) -> tuple[set[int], list[int]]:
    """The samples ``run`` already covers, and the ``needed`` frames it does not cover yet."""
    covered = set(store.covered_samples(run)) & set(sample_of.values())
    pending = [f for f in sorted(sample_of) if sample_of[f] not in covered and f in needed]
    if pending and run.finished:
        raise StoreError(
            f"run {run.name!r} of task {task.id} is finished but does not cover frames {pending[:10]}; "
            "the task's frames changed after it was pre-labelled"
        )
    if pending and covered:
        report(f"resuming run {run.name!r}: {len(covered)} frames already done, {len(pending)} to go")
    return covered, pending


def _run_params(
    settings: ModelSettings,
    ontology: Ontology,
    server: str,
    task: TaskInfo,
    *,
    masks: bool,
    threshold: float | None,
    batch_size: int,
) -> dict[str, Any]:
    """The run's recorded parameters (`RUN_OPTIONS` among them)."""
    classifier = settings.classifier_for(ontology)
    return {
        "classifier": classifier.text if classifier is not None else None,
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


def _read_task(
    session: CvatSession, task_id: int, ontology: Ontology, server: str
) -> tuple[TaskInfo, dict[str, LabelInfo], dict[int, tuple[int, int]]]:
    """The task, its labels (every ontology label must be one of them) and its frame sizes."""
    task = read_task(session, task_id)
    if not task.size:
        raise CvatError(f"{server}: task {task_id} has no frames (its data was never uploaded)")
    labels = task_labels(session, task)
    missing = [name for name in ontology.label_names if name not in labels]
    if missing:
        raise CvatError(
            f"{server}: task {task_id} lacks the ontology's labels {', '.join(missing)} "
            f"(its labels: {', '.join(sorted(labels)) or 'none'})"
        )
    return task, labels, _frame_sizes(task, task_meta(session, task_id), server)


def _covered_frames(store: Store, link: CvatTaskInfo | None) -> set[int]:
    """The task frames the task's pre-label run already covers (none for a new task)."""
    if link is None or link.run_id is None:
        return set()
    covered = set(store.covered_samples(store.run_by_id(link.run_id)))
    return {frame for frame, sample_id in store.frames_of(link).items() if sample_id in covered}


def _taken_jobs(
    session: CvatSession,
    jobs: list[JobInfo],
    job_frames: Mapping[int, list[int]],
    covered: set[int],
    pushed: Mapping[int, int],
    pushed_tags: Mapping[int, int],
) -> dict[int, JobAnnotations]:
    """``{job id: its annotations}`` for the jobs still to pre-label (a frame not covered yet)
    that already hold annotations this store did not upload: a human's, or another tool's.

    A job with every frame covered is not read here: whatever it holds is compared with this
    run's pre-labels when it is uploaded (`sync.push.job_state`)."""
    taken = {}
    for job in jobs:
        if all(frame in covered for frame in job_frames[job.id]):
            continue
        content = job_annotations(session, job.id)
        if describe_job_content(content, pushed, pushed_tags=pushed_tags) is not None:
            taken[job.id] = content
    return taken


def _nothing_to_do(
    server: str,
    task: TaskInfo,
    taken: Mapping[int, JobAnnotations],
    pushed: Mapping[int, int],
    pushed_tags: Mapping[int, int],
) -> str:
    """The one-line refusal when every job of the task already holds others' annotations."""
    held: dict[str, dict[Any, Any]] = {"shapes": {}, "tags": {}, "tracks": {}}
    for content in taken.values():
        for key, items in held.items():  # a track may reach into several jobs: count it once
            items.update((item.get("id", id(item)), item) for item in content[key])
    what = describe_job_content(
        JobAnnotations(version=0, **{key: list(items.values()) for key, items in held.items()}),
        pushed,
        pushed_tags=pushed_tags,
    )
    return (
        f"{server}: task {task.id} ({task.name!r}) already holds {what or 'annotations'} in every job "
        f"{sorted(taken)}; the models were not run: pass --force to replace them with pre-labels"
    )


_SOURCES = {
    "auto": "made by another tool (source auto)",
    "manual": "drawn by hand",
    "semi-auto": "made with an AI tool in CVAT (source semi-auto)",
    "file": "imported from a file",
}


def describe_job_content(
    current: JobAnnotations,
    pushed: Mapping[int, int],
    expected: Mapping[int, Any] | None = None,
    *,
    pushed_tags: Mapping[int, int] | None = None,
    expected_tags: Mapping[int, Any] | None = None,
) -> str | None:
    """What a job holds that this store did not upload, in words, or None when there is
    nothing of the kind: ``"17 shapes this store did not upload (12 made by another tool (source
    auto), 5 drawn by hand), 2 tags"``. ``current`` is `job_annotations` JSON, ``pushed`` and
    ``pushed_tags`` the store's ``{CVAT shape (tag) id: annotation id}`` of the task; with
    ``expected`` / ``expected_tags`` (``{annotation id: shape_key / tag_key}`` of the
    pre-labels the job should hold) the uploaded ones that were changed or deleted are
    counted too."""
    tags_pushed = pushed_tags or {}
    parts = []
    others = [s for s in current["shapes"] if int(s["id"]) not in pushed]
    if others:
        sources = Counter(str(s.get("source") or "manual") for s in others)
        detail = ", ".join(
            f"{count} {_SOURCES.get(source, f'with source {source}')}" for source, count in sources.most_common()
        )
        parts.append(f"{_count(len(others), 'shape')} this store did not upload ({detail})")
    other_tags = [t for t in current["tags"] if int(t["id"]) not in tags_pushed]
    if other_tags:
        parts.append(_count(len(other_tags), "tag"))
    if current["tracks"]:
        parts.append(_count(len(current["tracks"]), "track"))
    changed = deleted = 0
    for items, ids, wanted, key in (
        (current["shapes"], pushed, expected, shape_key),
        (current["tags"], tags_pushed, expected_tags, tag_key),
    ):
        if wanted is None:
            continue
        now = {int(item["id"]): item for item in items}
        recorded = {cvat_id: ann for cvat_id, ann in ids.items() if ann in wanted}
        deleted += sum(cvat_id not in now for cvat_id in recorded)
        changed += sum(cvat_id in now and key(now[cvat_id]) != wanted[ann] for cvat_id, ann in recorded.items())
    if changed:
        parts.append(f"{_count(changed, 'pre-label')} changed by a human")
    if deleted:
        parts.append(f"{_count(deleted, 'pre-label')} deleted by a human")
    return ", ".join(parts) or None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


class _FrameRunner:
    """Runs the models over frames in batches, stores each batch and uploads every job as
    soon as all its frames are covered (``covered`` is updated in place)."""

    def __init__(
        self,
        session: CvatSession,
        task: TaskInfo,
        store: Store,
        run: RunInfo,
        ontology: Ontology,
        sample_of: dict[int, int],
        sizes: Mapping[int, tuple[int, int]],
        covered: set[int],
        jobs: list[JobInfo],
        job_frames: Mapping[int, list[int]],
        uploader: _JobUploader,
    ) -> None:
        self.session, self.task, self.store, self.run, self.ontology = session, task, store, run, ontology
        self.sizes = sizes
        self.sample_of, self.covered, self.jobs, self.job_frames = sample_of, covered, jobs, job_frames
        self.uploader = uploader
        self.uncovered = {j.id: sum(sample_of[f] not in covered for f in job_frames[j.id]) for j in jobs}
        self.jobs_of_frame: dict[int, list[int]] = defaultdict(list)  # segments may overlap
        for job_id, frames in job_frames.items():
            for frame in frames:
                self.jobs_of_frame[frame].append(job_id)

    def upload_ready(self) -> None:
        for job in self.jobs:
            if job.id not in self.uploader.handled and not self.uncovered[job.id]:
                self.uploader.upload(job, {f: self.sample_of[f] for f in self.job_frames[job.id]})

    def run_frames(
        self,
        pending: list[int],
        settings: ModelSettings,
        *,
        masks: bool,
        threshold: float | None,
        batch_size: int,
        report: Callable[[str], None],
        progress: Callable[[int, int], None],
        workers: int = 0,
    ) -> tuple[list[int], list[FrameFailure]]:
        """Frames run and frames that failed; uploads the jobs that become complete. ``workers``
        threads download and decode frames ahead of the models (at most two batches each)."""
        from serverless.pipeline import load_pipeline

        detector, classifier = load_pipeline(settings, self.ontology, masks=masks) if pending else (None, None)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cvat-frames") if workers else None
        try:
            frames = read_ahead(pending, self._read, pool, look_ahead=2 * batch_size * workers)
            return self._label(frames, len(pending), detector, classifier, threshold, batch_size, report, progress)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _read(self, frame: int) -> tuple[np.ndarray | None, str]:
        """One frame downloaded and decoded (`_read_frame`); runs in a reading thread."""
        return _read_frame(self.session, self.task, frame, self.sizes[self.sample_of[frame]])

    def _label(
        self,
        frames: Iterator[tuple[int, tuple[np.ndarray | None, str]]],
        count: int,
        detector: Detector | None,
        classifier: Classifier | None,
        threshold: float | None,
        batch_size: int,
        report: Callable[[str], None],
        progress: Callable[[int, int], None],
    ) -> tuple[list[int], list[FrameFailure]]:
        """`run_frames`' batches over the ``count`` frames read (in order)."""
        from serverless.pipeline import label_batch

        processed: list[int] = []
        failed: list[FrameFailure] = []
        progress(0, count)
        for start in range(0, count, batch_size):
            images, readable = [], []
            for frame, (image, reason) in islice(frames, min(batch_size, count - start)):
                if image is None:
                    failed.append(FrameFailure(frame, reason))
                    report(f"frame {frame}: skipped: {reason}")
                    continue
                images.append(image)
                readable.append(frame)
            if images:
                outputs, tags = label_batch(images, detector, classifier, threshold=threshold)
                self.store.add_detections(
                    self.run,
                    {self.sample_of[f]: det for f, det in zip(readable, outputs, strict=True)},
                    tags={self.sample_of[f]: t for f, t in zip(readable, tags, strict=True) if t is not None},
                )
                self.covered.update(self.sample_of[f] for f in readable)
                processed.extend(readable)
                for frame in readable:
                    for job_id in self.jobs_of_frame[frame]:
                        self.uncovered[job_id] -= 1
            progress(min(start + batch_size, count), count)
            self.upload_ready()
        self.upload_ready()
        return processed, failed


def _frame_sizes(task: TaskInfo, meta: TaskMeta, server: str) -> dict[int, tuple[int, int]]:
    """``{frame: (width, height)}`` of the task's frames that are not deleted."""
    size = task.size
    entries = [(f.width, f.height) for f in meta.frames]
    if len(entries) == 1 and size > 1:
        entries = entries * size  # a video: one entry for every frame
    if len(entries) != size:
        raise CvatError(f"{server}: task {task.id} has {size} frames but its meta describes {len(entries)}")
    return {f: entries[f] for f in range(size) if f not in meta.deleted_frames}


def _replaces_run(store: Store, link: CvatTaskInfo | None, run_name: str | None) -> bool:
    """True when ``--run`` names a new run for a task that already holds another one."""
    if link is None or link.run_id is None or run_name is None:
        return False
    return store.run_by_id(link.run_id).name != run_name


def _open_run(
    store: Store,
    server: str,
    task: TaskInfo,
    ontology: Ontology,
    settings: ModelSettings,
    params: dict[str, Any],
    dataset: str | None,
    run_name: str | None,
) -> tuple[DatasetInfo, RunInfo, CvatTaskInfo, RunInfo | None]:
    """The dataset, the pre-label run (resumed or new), the task link, and the run the new one
    takes the task over from (``--run NEW`` on a task holding another run; else None)."""
    link = store.get_cvat_task(server, task.id)
    if link is not None:
        linked = store.dataset_by_id(link.dataset_id)
        if dataset is not None and dataset != linked.name:
            raise StoreError(
                f"task {task.id} on {server} is recorded in dataset {linked.name!r}, not {dataset!r}: "
                f"pass --dataset {linked.name} or leave it out"
            )
        dataset = linked.name
    ds = store.get_or_create_dataset(dataset or default_dataset(task.id))
    run = previous = None
    if link is not None and link.run_id is not None:
        run = store.run_by_id(link.run_id)
        if run_name is not None and run_name != run.name:
            if run.ontology_hash == ontology.content_hash and not _option_differences(run, settings, params, ontology):
                raise StoreError(
                    f"task {task.id} on {server} holds pre-label run {run.name!r} of dataset {ds.name!r}, made with "
                    f"these options, not {run_name!r}: pass --run {run.name} or leave it out (a new run takes a task "
                    "over only with another model, ontology or options)"
                )
            run, previous = None, run
    if run is None and run_name is not None:
        existing = next((r for r in store.list_runs(ds) if r.name == run_name), None)
        if existing is not None and (existing.finished or existing.kind != "prelabel" or previous is not None):
            raise StoreError(
                f"dataset {ds.name!r} already has a {'finished ' if existing.finished else ''}{existing.kind} run "
                f"named {run_name!r}; choose another --run name"
            )
        run = existing
    if run is None:
        provenance = Provenance.from_ontology(
            ontology,
            model_id=settings.model_id(ontology),
            model_revision=settings.model_revision(ontology),
            params=params,
        )
        run = store.create_run(ds, "prelabel", name=run_name, provenance=provenance)
    elif run.ontology_hash != ontology.content_hash:
        raise StoreError(
            f"task {task.id} was pre-labelled by run {run.name!r} with another ontology than the one given "
            f"(labels, prompts or thresholds differ): pass the ontology it was made with to resume it, or "
            f"{_NEW_RUN_HINT}"
        )
    else:
        _check_same_options(run, task, settings, params, ontology)
    link = store.link_cvat_task(
        ds, server, task.id, name=task.name, project_id=task.project_id, run=run, replace_run=previous is not None
    )
    return ds, run, link, previous


_NEW_RUN_HINT = (
    "pre-label the task again with --run NEW-NAME: the jobs holding this run's untouched pre-labels get the new "
    "ones, and jobs a human has changed are left alone unless --force"
)


def _option_differences(
    run: RunInfo, settings: ModelSettings, params: dict[str, Any], ontology: Ontology
) -> list[str]:
    """How the model and options given differ from those ``run`` was made with, in words: the
    one rule of ``cvat prelabel``'s resume (the classifier among `RUN_OPTIONS`)."""
    stored = dict(run.params or {})
    different = []
    for key, option in RUN_OPTIONS.items():
        if key.startswith("sam_") and stored.get("masks") != params["masks"]:
            continue  # --masks itself is reported
        if stored.get(key) != params[key]:
            different.append(f"{option} {_shown(stored.get(key))} (this time {_shown(params[key])})")
    model = settings.model_id(ontology)
    if run.model_id is not None and run.model_id != model:
        if not ontology.has_objects:
            option = "--classifier"  # an ontology of tags runs the classifier alone
        else:
            option = "--gdino-model" if settings.detector.backend == "grounding-dino" else "--detector"
        different.append(f"{option} {run.model_id!r} (this time {model!r})")
    revision = settings.model_revision(ontology)
    if run.model_revision is not None and run.model_revision != revision:  # the same path, another checkpoint
        different.append(f"--detector checkpoint {_shown(run.model_revision)} (this time {_shown(revision)})")
    return list(dict.fromkeys(different))  # a tags-only run's model is its classifier: said once


def _check_same_options(
    run: RunInfo, task: TaskInfo, settings: ModelSettings, params: dict[str, Any], ontology: Ontology
) -> None:
    """A task's run goes on (or is checked again) only with the model and options it was made
    with; `StoreError` naming each difference otherwise."""
    different = _option_differences(run, settings, params, ontology)
    if different:
        raise StoreError(
            f"task {task.id} was pre-labelled by run {run.name!r} with {', '.join(different)}: a rerun resumes "
            f"that run with its model and options; to use these, {_NEW_RUN_HINT}"
        )


def _shown(value: Any) -> str:
    if value is None:
        return "not given"
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value)


def _link_samples(
    store: Store, ds: DatasetInfo, link: CvatTaskInfo, server: str, task: TaskInfo, frame_sizes: dict[int, tuple[int, int]]
) -> dict[int, int]:
    """``{frame: sample id}`` for every frame; frames not linked yet become ``cvat://`` samples."""
    linked = store.frames_of(link)
    new = [f for f in sorted(frame_sizes) if f not in linked]
    if new:
        ids = store.add_samples(ds, [SampleIn(frame_uri(server, task.id, f), *frame_sizes[f]) for f in new])
        store.link_frames(link, dict(zip(new, ids, strict=True)))
        linked.update(zip(new, ids, strict=True))
    return {f: linked[f] for f in sorted(frame_sizes) if f in linked}


def _read_frame(
    session: CvatSession, task: TaskInfo, frame: int, size: tuple[int, int]
) -> tuple[np.ndarray | None, str]:
    """The frame as an RGB array (original quality), or None and the reason it cannot be used."""
    from serverless.images import ImageError, decode_image

    try:
        data = frame_bytes(session, task.id, frame, quality="original")
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

    store: Store
    session: CvatSession
    run: RunInfo
    link: CvatTaskInfo
    ontology: Ontology
    labels: dict[str, LabelInfo]
    force: bool
    report: Callable[[str], None]
    pushed: dict[int, int]
    """The store's ``{CVAT shape id: annotation id}`` of the task."""
    pushed_tags: dict[int, int] = field(default_factory=dict)
    """The store's ``{CVAT tag id: annotation id}`` of the task."""
    previous: RunInfo | None = None
    """The run this one takes the task over from (``--run NEW``), or None."""

    def __post_init__(self) -> None:
        self.handled: set[int] = set()
        self.uploaded: list[int] = []
        self.already: list[int] = []
        self.empty: list[int] = []
        self.skipped: list[int] = []
        self.shapes = 0
        self.tags = 0
        self._previous_ontology: Ontology | None = None

    def _holds_previous_untouched(self, current: JobAnnotations, samples: dict[int, int]) -> bool:
        """True when the job holds exactly what the run being taken over uploaded, unchanged."""
        if self.previous is None:
            return False
        dets = self.store.annotations_of(self.previous, sample_ids=sorted(samples.values()), masks=True)
        if any(sample_id not in dets for sample_id in samples.values()):
            return False  # the old run never covered this frame: the job cannot hold only its shapes
        if self._previous_ontology is None:  # read once, for the first job that needs it
            from serverless.ontology import parse_ontology

            self._previous_ontology = parse_ontology(self.previous.ontology_yaml, f"run {self.previous.name}")
        prelabels = job_prelabels(dets, samples, self._previous_ontology, self.labels)
        return job_state(current, prelabels, self.pushed, self.pushed_tags) == "pushed"

    def outcome(self) -> dict[str, Any]:
        """What the uploads did, as `TaskPrelabelResult` fields."""
        return {
            "uploaded_jobs": tuple(self.uploaded),
            "shapes": self.shapes,
            "tags": self.tags,
            "already_uploaded_jobs": tuple(self.already),
            "empty_jobs": tuple(self.empty),
            "skipped_jobs": tuple(self.skipped),
        }

    def leave(self, job: JobInfo, holds: str) -> None:
        """Leave ``job`` alone: it holds ``holds`` (others' annotations), and this is no --force."""
        self.handled.add(job.id)
        self.skipped.append(job.id)
        self.report(f"job {job.id}: holds {holds}; not pre-labelled (use --force to replace them)")

    def _forget_previous(self, current: JobAnnotations) -> None:
        """Drop the links of what the job holds now: the run taken over's untouched pre-labels."""
        for kind, ids, items in (("shape", self.pushed, current["shapes"]), ("tag", self.pushed_tags, current["tags"])):
            replaced = [int(item["id"]) for item in items]
            self.store.forget_pushed_shapes(self.link, replaced, kind=kind)
            for cvat_id in replaced:
                ids.pop(cvat_id, None)

    def _holds(self, current: JobAnnotations, prelabels: JobPrelabels) -> str:
        """What a job a human has changed holds, in words (`describe_job_content`)."""
        expected = {a: shape_key(x) for a, x in zip(prelabels.shape_annotations, prelabels.shapes, strict=True)}
        expected_tags = {a: tag_key(x) for a, x in zip(prelabels.tag_annotations, prelabels.tags, strict=True)}
        found = describe_job_content(
            current, self.pushed, expected, pushed_tags=self.pushed_tags, expected_tags=expected_tags
        )
        return found or "changes"

    def upload(self, job: JobInfo, samples: dict[int, int]) -> None:
        """Upload the pre-labels of ``samples`` (``{frame: sample id}``, all covered) to ``job``."""
        self.handled.add(job.id)
        dets = self.store.annotations_of(self.run, sample_ids=sorted(samples.values()), masks=True)
        if not any(len(det) for det in dets.values()):
            self.report(f"job {job.id}: no pre-labels")  # nothing to send, and a human's work stays
            self.empty.append(job.id)
            return
        prelabels = job_prelabels(dets, samples, self.ontology, self.labels)
        current = job_annotations(self.session, job.id)
        state = job_state(current, prelabels, self.pushed, self.pushed_tags)
        if state == "pushed":
            self.report(f"job {job.id}: already uploaded")
            self.already.append(job.id)
            return
        if state == "human" and self._holds_previous_untouched(current, samples):
            self.report(f"job {job.id}: replacing the untouched pre-labels of run {self.previous.name!r}")
            self._forget_previous(current)
            state = "partial"
        if state == "human":
            holds = self._holds(current, prelabels)
            if not self.force:
                self.leave(job, holds)
                return
            forget_pushed(self.store, self.link, prelabels, self.pushed, self.pushed_tags)
            self.report(f"job {job.id}: holds {holds}; replacing them (--force)")
        ids, tag_ids, requests = upload_job(self.store, self.session, self.link, job.id, prelabels)
        self.pushed.update(zip(ids, prelabels.shape_annotations, strict=True))
        self.pushed_tags.update(zip(tag_ids, prelabels.tag_annotations, strict=True))
        self.uploaded.append(job.id)
        self.shapes += len(ids)
        self.tags += len(tag_ids)
        self.report(f"job {job.id}: {len(ids) + len(tag_ids)} pre-labels in {requests} request(s)")
