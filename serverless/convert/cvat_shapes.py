"""`Detections` ↔ cvat-sdk labeled shapes (the REST/SDK ``shapes`` of a task or job).

CVAT mask shapes store ``points`` as CVAT RLE over the mask's **inclusive** box
(``[runs..., left, top, right, bottom]``); this module produces and reads them through
``cvat_sdk.masks.encode_mask`` / ``decode_mask``. ``encode_mask`` takes an **exclusive** box
``[x1, y1, x2, y2]`` and writes ``x2 - 1, y2 - 1``; ``decode_mask`` adds the 1 back.
cvat-sdk 2.17 (the SDK for CVAT 2.17 servers) has no ``cvat_sdk.masks``; there, and only
there, `encode_mask` / `decode_mask` fall back to a small implementation of the same format
(tested for parity against ``cvat_sdk.masks``).

Rectangle ``points`` are ``[xtl, ytl, xbr, ybr]`` in continuous pixel coordinates, which is
exactly the exclusive ``xyxy`` of `Detections`, so boxes pass through unchanged.

Tags (image-level labels, `serverless.models.base.Tags`) are CVAT *tags*, not shapes
(`serverless.convert.cvat_contract`): `to_cvat_tag_dicts` / `to_cvat_tags` make them (push,
``cvat prelabel`` and the cvat-sdk function modules), `from_cvat_tags` reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from cvat_sdk import models

from serverless.convert.coco import box_mask
from serverless.convert.cvat_contract import (
    SHAPE_TYPES,
    sdk_shapes_have_score,
    shape_types_for,
    tag_score_field,
)
from serverless.convert.nuclio import plain_float, score_percent
from serverless.convert.polygons import largest_ring, mask_bbox, mask_to_polygons, polygons_to_mask
from serverless.detections import Detections
from serverless.models.base import Tags

try:
    from cvat_sdk import masks as _sdk_masks
except ImportError:  # cvat-sdk 2.17
    _sdk_masks = None

__all__ = [
    "SUPPORTED_SHAPE_TYPES",
    "decode_mask",
    "delivered_shape_dicts",
    "delivered_types",
    "encode_mask",
    "from_cvat_shapes",
    "from_cvat_tags",
    "shape_requests",
    "tag_requests",
    "to_cvat_shape_dicts",
    "to_cvat_shapes",
    "to_cvat_tag_dicts",
    "to_cvat_tags",
]

SUPPORTED_SHAPE_TYPES = frozenset(SHAPE_TYPES)
"""Shape types `from_cvat_shapes` reads (those detections are delivered as); other types
(points, polyline, ellipse, cuboid, skeleton) are skipped."""


def _encode_rle(bitmap: np.ndarray, bbox: Sequence[float]) -> list[int]:
    """CVAT RLE of ``bitmap`` inside the exclusive ``bbox`` (the ``cvat_sdk.masks`` format)."""
    bitmap = np.asarray(bitmap)
    if bitmap.ndim != 2 or bitmap.dtype != np.bool_:
        raise ValueError("bitmap must be a 2-D boolean array")
    x1, y1 = (math.floor(v) for v in bbox[0:2])
    x2, y2 = (math.ceil(v) for v in bbox[2:4])
    if not (0 <= x1 < x2 <= bitmap.shape[1] and 0 <= y1 < y2 <= bitmap.shape[0]):
        raise ValueError("bbox has invalid coordinates")
    flat = bitmap[y1:y2, x1:x2].ravel()
    edges = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]))
    runs = np.diff(edges).tolist()
    if flat[0]:
        runs.insert(0, 0)  # runs start with a (here empty) background run
    return runs + [x1, y1, x2 - 1, y2 - 1]


def _decode_rle(encoded: Sequence[float], image_width: int, image_height: int) -> np.ndarray:
    """The full-frame boolean mask of CVAT RLE ``encoded`` (the ``cvat_sdk.masks`` format)."""
    if len(encoded) < 5:
        raise ValueError("too few elements in encoded mask")
    if image_width <= 0 or image_height <= 0:
        raise ValueError("invalid image dimensions")
    values = []
    for v in encoded:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"non-integer value in encoded mask: {v!r}")
        values.append(int(v))
    *runs, x1, y1, x2, y2 = values
    x2, y2 = x2 + 1, y2 + 1
    if not (0 <= x1 < x2 <= image_width and 0 <= y1 < y2 <= image_height):
        raise ValueError("invalid encoded bounding box")
    if any(r < 0 for r in runs):
        raise ValueError("negative run length in encoded mask")
    flat = np.repeat((np.arange(len(runs)) & 1) != 0, runs)
    if flat.size != (y2 - y1) * (x2 - x1):
        raise ValueError("encoded bitmap does not match encoded bounding box")
    mask = np.zeros((image_height, image_width), dtype=bool)
    mask[y1:y2, x1:x2] = flat.reshape(y2 - y1, x2 - x1)
    return mask


def encode_mask(bitmap: np.ndarray, bbox: Sequence[float]) -> list[float]:
    """CVAT mask ``points`` for a boolean (H, W) ``bitmap`` over the exclusive ``bbox``:
    ``cvat_sdk.masks.encode_mask`` when the SDK has it, else the same format computed here."""
    if _sdk_masks is not None:
        return _sdk_masks.encode_mask(bitmap, bbox=list(bbox))
    return _encode_rle(bitmap, bbox)


def decode_mask(encoded: Sequence[float], *, image_width: int, image_height: int) -> np.ndarray:
    """The (H, W) boolean mask of CVAT mask ``points``: ``cvat_sdk.masks.decode_mask`` when
    the SDK has it, else the same format decoded here. Malformed input raises ValueError."""
    if _sdk_masks is not None:
        return _sdk_masks.decode_mask(encoded, image_width=image_width, image_height=image_height)
    return _decode_rle(encoded, image_width, image_height)


def to_cvat_shape_dicts(
    det: Detections,
    label_ids: Mapping[str, int],
    *,
    frame: int,
    as_polygons: bool = False,
    score_spec_id: int | None = None,
    source: str | None = "auto",
    polygon_tolerance: float = 1.0,
    score_field: bool | None = None,
) -> list[dict[str, Any]]:
    """What `to_cvat_shapes` makes, as plain JSON-ready dicts (the request body of each
    shape, attributes as ``{"spec_id", "value"}`` dicts).

    The bulk path: cvat-sdk models type-check every value of ``points`` (thousands per mask),
    which costs far more than sending them. ``score_field`` says whether to add ``score``
    (default: when the installed cvat-sdk's ``LabeledShapeRequest`` has that field).
    """
    missing = sorted({str(name) for name in det.labels} - set(label_ids))
    if missing:
        raise ValueError(f"labels missing from label_ids: {missing}")
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ValueError(f"frame must be a non-negative integer, got {frame!r}")
    with_score = sdk_shapes_have_score() if score_field is None else score_field

    shapes = []
    for i in range(len(det)):
        ring = None
        if as_polygons:
            ring = largest_ring(det.polygons[i]) if det.polygons is not None else None
            if ring is None and det.masks is not None:
                ring = largest_ring(mask_to_polygons(det.masks[i], polygon_tolerance))
        if ring is not None:
            shape_type = "polygon"
            points = [float(v) for v in ring.reshape(-1)]
        elif det.masks is not None:
            box = mask_bbox(det.masks[i])
            if box is None:
                continue
            shape_type = "mask"
            points = [float(v) for v in encode_mask(det.masks[i], list(box))]
        else:
            shape_type = "rectangle"
            points = [plain_float(v) for v in det.xyxy[i]]
        score = plain_float(det.scores[i])
        attributes = []
        if score_spec_id is not None:
            attributes.append({"spec_id": int(score_spec_id), "value": score_percent(score)})
        shape: dict[str, Any] = {
            "type": shape_type,
            "frame": int(frame),
            "label_id": int(label_ids[str(det.labels[i])]),
            "points": points,
            "occluded": False,
            "z_order": 0,
            "attributes": attributes,
        }
        if source is not None:  # cvat-sdk's auto-annotation driver sets it and refuses a preset one
            shape["source"] = source
        if with_score:
            shape["score"] = score
        shapes.append(shape)
    return shapes


def delivered_types(
    det: Detections, label_types: Mapping[str, str], *, conv_mask_to_poly: bool = False
) -> list[str]:
    """The CVAT shape type each detection is delivered as
    (`serverless.convert.cvat_contract.shape_type_for` of its label's type; labels missing from
    ``label_types`` count as rectangles): the label's type when the detection has a mask
    (``mask`` becomes ``polygon`` with ``conv_mask_to_poly``), else ``rectangle``."""
    kinds = [str(label_types.get(str(name), "rectangle")) for name in det.labels.tolist()]
    return shape_types_for(kinds, has_mask=det.masks is not None, conv_mask_to_poly=conv_mask_to_poly)


def delivered_shape_dicts(
    det: Detections,
    label_types: Mapping[str, str],
    label_ids: Mapping[str, int],
    *,
    frame: int,
    score_spec_ids: Mapping[str, int | None] | None = None,
    score_field: bool | None = None,
    conv_mask_to_poly: bool = False,
    source: str | None = "auto",
) -> tuple[list[dict[str, Any]], list[int]]:
    """One frame's detections as CVAT holds them once pushed, and for each shape the index of
    its detection in ``det``.

    The shape follows `delivered_types`: rectangles are the boxes; polygon labels get the
    largest ring of their mask (a mask without a ring stays a mask); mask labels get CVAT RLE
    over the mask's tight box. Detections whose mask is empty have nothing to show and are
    left out. ``score_spec_ids`` gives, per label, the id of its ``score`` attribute (labels
    without one are left out of it); see `to_cvat_shape_dicts` for ``score_field`` and
    ``source`` (None for cvat-sdk's auto-annotation driver). ``conv_mask_to_poly`` delivers
    mask labels as polygons too (cvat-sdk's ``context.conv_mask_to_poly``). `shape_requests`
    turns the dicts into cvat-sdk models.
    """
    kinds = delivered_types(det, label_types, conv_mask_to_poly=conv_mask_to_poly)
    spec_ids = dict(score_spec_ids or {})
    keep = np.ones(len(det), dtype=bool)
    if det.masks is not None and len(det):
        keep = np.array([kind == "rectangle" for kind in kinds]) | det.masks.reshape(len(det), -1).any(axis=1)
    groups: dict[tuple[str, int | None], list[int]] = {}
    for index, (kind, name) in enumerate(zip(kinds, det.labels.tolist())):
        if keep[index]:
            groups.setdefault((kind, spec_ids.get(str(name))), []).append(index)
    shapes: list[dict[str, Any]] = []
    origin: list[int] = []
    for (kind, spec_id), indices in groups.items():
        part = det[np.asarray(indices, dtype=np.int64)]
        if kind == "rectangle" and part.masks is not None:
            part = part.with_columns(masks=None, polygons=None)
        made = to_cvat_shape_dicts(
            part,
            label_ids,
            frame=frame,
            as_polygons=kind == "polygon",
            score_spec_id=spec_id,
            score_field=score_field,
            source=source,
        )
        if len(made) != len(indices):  # cannot happen: empty masks were left out above
            raise ValueError(f"frame {frame}: {len(indices) - len(made)} {kind} detections have no usable shape")
        shapes.extend(made)
        origin.extend(indices)
    return shapes, origin


def to_cvat_shapes(
    det: Detections,
    label_ids: Mapping[str, int],
    *,
    frame: int,
    as_polygons: bool = False,
    score_spec_id: int | None = None,
    source: str | None = "auto",
    polygon_tolerance: float = 1.0,
) -> list[models.LabeledShapeRequest]:
    """One ``LabeledShapeRequest`` per detection, in order, for task-relative ``frame``.

    ``label_ids`` maps label names to CVAT label ids; a name missing from it raises ValueError.
    Shape type per detection:
    - masks present: ``"mask"`` with ``points = encode_mask(mask, bbox)`` over the mask's tight
      box; detections with empty masks are dropped.
    - ``as_polygons=True``: ``"polygon"`` with the flat largest ring (the ``det.polygons``
      entry, else computed from the mask with ``polygon_tolerance``); detections with an empty
      mask and no ring are dropped, detections with neither mask nor ring stay rectangles.
    - otherwise ``"rectangle"`` with ``points = xyxy``.

    The score goes to the request's ``score`` field when the installed cvat-sdk has one
    (2.80 does, 2.17 does not) and, with ``score_spec_id``, also to an attribute
    ``{spec_id, value: "<integer percent>"}``. Shapes are not occluded and have ``z_order`` 0.
    For bulk uploads, `to_cvat_shape_dicts` gives the same shapes as plain dicts.
    """
    dicts = to_cvat_shape_dicts(
        det,
        label_ids,
        frame=frame,
        as_polygons=as_polygons,
        score_spec_id=score_spec_id,
        source=source,
        polygon_tolerance=polygon_tolerance,
    )
    return shape_requests(dicts)


def shape_requests(shapes: Iterable[Mapping[str, Any]]) -> list[models.LabeledShapeRequest]:
    """cvat-sdk ``LabeledShapeRequest`` models of shape dicts (`to_cvat_shape_dicts`,
    `delivered_shape_dicts`), in order."""
    return [
        models.LabeledShapeRequest(
            **{**shape, "attributes": [models.AttributeValRequest(**a) for a in shape["attributes"]]}
        )
        for shape in shapes
    ]


def _as_dict(shape: Any, index: int) -> dict[str, Any]:
    if hasattr(shape, "to_dict"):
        return shape.to_dict()
    if isinstance(shape, Mapping):
        return dict(shape)
    raise ValueError(
        f"shapes[{index}] must be a cvat-sdk shape model or a dict, got {type(shape).__name__}"
    )


def _numbers(points: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(points, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: points must be numbers, got {points!r}") from err
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: points must be finite, got {points!r}")
    return array


def _rectangle_box(points: np.ndarray, rotation: float, where: str) -> list[float]:
    if points.size != 4:
        raise ValueError(f"{where}: expected 4 points, got {points.size}")
    x1, y1, x2, y2 = (float(v) for v in points)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if rotation % 360:
        # CVAT rotates around the centre; keep the axis-aligned box enclosing the result.
        theta = math.radians(rotation)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = (x2 - x1) / 2, (y2 - y1) / 2
        ex = hw * abs(math.cos(theta)) + hh * abs(math.sin(theta))
        ey = hw * abs(math.sin(theta)) + hh * abs(math.cos(theta))
        x1, y1, x2, y2 = cx - ex, cy - ey, cx + ex, cy + ey
    return [x1, y1, x2, y2]


def _geometry(
    shape_type: str, points: np.ndarray, rotation: float, where: str, width: int, height: int
) -> tuple[list[float], np.ndarray | None, np.ndarray | None]:
    """The box, ring (polygons) and full-frame mask (masks) of one shape's ``points``."""
    if shape_type == "rectangle":
        return _rectangle_box(points, rotation, where), None, None
    if shape_type == "polygon":
        if points.size % 2 or points.size < 6:
            raise ValueError(f"{where}: expected an even number >= 6 of coordinates, got {points.size}")
        ring = points.reshape(-1, 2).astype(np.float32)
        return [*ring.min(axis=0).tolist(), *ring.max(axis=0).tolist()], ring, None
    try:
        mask = decode_mask(points.tolist(), image_width=width, image_height=height)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    tight = mask_bbox(mask)
    if tight is None:
        x1, y1, x2, y2 = (int(v) for v in points[-4:])
        tight = (x1, y1, x2 + 1, y2 + 1)
    return [float(v) for v in tight], None, mask


def _full_mask(
    kind: str, box: list[float], ring: np.ndarray | None, mask: np.ndarray | None, height: int, width: int
) -> np.ndarray:
    """A shape's full-frame mask: its own, its polygon's, or its box's pixels (the COCO rule,
    `serverless.convert.coco.box_mask`)."""
    if kind == "mask" and mask is not None:
        return mask
    if kind == "polygon" and ring is not None:
        return polygons_to_mask([ring], height, width)
    return box_mask(box, height, width)


def from_cvat_shapes(
    shapes: Iterable[Any],
    label_names: Mapping[int, str],
    *,
    width: int,
    height: int,
    label_index: Mapping[str, int] | None = None,
) -> Detections:
    """`Detections` from CVAT shapes (``LabeledShape`` models or dicts), in input order.

    Reads ``type, points, label_id, frame, id, source, score, rotation``; only rectangle,
    polygon and mask shapes are converted, every other type is skipped without error. An
    unknown ``label_id`` or malformed ``points`` raise ValueError naming the shape's index.

    - rectangle → box = ``points`` (a rotated rectangle becomes its axis-aligned enclosing box).
    - polygon → one ring, box = min/max of its vertices.
    - mask → `decode_mask` ``(points, image_width=width, image_height=height)``, box = the
      mask's tight exclusive box (the encoded box if the mask is empty).

    ``masks`` is filled for every detection when any mask shape is present (rectangles
    rasterized as the pixels whose centre lies inside, polygons with `polygons_to_mask`),
    else None. ``polygons`` is present when any polygon shape is: polygons carry their ring,
    other detections ``()`` (so `to_cvat_shapes` with ``as_polygons`` turns them back into
    rectangles or polygons of their masks). Scores come from ``score`` (1.0 when absent or
    None); ``class_ids`` from ``label_index`` by name (-1 when absent). ``data`` columns:
    ``cvat_id`` (int64, -1 when missing), ``source`` (str, "" when missing), ``frame``
    (int64, -1 when missing) and ``shape_type`` (the CVAT type of each shape).
    """
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")

    boxes, scores, labels, class_ids = [], [], [], []
    kinds, rings, masks = [], [], []
    cvat_ids, sources, frames = [], [], []
    for index, raw in enumerate(shapes):
        shape = _as_dict(raw, index)
        shape_type = shape.get("type")
        shape_type = str(getattr(shape_type, "value", shape_type))
        if shape_type not in SUPPORTED_SHAPE_TYPES:
            continue
        where = f"shapes[{index}] ({shape_type})"
        label_id = shape.get("label_id")
        if label_id not in label_names:
            raise ValueError(f"{where}: label_id {label_id!r} is not in label_names")
        points = _numbers(shape.get("points", []), where)

        box, ring, mask = _geometry(shape_type, points, float(shape.get("rotation") or 0.0), where, width, height)
        name = str(label_names[label_id])
        score = shape.get("score")
        boxes.append(box)
        scores.append(1.0 if score is None else float(score))
        labels.append(name)
        class_ids.append(-1 if label_index is None else int(label_index.get(name, -1)))
        kinds.append(shape_type)
        rings.append(ring)
        masks.append(mask)
        cvat_id = shape.get("id")
        cvat_ids.append(-1 if cvat_id is None else int(cvat_id))
        sources.append(str(shape.get("source") or ""))
        frame = shape.get("frame")
        frames.append(-1 if frame is None else int(frame))

    polygons = None
    if "polygon" in kinds:
        polygons = tuple(() if ring is None else (ring,) for ring in rings)
    full_masks = None
    if "mask" in kinds:
        full_masks = np.stack(
            [_full_mask(kind, box, ring, mask, height, width) for kind, box, ring, mask in zip(kinds, boxes, rings, masks)]
        )

    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, dtype=np.float32).reshape(n, 4),
        scores=np.asarray(scores, dtype=np.float32),
        class_ids=np.asarray(class_ids, dtype=np.int64),
        labels=np.asarray(labels, dtype=str) if n else np.zeros(0, dtype="<U1"),
        masks=full_masks,
        polygons=polygons,
        data={
            "cvat_id": np.asarray(cvat_ids, dtype=np.int64),
            "source": np.asarray(sources, dtype=str) if n else np.zeros(0, dtype="<U1"),
            "frame": np.asarray(frames, dtype=np.int64),
            "shape_type": np.asarray(kinds, dtype=str) if n else np.zeros(0, dtype="<U1"),
        },
    )


# ----------------------------------------------------------------------------- tags
def to_cvat_tag_dicts(
    tags: Tags,
    label_ids: Mapping[str, int],
    *,
    frame: int,
    score_spec_ids: Mapping[str, int | None] | None = None,
    source: str | None = "auto",
) -> list[dict[str, Any]]:
    """One image's tags as CVAT tag request bodies (the JSON of ``LabeledImageRequest``), in
    order: ``frame``, ``label_id`` (``label_ids``: label name → CVAT id; a name missing from it
    raises ValueError), ``attributes`` (the score as an integer percent in the label's
    ``score`` attribute when ``score_spec_ids`` gives its id) and ``source`` (None leaves it
    out, as cvat-sdk's auto-annotation driver wants). The one rule for tags going to CVAT."""
    if not isinstance(tags, Tags):
        raise ValueError(f"expected Tags, got {type(tags).__name__}")
    missing = sorted({str(name) for name in tags.labels} - set(label_ids))
    if missing:
        raise ValueError(f"labels missing from label_ids: {missing}")
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ValueError(f"frame must be a non-negative integer, got {frame!r}")
    spec_ids = dict(score_spec_ids or {})
    with_score = tag_score_field()
    made = []
    for name, value in zip(tags.labels.tolist(), tags.scores.tolist()):
        score = plain_float(value)
        spec_id = spec_ids.get(str(name))
        tag: dict[str, Any] = {
            "frame": int(frame),
            "label_id": int(label_ids[str(name)]),
            "attributes": [] if spec_id is None else [{"spec_id": int(spec_id), "value": score_percent(score)}],
        }
        if source is not None:
            tag["source"] = source
        if with_score:  # no cvat-sdk has it yet (cvat_contract.tag_score_field)
            tag["score"] = score
        made.append(tag)
    return made


def tag_requests(tags: Iterable[Mapping[str, Any]]) -> list[models.LabeledImageRequest]:
    """cvat-sdk ``LabeledImageRequest`` models of tag dicts (`to_cvat_tag_dicts`), in order."""
    return [
        models.LabeledImageRequest(
            **{**tag, "attributes": [models.AttributeValRequest(**a) for a in tag["attributes"]]}
        )
        for tag in tags
    ]


def to_cvat_tags(
    tags: Tags,
    label_ids: Mapping[str, int],
    *,
    frame: int = 0,
    score_spec_ids: Mapping[str, int | None] | None = None,
    source: str | None = None,
) -> list[models.LabeledImageRequest]:
    """`to_cvat_tag_dicts` as cvat-sdk ``LabeledImageRequest`` models. The defaults are what a
    cvat-sdk detection function returns: ``frame`` 0, ``label_ids`` the function spec's ids,
    no ``source`` (the driver sets it), the score attribute where the spec declares it
    (``score_spec_ids``: label name → the attribute's spec id)."""
    return tag_requests(
        to_cvat_tag_dicts(tags, label_ids, frame=frame, score_spec_ids=score_spec_ids, source=source)
    )


def from_cvat_tags(
    tags: Iterable[Any], label_names: Mapping[int, str], *, label_index: Mapping[str, int] | None = None
) -> tuple[Tags, dict[str, np.ndarray]]:
    """CVAT tags (``LabeledImage`` models or dicts, in input order) as `Tags` and their
    columns: ``cvat_id`` (int64, the CVAT tag id, -1 when missing), ``source`` (str) and
    ``frame`` (int64, -1 when missing). Scores are 1.0 (CVAT keeps none on tags);
    ``class_ids`` come from ``label_index`` by name (-1 when absent). An unknown ``label_id``
    raises ValueError naming the tag's index."""
    names, ids, sources, frames = [], [], [], []
    for index, raw in enumerate(tags):
        tag = _as_dict(raw, index)
        label_id = tag.get("label_id")
        if label_id not in label_names:
            raise ValueError(f"tags[{index}]: label_id {label_id!r} is not in label_names")
        names.append(str(label_names[label_id]))
        ids.append(-1 if tag.get("id") is None else int(tag["id"]))
        sources.append(str(tag.get("source") or ""))
        frames.append(-1 if tag.get("frame") is None else int(tag["frame"]))
    n = len(names)
    found = Tags(
        class_ids=np.asarray([-1 if label_index is None else int(label_index.get(n, -1)) for n in names], np.int64),
        scores=np.ones(n, dtype=np.float32),
        labels=np.asarray(names, dtype=str) if n else np.zeros(0, dtype="<U1"),
    )
    columns = {
        "cvat_id": np.asarray(ids, dtype=np.int64),
        "source": np.asarray(sources, dtype=str) if n else np.zeros(0, dtype="<U1"),
        "frame": np.asarray(frames, dtype=np.int64),
    }
    return found, columns
