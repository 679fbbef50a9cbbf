"""Choosing weights for the demo: real ones when present or reachable, tiny ones otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from serverless.pipeline import ModelSettings, gdino_source, sam_source

__all__ = ["SAMPLES", "DemoSettings", "resolve_demo_settings", "sample_dir"]


SAMPLES = Path(__file__).resolve().parent / "samples"
"""The sample photographs and their ontology: package data (``serverless/samples``), so a
plain ``pip install`` has them; the checkout's top-level ``samples`` links here."""


def sample_dir() -> Path:
    """The bundled sample photographs (``AUTOLABEL_SAMPLES`` overrides)."""
    configured = os.environ.get("AUTOLABEL_SAMPLES")
    return Path(configured) if configured else SAMPLES


@dataclass(frozen=True)
class DemoSettings:
    settings: ModelSettings
    masks: bool
    notes: tuple[str, ...]


def resolve_demo_settings(tiny_dir: Path) -> DemoSettings:
    """Real Grounding DINO (and SAM, when its checkpoint is on disk) if possible, else tiny models."""
    from serverless.models.registry import ModelLoadError

    settings = ModelSettings.from_env()
    try:
        gdino = gdino_source(settings.gdino_model)
    except ModelLoadError as error:
        gdino_problem = str(error)
    else:
        try:
            sam = sam_source(settings.sam_model_type, settings.sam_checkpoint, download=False)
        except ModelLoadError as error:
            return DemoSettings(settings, masks=False, notes=(f"using {gdino.note}", f"{error}: boxes only, no masks"))
        return DemoSettings(settings, masks=True, notes=(f"using {gdino.note}", f"using {sam.note}"))
    from serverless.models.tiny import make_tiny_models

    tiny = make_tiny_models(tiny_dir)
    tiny_settings = ModelSettings(
        gdino_model=str(tiny.gdino_dir),
        sam_checkpoint=str(tiny.sam_checkpoint),
        sam_model_type=str(tiny.sam_model_type),
        device=settings.device,
    )
    return DemoSettings(
        tiny_settings,
        masks=True,
        notes=(f"real weights unavailable ({gdino_problem}): falling back to tiny random models",),
    )
