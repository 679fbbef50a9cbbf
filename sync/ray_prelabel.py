"""``autolabel prelabel --engine ray``: pre-labelling on a Ray Data pipeline, one machine or a cluster.

The driver creates or resumes the run (`sync.prelabel_store.RunRecorder`, exactly as the
local engine does), then streams the pending image paths through Ray Data: CPU tasks decode
them (`serverless.pipeline.read_image_or_reason`; with no GPU per worker Ray Data fuses that
step into the actors' processes), and a pool of actors, each loading the models once
(`serverless.pipeline.load_pipeline`, on ``gpus_per_worker`` GPUs), labels each batch
(`serverless.pipeline.label_batch`) and writes it to the store itself
(`sync.prelabel_store.record_batch` with ``skip_covered``). Ray restarts an actor that dies
and retries its batch (up to ``task_retries`` times: a batch that kills its worker every time
fails the run instead of looping, and the run keeps what was written); the write skips what
the run covers already, so a batch that was written before the crash is written once. The
actors send back one small `ImageStatus` per image; the driver counts them, checks that the
run covers every readable image, and finishes the run.

Workers get the store URL and the models as data (spec strings, the ontology's plain form):
never a live model or store. The URL may hold a password: it is never logged. Ray is an
optional extra, imported inside these functions only.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serverless.ontology import Ontology
    from serverless.pipeline import ModelSettings
    from sync.prelabel_store import RunRecorder

__all__ = [
    "TASK_RETRIES",
    "ImageStatus",
    "RayOutcome",
    "check_covered",
    "label_on_ray",
    "pool_size",
    "prelabel_with_ray",
    "run_on_ray",
    "settings_data",
    "start_ray",
    "worker_store_url",
]


TASK_RETRIES = 3
"""How many times a batch is retried when its worker dies (Ray Data's default is forever)."""


@dataclass(frozen=True)
class ImageStatus:
    """What a worker says about one image: labelled (``error`` None) with ``detections``
    detections and tags, or unreadable and why."""

    path: str
    error: str | None
    detections: int


@dataclass(frozen=True)
class RayOutcome:
    """The result of `prelabel_with_ray`."""

    run: str
    """The run's name."""
    done: int
    """Images labelled in this call (the run may hold more from before a resume)."""
    errors: list[tuple[str, str]] = field(default_factory=list)
    """``(path, why)`` of each image that could not be read (not covered)."""
    detections: int = 0
    seconds: float = 0.0


def worker_store_url(url_or_path: str | None = None, *, address: str | None = None) -> str:
    """The store URL the workers open: `sync.store.engine.resolve_url`'s (argument →
    ``AUTOLABEL_DB`` → the default file) as a string with its password (never log it), a
    SQLite path made absolute (a worker's working directory is not the driver's). With a
    cluster ``address`` the workers may run on other machines: a SQLite file is refused
    (`StoreError`)."""
    from sync.store import StoreError
    from sync.store.engine import resolve_url

    url = resolve_url(url_or_path)
    if url.get_backend_name() == "sqlite" and address is not None:
        raise StoreError(
            "--address runs workers on other machines, but the store is a SQLite file on this one; "
            "use PostgreSQL: AUTOLABEL_DB=postgresql://USER@HOST/DB"
        )
    if url.get_backend_name() == "sqlite" and url.database:
        url = url.set(database=str(Path(url.database).resolve()))
    return url.render_as_string(hide_password=False)


def settings_data(settings: ModelSettings) -> dict[str, str | bool | None]:
    """``settings`` as the keyword arguments of `ModelSettings` that rebuild it on a worker."""
    return {
        "detector": settings.detector.text,
        "segmenter": settings.segmenter.text,
        "device": settings.device,
        "classifier": settings.classifier.text if settings.classifier is not None else None,
        "compile": settings.compile,
    }


def start_ray(address: str | None) -> bool:
    """Connect to the cluster at ``address`` (``auto``: the one this process runs in), else
    start a local Ray sized to this machine; nothing when Ray is running in this process
    already. True when this call started it (the caller then shuts it down). Ray Data's own
    progress bars and start-up lines are turned off: the caller shows progress."""
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Ray Data repeats "uses 3.9GiB of memory per worker ... consider setting memory=" every 30 s
    # for the whole run: a model worker holds its models, which is what it is for.
    context.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address is not None:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, **quiet)
    return True


