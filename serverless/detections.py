"""The one detection container passed model → CVAT serializer → store → evaluator.

Units, stated once:
- ``xyxy``: float32 (N, 4) in pixels, ``x1, y1`` inclusive and ``x2, y2`` **exclusive**
  (a box covering pixel columns 3..5 has ``x1=3, x2=6``). CVAT's inclusive bounds appear
  only inside the CVAT converters.
- ``scores``: float32 (N,) in 0..1.
- ``class_ids``: int64 (N,), the index of the label in its ontology (or -1 if unknown).
- ``labels``: str (N,), the label names.
- ``masks``: optional bool (N, H, W), full-frame masks.
- ``polygons``: optional tuple of N entries; each entry is a tuple of rings, each ring a
  float32 (K, 2) array of ``x, y`` vertices in pixels.
- ``data``: extra per-detection columns, each an array of length N.

The container is frozen: its arrays are read-only and every operation returns a new one.
It imports neither torch nor OpenCV; NMS imports torchvision when called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serverless.ontology import Defaults

__all__ = ["Detections", "DetectionsError", "plain_float"]


def plain_float(value: float) -> float:
    """A float32 value as the Python float with the shortest decimal form (0.9, not 0.8999…):
    how scores, coordinates and thresholds stored as float32 are written out and shown."""
    return float(str(np.float32(value)))


class DetectionsError(ValueError):
    """A `Detections` was built or combined from inconsistent columns."""


def _readonly(array: np.ndarray) -> np.ndarray:
    """A read-only array; arrays that are already read-only (e.g. another Detections' columns,
    or views of them) are shared rather than copied, so filtering big mask stacks stays cheap."""
    if not array.flags.writeable:
        return array
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Detections:
    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    polygons: tuple[tuple[np.ndarray, ...], ...] | None = None
    data: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise DetectionsError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
        n = xyxy.shape[0]
        if not np.all(np.isfinite(xyxy)):
            raise DetectionsError("xyxy must be finite, got NaN or infinity")
        if np.any(xyxy[:, 2] < xyxy[:, 0]) or np.any(xyxy[:, 3] < xyxy[:, 1]):
            raise DetectionsError("xyxy must have x2 >= x1 and y2 >= y1")

        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if scores.shape != (n,):
            raise DetectionsError(f"scores must have shape ({n},), got {scores.shape}")
        if np.any(~np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
            raise DetectionsError("scores must lie in 0..1")

        class_ids = np.asarray(self.class_ids).reshape(-1)
        if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
            raise DetectionsError(f"class_ids must be integers, got dtype {class_ids.dtype}")
        class_ids = class_ids.astype(np.int64)
        if class_ids.shape != (n,):
            raise DetectionsError(f"class_ids must have shape ({n},), got {class_ids.shape}")

        labels = np.asarray(self.labels, dtype=str).reshape(-1)
        if labels.size == 0:
            labels = np.zeros(0, dtype="<U1")
        if labels.shape != (n,):
            raise DetectionsError(f"labels must have shape ({n},), got {labels.shape}")

        masks = self.masks
        if masks is not None:
            masks = np.asarray(masks)
            if masks.ndim != 3 or masks.shape[0] != n:
                raise DetectionsError(f"masks must have shape ({n}, H, W), got {masks.shape}")
            if masks.dtype != bool:
                raise DetectionsError(f"masks must be boolean, got dtype {masks.dtype}")

        polygons = self.polygons
        if polygons is not None:
            if len(polygons) != n:
                raise DetectionsError(f"polygons must have {n} entries, got {len(polygons)}")
            checked = []
            for i, rings in enumerate(polygons):
                ring_arrays = []
                for ring in rings:
                    ring = np.asarray(ring, dtype=np.float32)
                    if ring.ndim != 2 or ring.shape[1] != 2 or ring.shape[0] < 3:
                        raise DetectionsError(
                            f"polygons[{i}] rings must have shape (K>=3, 2), got {ring.shape}"
                        )
                    ring_arrays.append(_readonly(ring))
                checked.append(tuple(ring_arrays))
            polygons = tuple(checked)

        data = {}
        for key, column in dict(self.data).items():
            column = np.asarray(column)
            if column.shape[:1] != (n,):
                raise DetectionsError(f"data[{key!r}] must have length {n}, got shape {column.shape}")
            data[key] = _readonly(column)

        object.__setattr__(self, "xyxy", _readonly(xyxy))
        object.__setattr__(self, "scores", _readonly(scores))
        object.__setattr__(self, "class_ids", _readonly(class_ids))
        object.__setattr__(self, "labels", _readonly(labels))
        object.__setattr__(self, "masks", None if masks is None else _readonly(masks))
        object.__setattr__(self, "polygons", polygons)
        object.__setattr__(self, "data", MappingProxyType(data))

    # ----------------------------------------------------------------- construction
    @classmethod
    def empty(cls, *, with_masks_shape: tuple[int, int] | None = None) -> Detections:
        masks = None if with_masks_shape is None else np.zeros((0, *with_masks_shape), dtype=bool)
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            class_ids=np.zeros(0, np.int64),
            labels=np.zeros(0, dtype="<U1"),
            masks=masks,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        """Join detections of one image. Optional columns must be present in all or none."""
        parts = list(parts)
        non_empty = [p for p in parts if len(p)]
        if not non_empty:
            return parts[0] if parts else cls.empty()
        parts = non_empty
        if len(parts) == 1:
            return parts[0]
        for name in ("masks", "polygons"):
            present = {getattr(p, name) is not None for p in parts}
            if len(present) > 1:
                raise DetectionsError(f"cannot concatenate: {name} present in some parts only")
        keys = {tuple(sorted(p.data)) for p in parts}
        if len(keys) > 1:
            raise DetectionsError(f"cannot concatenate: data columns differ: {sorted(keys)}")
        masks = None
        if parts[0].masks is not None:
            shapes = {p.masks.shape[1:] for p in parts}
            if len(shapes) > 1:
                raise DetectionsError(f"cannot concatenate: mask sizes differ: {sorted(shapes)}")
            masks = np.concatenate([p.masks for p in parts])
        polygons = None
        if parts[0].polygons is not None:
            polygons = tuple(poly for p in parts for poly in p.polygons)
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            class_ids=np.concatenate([p.class_ids for p in parts]),
            labels=np.concatenate([p.labels.astype(object) for p in parts]).astype(str),
            masks=masks,
            polygons=polygons,
            data={k: np.concatenate([p.data[k] for p in parts]) for k in parts[0].data},
        )

    def with_columns(self, **changes: Any) -> Detections:
        """A copy with some fields replaced (e.g. ``masks=...`` after SAM)."""
        fields_ = {
            "xyxy": self.xyxy,
            "scores": self.scores,
            "class_ids": self.class_ids,
            "labels": self.labels,
            "masks": self.masks,
            "polygons": self.polygons,
            "data": dict(self.data),
        }
        unknown = set(changes) - set(fields_)
        if unknown:
            raise DetectionsError(f"unknown Detections fields: {sorted(unknown)}")
        fields_.update(changes)
        return Detections(**fields_)

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Filter all columns at once: a boolean mask, an integer array or a slice."""
        if isinstance(index, (bool, np.bool_)):
            raise DetectionsError("cannot index Detections with a single bool; use a boolean array")
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        if isinstance(index, slice):
            positions = np.arange(len(self))[index]
        else:
            index = np.asarray(index)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise DetectionsError(
                        f"boolean index must have shape ({len(self)},), got {index.shape}"
                    )
                positions = np.flatnonzero(index)
            elif index.size == 0:
                positions = np.zeros(0, dtype=np.int64)
            elif np.issubdtype(index.dtype, np.integer):
                positions = index.reshape(-1)
            else:
                raise DetectionsError(f"cannot index Detections with dtype {index.dtype}")
        return Detections(
            xyxy=self.xyxy[positions],
            scores=self.scores[positions],
            class_ids=self.class_ids[positions],
            labels=self.labels[positions],
            masks=None if self.masks is None else self.masks[positions],
            polygons=None if self.polygons is None else tuple(self.polygons[i] for i in positions),
            data={k: v[positions] for k, v in self.data.items()},
        )

    @property
    def area(self) -> np.ndarray:
        """Box areas in square pixels."""
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    def clip(self, width: int, height: int) -> Detections:
        """Boxes clipped to an image of the given size."""
        xyxy = self.xyxy.copy()
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        return self.with_columns(xyxy=xyxy)

    # ----------------------------------------------------------------- NMS
    def nms(self, iou_threshold: float, *, class_agnostic: bool = False) -> Detections:
        """Non-maximum suppression through ``torchvision.ops`` (class-wise by default).

        Kept detections are returned in descending score order.
        """
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must lie in 0..1, got {iou_threshold}")
        if len(self) == 0:
            return self
        import torch
        from torchvision.ops import batched_nms, nms

        boxes = torch.from_numpy(self.xyxy.copy())
        scores = torch.from_numpy(self.scores.copy())
        if class_agnostic:
            keep = nms(boxes, scores, iou_threshold)
        else:
            keep = batched_nms(boxes, scores, torch.from_numpy(self.class_ids.copy()), iou_threshold)
        return self[keep.numpy()]

    def suppressed(self, defaults: Defaults) -> Detections:
        """A frame's detections as every detector delivers them: NMS at ``defaults.nms_iou``
        (within each label, or across labels with ``class_agnostic_nms``), descending score, at
        most ``defaults.max_detections``."""
        kept = self.nms(defaults.nms_iou, class_agnostic=defaults.class_agnostic_nms)
        return kept[: defaults.max_detections]
