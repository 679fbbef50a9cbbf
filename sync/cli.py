"""The ``autolabel`` command line: a thin shell over the packages.

Heavy libraries (torch, transformers, segment_anything) are imported inside the commands
that need them, so ``autolabel --help`` starts fast and works without them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from sync.console import TINY_NOTICE, CliError, domain_errors, err, fail, out, print_error, quiet_libraries, text
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

__all__ = ["app", "main"]

app = typer.Typer(
    name="autolabel",
    help="Pre-label images for CVAT with Grounding DINO and SAM, and measure the first pass.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_command_groups() -> None:
    from sync.commands import cvat, data, evaluate, functions, models, qa, serve, store, train
    from sync.commands.cvat_prelabel import prelabel as cvat_prelabel

    app.add_typer(models.app, name="models")
    app.add_typer(functions.app, name="functions")
    serve.register(app)
    evaluate.register(app)
    data.register(app)
    train.register(app)
    qa.register(app)
    cvat.app.command("prelabel")(cvat_prelabel)
    app.add_typer(cvat.app, name="cvat")
    app.add_typer(store.app, name="store")


_register_command_groups()


def _load_ontology(ontology: Path | None, prompt: str | None):
    from serverless.ontology import OntologyError, load_ontology, ontology_from_prompt

    if (ontology is None) == (prompt is None):
        fail("give exactly one of --ontology FILE or --prompt 'a. b'")
    try:
        return load_ontology(ontology) if ontology is not None else ontology_from_prompt(prompt or "")
    except OntologyError as error:
        fail(str(error))


def _model_settings(ontology, **given: str | None):
    """`ModelSettings` from the options, the environment and the ontology's ``models``."""
    from serverless.pipeline import ModelSettings, ModelSpecError

    try:
        return ModelSettings.from_env(ontology=ontology, **given)
    except ModelSpecError as error:
        fail(str(error))


def _find_files(images: list[Path]) -> tuple[list[Path], int]:
    """The image files of the arguments, and how many arguments were skipped (reported here)."""
    from serverless.images import find_images

    files, problems = find_images(images)
    for problem in problems:
        err.print(text("skipped ", "yellow") + text(problem))
    if not files:
        fail("no image files found in " + ", ".join(map(str, images)))
    return files, len(problems)


def _open_run(dataset: str, run_name: str | None, ontology, settings, params: dict, files: list[Path]):
    """The run to record into (resumed or new), announced on stderr."""
    from sync.prelabel_store import RunRecorder
    from sync.store import open_store

    with domain_errors():
        recorder = RunRecorder(open_store(), dataset, run_name, ontology, settings, params, files=files)
    if recorder.note:
        err.print(text(recorder.note, "yellow"))
    done = len(files) - len(recorder.pending(files))
    how = f"resuming run {recorder.name!r}" if recorder.resumed else f"run {recorder.name!r} started"
    err.print(text(f"{how} (dataset {dataset!r}): {done} of {len(files)} images already done"), highlight=False)
    return recorder


def _resume_hint(recorder, files: list[Path]) -> None:
    """After an interruption: what the run holds and the command that carries it on."""
    import shlex

    done = len(files) - len(recorder.pending(files))
    args = sys.argv[1:]
    named = any(a == "--run" or a.startswith("--run=") for a in args)
    command = shlex.join(["autolabel", *args, *([] if named else ["--run", recorder.name])])
    err.print(
        text(f"run {recorder.name!r} stopped with {done} of {len(files)} images; "
             f"run the same command again to resume it{'' if named else ', or name it'}: {command}"),
        highlight=False,
        soft_wrap=True,
    )


def _compile_note(*models) -> None:
    """What ``--compile`` compiles (or that these models name nothing to compile)."""
    from serverless.models.base import compiled_networks

    names = list(compiled_networks(*models))
    err.print(text(f"torch.compile: {', '.join(names)}; the first batch of each frame size compiles (slow)"
                   if names else "torch.compile: these models name no network to compile; they run as they are"),
              highlight=False)


