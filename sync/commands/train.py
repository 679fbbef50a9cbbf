"""``autolabel train`` (a detector on the store's labels, recorded with its lineage),
``autolabel lineage`` (what a model, or the pre-labels it made, was trained on) and
``autolabel experiment thresholds`` (which pre-label threshold trains the best model)."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from sync.console import domain_errors, err, fail, out, text

__all__ = ["register"]


@contextlib.contextmanager
def training_errors() -> Iterator[None]:
    """The store's, the export's, the models' and training's errors as one-line CLI errors."""
    from serverless.models.registry import ModelLoadError, ModelSpecError
    from sync.export import ExportError
    from sync.train import TrainingError

    with domain_errors():
        try:
            yield
        except (TrainingError, ExportError, ModelLoadError, ModelSpecError) as error:
            fail(str(error))


def _store() -> Any:
    from sync.store import open_store

    with domain_errors():
        return open_store()


def _show_plan(plan: Any, run: Any) -> None:
    from rich.table import Table

    from sync.train.plan import class_counts

    table = Table(title=text(f"training run {run.name}: {plan.export.train} train / {plan.export.val} val images, "
                             f"labels {plan.source.text}" + (f" at >= {plan.threshold:g}" if plan.threshold else "")))
    for column in ("class", "train boxes", "val boxes"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, n_train, n_val in class_counts(plan):
        table.add_row(text(name), str(n_train), str(n_val))
    err.print(table)
    sources = ", ".join(f"{source} {n}" for source, n in plan.export.counts.items())
    dropped = "; ".join(f"{n} {reason}" for reason, n in plan.export.dropped.items())
    err.print(text(f"labels from {sources}" + (f"; not trained on: {dropped}" if dropped else "")), highlight=False)
    moved = plan.metadata.get("duplicates")
    if moved:
        err.print(text(f"duplicates together: {moved['spanning']} of {moved['groups']} duplicate groups spanned train "
                       f"and val; {moved['moved']} samples moved"), highlight=False)
    err.print(text(f"training into {run.out_dir} (interrupt: `autolabel train --dataset {plan.dataset} --resume "
                   f"--name {run.name}` carries on)"), highlight=False, soft_wrap=True)


def _show_result(result: Any, dataset: str) -> None:
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if k != "fitness")
    out.print(text(f"training run {result.run.name} (dataset {dataset!r}) finished: {result.weights}"),
              highlight=False, soft_wrap=True)
    out.print(text(f"weights {result.run.weights_sha256}; validation ({result.run.labels} labels): {metrics}"),
              highlight=False, soft_wrap=True)
    spec = shlex.quote(f"yolo:{result.weights}")
    out.print(text(f"next: autolabel prelabel IMAGES --ontology ONTOLOGY --dataset {dataset} --detector {spec}, "
                   f"then autolabel eval --dataset {dataset} (held-out samples only); "
                   f"autolabel functions render --ontology ONTOLOGY --out functions/ --detector {spec} puts it behind "
                   "CVAT's auto-annotate"),
              highlight=False, soft_wrap=True)


def train(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    labels: Annotated[str, typer.Option(help="human | prelabel:RUN | mixed[:RUN] (human where corrected, else pre-labels).")] = "human",
    threshold: Annotated[float | None, typer.Option(help="Pre-labels scored below this are not trained on.")] = None,
    model: Annotated[str, typer.Option(help="Base model: yolo11n.pt (public, downloaded once), a .pt path, or a .yaml (random init).")] = "yolo11n.pt",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 100,
    imgsz: Annotated[int, typer.Option(help="Training image size (pixels).")] = 640,
    batch: Annotated[int, typer.Option(help="Images per batch (-1: ultralytics chooses for the GPU).")] = 16,
    device: Annotated[str | None, typer.Option(help="cpu, 0, 0,1 … (default: ultralytics chooses).")] = None,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = 8,
    val: Annotated[float, typer.Option(help="Validation fraction of the dataset (fixed per sample by --seed).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the train/val split and of training.")] = 0,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default autolabel-runs/DATASET/NAME).")] = None,
    name: Annotated[str | None, typer.Option(help="Training run name (default train-N).")] = None,
    ontology: Annotated[Path | None, typer.Option(help="The classes must be exactly this ontology's object labels.")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="ultralytics' training plots.")] = True,
    resume: Annotated[bool, typer.Option("--resume", help="Carry on the unfinished training run (--name, else the newest).")] = False,
    duplicates_together: Annotated[bool, typer.Option("--duplicates-together", help="Keep each group of duplicate images (autolabel embed first) on one side of the split.")] = False,
) -> None:
    """Train a YOLO detector on the dataset's labels and record it (lineage, split, metrics, weights sha256)."""
    from sync.train import TrainOptions, resume_training, train_detector

    store = _store()
    onto = _ontology(ontology)
    options = TrainOptions(labels=labels, threshold=threshold, model=model, epochs=epochs, imgsz=imgsz, batch=batch,
                           device=device, workers=workers, val=val, seed=seed, plots=plots,
                           duplicates_together=duplicates_together)
    try:
        with training_errors():
            if resume:
                result = resume_training(store, dataset, name)
            else:
                result = train_detector(store, dataset, options, out=out_dir, name=name, ontology=onto,
                                        on_plan=_show_plan)
    except KeyboardInterrupt:
        err.print(text(f"training interrupted; `autolabel train --dataset {dataset} --resume` carries on the newest "
                       "unfinished run"), highlight=False)
        raise
    _show_result(result, dataset)


