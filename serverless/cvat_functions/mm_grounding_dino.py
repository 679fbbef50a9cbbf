"""MM-Grounding-DINO as a cvat-sdk detection function: open-vocabulary boxes.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.mm_grounding_dino -p ontology=str:site.yaml \\
        [-p weights=str:openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``mm-grounding-dino`` backend (MM-Grounding-DINO (transformers)); see it for
the labels declared and the shapes returned.
"""

from serverless.cvat_functions.detector import create_for_backend

__all__ = ["create"]

create = create_for_backend("mm-grounding-dino")
