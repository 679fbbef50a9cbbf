"""What a CVAT Nuclio function replies (``cvat_protocol.md`` §3), built from `Detections`.

All results are JSON-ready: plain ``dict``/``list``/``str``/``int``/``float`` only, so
``json.dumps`` works on them directly.

- Detector: `to_detector_items` → a list of items ``{label, type, points, mask?, confidence,
  attributes?}``. A detector ``mask`` is a raw bitmap (0/255) of the mask cropped to its
  **inclusive** box, followed by ``xtl, ytl, xbr, ybr``: not CVAT RLE.
- Classifier: `to_tag_items` → ``{label, type: "tag", attributes, confidence}`` per tag
  (CVAT stores them as tags on labels of type ``tag`` or ``any``: ``cvat_protocol.md``).
- Interactor: `to_interactor_reply` → ``{mask: 2-D crop, bounds: [xtl, ytl, xbr, ybr]}``.
- SAM encoder (browser decoder): `embedding_reply` → ``{blob: base64 float32}``.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from serverless.convert.cvat_contract import SCORE_ATTRIBUTE
from serverless.convert.polygons import check_mask, largest_ring, mask_bbox, mask_to_polygons
from serverless.detections import Detections, plain_float
from serverless.models.base import Tags

__all__ = [
    "EMBEDDING_SHAPE",
    "embedding_reply",
    "plain_float",
    "score_percent",
    "to_detector_items",
    "to_interactor_reply",
    "to_tag_items",
]

EMBEDDING_SHAPE = (1, 256, 64, 64)
"""The SAM v1 image embedding shape the CVAT browser decoder expects."""


def score_percent(score: float) -> str:
    """A 0..1 score as the integer percent string CVAT accepts for ``number`` attributes."""
    return str(int(round(float(score) * 100)))


def _check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from err
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size!r}")
    return width, height


def _flat_ring(ring: np.ndarray, width: int, height: int) -> list[float]:
    clipped = np.asarray(ring, dtype=np.float64).copy()
    clipped[:, 0] = clipped[:, 0].clip(0, width)
    clipped[:, 1] = clipped[:, 1].clip(0, height)
    return [float(v) for v in clipped.reshape(-1)]


def _ring_for(det: Detections, i: int, tolerance: float) -> np.ndarray | None:
    ring = largest_ring(det.polygons[i]) if det.polygons is not None else None
    if ring is None and det.masks is not None:
        ring = largest_ring(mask_to_polygons(det.masks[i], tolerance))
    return ring


def to_detector_items(
    det: Detections,
    *,
    image_size: tuple[int, int],
    score_attribute: bool = False,
    polygon_tolerance: float = 1.0,
    as_polygons: bool = False,
) -> list[dict[str, Any]]:
    """One CVAT detector item per detection, in order.

    ``image_size`` is ``(width, height)`` of the frame; masks must have that size.

    The item type follows the columns of ``det``:
    - masks present: ``type: "mask"``, ``mask`` = flat row-major 0/255 ints of
      ``mask[ytl:ybr+1, xtl:xbr+1]`` then ``xtl, ytl, xbr, ybr`` (the mask's inclusive box, so
      ``len == (xbr-xtl+1)*(ybr-ytl+1) + 4``), and ``points`` = the flat largest ring (from
      ``det.polygons`` if that entry has a ring, else computed from the mask with
      ``polygon_tolerance``) clipped to ``[0, W] x [0, H]``; ``points`` is omitted when there is
      no ring. CVAT's ``conv_mask_to_poly`` turns such an item into a polygon. Detections with
      empty masks are dropped.
    - ``as_polygons=True``: ``type: "polygon"`` with the flat largest ring (``det.polygons``
      entry, else computed from the mask), clipped like above. Detections with no ring and an
      (empty) mask are dropped; detections with neither ring nor mask stay rectangles.
    - otherwise, no masks: ``type: "rectangle"``, ``points`` = ``[x1, y1, x2, y2]`` clipped to
      ``[0, W] x [0, H]``; boxes left with no area after clipping are dropped.

    Every item has ``confidence`` (float score; CVAT ignores it). With ``score_attribute``, it
    also has ``attributes: [{"name": "score", "value": "<integer percent>"}]``.
    """
    width, height = _check_image_size(image_size)
    if det.masks is not None and det.masks.shape[1:] != (height, width):
        raise ValueError(
            f"masks must match image_size (width={width}, height={height}), "
            f"got mask shape {det.masks.shape[1:]}"
        )

    items: list[dict[str, Any]] = []
    for i in range(len(det)):
        item: dict[str, Any] = {"label": str(det.labels[i])}
        ring = _ring_for(det, i, polygon_tolerance) if as_polygons else None
        if ring is not None:
            item["type"] = "polygon"
            item["points"] = _flat_ring(ring, width, height)
        elif det.masks is not None:
            mask = det.masks[i]
            box = mask_bbox(mask)
            if box is None:
                continue
            x1, y1, x2, y2 = box
            item["type"] = "mask"
            ring = _ring_for(det, i, polygon_tolerance)
            if ring is not None:
                item["points"] = _flat_ring(ring, width, height)
            crop = mask[y1:y2, x1:x2].astype(np.uint8) * 255
            item["mask"] = crop.reshape(-1).tolist() + [x1, y1, x2 - 1, y2 - 1]
        else:
            x1, y1, x2, y2 = (plain_float(v) for v in det.xyxy[i])
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            if x2 <= x1 or y2 <= y1:
                continue
            item["type"] = "rectangle"
            item["points"] = [x1, y1, x2, y2]
        item["confidence"] = plain_float(det.scores[i])
        if score_attribute:
            item["attributes"] = [{"name": SCORE_ATTRIBUTE, "value": score_percent(det.scores[i])}]
        items.append(item)
    return items


def to_tag_items(tags: Tags, *, score_attribute: bool = False) -> list[dict[str, Any]]:
    """One CVAT detector item of ``type: "tag"`` per tag, in order: ``label``, ``attributes``
    (the score attribute as an integer percent with ``score_attribute``, else ``[]``) and
    ``confidence`` (ignored by CVAT, as for shapes)."""
    items = []
    for name, score in zip(tags.labels.tolist(), tags.scores.tolist(), strict=True):
        attributes = [{"name": SCORE_ATTRIBUTE, "value": score_percent(score)}] if score_attribute else []
        items.append({"label": str(name), "type": "tag", "attributes": attributes, "confidence": plain_float(score)})
    return items


def to_interactor_reply(mask: np.ndarray) -> dict[str, list]:
    """The interactor reply for one full-frame boolean mask.

    ``{"mask": 2-D list of 0/255 ints of the mask cropped to its inclusive box,
    "bounds": [xtl, ytl, xbr, ybr]}`` (inclusive ints). An empty mask gives
    ``{"mask": [[0]], "bounds": [0, 0, 0, 0]}``: CVAT always requires ``mask``.
    """
    mask = check_mask(mask)
    box = mask_bbox(mask)
    if box is None:
        return {"mask": [[0]], "bounds": [0, 0, 0, 0]}
    x1, y1, x2, y2 = box
    crop = mask[y1:y2, x1:x2].astype(np.uint8) * 255
    return {"mask": crop.tolist(), "bounds": [x1, y1, x2 - 1, y2 - 1]}


def embedding_reply(embedding: Any) -> dict[str, str]:
    """The SAM encoder reply ``{"blob": base64 of little-endian C-order float32 bytes}``.

    ``embedding`` must have shape ``(1, 256, 64, 64)`` and real, finite values (any numeric
    dtype or a CPU tensor that ``np.asarray`` accepts); the decoded blob is 4,194,304 bytes.
    """
    array = np.asarray(embedding)
    if array.shape != EMBEDDING_SHAPE:
        raise ValueError(f"embedding must have shape {EMBEDDING_SHAPE}, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"embedding must be numeric, got dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype="<f4")
    if not np.all(np.isfinite(data)):
        raise ValueError("embedding must be finite, got NaN or infinity")
    return {"blob": base64.b64encode(data.tobytes(order="C")).decode("ascii")}