def lineage(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    run: Annotated[str, typer.Option(help="A pre-label run made with trained weights, or a training run.")],
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the lineage as JSON.")] = None,
) -> None:
    """What a model was trained on: labels, threshold, split, the runs that fed it, metrics."""
    from sync.train.lineage import lineage_of

    store = _store()
    with training_errors():
        found = lineage_of(store, dataset, run)
    for line in found["lines"]:
        out.print(text(line), highlight=False, soft_wrap=True)
    if json_file is not None:
        _write(json_file, (json.dumps(found["data"], indent=1) + "\n").encode())


experiment_app = typer.Typer(help="Experiments that train models to answer a question about the labels.",
                             no_args_is_help=True)


@experiment_app.command("thresholds")
def thresholds(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    thresholds_text: Annotated[str, typer.Option("--thresholds", help="Pre-label thresholds to train with.")] = "0.2,0.3,0.5,0.8",
    prelabels: Annotated[str | None, typer.Option(help="Pre-label run to train on (default: the latest).")] = None,
    model: Annotated[str, typer.Option(help="Base model of every training (as autolabel train).")] = "yolo11n.pt",
    epochs: Annotated[int, typer.Option(help="Epochs per model.")] = 30,
    imgsz: Annotated[int, typer.Option(help="Training image size.")] = 640,
    batch: Annotated[int, typer.Option(help="Images per batch.")] = 16,
    device: Annotated[str | None, typer.Option(help="cpu, 0 … (default: ultralytics chooses).")] = None,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = 8,
    val: Annotated[float, typer.Option(help="Validation fraction (the dataset's fixed split).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split and of training.")] = 0,
    name: Annotated[str, typer.Option(help="Prefix of the runs it records.")] = "thresholds",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default autolabel-runs/DATASET/NAME).")] = None,
    ontology: Annotated[Path | None, typer.Option(help="The classes must be this ontology's object labels.")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the table as JSON.")] = None,
    html_file: Annotated[Path | None, typer.Option("--html", help="Write the HTML report (table, plot, every model).")] = None,
    plot_file: Annotated[Path | None, typer.Option("--plot", help="Write the plot as PNG (default OUT/thresholds.png).")] = None,
) -> None:
    """Train one model per pre-label threshold (and one on human labels), measure each on the
    human-corrected validation samples: which threshold should the team pre-label with?"""
    from sync.train.experiment import parse_thresholds, threshold_experiment
    from sync.train.experiment_report import experiment_section, experiment_table, plot_png
    from sync.train.run import TrainOptions, default_out

    store = _store()
    onto = _ontology(ontology)
    options = TrainOptions(model=model, epochs=epochs, imgsz=imgsz, batch=batch, device=device, workers=workers,
                           val=val, seed=seed, plots=False)
    out_dir = out_dir or default_out(dataset, name)
    with training_errors():
        chosen = parse_thresholds(thresholds_text)
        experiment = threshold_experiment(store, dataset, chosen, options, out_dir, prelabels=prelabels, name=name,
                                          ontology=onto, on_step=lambda line: err.print(text(line), highlight=False))
    out.print(experiment_table(experiment))
    png = plot_png(experiment)
    plot_path = plot_file or Path(out_dir) / "thresholds.png"
    _write(plot_path, png)
    err.print(text(f"plot: {plot_path}"), highlight=False)
    if json_file is not None:
        _write(json_file, (json.dumps(experiment.to_dict(), indent=1) + "\n").encode())
        err.print(text(f"JSON: {json_file}"), highlight=False)
    if html_file is not None:
        from sync.evaluate.html import render_html

        page = render_html(experiment.report, sections=[experiment_section(experiment, png)])
        _write(html_file, page.encode("utf-8"))
        err.print(text(f"HTML report: {html_file}"), highlight=False)


def _ontology(path: Path | None) -> Any:
    if path is None:
        return None
    from serverless.ontology import load_ontology

    with domain_errors():
        return load_ontology(path)


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``lineage`` and ``experiment`` to the ``autolabel`` app."""
    app.command("train")(train)
    app.command("lineage")(lineage)
    app.add_typer(experiment_app, name="experiment")
