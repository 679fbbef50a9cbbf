"""Shared fixtures: tiny random-init models written to disk once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.fake_cvat.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "serverless" / "samples"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny Grounding DINO + SAM in the real on-disk formats (made once per session)."""
    from serverless.models.tiny import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_settings(tiny_models):
    from serverless.pipeline import ModelSettings

    return ModelSettings(
        gdino_model=str(tiny_models.gdino_dir),
        sam_checkpoint=str(tiny_models.sam_checkpoint),
        sam_model_type=str(tiny_models.sam_model_type),
        device="cpu",
    )


@pytest.fixture(scope="session")
def sample_ontology():
    from serverless.ontology import load_ontology

    return load_ontology(SAMPLES / "ontology.yaml")
