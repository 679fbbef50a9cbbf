"""Pure conversions between `serverless.detections.Detections` and annotation rows.

``Detections`` → rows (`detections_to_rows`) and rows → ``Detections``
(`rows_to_detections`) are inverse for every column the store keeps:

=====================  ===================================================================
Detections             row (`sync.store.records.AnnotationIn` / ``annotations`` table)
=====================  ===================================================================
``xyxy[i]``            ``x1, y1, x2, y2`` (float32 values kept exactly)
``labels[i]``          ``label``
``scores[i]``          ``score`` (None with ``with_scores=False``; None reads back as 1.0)
``masks[i]``           ``mask_rle``: COCO compressed RLE of the full frame
``polygons[i]``        ``polygon``: rings as flat ``x, y`` lists (``()`` ↔ None)
``data["shape_type"]`` ``shape_type`` (else ``mask`` if masks, ``polygon`` if a ring,
                       else ``rectangle``)
``data["source"]``     ``source`` (else the ``source`` argument)
``data["cvat_id"]``    ``cvat_shape_id`` (-1 ↔ None); the column name of
                       `serverless.convert.cvat_shapes.from_cvat_shapes`
``data["pre_annotation_id"]``  ``pre_annotation_id`` (-1 ↔ None)
``data["attributes"]`` ``attributes`` (object array of dicts or None)
=====================  ===================================================================

Read back, ``data`` also has ``annotation_id`` (the row id, -1 for rows not stored yet) and
every column above is always present (filled with -1 / "" / None). ``class_ids`` are
looked up by label name in ``label_index`` (-1 when absent or no index is given): the store
keeps label names, not ontology positions.

**Tags** (image-level labels, CVAT tags, a `serverless.models.base.Tags` row each) are rows
of shape type ``tag`` whose box is the whole frame (``0, 0, width, height``), with no polygon
or mask; ``cvat_shape_id`` holds the CVAT *tag* id (CVAT numbers tags apart from shapes).
`tags_to_detections` makes them, `split_tags` takes them out of a sample's `Detections`.
Read back with ``masks=True`` next to a mask, a tag's mask is the whole frame (its box).

Masks go through the project's COCO mask codec (`serverless.convert.coco`: `encode_masks`,
`decode_rle`; ``faster_coco_eval.core.mask`` underneath). It, and OpenCV for
rasterizing polygons, are imported only inside the functions that need them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serverless.convert.coco import decode_rle, encode_masks
from serverless.detections import Detections
from serverless.models.base import Tags
from sync.store.errors import StoreError
from sync.store.records import ANNOTATION_FIELDS, AnnotationIn
from sync.store.schema import SHAPE_TYPES

__all__ = [
    "DATA_COLUMNS",
    "ROW_FIELDS",
    "TAG",
    "AnnotationColumns",
    "detection_values",
    "detections_to_rows",
    "row_values",
    "rows_to_detections",
    "split_tags",
    "tags_to_detections",
]

TAG = "tag"
"""The ``shape_type`` of a tag row (an image-level label)."""

DATA_COLUMNS = (
    "annotation_id",
    "cvat_id",
    "pre_annotation_id",
    "source",
    "shape_type",
    "attributes",
)
"""The ``data`` columns of Detections read from the store."""


def tags_to_detections(
    tags: Tags, *, width: int, height: int, data: Mapping[str, np.ndarray] | None = None
) -> Detections:
    """One image's tags as store rows: `Detections` whose boxes are the whole frame
    (``0, 0, width, height``), ``data["shape_type"]`` `TAG`, scores and labels as given;
    ``data`` adds columns (``cvat_id``, ``source``, ``attributes`` … of pulled tags)."""
    if not isinstance(tags, Tags):
        raise StoreError(f"expected Tags, got {type(tags).__name__}")
    n = len(tags)
    if isinstance(width, bool) or isinstance(height, bool) or int(width) <= 0 or int(height) <= 0:
        raise StoreError(f"a tag's frame must have a positive size, got {width}x{height}")
    columns = {**dict(data or {}), "shape_type": np.full(n, TAG)}
    return Detections(
        xyxy=np.tile(np.array([0, 0, width, height], dtype=np.float32), (n, 1)),
        scores=tags.scores,
        class_ids=tags.class_ids,
        labels=tags.labels if n else np.zeros(0, dtype="<U1"),
        data=columns,
    )


def split_tags(det: Detections) -> tuple[Detections, Detections]:
    """``(shapes, tags)`` of one sample's rows: those of shape type `TAG` apart from the rest
    (rows without a ``shape_type`` column are all shapes), each in its original order."""
    kinds = det.data.get("shape_type")
    is_tag = np.zeros(len(det), dtype=bool) if kinds is None else np.asarray(kinds).astype(str) == TAG
    return det[~is_tag], det[is_tag]


def _optional_ids(column: np.ndarray | None, n: int, name: str) -> list[int | None]:
    if column is None:
        return [None] * n
    if column.size and not np.issubdtype(column.dtype, np.integer):
        raise StoreError(f"data[{name!r}] must hold integers, got dtype {column.dtype}")
    return [None if v < 0 else v for v in column.tolist()]


def _fields(sample_id: int, det: Detections, with_scores: bool, source: str) -> list[tuple]:
    """Per detection, the `AnnotationIn` fields in declaration order (checked)."""
    if not isinstance(det, Detections):
        raise StoreError(f"sample {sample_id}: expected Detections, got {type(det).__name__}")
    n = len(det)
    data = det.data
    if n and np.any(np.char.str_len(det.labels) == 0):
        raise StoreError(f"sample {sample_id}: labels must be non-empty strings")
    shape_types = data.get("shape_type")
    if shape_types is not None:
        shape_types = [str(v) for v in shape_types.tolist()]
        bad = sorted(set(shape_types) - set(SHAPE_TYPES))
        if bad:
            raise StoreError(f"sample {sample_id}: data['shape_type'] must be one of {list(SHAPE_TYPES)}, got {bad}")
    elif det.masks is not None:
        shape_types = ["mask"] * n
    sources = data.get("source")
    sources = [source] * n if sources is None else [str(v) for v in sources.tolist()]
    attributes = data.get("attributes")
    attributes = [None] * n if attributes is None else list(attributes)
    for i, value in enumerate(attributes):
        if value is not None:
            if not isinstance(value, Mapping):
                raise StoreError(
                    f"sample {sample_id}: data['attributes'][{i}] must be a mapping or None, got {type(value).__name__}"
                )
            attributes[i] = dict(value)
    cvat_ids = _optional_ids(data.get("cvat_id"), n, "cvat_id")
    pre_ids = _optional_ids(data.get("pre_annotation_id"), n, "pre_annotation_id")
    rles = encode_masks(det.masks) if det.masks is not None else [None] * n
    polygons: list[tuple | None] = [None] * n
    if det.polygons is not None:
        for i, rings in enumerate(det.polygons):
            if rings:
                polygons[i] = tuple(tuple(ring.astype(np.float64).reshape(-1).tolist()) for ring in rings)
    if shape_types is None:
        shape_types = ["rectangle" if p is None else "polygon" for p in polygons]
    x1, y1, x2, y2 = det.xyxy.astype(np.float64).T.tolist() if n else ([], [], [], [])
    scores = det.scores.astype(np.float64).tolist() if with_scores else [None] * n
    sample_ids = [int(sample_id)] * n
    return list(
        zip(
            sample_ids,
            det.labels.tolist(),
            x1,
            y1,
            x2,
            y2,
            shape_types,
            scores,
            polygons,
            rles,
            attributes,
            sources,
            cvat_ids,
            pre_ids,
        )
    )


def detections_to_rows(
    sample_id: int,
    det: Detections,
    *,
    with_scores: bool = True,
    source: str = "",
) -> list[AnnotationIn]:
    """One `AnnotationIn` per detection of sample ``sample_id``, in order.

    ``with_scores=False`` stores no score (human annotations). ``source`` is used when
    ``det`` has no ``source`` data column. A ``shape_type`` data column decides the shape
    type per detection; values other than rectangle/polygon/mask raise `StoreError`.
    """
    return [AnnotationIn(*fields) for fields in _fields(sample_id, det, with_scores, source)]


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=False, separators=(",", ":"))


def _serialized(fields: tuple) -> tuple:
    """`AnnotationIn` fields with polygon, mask and attributes as JSON text."""
    polygon, mask_rle, attributes = fields[8], fields[9], fields[10]
    if polygon is None and mask_rle is None and attributes is None:
        return fields
    return (
        *fields[:8],
        None if polygon is None else _dump([list(ring) for ring in polygon]),
        None if mask_rle is None else _dump(dict(mask_rle)),
        None if attributes is None else _dump(dict(attributes)),
        *fields[11:],
    )


def detection_values(sample_id: int, det: Detections, *, with_scores: bool = True, source: str = "") -> list[tuple]:
    """What `detections_to_rows` holds, as insert-ready tuples (`AnnotationIn` field order,
    JSON columns as text): the bulk path of `sync.store.api.Store.add_detections`."""
    try:
        return [_serialized(f) for f in _fields(sample_id, det, with_scores, source)]
    except (TypeError, ValueError) as err:
        raise StoreError(f"sample {sample_id}: values must be JSON-serializable: {err}") from err


def row_values(row: AnnotationIn, where: str) -> tuple:
    """One `AnnotationIn`, checked, as an insert-ready tuple (see `detection_values`)."""
    if not isinstance(row, AnnotationIn):
        raise StoreError(f"{where} must be an AnnotationIn, got {type(row).__name__}")
    where = f"{where} (sample {row.sample_id})"
    if row.shape_type not in SHAPE_TYPES:
        raise StoreError(f"{where}: shape_type must be one of {list(SHAPE_TYPES)}, got {row.shape_type!r}")
    box = (row.x1, row.y1, row.x2, row.y2)
    if not all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) for v in box):
        raise StoreError(f"{where}: box must be 4 finite numbers, got {box}")
    if not (row.x2 >= row.x1 and row.y2 >= row.y1):
        raise StoreError(f"{where}: box must have x2 >= x1 and y2 >= y1, got {box}")
    if row.polygon is not None:
        for k, ring in enumerate(row.polygon):
            flat = np.asarray(ring, dtype=np.float64).reshape(-1) if len(ring) else np.zeros(0)
            if flat.size < 6 or flat.size % 2 or not np.all(np.isfinite(flat)):
                raise StoreError(f"{where}: polygon ring {k} must be an even number >= 6 of finite coordinates")
    if row.mask_rle is not None:
        rle = row.mask_rle
        size = rle.get("size") if isinstance(rle, Mapping) else None
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and isinstance(rle.get("counts"), str)):
            raise StoreError(f"{where}: mask_rle must be a COCO compressed RLE {{'size': [h, w], 'counts': str}}")
    if row.shape_type == "tag" and (row.polygon is not None or row.mask_rle is not None):
        raise StoreError(f"{where}: a tag is an image-level label: it has no polygon or mask")
    if row.score is not None and not 0 <= row.score <= 1:
        raise StoreError(f"{where}: score must lie in 0..1, got {row.score}")
    if not isinstance(row.label, str) or not row.label:
        raise StoreError(f"{where}: label must be a non-empty string, got {row.label!r}")
    fields = (
        int(row.sample_id),
        row.label,
        float(row.x1),
        float(row.y1),
        float(row.x2),
        float(row.y2),
        row.shape_type,
        None if row.score is None else float(row.score),
        row.polygon,
        row.mask_rle,
        row.attributes,
        row.source or "",
        None if row.cvat_shape_id is None else int(row.cvat_shape_id),
        None if row.pre_annotation_id is None else int(row.pre_annotation_id),
    )
    try:
        return _serialized(fields)
    except (TypeError, ValueError) as err:
        raise StoreError(f"{where}: values must be JSON-serializable: {err}") from err


ROW_FIELDS = ("id", *ANNOTATION_FIELDS)
"""The annotation fields `AnnotationColumns.from_tuples` expects, in this order."""


def _parsed(values: Sequence[Any]) -> list[Any]:
    """JSON text parsed (None and already-parsed values kept)."""
    loads = json.loads
    return [loads(v) if isinstance(v, str) else v for v in values]


def _ids(values: Sequence[int | None]) -> np.ndarray:
    if None in values:
        values = [-1 if v is None else v for v in values]
    return np.array(values, dtype=np.int64).reshape(-1)


def _strings(values: Sequence[str | None]) -> np.ndarray:
    if not values:
        return np.zeros(0, dtype="<U1")
    if None in values:
        values = [v or "" for v in values]
    return np.array(values, dtype=str)


@dataclass(frozen=True)
class AnnotationColumns:
    """Annotation rows as parallel columns (the fast path from query results to
    `Detections`): rows grouped by ascending ``sample_id``."""

    sample_id: np.ndarray
    id: np.ndarray
    xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    shape_type: np.ndarray
    source: np.ndarray
    cvat_id: np.ndarray
    pre_annotation_id: np.ndarray
    polygon: list
    mask_rle: list
    attributes: list

    @classmethod
    def from_tuples(cls, rows: Sequence[Sequence[Any]]) -> AnnotationColumns:
        """Columns from tuples in `ROW_FIELDS` order (JSON columns as Python values or as
        JSON text). Rows are stably sorted by sample id."""
        n = len(rows)
        if n == 0:
            columns: list[Sequence[Any]] = [()] * len(ROW_FIELDS)
        else:
            columns = list(zip(*rows))
        c = dict(zip(ROW_FIELDS, columns))
        sample_id = _ids(c["sample_id"])
        order = np.argsort(sample_id, kind="stable")
        if n and np.any(order != np.arange(n)):
            rows = [rows[i] for i in order]
            return cls.from_tuples(rows)
        return cls(
            sample_id=sample_id,
            id=_ids(c["id"]),
            xyxy=np.asarray([c["x1"], c["y1"], c["x2"], c["y2"]], dtype=np.float64).T.reshape(n, 4),
            scores=np.array(
                [1.0 if v is None else v for v in c["score"]] if None in c["score"] else c["score"],
                dtype=np.float32,
            ).reshape(n),
            labels=_strings(c["label"]),
            shape_type=_strings(c["shape_type"]),
            source=_strings(c["source"]),
            cvat_id=_ids(c["cvat_shape_id"]),
            pre_annotation_id=_ids(c["pre_annotation_id"]),
            polygon=_parsed(c["polygon"]),
            mask_rle=_parsed(c["mask_rle"]),
            attributes=_parsed(c["attributes"]),
        )

    def __len__(self) -> int:
        return int(self.sample_id.shape[0])

    def bounds(self) -> dict[int, tuple[int, int]]:
        """``{sample_id: (start, stop)}`` row ranges."""
        if len(self) == 0:
            return {}
        starts = np.flatnonzero(np.r_[True, self.sample_id[1:] != self.sample_id[:-1]])
        stops = np.r_[starts[1:], len(self)]
        return {int(self.sample_id[a]): (int(a), int(b)) for a, b in zip(starts, stops)}

    def detections(
        self,
        start: int,
        stop: int,
        *,
        width: int,
        height: int,
        masks: bool = False,
        label_index: Mapping[str, int] | None = None,
    ) -> Detections:
        """`Detections` of rows ``start:stop`` (one sample of ``width`` x ``height``)."""
        n = stop - start
        rings = self.polygon[start:stop]
        polygons = None
        if any(rings):
            polygons = tuple(
                tuple(np.asarray(ring, dtype=np.float32).reshape(-1, 2) for ring in (value or ())) for value in rings
            )
        rles = self.mask_rle[start:stop]
        full_masks = None
        if masks and any(rle is not None for rle in rles):
            full_masks = _fill_masks(self.id[start:stop], self.xyxy[start:stop], rings, rles, int(height), int(width))
        attributes = np.empty(n, dtype=object)
        for i, value in enumerate(self.attributes[start:stop]):
            attributes[i] = None if value is None else dict(value)
        labels = self.labels[start:stop]
        if label_index:
            class_ids = np.fromiter((label_index.get(str(v), -1) for v in labels), dtype=np.int64, count=n)
        else:
            class_ids = np.full(n, -1, dtype=np.int64)
        return Detections(
            xyxy=self.xyxy[start:stop],
            scores=self.scores[start:stop],
            class_ids=class_ids,
            labels=labels,
            masks=full_masks,
            polygons=polygons,
            data={
                "annotation_id": self.id[start:stop],
                "cvat_id": self.cvat_id[start:stop],
                "pre_annotation_id": self.pre_annotation_id[start:stop],
                "source": self.source[start:stop],
                "shape_type": self.shape_type[start:stop],
                "attributes": attributes,
            },
        )


def _fill_masks(
    ids: np.ndarray,
    boxes: np.ndarray,
    rings: Sequence[Any],
    rles: Sequence[Any],
    height: int,
    width: int,
) -> np.ndarray:
    """Full-frame masks for rows of which at least one has a mask: stored RLEs decoded, the
    other rows' polygon or box rasterized (`serverless.convert.polygons.shape_mask`)."""
    masks = np.zeros((len(rles), height, width), dtype=bool)
    for i, rle in enumerate(rles):
        if rle is not None:
            size = list(rle.get("size", ())) if isinstance(rle, Mapping) else None
            if size != [height, width]:
                raise StoreError(
                    f"annotation {int(ids[i])}: mask size {size} does not match its sample ({height}x{width})"
                )
            try:
                masks[i] = decode_rle(rle, height, width)
            except ValueError as err:
                raise StoreError(f"annotation {int(ids[i])}: malformed mask RLE: {err}") from err
        else:
            from serverless.convert.polygons import shape_mask

            masks[i] = shape_mask(rings[i], boxes[i], height, width)
    return masks


def rows_to_detections(
    rows: Sequence[Any],
    *,
    width: int,
    height: int,
    masks: bool = False,
    label_index: Mapping[str, int] | None = None,
) -> Detections:
    """`Detections` of one sample (``width`` x ``height``) from annotation rows, in order.

    ``rows`` are `AnnotationIn` values or anything with the same attributes (an ``id``
    attribute becomes ``data["annotation_id"]``, else -1). With ``masks=True`` and at least
    one row with a mask, every detection gets a full-frame mask (rows without one: polygon
    rasterized, else the box's pixels); otherwise ``masks`` is None. ``polygons`` is present
    when any row has a polygon (the others get ``()``).
    """
    tuples = [tuple(getattr(row, name, None) if name != "sample_id" else 0 for name in ROW_FIELDS) for row in rows]
    columns = AnnotationColumns.from_tuples(tuples)
    return columns.detections(0, len(columns), width=width, height=height, masks=masks, label_index=label_index)
