"""``autolabel embed`` (CLIP embeddings of a dataset's images and annotation crops, stored in the
label store) and the ``autolabel qa`` group of checks that read them (`sync.qa`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from sync.console import domain_errors, err, fail, out, quiet_libraries, text
from sync.options import DeviceOption

__all__ = ["embed", "qa_app", "qa_errors", "register"]

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


def register(app: typer.Typer) -> None:
    """Add ``embed`` and the ``qa`` group to the ``autolabel`` app."""
    app.command("embed")(embed)
    app.add_typer(qa_app, name="qa")
