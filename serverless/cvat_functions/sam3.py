"""SAM 3 as a cvat-sdk detection function: instance masks, polygons or boxes straight from the ontology's prompts.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.sam3 -p ontology=str:site.yaml \\
        [-p weights=str:facebook/sam3] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``sam3`` backend (SAM 3 (transformers)); see it for
the labels declared and the shapes returned.
"""

from serverless.cvat_functions.detector import create_for_backend

__all__ = ["create"]

create = create_for_backend("sam3")
