"""``autolabel cvat prelabel TASK``: pre-label an existing CVAT task with the local models.

Registered by ``sync.commands.cvat`` as ``app.command("prelabel")(prelabel)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sync.commands.cvat import CaCertOption, InsecureOption, OrgOption, UrlOption, _connect, _store
from sync.console import domain_errors, err, fail, out
from sync.options import (
    ClassifierOption,
    CompileOption,
    DetectorOption,
    DeviceOption,
    GdinoModelOption,
    SamCheckpointOption,
    SamModelTypeOption,
    SegmenterOption,
)

if TYPE_CHECKING:
    from sync.cvat_prelabel import TaskPrelabelResult

__all__ = ["prelabel"]


def prelabel(
    task: Annotated[int, typer.Argument(help="CVAT task id.")],
    ontology: Annotated[Path, typer.Option(help="Ontology YAML; each of its labels must be a label of the task.")],
    masks: Annotated[bool, typer.Option("--masks", help="Add SAM masks (Grounded-SAM).")] = False,
    threshold: Annotated[
        float | None, typer.Option(help="One score threshold for every label, boxes and tags (0..1).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Frames per model call.")] = 4,
    workers: Annotated[
        int, typer.Option(help="Threads downloading and decoding frames ahead of the models (0: one at a time).")
    ] = 0,
    dataset: Annotated[
        str | None, typer.Option(help="Store dataset (default: the task's, else cvat-task-<TASK>).")
    ] = None,
    run: Annotated[
        str | None, typer.Option(help="Run name (default: the task's run, else prelabel-N); an unfinished run resumes.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite jobs a human has already changed.")] = False,
    detector: DetectorOption = None,
    segmenter: SegmenterOption = None,
    classifier: ClassifierOption = None,
    gdino_model: GdinoModelOption = None,
    sam_checkpoint: SamCheckpointOption = None,
    sam_model_type: SamModelTypeOption = None,
    device: DeviceOption = None,
    compile_models: CompileOption = None,
    url: UrlOption = None,
    org: OrgOption = None,
    insecure: InsecureOption = False,
    ca_cert: CaCertOption = None,
) -> None:
    """Pre-label an existing CVAT task: read its frames, run the models here, upload per job.

    Object labels go to the detector, tag labels (image-level) to the classifier; tags are uploaded
    as job tags.

    Jobs holding annotations this store did not upload (a human's, or another tool's), or a human's
    changes to the pre-labels, are left alone unless --force; when that is every job, nothing is run.
    Everything goes into the store: a rerun resumes the task's run (with the ontology, model and options it
    was made with; others are refused), and `autolabel cvat pull --task TASK` works afterwards.
    Exits 1 when frames failed or jobs were left alone or for later.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from serverless.models.registry import ModelLoadError
    from serverless.ontology import load_ontology
    from serverless.pipeline import ModelSettings, ModelSpecError
    from sync.console import TINY_NOTICE, quiet_libraries
    from sync.cvat_prelabel import prelabel_task

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must lie in 0..1, got {threshold}")
    if batch_size < 1:
        fail(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        fail(f"--workers must be at least 0, got {workers}")
    with domain_errors():
        onto = load_ontology(ontology)
    try:
        settings = ModelSettings.from_env(
            detector=detector, segmenter=segmenter, classifier=classifier, gdino_model=gdino_model,
            sam_checkpoint=sam_checkpoint, sam_model_type=sam_model_type, device=device, ontology=onto,
            compile=compile_models,
        )
    except ModelSpecError as error:
        fail(str(error))
    store = _store()
    session = _connect(url, org, insecure, ca_cert)
    if settings.tiny:
        err.print(TINY_NOTICE)
    quiet_libraries()
    with Progress(
        TextColumn("pre-labelling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        frames = bar.add_task("frames", total=None)
        try:
            with domain_errors():
                result = prelabel_task(
                    store,
                    session,
                    task,
                    onto,
                    settings,
                    masks=masks,
                    threshold=threshold,
                    batch_size=batch_size,
                    workers=workers,
                    dataset=dataset,
                    run_name=run,
                    force=force,
                    report=lambda message: bar.console.print(message, markup=False, highlight=False),
                    progress=lambda done, total: bar.update(frames, completed=done, total=total),
                )
        except ModelLoadError as error:
            fail(str(error))
    _print_result(result)
    if settings.tiny:
        err.print(TINY_NOTICE)
    if not result.complete:
        raise typer.Exit(1)


def _print_result(result: TaskPrelabelResult) -> None:
    """What was done, and what is left for a rerun (names printed literally)."""
    out.print(
        f"task {result.task_id}: {len(result.processed)} of {result.frames} frames pre-labelled now"
        + (f" ({result.resumed} before)" if result.resumed else "")
        + f", {result.shapes + result.tags} pre-labels uploaded to jobs {list(result.uploaded_jobs)}"
        + (f" ({result.tags} of them tags)" if result.tags else "")
        + (f", jobs {list(result.already_uploaded_jobs)} already uploaded" if result.already_uploaded_jobs else "")
        + f"; run {result.run!r} of dataset {result.dataset!r}"
        + (" (finished)" if result.finished else ""),
        markup=False,
        highlight=False,
    )
    if result.failed:
        out.print(
            f"frames not pre-labelled: {[f.frame for f in result.failed]} (rerun the command to retry them)",
            highlight=False,
        )
    if result.waiting_jobs:
        out.print(f"jobs waiting for those frames: {list(result.waiting_jobs)}", highlight=False)
    if result.skipped_jobs:
        out.print(
            f"jobs left alone: {list(result.skipped_jobs)} (they hold annotations this store did not upload or a "
            "human's changes, see above; --force replaces them)",
            highlight=False,
        )