def _detect_all(
    files: list[Path], ontology, settings, *, masks: bool, threshold, batch_size: int, recorder, workers: int = 0
):
    """Load the models and pre-label ``files`` (``workers`` processes reading the images ahead;
    each batch recorded whole as it comes): results, load seconds."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from serverless.models.registry import ModelLoadError
    from serverless.ontology import OntologyError
    from serverless.pipeline import load_pipeline, prelabel_files

    began = time.perf_counter()
    try:
        detector, classifier = load_pipeline(settings, ontology, masks=masks)
    except (ModelLoadError, OntologyError) as error:
        fail(str(error))
    load_seconds = time.perf_counter() - began
    if settings.compile:
        _compile_note(detector, classifier)
    results = []
    batch = []  # this batch's labelled images, recorded together when its last result is in
    with Progress(
        TextColumn("pre-labelling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("prelabel", total=len(files))
        frames = prelabel_files(
            files, detector, classifier=classifier, threshold=threshold, batch_size=batch_size, workers=workers
        )
        for count, result in enumerate(frames, start=1):
            if result.error:
                progress.console.print(text("skipped ", "yellow") + text(result.error))
            else:
                batch.append((result.path, result.width, result.height, result.detections, result.tags))
            if recorder is not None and (count % batch_size == 0 or count == len(files)):
                with domain_errors():
                    recorder.record_many(batch)
            if count % batch_size == 0:
                batch = []
            results.append(result)
            progress.advance(task)
    return results, load_seconds


def _write_coco(out_file: Path, results, ontology, settings, *, masks: bool, root: Path) -> None:
    """The COCO file of ``--out``; tags (an ontology with tag labels) on each image entry
    (`serverless.convert.coco`)."""
    from serverless.convert.coco import CocoImage, to_coco, write_coco
    from sync.paths import coco_file_name

    done = [r for r in results if r.error is None]
    coco_images = [CocoImage(i, coco_file_name(r.path, root), r.width, r.height) for i, r in enumerate(done, start=1)]
    classifier = settings.classifier_for(ontology)
    data = to_coco(
        coco_images,
        [r.detections for r in done],
        list(ontology.label_names),
        info={
            "description": "autolabel pre-labels",
            "images_root": str(root),
            "model": settings.model_id(ontology),
            "detector": settings.detector.text if ontology.has_objects else None,
            "segmenter": settings.segmenter.text if masks and ontology.has_objects else None,
            "sam_checkpoint": settings.sam_checkpoint if masks and ontology.has_objects else None,
            "classifier": classifier.text if classifier is not None else None,
            "ontology_hash": ontology.content_hash,
            "tiny_models": settings.tiny,
        },
        tags=[r.tags for r in done] if ontology.has_tags else None,
    )
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_coco(out_file, data)


def _run_params(ontology, settings, *, masks: bool, threshold: float | None, batch_size: int) -> dict:
    """A run's recorded parameters: what a resumed run must share (`sync.prelabel_store.run_differences`)."""
    classifier = settings.classifier_for(ontology)
    return {
        "threshold": threshold, "masks": masks, "batch_size": batch_size,
        "sam_model_type": settings.sam_model_type if masks else None,
        "sam_checkpoint": settings.sam_checkpoint if masks else None, "tiny_models": settings.tiny,
        "classifier": classifier.text if classifier is not None else None,
    }


