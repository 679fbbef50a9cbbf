"""CLI options shared by several commands (typer ``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["DeviceOption", "GdinoModelOption", "SamCheckpointOption", "SamModelTypeOption"]

GdinoModelOption = Annotated[str | None, typer.Option(help="Hub id or directory \\[env AUTOLABEL_GDINO_MODEL].")]
SamCheckpointOption = Annotated[str | None, typer.Option(help="SAM .pth \\[env AUTOLABEL_SAM_CHECKPOINT].")]
SamModelTypeOption = Annotated[
    str | None, typer.Option(help="vit_h | vit_l | vit_b | config JSON \\[env AUTOLABEL_SAM_MODEL_TYPE].")
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N \\[env AUTOLABEL_DEVICE].")]
