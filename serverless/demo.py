"""Choosing weights for the demo: real ones when present or reachable, tiny ones otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from serverless.models import registry
from serverless.models.registry import ModelLoadError, ModelSpec
from serverless.ontology import Ontology
from serverless.pipeline import ModelSettings

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


def _tiny(spec: ModelSpec, directory: Path) -> str:
    """The spec of a tiny model of ``spec``'s backend, written under ``directory``."""
    return f"{spec.backend}:{registry.backend(spec.backend).tiny(directory, 0)}"


def resolve_demo_settings(
    tiny_dir: Path,
    *,
    detector: str | None = None,
    segmenter: str | None = None,
    ontology: Ontology | None = None,
) -> DemoSettings:
    """The configured models (`ModelSettings.from_env`) if their weights are found (the
    segmenter only when already on disk: else boxes only), else tiny models of the same
    backends. A model named by ``detector``/``segmenter`` is never replaced: `ModelLoadError`."""
    settings = ModelSettings.from_env(detector=detector, segmenter=segmenter, ontology=ontology)
    try:
        found = registry.locate(settings.detector)
    except ModelLoadError as error:
        if detector:
            raise
        problem = str(error)
    else:
        try:
            masks = registry.locate(settings.segmenter, download=False)
        except ModelLoadError as error:
            if segmenter:
                raise
            return DemoSettings(settings, masks=False, notes=(f"using {found.note}", f"{error}: boxes only, no masks"))
        return DemoSettings(settings, masks=True, notes=(f"using {found.note}", f"using {masks.note}"))
    tiny = ModelSettings(
        _tiny(settings.detector, tiny_dir),
        settings.segmenter if segmenter else _tiny(settings.segmenter, tiny_dir),
        settings.device,
    )
    return DemoSettings(tiny, masks=True, notes=(f"real weights unavailable ({problem}): falling back to tiny random models",))