def _check_batching(threshold: float | None, batch_size: int) -> None:
    """``--threshold`` and ``--batch-size`` as both engines take them."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must lie in 0..1, got {threshold}")
    if batch_size < 1:
        fail(f"--batch-size must be at least 1, got {batch_size}")


def _finish_done_run(recorder, dataset: str) -> None:
    """A run that covers every input already: sealed, and said so."""
    with domain_errors():
        run = recorder.finish()
    out.print(text(f"run: {run.name} (dataset {dataset!r}); nothing left to do"), highlight=False)


def _run_prelabel(
    images: list[Path],
    ontology,
    settings,
    *,
    masks: bool,
    threshold: float | None,
    batch_size: int,
    out_file: Path | None,
    dataset: str | None = None,
    run_name: str | None = None,
    workers: int = 0,
) -> None:
    from sync.paths import images_root

    _check_batching(threshold, batch_size)
    if workers < 0:
        fail(f"--workers must be at least 0, got {workers}")
    files, skipped = _find_files(images)
    if out_file is None and dataset is None:
        fail("give --out FILE.json, --dataset NAME, or both")
    recorder = None
    todo = files
    if dataset is not None:
        params = _run_params(ontology, settings, masks=masks, threshold=threshold, batch_size=batch_size)
        recorder = _open_run(dataset, run_name, ontology, settings, params, files)
        todo = recorder.pending(files)
        if not todo:
            _finish_done_run(recorder, dataset)
            return
    if settings.tiny:
        err.print(TINY_NOTICE)
    quiet_libraries()
    began = time.perf_counter()
    try:
        results, load_seconds = _detect_all(
            todo, ontology, settings, masks=masks, threshold=threshold, batch_size=batch_size, recorder=recorder,
            workers=workers,
        )
    except KeyboardInterrupt:
        if recorder is not None:
            _resume_hint(recorder, files)
        raise
    if out_file is not None:
        _write_coco(out_file, results, ontology, settings, masks=masks, root=images_root(images))
    _print_summary(ontology, results, out_file, time.perf_counter() - began, load_seconds, skipped)
    if recorder is not None:
        with domain_errors():
            run = recorder.finish()
        out.print(text(f"run: {run.name} (dataset {dataset!r})"), highlight=False)
    if settings.tiny:
        err.print(TINY_NOTICE)
    if not any(r.error is None for r in results):
        fail("no image could be read")


def _ray_files(images: list[Path], dataset: str) -> tuple[list[Path], int]:
    """The files of ``--engine ray``: those of IMAGES, else the dataset's samples (local paths)."""
    if images:
        return _find_files(images)
    from sync.store import open_store

    with domain_errors(), open_store() as store:
        uris = [sample.uri for sample in store.samples(store.get_dataset(dataset))]
    if not uris:
        fail(f"dataset {dataset!r} has no samples; give the image files or folders to pre-label")
    remote = [uri for uri in uris if not Path(uri).is_absolute()]
    if remote:
        fail(f"dataset {dataset!r} has samples that are not local files (first: {remote[0]}); give IMAGES instead")
    return [Path(uri) for uri in uris], 0


def _run_prelabel_ray(
    images: list[Path],
    ontology,
    settings,
    *,
    masks: bool,
    threshold: float | None,
    batch_size: int,
    dataset: str | None,
    run_name: str | None,
    address: str | None,
    ray_workers: int | None,
    gpus_per_worker: float | None,
    ray_retries: int | None,
) -> None:
    """``autolabel prelabel --engine ray``: the run opened here, labelled and written by Ray
    workers (`sync.ray_prelabel.run_on_ray`), checked and finished here. On a local Ray the
    models' weights are located here first (the workers load them on this machine): missing
    ones are one line before any run is made. Interrupted or failed on Ray, the run is kept
    and the command that resumes it is shown."""
    import ray.data  # noqa: F401 (missing: the one-line hint of `main`, before a run is made)

    if dataset is None:
        fail("--engine ray records a run in the store: give --dataset NAME")
    _check_batching(threshold, batch_size)
    if ray_workers is not None and ray_workers < 1:
        fail(f"--ray-workers must be at least 1, got {ray_workers}")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        fail(f"--gpus-per-worker must be at least 0, got {gpus_per_worker}")
    if ray_retries is not None and ray_retries < 0:
        fail(f"--ray-retries must be at least 0, got {ray_retries}")
    from serverless.models.registry import ModelLoadError
    from serverless.pipeline import locate_pipeline
    from sync.ray_prelabel import TASK_RETRIES, worker_store_url

    with domain_errors():
        store_url = worker_store_url(address=address)  # never shown: it may hold a password
    files, skipped = _ray_files(images, dataset)
    try:
        if address is None:
            locate_pipeline(settings, ontology, masks=masks)
    except ModelLoadError as error:
        fail(str(error))
    params = _run_params(ontology, settings, masks=masks, threshold=threshold, batch_size=batch_size)
    recorder = _open_run(dataset, run_name, ontology, settings, params, files)
    if not recorder.pending(files):
        _finish_done_run(recorder, dataset)
        return
    if settings.tiny:
        err.print(TINY_NOTICE)
    quiet_libraries()
    try:
        outcome = _label_on_ray(
            recorder, recorder.pending(files), ontology, settings, store_url=store_url, address=address,
            masks=masks, threshold=threshold, batch_size=batch_size, workers=ray_workers,
            gpus_per_worker=gpus_per_worker, task_retries=TASK_RETRIES if ray_retries is None else ray_retries,
        )
    except (KeyboardInterrupt, CliError):
        with domain_errors():
            recorder.reload()
        _resume_hint(recorder, files)
        raise
    out.print(
        f"{outcome.done} images, {outcome.detections} detections, {len(outcome.errors) + skipped} skipped; "
        f"{outcome.seconds:.1f} s on Ray"
    )
    out.print(text(f"run: {outcome.run} (dataset {dataset!r})"), highlight=False)
    if settings.tiny:
        err.print(TINY_NOTICE)
    if outcome.errors and not outcome.done:
        fail("no image could be read")


