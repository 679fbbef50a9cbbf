"""``autolabel embed`` (CLIP embeddings of a dataset's images and annotation crops, stored in the
label store) and the ``autolabel qa`` group of checks that read them (`sync.qa`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from sync.console import domain_errors, err, fail, out, quiet_libraries, text
from sync.options import DeviceOption

__all__ = [
    "duplicates", "embed", "latest_prelabel", "mistakes", "mistakes_payload", "owning_runs", "qa_app", "qa_errors",
    "register", "write_selection",
]

SHOWN_SKIPS = 10
"""Skipped images listed one per line; the rest are counted."""

qa_app = typer.Typer(
    help="Quality checks by embeddings (run `autolabel embed` first).", no_args_is_help=True
)


@contextlib.contextmanager
def qa_errors() -> Iterator[None]:
    """The store's, the models' and QA's errors as one-line CLI errors."""
    from serverless.models.registry import ModelLoadError, ModelSpecError
    from sync.qa.errors import QaError

    with domain_errors():
        try:
            yield
        except (QaError, ModelLoadError, ModelSpecError) as error:
            fail(str(error))


def _store() -> Any:
    from sync.store import open_store

    with domain_errors():
        return open_store()


def _show(summary: Any) -> None:
    """The skipped images (on stderr) and one summary line per kind."""
    parts = [summary.images] + ([summary.objects] if summary.objects is not None else [])
    skipped = [s for part in parts for s in part.skipped]
    for item in skipped[:SHOWN_SKIPS]:
        err.print(text("skipped ", "yellow") + text(f"{item.uri}: {item.reason}"), highlight=False, soft_wrap=True)
    if len(skipped) > SHOWN_SKIPS:
        err.print(text(f"… and {len(skipped) - SHOWN_SKIPS} more images skipped", "yellow"), highlight=False)
    for part in parts:
        what = "images" if part.kind == "image" else f"object crops ({summary.source})"
        out.print(
            text(f"{what}: embedded {part.added} new, {part.stored} already stored, {part.skipped_items} skipped"),
            highlight=False,
            soft_wrap=True,
        )
    out.print(text(f"dataset {summary.dataset!r}, model {summary.model}"), highlight=False, soft_wrap=True)


def embed(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    model: Annotated[str | None, typer.Option(help="clip[:HUB_ID | :DIRECTORY] (default clip: openai/clip-vit-base-patch32 \\[env AUTOLABEL_CLIP_MODEL]).")] = None,
    objects: Annotated[bool, typer.Option("--objects", help="Also embed each annotation's crop (shapes, not tags).")] = False,
    run: Annotated[str | None, typer.Option(help="Crop this run's annotations (default: the latest human revision per sample).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images or crops per model pass and per stored batch.")] = 32,
    device: DeviceOption = None,
) -> None:
    """Store CLIP embeddings of the dataset's images (--objects: and of each annotation's crop).

    Only what is not stored for that model yet is computed, in batches each stored as it is
    done: an interrupted run carries on where it stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sync.qa.embed import embed_dataset

    quiet_libraries()
    store = _store()
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:

        def report(kind: str, done: int, total: int) -> None:
            if kind not in tasks:
                tasks[kind] = progress.add_task(f"embedding {kind}s", total=total)
            progress.update(tasks[kind], completed=done, total=total)

        try:
            with qa_errors():
                summary = embed_dataset(store, dataset, model_spec=model, objects=objects, run=run,
                                        batch_size=batch_size, device=device, progress=report)
        except KeyboardInterrupt:
            progress.stop()
            err.print(text("interrupted: the finished batches are stored; run the same command again to carry on"),
                      highlight=False)
            raise
    _show(summary)


ModelOption = Annotated[
    str | None, typer.Option(help="The clip[:WEIGHTS] model the embeddings were made with (default clip).")
]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="Write the samples as JSON (for `autolabel cvat push --samples`).")
]


def latest_prelabel(store: Any, dataset: str) -> str | None:
    """The name of the dataset's latest pre-label run (what a selection file is pushed with), or None."""
    from sync.evaluate.data import EvalError
    from sync.evaluate.load import default_pred

    try:
        return default_pred(store, dataset).name
    except EvalError:
        return None


def write_selection(path: Path, payload: dict[str, Any], push_runs: Sequence[str] = ()) -> None:
    """Write a selection file (the shape of ``autolabel select --out``) and say how to push it:
    with the runs that hold its annotations (``push_runs``, one review task each), else its run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}")
    for run in push_runs or [payload.get("run") or "RUN"]:
        err.print(text(f"selection: {path} (push it for review: autolabel cvat push --dataset {payload['dataset']} "
                       f"--run {run} --samples {path} --task-name NAME)"), highlight=False, soft_wrap=True)


def owning_runs(store: Any, dataset: str, run: str | None, sample_ids: Sequence[int]) -> list[str]:
    """The runs whose annotations a mistakes selection holds: ``run``, else each selected
    sample's truth revision (`sync.views.latest_truth_per_sample`)."""
    if run is not None:
        return [run]
    from sync.views import latest_truth_per_sample

    truth, _ = latest_truth_per_sample(store, dataset)
    return sorted({truth[sid].name for sid in sample_ids if sid in truth})


