"""``autolabel functions``: Nuclio functions for CVAT.

``autolabel functions render --ontology FILE --out DIR`` writes one deployable directory per
function kind (``DIR/<kind>/`` with function.yaml, function-gpu.yaml, main.py and, for the
detectors, ontology.yaml) and prints the directories written.

Only light modules are imported at the top; the renderer is imported by the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["app", "functions", "render"]

ALL_KINDS = "grounding-dino,grounded-sam,sam,sam-interactor"

app = typer.Typer(
    help="Nuclio functions for CVAT: render deployable function directories from an ontology.",
    no_args_is_help=True,
    add_completion=False,
)

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_out = Console(highlight=False, soft_wrap=True)


@app.callback()
def functions() -> None:
    """Nuclio functions for CVAT: render deployable function directories from an ontology."""


def _fail(message: str) -> None:
    """Print a one-line ``error: ...`` to stderr and exit with status 2."""
    _err.print(f"error: {message}", markup=False)
    raise typer.Exit(2)


@app.command()
def render(
    ontology: Annotated[Path, typer.Option("--ontology", help="Ontology YAML file (labels, prompts, thresholds).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write <kind>/ function directories into.")],
    kinds: Annotated[
        str | None,
        typer.Option(
            "--kinds",
            help=f"Comma-separated function kinds (default: every function of the models; for Grounding DINO and SAM "
            f"{ALL_KINDS}; also by role: detector, pipeline, browser-sam, interactor, classifier).",
        ),
    ] = None,
    detector: Annotated[
        str | None, typer.Option("--detector", help="Detector spec (default: the ontology's models, else grounding-dino).")
    ] = None,
    segmenter: Annotated[
        str | None, typer.Option("--segmenter", help="Segmenter spec (default: the ontology's models, else sam).")
    ] = None,
    classifier: Annotated[
        str | None, typer.Option("--classifier", help="Classifier spec for tag labels (default: the ontology's, else clip).")
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            "--weights",
            help="Pinned weights the image build fetches, NAME=OWNER/REPO@<commit sha> (transformers models, e.g. "
            "owlv2=google/owlv2-base-patch16-ensemble@SHA) or NAME=URL#sha256=HEX (yolo-world's checkpoint; its text "
            "encoder is yolo-world-clip=OWNER/REPO@SHA). Repeatable.",
        ),
    ] = None,
    gdino_model: Annotated[
        str, typer.Option("--gdino-model", help="Hugging Face id of Grounding DINO fetched at image build time.")
    ] = "IDEA-Research/grounding-dino-tiny",
    sam_model_type: Annotated[
        str,
        typer.Option(
            "--sam-model-type", help="SAM size for grounded-sam and sam-interactor (the browser SAM is vit_h)."
        ),
    ] = "vit_h",
) -> None:
    """Write deployable Nuclio function directories for one ontology: one per function of its models."""
    from serverless.ontology import OntologyError, load_ontology
    from serverless.render import RenderError, RenderOptions, render_functions

    pins = []
    for text in weights or []:
        name, sep, value = text.partition("=")
        if not sep or not name.strip() or not value.strip():
            _fail(f"--weights must be NAME=SOURCE, got {text!r}")
        pins.append((name.strip(), value.strip()))
    try:
        parsed = load_ontology(ontology)
        options = RenderOptions(
            gdino_model=gdino_model, sam_model_type=sam_model_type, detector=detector, segmenter=segmenter,
            classifier=classifier, weights=tuple(pins),
        )
        written = render_functions(parsed, out, kinds, options)
    except (OntologyError, RenderError) as error:
        _fail(str(error))
        return
    for directory in written:
        _out.print(str(directory), markup=False)
