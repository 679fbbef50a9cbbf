"""Masks ↔ polygon rings, and the tight box of a mask.

Conventions:
- A mask is a boolean (H, W) array; ``mask[y, x]`` is the pixel in column ``x``, row ``y``.
- A ring is a float32 (K, 2) array of ``x, y`` vertices, K >= 3.
- Rings from `mask_to_polygons` follow OpenCV: a vertex ``(x, y)`` names the boundary pixel
  ``mask[y, x]`` (pixel index coordinates, not pixel corners). `polygons_to_mask` uses the same
  convention (``cv2.fillPoly`` fills the boundary pixels), so the two are inverse for
  ``tolerance=0``. Consumers that treat vertices as continuous coordinates (CVAT, pycocotools)
  see such a polygon about half a pixel smaller on each side than the mask.
- A component too thin for a ring (1 pixel, or 1 pixel wide, so that its contour has fewer than
  3 distinct corners or no area) becomes the rectangle around its pixels' extent, ``x .. x+1``,
  ``y .. y+1``: 4 corners with a positive area. `polygons_to_mask` fills that rectangle
  inclusively, so it returns those pixels plus one more row and column.
- Boxes are ``(x1, y1, x2, y2)`` with ``x2, y2`` exclusive, as in `Detections`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from serverless.convert.coco import box_mask
from serverless.detections import Detections

__all__ = [
    "check_mask",
    "largest_ring",
    "mask_bbox",
    "mask_to_polygons",
    "masks_to_polygons",
    "polygons_to_mask",
    "ring_area",
    "shape_mask",
]


def check_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """``mask`` as an array, or ValueError unless it is a boolean (H, W) array."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W), got {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"{name} must be boolean, got dtype {mask.dtype}")
    return mask


def ring_area(ring: np.ndarray) -> float:
    """Unsigned area of a closed ring of ``x, y`` vertices (shoelace formula)."""
    ring = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    if ring.shape[0] < 3:
        return 0.0
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def largest_ring(rings: tuple[np.ndarray, ...] | None) -> np.ndarray | None:
    """The ring with the largest area (the first of equals).

    None when there is no ring of at least 3 vertices.
    """
    best, best_area = None, -1.0
    for ring in rings or ():
        ring = np.asarray(ring, dtype=np.float32).reshape(-1, 2)
        if ring.shape[0] < 3:
            continue
        area = ring_area(ring)
        if area > best_area:
            best, best_area = ring, area
    return best


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight box ``(x1, y1, x2, y2)`` of the True pixels, ``x2, y2`` exclusive.

    Returns None for a mask without True pixels.
    """
    mask = check_mask(mask)
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_to_polygons(mask: np.ndarray, tolerance: float = 1.0) -> tuple[np.ndarray, ...]:
    """The outer contours of a mask as rings, largest first.

    One ring per connected component (8-connected, holes ignored): ``cv2.findContours`` with
    ``RETR_EXTERNAL`` and ``CHAIN_APPROX_NONE``, simplified by ``cv2.approxPolyDP`` with
    ``tolerance`` pixels (0 keeps every contour pixel). Rings are float32 (K, 2) arrays of
    ``x, y``; a component whose simplified ring has fewer than 3 vertices or no area becomes the
    4-corner rectangle of its pixels' extent (see the module docstring), so every ring has at
    least 3 vertices. Rings are sorted by decreasing area (ties keep OpenCV's order).
    An empty mask gives ``()``.
    """
    mask = check_mask(mask)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not mask.any():
        return ()
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    rings = []
    for contour in contours:
        points = contour.reshape(-1, 2)
        if tolerance > 0:
            simplified = cv2.approxPolyDP(contour, float(tolerance), True).reshape(-1, 2)
        else:
            simplified = points
        ring = simplified.astype(np.float32)
        if ring.shape[0] < 3 or ring_area(ring) == 0.0:
            x1, y1 = points.min(axis=0)
            x2, y2 = points.max(axis=0) + 1
            ring = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float32)
        rings.append(ring)
    order = sorted(range(len(rings)), key=lambda i: -ring_area(rings[i]))
    return tuple(rings[i] for i in order)


def polygons_to_mask(rings: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterize rings into a boolean (height, width) mask: the union of the filled rings.

    Vertices are rounded to the nearest pixel and boundary pixels are filled
    (``cv2.fillPoly``, one call per ring so that overlapping rings do not cancel out).
    Parts outside the image are cut off.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    canvas = np.zeros((height, width), dtype=np.uint8)
    for i, ring in enumerate(rings):
        ring = np.asarray(ring, dtype=np.float64)
        if ring.ndim != 2 or ring.shape[1] != 2 or ring.shape[0] < 3:
            raise ValueError(f"rings[{i}] must have shape (K>=3, 2), got {ring.shape}")
        if not np.all(np.isfinite(ring)):
            raise ValueError(f"rings[{i}] must be finite, got NaN or infinity")
        cv2.fillPoly(canvas, [np.round(ring).astype(np.int32)], 1)
    return canvas.astype(bool)


def shape_mask(rings: Sequence[Sequence[float] | np.ndarray] | None, xyxy: Sequence[float], height: int,
               width: int) -> np.ndarray:
    """The full-frame mask of a shape that has no mask of its own: its rings rasterized
    (`polygons_to_mask`; each ring a (K, 2) array or a flat ``x, y`` list) when it has any,
    else the pixels whose centre lies in its box ``xyxy`` (`serverless.convert.coco.box_mask`,
    COCO's rasterization of a box)."""
    if rings:
        return polygons_to_mask([np.asarray(ring, dtype=np.float64).reshape(-1, 2) for ring in rings], height, width)
    return box_mask(xyxy, height, width)


def masks_to_polygons(det: Detections, tolerance: float = 1.0) -> Detections:
    """A copy of ``det`` whose ``polygons`` column holds `mask_to_polygons` of each mask.

    Detections with empty masks get ``()`` (no rings).
    """
    if det.masks is None:
        raise ValueError("masks_to_polygons requires the masks field, got masks=None")
    polygons = tuple(mask_to_polygons(mask, tolerance) for mask in det.masks)
    return det.with_columns(polygons=polygons)
