"""``autolabel import`` (COCO labels into the store) and ``autolabel export`` (the store's labels
as COCO JSON or a YOLO dataset for training)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from sync.console import domain_errors, err, fail, literal, out, text

__all__ = ["export_labels", "import_labels", "register"]

FORMATS = ("coco", "yolo")
_SHOWN_SKIPS = 20


@contextlib.contextmanager
def _data_errors() -> Iterator[None]:
    """The store's and this command's domain errors as one-line CLI errors."""
    from sync.coco_import import CocoImportError
    from sync.export import ExportError

    with domain_errors():
        try:
            yield
        except (CocoImportError, ExportError) as error:
            fail(str(error))


def _store() -> Any:
    from sync.store import open_store

    with domain_errors():
        return open_store()


def import_labels(
    dataset: Annotated[str, typer.Option(help="Dataset in the store (created if missing).")],
    coco: Annotated[Path, typer.Option("--coco", help="COCO JSON to import (boxes, polygons, RLE; scores optional).")],
    images: Annotated[Path, typer.Option("--images", help="Folder the COCO file_name entries are relative to.")],
    as_run: Annotated[
        str | None, typer.Option("--as-run", help="Import as model predictions (scores kept) under this run name.")
    ] = None,
    as_revision: Annotated[
        str | None, typer.Option("--as-revision", help="Import as human truth (no scores) under this run name.")
    ] = None,
) -> None:
    """Import a COCO file as a finished run (all or nothing), samples keyed like pre-label runs."""
    from sync.coco_import import import_coco

    if (as_run is None) == (as_revision is None):
        fail("give exactly one of --as-run NAME or --as-revision NAME")
    name, role = (as_run, "prediction") if as_run is not None else (as_revision, "revision")
    store = _store()
    with _data_errors():
        run = import_coco(store, dataset, coco, images, name=name or "", role=role)
    params = run.params or {}
    crowd = params.get("crowd_annotations", 0)
    out.print(
        text(
            f"imported {params.get('images')} images and {params.get('annotations')} annotations"
            + (f" ({crowd} crowd)" if crowd else "")
            + f" from {coco.name} into run {run.name!r} ({role}) of dataset {dataset!r}"
        ),
        highlight=False,
    )


def _leak_free_split(store: Any, dataset: str, val: float, seed: int) -> dict[str, str]:
    """The split of ``--duplicates-together`` (`sync.qa.splits.leak_free_split`), and what moved on stderr."""
    from sync.commands.qa import qa_errors
    from sync.export import ExportError
    from sync.qa.splits import leak_free_split

    with qa_errors():
        try:
            found = leak_free_split(store, dataset, val, seed)
        except ExportError as error:
            fail(str(error))
    err.print(text(f"duplicates together: {found.spanning} of {found.groups} duplicate groups spanned train and val; "
                   f"{found.moved} samples moved"), highlight=False, soft_wrap=True)
    return dict(found.splits)


def export_labels(
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="COCO: the JSON file; YOLO: the folder.")],
    dataset: Annotated[str, typer.Option(help="Dataset in the store.")],
    fmt: Annotated[str, typer.Option("--format", help="coco or yolo.")],
    revision: Annotated[
        str | None,
        typer.Option(help="Export this run only (default per sample: human revision, else import, else pre-label)."),
    ] = None,
    val: Annotated[float | None, typer.Option(help="YOLO: validation fraction in [0, 1) (default 0.2).")] = None,
    seed: Annotated[int | None, typer.Option(help="YOLO: seed of the train/val split (default 0).")] = None,
    segments: Annotated[bool, typer.Option("--segments", help="YOLO: polygon lines instead of boxes.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file / previous export.")] = False,
    duplicates_together: Annotated[
        bool, typer.Option("--duplicates-together", help="YOLO: keep each group of duplicate images (autolabel embed first) on one side of the split.")
    ] = False,
) -> None:
    """Export the dataset's labels for training: one run per sample, recorded in the metadata."""
    from sync.export import export_coco, export_yolo

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "coco" and (val is not None or seed is not None or segments or duplicates_together):
        fail("--val, --seed, --segments and --duplicates-together apply to --format yolo only")
    store = _store()
    val, seed = 0.2 if val is None else val, 0 if seed is None else seed
    splits = _leak_free_split(store, dataset, val, seed) if duplicates_together else None
    with _data_errors():
        if fmt == "coco":
            summary = export_coco(store, dataset, out_path, revision=revision, overwrite=overwrite)
        else:
            summary = export_yolo(store, dataset, out_path, revision=revision, val=val, seed=seed, segments=segments,
                                  overwrite=overwrite, splits=splits)
    for uri, reason in summary.skipped[:_SHOWN_SKIPS]:
        err.print(f"[yellow]skipped[/] {literal(uri)}: {literal(reason)}", highlight=False, soft_wrap=True)
    if len(summary.skipped) > _SHOWN_SKIPS:
        err.print(f"[yellow]skipped[/] … and {len(summary.skipped) - _SHOWN_SKIPS} more (see the metadata file)")
    sources = ", ".join(f"{source} {n}" for source, n in summary.counts.items())
    split = f" (train {summary.train}, val {summary.val})" if summary.format == "yolo" else ""
    out.print(
        text(
            f"exported {summary.images} images{split}, {summary.annotations} annotations, "
            f"{len(summary.categories)} labels → {summary.out}"
        ),
        highlight=False, soft_wrap=True,
    )
    details = [f"from {sources}", f"{summary.left_out} samples left out (no labels)"]
    if summary.skipped:
        details.append(f"{len(summary.skipped)} skipped")
    details.extend(f"{n} {reason} not written" for reason, n in summary.dropped.items())
    out.print(text("; ".join(details)), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``import`` and ``export`` to the ``autolabel`` app."""
    app.command("import")(import_labels)
    app.command("export")(export_labels)
