"""OWLv2 as a cvat-sdk detection function: open-vocabulary boxes.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.owlv2 -p ontology=str:site.yaml \\
        [-p weights=str:google/owlv2-base-patch16-ensemble] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``owlv2`` backend (OWLv2 (transformers)); see it for
the labels declared and the shapes returned.
"""

from serverless.cvat_functions.detector import create_for_backend

__all__ = ["create"]

create = create_for_backend("owlv2")