def _label_on_ray(recorder, files: list[Path], ontology, settings, **options):
    """`sync.ray_prelabel.run_on_ray` under a progress bar; a failure on Ray in one line."""
    from ray.exceptions import RayActorError, RayError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sync.ray_prelabel import run_on_ray

    with Progress(
        TextColumn("pre-labelling on Ray"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("prelabel", total=len(files))

        def advance(status) -> None:
            if status.error is not None:
                progress.console.print(text("skipped ", "yellow") + text(status.error))
            progress.advance(task)

        try:
            with domain_errors():
                return run_on_ray(recorder, files, ontology, settings, on_status=advance, **options)
        except RayError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            why = lines[-1] if lines else type(error).__name__
            if isinstance(error, RayActorError):
                why = (f"a model worker died on every try of a batch (out of memory or a crash: its Ray "
                       f"worker log says which); last: {why}")
            fail(f"the Ray engine failed: {why}")


def _print_summary(
    ontology, results, out_file: Path | None, seconds: float, load_seconds: float, skipped_before: int = 0
) -> None:
    """The per-label table (a tag label counts its tags) and one line of totals;
    ``skipped_before``: arguments skipped before the run (missing files and folders), counted
    with the files that could not be read."""
    import numpy as np
    from rich.table import Table

    done = [r for r in results if r.error is None]
    table = Table(title=text(f"Pre-labels → {out_file}" if out_file else "Pre-labels"))
    table.add_column("label")
    table.add_column("detections", justify="right")
    table.add_column("images", justify="right")
    table.add_column("mean score", justify="right")
    per_image = [_labelled(r) for r in done]
    for label in ontology.label_names:
        scores = [s for pairs in per_image for name, s in pairs if name == label]
        images = sum(1 for pairs in per_image if any(name == label for name, _ in pairs))
        table.add_row(text(label), str(len(scores)), str(images), f"{np.mean(scores):.3f}" if scores else "-")
    out.print(table)
    total = sum(len(r.detections) for r in done)
    tags = sum(len(r.tags) for r in done if r.tags is not None)
    skipped = len(results) - len(done) + skipped_before
    infer = sum(r.seconds for r in done)
    rate = f"{len(done) / infer:.2f} images/s" if infer > 0 else "-"
    tagged = f", {tags} tags" if ontology.has_tags else ""
    out.print(
        f"{len(done)} images, {total} detections{tagged}, {skipped} skipped; "
        f"{seconds:.1f} s in all ({load_seconds:.1f} s loading models, {rate} inference)"
    )


def _labelled(result) -> list[tuple[str, float]]:
    """``(label, score)`` of an image's detections and tags."""
    pairs = list(zip(result.detections.labels.tolist(), result.detections.scores.tolist()))
    if result.tags is not None:
        pairs += list(zip(result.tags.labels.tolist(), result.tags.scores.tolist()))
    return pairs


@app.command()
def prelabel(
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Image files or folders (searched recursively). With --engine ray and none: "
                       "the --dataset's samples (local paths)."),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="COCO JSON to write (scores included; file_name relative to info.images_root)."),
    ] = None,
    ontology: Annotated[Path | None, typer.Option(help="Ontology YAML file.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Labels as a prompt instead: 'person. ladder'.")] = None,
    masks: Annotated[bool, typer.Option("--masks", help="Add SAM masks (Grounded-SAM).")] = False,
    threshold: Annotated[
        float | None, typer.Option(help="One score threshold for every label, boxes and tags (0..1).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 4,
    workers: Annotated[
        int, typer.Option(help="Processes reading images ahead of the models (0: read them in the main process).")
    ] = 0,
    detector: DetectorOption = None,
    segmenter: SegmenterOption = None,
    classifier: ClassifierOption = None,
    gdino_model: GdinoModelOption = None,
    sam_checkpoint: SamCheckpointOption = None,
    sam_model_type: SamModelTypeOption = None,
    device: DeviceOption = None,
    compile_models: CompileOption = None,
    dataset: Annotated[
        str | None, typer.Option(help="Record samples, run and annotations in the store (AUTOLABEL_DB).")
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(help="Run name (default prelabel-N). An unfinished run resumes: this one, or without --run "
                     "the newest with the same ontology, model and options whose images are among these."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="local: this process; ray: a Ray Data actor pool (needs the ray extra).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="--engine ray: the Ray cluster ('auto' inside one); default a local Ray.")
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(help="--engine ray: model workers (actors); default the cluster's GPUs / --gpus-per-worker, or 1."),
    ] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option(help="--engine ray: GPUs per model worker; default 1 when the cluster has GPUs, else 0.")
    ] = None,
    ray_retries: Annotated[
        int | None,
        typer.Option(help="--engine ray: times a batch is retried when its worker dies, then the run stops "
                     "(resumable); default 3."),
    ] = None,
) -> None:
    """Pre-label images into COCO JSON and/or a pre-label run in the store.

    Object labels (rectangle, polygon, mask) go to the detector; tag labels (image-level) to the
    classifier, which runs only for an ontology that has them (an ontology of tags alone runs no
    detector). In COCO output an image's tags are its entry's "tags" list."""
    ray_options = {
        "address": address, "ray_workers": ray_workers, "gpus_per_worker": gpus_per_worker, "ray_retries": ray_retries,
    }
    if engine not in ("local", "ray"):
        fail(f"--engine must be local or ray, got {engine!r}")
    if engine == "local":
        named = [f"--{name.replace('_', '-')}" for name, value in ray_options.items() if value is not None]
        if named:
            fail(f"{', '.join(named)} {'needs' if len(named) == 1 else 'need'} --engine ray")
        if not images:
            fail("give the image files or folders to pre-label (only --engine ray reads a --dataset's samples)")
    onto = _load_ontology(ontology, prompt)
    settings = _model_settings(
        onto, detector=detector, segmenter=segmenter, classifier=classifier, gdino_model=gdino_model,
        sam_checkpoint=sam_checkpoint, sam_model_type=sam_model_type, device=device, compile=compile_models,
    )
    if engine == "ray":
        if out_file is not None or workers:
            fail("--out and --workers work with --engine local only; the ray engine writes a run to the store")
        _run_prelabel_ray(
            images or [], onto, settings, masks=masks, threshold=threshold, batch_size=batch_size,
            dataset=dataset, run_name=run, **ray_options,
        )
        return
    _run_prelabel(
        images or [], onto, settings, masks=masks, threshold=threshold, batch_size=batch_size, out_file=out_file,
        dataset=dataset, run_name=run, workers=workers,
    )


@app.command()
def demo(
    out_file: Annotated[Path, typer.Option("--out", help="COCO JSON to write.")] = Path("out/samples.coco.json"),
    tiny_dir: Annotated[Path, typer.Option(help="Where tiny models are written if needed.")] = Path(
        ".cache/autolabel/tiny"
    ),
    detector: DetectorOption = None,
    segmenter: SegmenterOption = None,
) -> None:
    """Pre-label the bundled sample photographs (real weights if available, else tiny models).

    A model named with --detector/--segmenter must be found: the demo then never falls back to tiny ones."""
    from serverless.demo import resolve_demo_settings, sample_dir
    from serverless.models.registry import ModelLoadError, ModelSpecError

    quiet_libraries()
    samples = sample_dir()
    onto = _load_ontology(samples / "ontology.yaml", None)
    try:
        resolved = resolve_demo_settings(tiny_dir, detector=detector, segmenter=segmenter, ontology=onto)
    except (ModelLoadError, ModelSpecError) as error:
        fail(str(error))
    for line in resolved.notes:
        err.print(text(line, "bold red" if resolved.settings.tiny else ""), highlight=False)
    _run_prelabel(
        [samples], onto, resolved.settings, masks=resolved.masks, threshold=None, batch_size=2, out_file=out_file
    )


EXTRA_OF = {
    **dict.fromkeys(("torch", "torchvision", "transformers", "huggingface_hub", "segment_anything"), "models"),
    "ultralytics": "yolo",
    "faiss": "qa",
    "sklearn": "qa",
    "ray": "ray",
}
"""What the ``models``, ``yolo``, ``qa`` and ``ray`` extras install, by top-level module: a command that
needs one of them and finds it missing says how to install it, in one line."""


def main() -> None:
    try:
        app()
    except CliError as error:
        print_error(error)
        sys.exit(2)
    except ModuleNotFoundError as error:
        extra = EXTRA_OF.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        print_error(f"this command needs the {extra} extra, and {error.name} is not installed: "
                    f"pip install 'autolabel-cvat[{extra}]'")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