def pool_size(workers: int | None, gpus_per_worker: float | None) -> tuple[float, int]:
    """``(GPUs per worker, workers)`` on the running Ray: by default one GPU per worker when
    the cluster has GPUs (else none), and as many workers as the cluster's GPUs hold (else 1)."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    per_worker = gpus_per_worker if gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if workers is None:
        workers = max(1, int(gpus // per_worker)) if per_worker else 1
    return per_worker, workers


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """One path → its image (an empty array when unreadable) and the reason it is not
    readable ("" when it is): the same column types on every row."""
    from serverless.pipeline import read_image_or_reason

    image, error = read_image_or_reason(Path(row["path"]))
    return {
        "path": row["path"],
        "image": image if image is not None else np.zeros((0, 0, 3), np.uint8),
        "error": error or "",
    }


class LabelWriter:
    """The Ray Data actor: loads the models once, labels each batch and writes it to the
    run idempotently; returns one status row per image (path, error, detection count)."""

    def __init__(
        self,
        store_url: str,
        dataset: str,
        run_id: int,
        ontology: dict[str, Any],
        settings: dict[str, str | bool | None],
        masks: bool,
        threshold: float | None,
    ) -> None:
        from serverless.ontology import parse_ontology
        from serverless.pipeline import ModelSettings, load_pipeline
        from sync.store import open_store

        self.store = open_store(store_url)
        self.dataset = self.store.get_dataset(dataset)
        self.run = self.store.run_by_id(run_id)
        onto = parse_ontology(json.dumps(ontology), "<the driver's ontology>")
        self.detector, self.classifier = load_pipeline(ModelSettings(**settings), onto, masks=masks)
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from serverless.pipeline import label_batch
        from sync.prelabel_store import record_batch

        paths = [str(p) for p in batch["path"]]
        errors = [str(e) for e in batch["error"]]
        readable = [i for i, error in enumerate(errors) if not error]
        images = [np.asarray(batch["image"][i]) for i in readable]
        counts = [0] * len(paths)
        if images:
            detections, tags = label_batch(images, self.detector, self.classifier, threshold=self.threshold)
            rows = []
            for i, image, det, image_tags in zip(readable, images, detections, tags, strict=True):
                rows.append((Path(paths[i]), image.shape[1], image.shape[0], det, image_tags))
                counts[i] = len(det) + (len(image_tags) if image_tags is not None else 0)
            record_batch(self.store, self.dataset, self.run, rows, skip_covered=True)
        return {"path": np.array(paths, dtype=object), "error": np.array(errors, dtype=object),
                "detections": np.array(counts, dtype=np.int64)}


def label_on_ray(
    recorder: RunRecorder,
    files: Sequence[Path],
    ontology: Ontology,
    settings: ModelSettings,
    *,
    store_url: str,
    masks: bool,
    threshold: float | None,
    batch_size: int,
    workers: int,
    gpus_per_worker: float,
    task_retries: int = TASK_RETRIES,
) -> Iterator[ImageStatus]:
    """Label ``files`` into ``recorder``'s run on Ray (started with `start_ray`), ``workers``
    actors of ``gpus_per_worker`` GPUs each; yields each image's status as its block comes
    back (in no particular order). Ray Data restarts an actor that dies (``max_restarts=-1``)
    and retries its batch up to ``task_retries`` times (``max_task_retries``; Ray Data's own
    default is forever), then fails (`ray.exceptions.RayActorError`); the batch's write skips
    what the run covers already (`sync.prelabel_store.record_batch`)."""
    import ray
    import ray.data

    if batch_size < 1 or workers < 1 or gpus_per_worker < 0 or task_retries < 0:
        raise ValueError(f"batch_size and workers must be at least 1, gpus_per_worker and task_retries at least 0; "
                         f"got {batch_size}, {workers}, {gpus_per_worker}, {task_retries}")
    items = [{"path": str(path)} for path in files]
    blocks = max(1, min(len(items), -(-len(items) // batch_size)))
    decoded = ray.data.from_items(items, override_num_blocks=blocks).map(_decode_row)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote options passed as keywords (removal announced for 2.64) and
        # names no replacement for the retry options yet.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        labelled = decoded.map_batches(
            LabelWriter,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_gpus=gpus_per_worker,
            max_restarts=-1,
            max_task_retries=task_retries,
            zero_copy_batch=False,  # the models get writable arrays
            fn_constructor_kwargs={
                "store_url": store_url, "dataset": recorder.dataset.name, "run_id": recorder.run.id,
                "ontology": ontology.to_dict(), "settings": settings_data(settings), "masks": masks,
                "threshold": threshold,
            },
        )
    for block in labelled.iter_batches(batch_size=None, batch_format="numpy"):
        for path, error, count in zip(block["path"], block["error"], block["detections"], strict=True):
            yield ImageStatus(str(path), str(error) or None, int(count))


def check_covered(recorder: RunRecorder, labelled: Sequence[str]) -> None:
    """`StoreError` unless the run covers every image of ``labelled`` (paths the workers
    reported as written): the driver's check before it finishes the run."""
    from sync.prelabel_store import sample_uri
    from sync.store import StoreError

    covered = recorder.reload()
    missing = [path for path in labelled if sample_uri(Path(path)) not in covered]
    if missing:
        raise StoreError(
            f"run {recorder.name!r} does not cover {len(missing)} labelled images (first: {missing[0]}); "
            "run the same command again to label them"
        )


