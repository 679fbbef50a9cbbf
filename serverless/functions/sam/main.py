"""Nuclio entry point of the sam function (rendered by `autolabel functions render`).

The request handling lives in serverless.nuclio_adapter; the model code in serverless.models."""

from serverless.nuclio_adapter import sam_embedding_function

init_context, handler = sam_embedding_function(module=__name__)
