"""``autolabel models``: the registered model backends and tiny random versions of them."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from sync.console import err, fail, out, quiet_libraries, text

__all__ = ["app", "tiny_variable"]

app = typer.Typer(help="Models: the registered backends, tiny test models.", no_args_is_help=True)


def tiny_variable(backend: str) -> str:
    """The variable `make-tiny` prints a backend's tiny spec in: ``AUTOLABEL_TINY_YOLO_WORLD``."""
    return "AUTOLABEL_TINY_" + backend.upper().replace("-", "_").replace(".", "_")


@app.command("make-tiny")
def make_tiny(
    directory: Annotated[Path, typer.Argument(help="Folder to write the models into.")],
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", help="Only these backends (repeatable; default: every registered one)."),
    ] = None,
) -> None:
    """Write a tiny random-init version of every model backend in its real on-disk format; print
    the `export` lines to use them.

    eval "$(autolabel models make-tiny DIR)" points this shell at them: AUTOLABEL_GDINO_MODEL and
    AUTOLABEL_SAM_* make them the defaults, and AUTOLABEL_TINY_<BACKEND> holds each backend's spec
    for --detector/--segmenter/--classifier (e.g. --detector "$AUTOLABEL_TINY_OWLV2")."""
    from serverless.models.registry import BACKEND_MODULES, ModelSpecError, backend as find_backend
    from serverless.models.tiny import make_tiny_models

    quiet_libraries()
    names = list(dict.fromkeys(backend or BACKEND_MODULES))
    try:
        chosen = [find_backend(name) for name in names]
    except ModelSpecError as error:
        fail(str(error))
    err.print("[bold red]Tiny random models: their outputs are meaningless (tests and offline demos only).[/]")
    if not backend or {"grounding-dino", "sam"} & set(names):
        for name, value in make_tiny_models(directory, seed=seed).environment().items():
            print(f"export {name}={shlex.quote(value)}")
    for found in chosen:
        weights = found.tiny(directory, seed)
        print(f"export {tiny_variable(found.name)}={shlex.quote(f'{found.name}:{weights}')}")


@app.command("list")
def list_models() -> None:
    """The registered model backends, their default weights and whether those are on disk.

    A backend is used through a spec string BACKEND[:WEIGHTS] (--detector, --segmenter, --classifier, or the
    ontology's models); a bare BACKEND means the default weights shown here (AUTOLABEL_* variables change them)."""
    from serverless.models.registry import ModelLoadError, ModelSpecError, backends, parse_spec

    # one block per backend: specs and paths are what a user copies, so they are never cut or wrapped
    for backend in backends():
        out.print(text(f"{backend.name} ({backend.kind})", "bold"), soft_wrap=True)
        out.print(text(f"  {backend.summary}"))
        try:
            spec = parse_spec(backend.name, backend.kind)
        except ModelSpecError as error:
            out.print(text(f"  default: {error}", "red"), soft_wrap=True)
            continue
        if not spec.weights:  # no default weights (a trained YOLO): what to give instead
            try:
                backend.locate(spec.weights, False)
            except ModelLoadError as error:
                out.print(text(f"  default: none: {error}", "yellow"), soft_wrap=True)
                continue
        where = backend.on_disk(spec.weights)
        out.print(text(f"  default: {spec.text}"), soft_wrap=True)
        out.print(
            text(f"  on disk: {where}", "green") if where else text("  on disk: no (fetched on first use when online)", "yellow"),
            soft_wrap=True,
        )
