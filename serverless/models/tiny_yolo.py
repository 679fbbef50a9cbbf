"""A tiny random-init ultralytics detection checkpoint, in the format ``YOLO(...).train`` leaves
in ``runs/detect/<name>/weights/best.pt``, for the ``yolo`` backend (`serverless.models.yolo`),
written offline.

`write_tiny_yolo(directory)` writes:

- ``yolo-tiny.yaml``: an ultralytics model yaml, yolov8's detection layer list with a few
  channels per layer and one repeat per block (``Conv``, ``C2f``, ``SPPF``, ``Detect``: modules
  every ultralytics 8.x builds), about 0.3 M parameters;
- ``yolo-tiny.pt``: the checkpoint, written by ultralytics' own ``Model.save`` (the pickled
  half-precision ``DetectionModel`` under ``model``), with the class names `TINY_CLASSES` in the
  model's ``names`` and ``train_args`` ``{"imgsz": 64, "task": "detect"}``, which
  ``ultralytics.YOLO(path)`` and the backend's restricted loader read.

``end2end=True`` writes the layout of the NMS-free families (YOLOv10, YOLO26): a one-to-one
head beside the one-to-many one, saved in end-to-end mode, whose own output is top-k boxes.

`TINY_CLASSES` covers every object label the backend-generic tests ask for (person, cat, cup,
rocket, dog) and a few no test ontology names (bicycle, car, truck), which a bound detector
ignores. The outputs are meaningless: they exist so tests and offline demos run the real code
path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from serverless.models.tiny import TINY_MARKER
from serverless.models.tiny_yolo_world import TINY_BACKBONE

if TYPE_CHECKING:
    from ultralytics.nn.tasks import DetectionModel

__all__ = ["CHECKPOINT_NAME", "IMGSZ", "TINY_CLASSES", "tiny_yaml", "write_tiny_yolo"]

CHECKPOINT_NAME = "yolo-tiny.pt"
IMGSZ = 64
"""The checkpoint's training size (``train_args.imgsz``): every image is letterboxed to it."""
TINY_CLASSES = ("person", "bicycle", "car", "dog", "cat", "cup", "rocket", "truck")
"""The tiny checkpoint's class names (``model.names``), in class-id order."""


def tiny_yaml(nc: int, *, end2end: bool = False) -> str:
    """The tiny architecture (an ultralytics model yaml) with ``nc`` classes; ``end2end`` adds
    the one-to-one head of the NMS-free families."""
    return f"""\
# yolov8 (ultralytics/cfg/models/v8/yolov8.yaml) scaled down for tests
nc: {nc}
end2end: {end2end}
depth_multiple: 1.0
width_multiple: 1.0
{TINY_BACKBONE}head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C2f, [32]] # 12
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 1, C2f, [16]] # 15 (P3/8)
  - [-1, 1, Conv, [16, 3, 2]]
  - [[-1, 12], 1, Concat, [1]]
  - [-1, 1, C2f, [32]] # 18 (P4/16)
  - [-1, 1, Conv, [32, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]
  - [-1, 1, C2f, [32]] # 21 (P5/32)
  - [[15, 18, 21], 1, Detect, [nc]] # Detect(P3, P4, P5)
"""


def _calibrate(model: DetectionModel, seed: int) -> None:
    """Make a random detection model's scores vary with the image and spread over 0..1: its
    BatchNorm statistics from smooth random images
    (`serverless.models.tiny_yolo_world.calibrate_norms`), and every class branch's last bias at
    0 (``Detect.bias_init`` starts them near -8: every score about 0)."""
    import torch

    from serverless.models.tiny_yolo_world import calibrate_norms

    calibrate_norms(model, model.predict, torch.Generator().manual_seed(seed))
    head = model.model[-1]
    for branch in (head.cv3, getattr(head, "one2one_cv3", None) or ()):
        for layers in branch:
            layers[-1].bias.data.zero_()


def _write_checkpoint(directory: Path, seed: int, classes: tuple[str, ...], end2end: bool) -> Path:
    import torch
    from ultralytics import YOLO

    config = directory / "yolo-tiny.yaml"
    config.write_text(tiny_yaml(len(classes), end2end=end2end), encoding="utf-8")
    torch.manual_seed(seed)
    yolo = YOLO(str(config), task="detect", verbose=False)
    model = yolo.model
    model.names = dict(enumerate(classes))
    _calibrate(model, seed)
    if end2end:
        model.end2end = True  # saved in end-to-end mode, as an NMS-free model is trained
    yolo.ckpt = {"train_args": {"imgsz": IMGSZ, "task": "detect", "model": config.name}}
    checkpoint = directory / CHECKPOINT_NAME
    yolo.save(checkpoint)  # ultralytics' own writer: the half-precision model and its metadata
    return checkpoint


def write_tiny_yolo(
    directory: Path, seed: int = 0, *, classes: tuple[str, ...] = TINY_CLASSES, end2end: bool = False
) -> Path:
    """The checkpoint of a tiny detection model with class names ``classes`` written under
    ``directory`` (reused when already there)."""
    from serverless.models.yolo_world import ultralytics_environment

    directory = Path(directory)
    checkpoint = directory / CHECKPOINT_NAME
    if not (directory / TINY_MARKER).exists():
        directory.mkdir(parents=True, exist_ok=True)
        ultralytics_environment()
        _write_checkpoint(directory, seed, tuple(classes), end2end)
        (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")
    return checkpoint
