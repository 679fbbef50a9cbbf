"""A trained YOLO as a cvat-sdk detection function: boxes for the ontology labels among its classes.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.yolo -p ontology=str:site.yaml \\
        -p weights=str:runs/detect/train/weights/best.pt [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``yolo`` backend (an ultralytics detection
checkpoint; each ontology label is its class of the same name); see it for the labels declared
and the shapes returned. Without ``-p weights`` the checkpoint is ``AUTOLABEL_YOLO_MODEL``'s.
"""

from serverless.cvat_functions.detector import create_for_backend

__all__ = ["create"]

create = create_for_backend("yolo")
