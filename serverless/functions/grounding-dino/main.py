"""Nuclio entry point of the grounding-dino function (rendered by `autolabel functions render`).

The request handling lives in serverless.nuclio_adapter; the model code in serverless.models."""

from pathlib import Path

from serverless.nuclio_adapter import grounding_dino_function

init_context, handler = grounding_dino_function(Path(__file__).with_name("ontology.yaml"), module=__name__)
