"""CLI options shared by several commands (typer ``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = [
    "ClassifierOption",
    "CompileOption",
    "DetectorOption",
    "DeviceOption",
    "GdinoModelOption",
    "SamCheckpointOption",
    "SamModelTypeOption",
    "SegmenterOption",
]

DetectorOption = Annotated[
    str | None,
    typer.Option(
        help="Detector spec, e.g. grounding-dino:DIR or grounding-dino:OWNER/NAME (autolabel models list) "
        "\\[env AUTOLABEL_DETECTOR; else the ontology's models.detector]."
    ),
]
SegmenterOption = Annotated[
    str | None,
    typer.Option(
        help="Segmenter spec for --masks, e.g. sam:vit_b or sam:vit_b:FILE.pth "
        "\\[env AUTOLABEL_SEGMENTER; else the ontology's models.segmenter]."
    ),
]
ClassifierOption = Annotated[
    str | None,
    typer.Option(
        help="Classifier spec for the ontology's tag labels, e.g. clip:DIR or clip:OWNER/NAME "
        "\\[env AUTOLABEL_CLASSIFIER; else the ontology's models.classifier; else clip].",
    ),
]
GdinoModelOption = Annotated[
    str | None, typer.Option(help="Hub id or directory: --detector grounding-dino:X \\[env AUTOLABEL_GDINO_MODEL].")
]
SamCheckpointOption = Annotated[str | None, typer.Option(help="SAM .pth \\[env AUTOLABEL_SAM_CHECKPOINT].")]
SamModelTypeOption = Annotated[
    str | None, typer.Option(help="vit_h | vit_l | vit_b | config JSON \\[env AUTOLABEL_SAM_MODEL_TYPE].")
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N \\[env AUTOLABEL_DEVICE].")]
CompileOption = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the models' heavy networks (slow first batches; for long GPU runs) "
        "\\[env AUTOLABEL_COMPILE].",
    ),
]
