"""YOLO-World as a cvat-sdk detection function: fast open-vocabulary boxes.

    cvat-cli ... task auto-annotate TASK_ID \\
        --function-module serverless.cvat_functions.yolo_world -p ontology=str:site.yaml \\
        [-p weights=str:/weights/yolov8s-worldv2.pt] [-p score_attribute=bool:true]

`serverless.cvat_functions.detector` with the ``yolo-world`` backend (YOLO-World (ultralytics)); see it for
the labels declared and the shapes returned.
"""

from serverless.cvat_functions.detector import create_for_backend

__all__ = ["create"]

create = create_for_backend("yolo-world")
