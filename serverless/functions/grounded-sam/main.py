"""Nuclio entry point of the grounded-sam function (rendered by `autolabel functions render`).

The request handling lives in serverless.nuclio_adapter; the model code in serverless.models."""

from pathlib import Path

from serverless.nuclio_adapter import grounded_sam_function

init_context, handler = grounded_sam_function(Path(__file__).with_name("ontology.yaml"), module=__name__)