def run_on_ray(
    recorder: RunRecorder,
    files: Sequence[Path],
    ontology: Ontology,
    settings: ModelSettings,
    *,
    store_url: str,
    address: str | None,
    masks: bool,
    threshold: float | None,
    batch_size: int,
    workers: int | None,
    gpus_per_worker: float | None,
    task_retries: int = TASK_RETRIES,
    on_status: Callable[[ImageStatus], None] | None = None,
) -> RayOutcome:
    """Label ``files`` (the run's pending ones) into ``recorder``'s run on Ray (`start_ray`
    with ``address``; a Ray this call started is shut down at the end), calling ``on_status``
    for each image as it is done (``workers``, ``gpus_per_worker``: `pool_size`;
    ``task_retries``: `label_on_ray`), then check that the run covers every readable image
    (`check_covered`) and finish it. A failure on Ray (`ray.exceptions.RayError`) leaves the
    run unfinished with the batches written so far: the same call resumes it."""
    import ray

    began = time.perf_counter()
    labelled: list[str] = []
    errors: list[tuple[str, str]] = []
    detections = 0
    started = start_ray(address) if files else False
    try:
        gpus, workers = pool_size(workers, gpus_per_worker) if files else (0.0, 1)
        statuses = label_on_ray(
            recorder, files, ontology, settings, store_url=store_url, masks=masks, threshold=threshold,
            batch_size=batch_size, workers=workers, gpus_per_worker=gpus, task_retries=task_retries,
        ) if files else iter(())
        for status in statuses:
            if status.error is None:
                labelled.append(status.path)
                detections += status.detections
            else:
                errors.append((status.path, status.error))
            if on_status is not None:
                on_status(status)
    finally:
        if started:
            ray.shutdown()
    check_covered(recorder, labelled)
    run = recorder.finish()
    return RayOutcome(run.name, len(labelled), errors, detections, time.perf_counter() - began)


def prelabel_with_ray(
    files: Sequence[Path],
    ontology: Ontology,
    settings: ModelSettings,
    *,
    store_url: str | None = None,
    dataset: str,
    run_name: str | None = None,
    masks: bool = False,
    threshold: float | None = None,
    batch_size: int = 4,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    address: str | None = None,
    task_retries: int = TASK_RETRIES,
    params: dict[str, Any],
    on_status: Callable[[ImageStatus], None] | None = None,
) -> RayOutcome:
    """Pre-label ``files`` into a run of ``dataset`` on Ray: the run is created or resumed
    (`sync.prelabel_store.RunRecorder` with ``params``, the run parameters the local engine
    records: see `sync.cli`'s ``_run_params``), its pending images labelled (`run_on_ray`),
    and the run finished. ``store_url``: `worker_store_url`'s argument (None: ``AUTOLABEL_DB``)."""
    from sync.prelabel_store import RunRecorder
    from sync.store import open_store

    url = worker_store_url(store_url, address=address)
    with open_store(url) as store:
        recorder = RunRecorder(store, dataset, run_name, ontology, settings, params, files=files)
        return run_on_ray(
            recorder, recorder.pending(files), ontology, settings, store_url=url, address=address, masks=masks,
            threshold=threshold, batch_size=batch_size, workers=workers, gpus_per_worker=gpus_per_worker,
            task_retries=task_retries, on_status=on_status,
        )
