"""cvat-sdk auto-annotation functions (``cvat_sdk.auto_annotation``) for our models.

Each module exposes ``create(**params)``, which returns a function object with ``spec`` and
``detect``; cvat-cli calls it with the ``-p name=type:value`` parameters::

    cvat-cli --server-host URL --auth USER task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.grounding_dino -p ontology=str:site.yaml \\
        [-p score_attribute=bool:true] [--conf-threshold 0.4] [--conv-mask-to-poly] [--allow-unmatched-labels]

- `serverless.cvat_functions.grounding_dino`: detection function, one rectangle per box.
- `serverless.cvat_functions.grounded_sam`: detection function; labels whose ontology ``type``
  is ``mask`` get SAM masks (polygons with ``--conv-mask-to-poly``), ``polygon`` labels get
  polygons, ``rectangle`` labels stay boxes.
- `serverless.cvat_functions.sam`: interaction function (clicks and an optional box → one mask),
  for cvat-cli's agent (``function create-native`` / ``run-agent``, CVAT Enterprise/Online).

The ``score`` attribute is declared and filled only with ``-p score_attribute=bool:true``
(the task's labels must then have it): cvat-sdk's driver, unlike CVAT's lambda path, stops at
an attribute the task lacks, and a function cannot see the task when it declares its spec (see
`serverless.cvat_functions.common`). Without it they run on any task and write no score.

Models come from ``create``'s parameters (``-p detector=str:SPEC``, ``-p segmenter=str:SPEC``,
or the ``gdino_model`` / ``sam_*`` shorthand), else the ``AUTOLABEL_*`` environment, else the
ontology's ``models`` (see `serverless.pipeline.ModelSettings`), and are loaded once per
process. The modules hold `serverless.models.base` protocols, the same model objects the Nuclio
functions and the bulk pre-labeler use.
"""

from serverless.cvat_functions.common import FunctionConfigError

__all__ = ["FunctionConfigError"]
