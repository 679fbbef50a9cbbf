"""A YOLO the team trained (an ultralytics detection checkpoint): closed-vocabulary boxes for an
ontology whose object labels are among its classes.

**Spec.** ``yolo:PATH``, PATH an ultralytics detection checkpoint ending in ``.pt`` (ultralytics'
own rule), e.g. ``runs/detect/train/weights/best.pt`` as ``YOLO(...).train`` leaves it. A bare
``yolo`` takes ``AUTOLABEL_YOLO_MODEL``. There are no default weights (no public checkpoint knows
the team's classes): a bare ``yolo`` without the variable is a one-line `ModelLoadError` when its
weights are located, saying to give ``yolo:PATH``. A path is never handed to ultralytics'
loader unless the file exists: ultralytics would download a public checkpoint named like it.

**Checkpoint.** Read with ultralytics' restricted unpickler
(`serverless.models.yolo_world.load_ultralytics_checkpoint`: its own model classes only, so a
checkpoint cannot run code); only a plain detection model (``DetectionModel``, not a
segmentation, pose, oriented-box, classification or YOLO-World one) is accepted. The network is
fused, in eval mode, float32 on the device; its input size is ``imgsz`` of the checkpoint's
``train_args`` (640 when absent); its class names are the model's ``names``. A pre-label run
records the file's ``sha256:<hex>`` as its ``model_revision``
(`serverless.pipeline.ModelSettings.model_revision`, which hashes it without loading anything).

**Ontology.** Each object label is the checkpoint class of exactly the same name; prompts are
not read (the vocabulary is the checkpoint's). A label without such a class is an
`OntologyError` when the detector is bound, naming the labels, the checkpoint and its classes.
Classes the ontology does not name are ignored: their score rows are dropped, so no box is ever
given one. The head scores each class on its own (a sigmoid each, trained with binary
cross-entropy), so the remaining classes' scores mean what they meant.

**Images.** Letterboxed to the square input size as YOLO-World's are, so every image gives the
same input shape and results do not depend on batching. The forward pass keeps, on the device,
the box rows and the bound labels' class rows of the decoded head output, in ontology order:
(B, 4 + L, A), decoded by `serverless.models.yolo_world.world_detections` as YOLO-World's is
(per-label thresholds or the one override, boxes scaled back to pixels, class-wise NMS at
``defaults.nms_iou``, at most ``defaults.max_detections``). A checkpoint in end-to-end mode
(the NMS-free heads of YOLOv10/YOLO26), whose own output is already top-k boxes, is read from
the decoded output of that one-to-one branch for every anchor, so the same decoding applies.
The weights are loaded once per process (`registry.load_once`) and shared by every binding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serverless.detections import Detections
from serverless.models.registry import (
    DetectorBackend,
    ModelLoadError,
    WeightsSource,
    inference_context,
    load_once,
    select_device,
)
from serverless.models.yolo_world import (
    letterbox_pixels,
    letterboxed_detections,
    load_ultralytics_checkpoint,
    ultralytics_environment,
)
from serverless.ontology import Ontology, OntologyError

if TYPE_CHECKING:
    import torch
    from ultralytics.nn.tasks import DetectionModel

__all__ = [
    "BACKEND",
    "ENV",
    "Yolo",
    "YoloDetector",
    "class_names",
    "head_output",
    "label_rows",
    "load_yolo_checkpoint",
    "locate_weights",
]

ENV = "AUTOLABEL_YOLO_MODEL"
"""The checkpoint a bare ``yolo`` spec stands for."""
_HINT = (
    f"give yolo:PATH with a trained ultralytics detection checkpoint (e.g. yolo:runs/detect/train/weights/best.pt) "
    f"or set {ENV}"
)


def load_yolo_checkpoint(path: str) -> tuple[DetectionModel, int]:
    """``(DetectionModel in eval mode, fused, float32 on the CPU, input size)`` of a trained
    ultralytics detection checkpoint; `ModelLoadError` in one line naming the file when it is
    missing, unreadable or holds another kind of model (and what it holds)."""
    ultralytics_environment()
    from ultralytics.nn.tasks import DetectionModel

    return load_ultralytics_checkpoint(
        path,
        display="YOLO checkpoint",
        accepts=lambda model: type(model) is DetectionModel,  # its subclasses segment, pose, ... or prompt
        expected="a detection model (ultralytics DetectionModel, task 'detect')",
    )


def class_names(model: Any, checkpoint: str) -> tuple[str, ...]:
    """The class names of a detection model, in class-id order (its ``names``: a dict by id or
    a list), one per class of its head; `ModelLoadError` when they are missing or do not match."""
    names = getattr(model, "names", None)
    n_classes = int(model.model[-1].nc)
    if isinstance(names, Mapping) and set(names) == set(range(n_classes)):
        found = tuple(str(names[i]) for i in range(n_classes))
    elif isinstance(names, (list, tuple)) and len(names) == n_classes:
        found = tuple(str(name) for name in names)
    else:
        raise ModelLoadError(f"YOLO checkpoint {checkpoint} has no class name for each of its {n_classes} classes")
    return found


def head_output(head: Any, out: Any) -> torch.Tensor:
    """(B, 4 + C, A) of a ``Detect`` head's eval output ``out`` (what ``DetectionModel.predict``
    returns): boxes ``cx, cy, w, h`` in input pixels, then each of the C classes' scores, for
    every anchor. In end-to-end mode the head's own output is top-k boxes: the decoded output
    of its one-to-one branch (``_inference`` of the raw predictions it returns beside them, boxes
    ``x1, y1, x2, y2``) is taken instead, so every checkpoint is decoded alike."""
    import torch

    decoded, raw = out if isinstance(out, tuple) else (out, None)
    end2end = bool(getattr(head, "end2end", False))
    if end2end:
        decoded = head._inference(raw["one2one"])  # ultralytics' own decoding of that branch
    if not (end2end or getattr(head, "xyxy", False)):
        return decoded
    xy1, xy2 = decoded[:, :2], decoded[:, 2:4]
    return torch.cat([(xy1 + xy2) / 2, xy2 - xy1, decoded[:, 4:]], dim=1)


def label_rows(out: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    """(B, 4 + L, A) float32 on the CPU: the four box rows of a (B, 4 + C, A) head output, then
    the score rows of the classes ``rows`` (L,), in that order: label i scores as class
    ``rows[i]``; the other classes' rows are dropped (on the output's device, before it leaves)."""
    import torch

    out = out.float()
    return torch.cat([out[:, :4], out[:, 4:].index_select(1, rows)], dim=1).cpu().numpy()


class Yolo:
    """A loaded detection checkpoint (its network, class names and input size): `bind`
    gives the `Detector` of an ontology, which is what every door holds; nothing here changes
    once loaded."""

    def __init__(self, model: DetectionModel, *, device: str, checkpoint: str, imgsz: int) -> None:
        ultralytics_environment()
        from ultralytics.data.augment import LetterBox

        self.names = class_names(model, checkpoint)
        """The checkpoint's class names, in class-id order."""
        self.model = model.to(device)
        self.device = device
        self.checkpoint = checkpoint
        self.imgsz = imgsz
        self._letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=int(max(model.stride)))

    @classmethod
    def load(cls, checkpoint: str, *, device: str | None = None) -> Yolo:
        """Load ``checkpoint`` (an existing .pt file) once per process and device."""
        device = select_device(device)
        key = ("yolo", str(Path(checkpoint).expanduser().resolve()), device)

        def build() -> Yolo:
            model, imgsz = load_yolo_checkpoint(checkpoint)
            return cls(model, device=device, checkpoint=checkpoint, imgsz=imgsz)

        return load_once(key, build)

    def class_ids(self, ontology: Ontology) -> list[int]:
        """The checkpoint class of each of ``ontology``'s labels, in label order (the class of
        exactly that name); `OntologyError` naming every label that has none, the checkpoint
        and its classes."""
        index: dict[str, int] = {}
        for i, name in enumerate(self.names):
            index.setdefault(name, i)
        missing = [name for name in ontology.label_names if name not in index]
        if missing:
            labels = ", ".join(repr(name) for name in missing)
            raise OntologyError(
                f"the YOLO checkpoint {self.checkpoint} has no class named {labels} (label{'s' * (len(missing) > 1)} "
                f"of the ontology); its classes are {', '.join(repr(name) for name in self.names)}: name the labels "
                "after its classes, or train it on them"
            )
        return [index[name] for name in ontology.label_names]

    def bind(self, ontology: Ontology) -> YoloDetector:
        """This model as the `Detector` of ``ontology``'s labels (`class_ids`: a label the
        checkpoint has no class for is an `OntologyError` here, not at the first frame)."""
        import torch

        rows = torch.tensor(self.class_ids(ontology), dtype=torch.int64, device=self.device)
        return YoloDetector(self, ontology, rows)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) images → (B, 3, S, S) float 0..1 on the device, letterboxed."""
        return letterbox_pixels(self._letterbox, images, self.device)

    def forward(self, pixels: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
        """(B, 4 + L, A) float32: the decoded head output (`head_output`) with the score rows
        of the classes ``rows`` (L,) only, in that order (`label_rows`)."""
        with inference_context(self.device):
            return label_rows(head_output(self.model.model[-1], self.model.predict(pixels)), rows)


class YoloDetector:
    """A trained YOLO bound to an ontology: a `serverless.models.base.Detector`. Holds the
    checkpoint class of each label (L,) on the device; shares the loaded model."""

    def __init__(self, model: Yolo, ontology: Ontology, rows: torch.Tensor) -> None:
        self.model = model
        self.ontology = ontology
        self.rows = rows

    @property
    def labels(self) -> tuple[str, ...]:
        return self.ontology.label_names

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Detections]:
        """Boxes for each RGB uint8 (H, W, 3) image: ``threshold`` overrides every label's own;
        class-wise (or, per the ontology, class-agnostic) NMS on labels, descending scores, at
        most ``defaults.max_detections`` per image."""
        model = self.model

        def forward(chunk: Sequence[np.ndarray]) -> np.ndarray:
            return model.forward(model.preprocess(chunk), self.rows)

        return letterboxed_detections(images, self.ontology, threshold, imgsz=model.imgsz, forward=forward)


# --------------------------------------------------------------------------- weights


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    """The checkpoint path as written, else `ENV`'s; "" when neither is given (no default:
    `locate_weights` says so)."""
    written = weights.strip()
    path = written or environ.get(ENV, "").strip()
    if path and not path.endswith(".pt"):
        origin = "" if written else f" (from {ENV})"
        raise ValueError(
            f"the checkpoint must be the path of an ultralytics .pt file, as in "
            f"yolo:runs/detect/train/weights/best.pt, got {path!r}{origin}"
        )
    return path


def locate_weights(weights: str, download: bool = True) -> WeightsSource:
    """The checkpoint file, which must exist (nothing is ever downloaded); `ModelLoadError` in
    one line for a bare spec without `ENV` or a missing file."""
    if not weights:
        raise ModelLoadError(f"the yolo backend has no default weights: {_HINT}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"YOLO checkpoint {weights} does not exist; {_HINT}")
    return WeightsSource(str(path), f"YOLO checkpoint {weights}")


def _on_disk(weights: str) -> str | None:
    path = Path(weights).expanduser() if weights else None
    return str(path) if path is not None and path.is_file() else None


def _tiny(directory: Path, seed: int = 0) -> str:
    from serverless.models.tiny_yolo import write_tiny_yolo

    return str(write_tiny_yolo(Path(directory).resolve() / BACKEND.name, seed))


def _build(weights: str, source: WeightsSource, ontology: Ontology, device: str | None) -> YoloDetector:
    return Yolo.load(source.load_from or weights, device=device).bind(ontology)


BACKEND = DetectorBackend(
    name="yolo",
    summary="YOLO (ultralytics): a trained detection checkpoint, its classes as the labels; no default, yolo:PATH",
    parse=_parse,
    locate=locate_weights,
    on_disk=_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``yolo:PATH`` (a trained ultralytics detection checkpoint); bare: ``AUTOLABEL_YOLO_MODEL``."""