@qa_app.command()
def duplicates(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    model: ModelOption = None,
    threshold: Annotated[float, typer.Option(help="Cosine similarity from which two images are near duplicates.")] = 0.95,
    out_file: OutOption = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML page with thumbnails of each group.")] = None,
) -> None:
    """Groups of exact (same file content) and near-duplicate images, from the stored image embeddings."""
    from rich.table import Table

    from sync.qa.scores import dataset_duplicates

    store = _store()
    with qa_errors():
        found = dataset_duplicates(store, dataset, model=model, threshold=threshold)
    table = Table(title=text(f"{len(found.groups)} duplicate groups in {len(found.samples)} embedded samples "
                             f"of {dataset!r} (threshold {found.threshold:g})"))
    for column in ("group", "kind", "min similarity", "uris"):
        table.add_column(column, justify="right" if column in ("group", "min similarity") else "left")
    for number, group in enumerate(found.groups, 1):
        uris = "\n".join(found.samples[m].uri for m in group.members)
        table.add_row(str(number), group.kind, f"{group.min_similarity:.3f}", text(uris))
    out.print(table)
    if out_file is not None:
        write_selection(out_file, {
            "dataset": dataset, "run": latest_prelabel(store, dataset), "truth": None, "by": "duplicates",
            "budget": None, "model": found.model, "threshold": found.threshold,
            "samples": [{"sample_id": int(m), "uri": found.samples[m].uri, "group": number, "kind": group.kind,
                         "similarity": group.min_similarity}
                        for number, group in enumerate(found.groups, 1) for m in group.members],
        })
    if html is not None:
        from sync.qa.report import write_duplicates_page

        _write_page(lambda: write_duplicates_page(found, html), html)


def mistakes_payload(
    found: Any, uris: dict[int, str], sample_ids: list[int], run: str | None, budget: Any
) -> dict[str, Any]:
    """A selection file of ``sample_ids`` with each one's mistakenness and scored annotations."""
    parts = found.sample_json()
    return {
        "dataset": found.dataset, "run": run, "truth": found.source, "by": "mistakenness", "budget": budget,
        "model": found.model, "samples": [{"sample_id": sid, "uri": uris[sid]} | parts[sid] for sid in sample_ids],
    }


@qa_app.command()
def mistakes(
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    model: ModelOption = None,
    run: Annotated[str | None, typer.Option(help="Score this run's annotations (default: the latest human revision per sample).")] = None,
    k: Annotated[int, typer.Option("--k", help="Nearest neighbours per annotation.")] = 10,
    classifier: Annotated[bool, typer.Option("--classifier/--no-classifier", help="Also the zero-shot classifier's disagreement with each label.")] = False,
    evaluation: Annotated[bool, typer.Option("--evaluation/--no-evaluation", help="Also human boxes the latest pre-label run missed (truth only).")] = True,
    top: Annotated[int, typer.Option(help="Most suspect annotations shown, and samples written to --out.")] = 20,
    out_file: OutOption = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML page: maps of the crop embeddings by label and by mistakenness, thumbnails of the --top suspects.")] = None,
    device: DeviceOption = None,
) -> None:
    """Annotations whose label disagrees with their nearest neighbours' (and, with --classifier, with CLIP's)."""
    from rich.table import Table

    from sync.qa.scores import annotation_mistakes

    if top < 1:
        fail(f"--top must be at least 1, got {top}")
    quiet_libraries()
    store = _store()
    with qa_errors():
        found = annotation_mistakes(store, dataset, model=model, run=run, k=k, classifier=classifier,
                                    evaluation=evaluation, device=device)
    ranked = sorted(found.annotations, key=lambda a: (-a.score, a.sample_id, a.annotation_id))[:top]
    with domain_errors():
        shown = {a.sample_id for a in found.annotations} | {m.sample_id for m in found.missed}
        uris = {s.id: s.uri for s in store.samples(dataset, ids=sorted(shown))}
    table = Table(title=text(f"{len(ranked)} most suspect of {len(found.annotations)} annotations ({found.source}; "
                             f"{', '.join(found.signals)})"))
    for column in ("sample", "label", "score", "reason"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for item in ranked:
        table.add_row(text(uris[item.sample_id]), text(item.label), f"{item.score:.3f}", text(item.reason))
    out.print(table)
    if found.missed:
        _print_missed(found.missed, uris, top)
    if out_file is not None:
        ids, values = found.sample_scores()
        order = sorted(range(len(ids)), key=lambda i: (-values[i], ids[i]))[:top]
        chosen = [ids[i] for i in order]
        write_selection(out_file, mistakes_payload(found, uris, chosen, latest_prelabel(store, dataset), str(top)),
                        owning_runs(store, dataset, run, chosen))
    if html is not None:
        from sync.qa.report import write_mistakes_page

        _write_page(lambda: write_mistakes_page(store, found, html, top=top), html)


def _print_missed(missed: Sequence[Any], uris: dict[int, str], top: int) -> None:
    """The confident pre-labels no human box matches (objects the annotators may have missed)."""
    from rich.table import Table

    table = Table(title=text(f"{min(top, len(missed))} of {len(missed)} confident pre-labels no human box matches "
                             "(possibly missed by the annotators)"))
    for column in ("sample", "label", "score", "box", "reason"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for item in sorted(missed, key=lambda m: (-m.score, m.sample_id, m.box))[:top]:
        box = ", ".join(f"{v:.0f}" for v in item.box)
        table.add_row(text(uris[item.sample_id]), text(item.label), f"{item.score:.3f}", box, text(item.reason))
    out.print(table)


def _write_page(write: Callable[[], None], path: Path) -> None:
    """Run ``write`` (an ``--html`` page of `sync.qa.report` to ``path``) and say where it is."""
    with qa_errors():
        try:
            write()
        except OSError as error:
            fail(f"cannot write {path}: {error.strerror or error}")
    err.print(text(f"report: {path}"), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``embed`` and the ``qa`` group to the ``autolabel`` app."""
    app.command("embed")(embed)
    app.add_typer(qa_app, name="qa")
