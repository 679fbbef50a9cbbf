"""Export the store's labels for training: COCO JSON or a YOLO dataset folder.

Which run's labels each sample gets is decided once, in `sync.export.choice` (by default the
latest human revision, else an import with role ``"revision"``, else the latest pre-label run);
the choice is recorded in the export's metadata.

Modules:
- `sync.export.choice`: `choose_runs`, `ExportChoice`, `ExportSummary`, `ExportError`.
- `sync.export.coco`: `export_coco` (one JSON; pycocotools loads it).
- `sync.export.yolo`: `export_yolo` (``data.yaml``, ``images/``, ``labels/``; ultralytics trains on it).

Importing this package imports neither the COCO mask code (faster-coco-eval) nor OpenCV
(they are imported when an export runs).
"""

from sync.export.choice import ExportChoice, ExportError, ExportSummary, SampleChoice, choose_runs
from sync.export.coco import export_coco
from sync.export.yolo import export_yolo, split_of

__all__ = [
    "ExportChoice",
    "ExportError",
    "ExportSummary",
    "SampleChoice",
    "choose_runs",
    "export_coco",
    "export_yolo",
    "split_of",
]
