"""`Detections` ↔ COCO object-detection JSON (instances / results files).

Conventions:
- COCO ``bbox`` is ``[x, y, w, h]`` in continuous pixel coordinates, i.e.
  ``[x1, y1, x2 - x1, y2 - y1]`` of the exclusive ``xyxy`` of `Detections`.
- Category ids are ``1..K`` in the order of the given category names; annotation ids start at
  1, never 0 (an id of 0 collides with the "no match" value of some COCO evaluators).
- ``segmentation``: compressed RLE (``counts`` as str, column-major, COCO's format) for masks,
  a list of flat polygons for polygon-only detections, and ``[]`` for plain boxes. ``[]`` is
  what CVAT's own COCO export writes for rectangles; pycocotools ``COCO()``/``loadRes`` and
  ``bbox`` evaluation accept it (``segm`` evaluation needs a segmentation on every annotation,
  so boxes-only files are for ``bbox`` evaluation only).
- Masks read from COCO are rasterized by COCO's mask code; a box-only annotation in an image
  that has masks becomes the pixels whose centre lies inside its box (`box_mask`).

- **Tags** (image-level labels, CVAT tags; `serverless.models.base.Tags`) are written on the
  image entry, not as annotations: ``"tags": [{"category_id": 3, "score": 0.87}, ...]``
  (`image_tags`; ``score`` left out for human tags), their labels listed in ``categories``
  like any other. COCO readers (pycocotools, faster-coco-eval, CVAT's and Datumaro's
  importers) read the image fields they know and ignore the others, so a file with tags reads
  there as the same instances file without them; an annotation without a ``bbox`` (the other
  way to say "this image is a cat") would break pycocotools' ``loadRes`` and bbox evaluation.
  `from_coco_tags` reads them back (``autolabel import``).

- Values read are checked to fit what they become: ids are 64-bit integers, image sizes
  32-bit, coordinates (``bbox`` corners, polygon vertices) finite and within
  ±`MAX_COORDINATE` pixels (float32 holds every whole pixel up to there), scores in 0..1.
  A polygon has an even number (at least 6) of coordinates; ``segmentation: [[]]`` is refused
  (``[]`` or no ``segmentation`` means a plain box).

The COCO mask codec of the project is here: `encode_masks`, `decode_rle` and `box_mask`
(and COCO's polygon rasterization for `from_coco`). They use ``faster_coco_eval.core.mask``
(pycocotools' C code and RLE format, bit for bit), imported only when a mask is encoded or
decoded (it imports OpenCV). CVAT's own mask RLE is `cvat_sdk.masks`' (`cvat_shapes`).
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serverless.detections import Detections, plain_float
from serverless.files import write_text_atomic
from serverless.models.base import Tags

__all__ = [
    "MAX_COORDINATE",
    "CocoFormatError",
    "CocoImage",
    "box_mask",
    "decode_rle",
    "encode_masks",
    "from_coco",
    "from_coco_tags",
    "image_tags",
    "read_coco",
    "to_coco",
    "write_coco",
]

MAX_COORDINATE = float(2**24)
"""The largest pixel coordinate (absolute value) read from COCO: float32, the stored type,
holds every whole pixel up to 2**24 = 16,777,216 exactly."""

_INT64 = (-(2**63), 2**63 - 1)
_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1
"""COCO's mask code counts runs in 32-bit unsigned integers."""
_MAX_INT_DIGITS = 100
"""Integers longer than this in a COCO file are refused while it is parsed."""

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlong = 40
_SHORT.maxlevel = 3



class CocoFormatError(ValueError):
    """A COCO file or dict does not have the expected structure or values."""


@dataclass(frozen=True)
class CocoImage:
    """One entry of COCO ``images``."""

    id: int
    """The COCO image id (unique within a file)."""
    file_name: str
    """The image file name, relative to the images directory."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""


# ----------------------------------------------------------------------------- helpers
# ----------------------------------------------------------------------------- mask codec
_RLE_STRING = re.compile(r"[0-o]*")
"""The characters of a COCO compressed RLE string (6-bit groups written from ``'0'``)."""


def box_mask(xyxy: Sequence[float], height: int, width: int) -> np.ndarray:
    """The pixels whose centre lies in the box (continuous coordinates, right/bottom
    exclusive), clipped to the frame: COCO's rasterization of a box (``frPyObjects`` of its
    ``bbox``), computed without it."""
    mask = np.zeros((height, width), dtype=bool)
    x1, x2 = (min(max(math.floor(float(v) + 0.5), 0), width) for v in (xyxy[0], xyxy[2]))
    y1, y2 = (min(max(math.floor(float(v) + 0.5), 0), height) for v in (xyxy[1], xyxy[3]))
    mask[y1:y2, x1:x2] = True
    return mask


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO compressed RLE ``{"size": [h, w], "counts": str}`` of each mask of ``masks``
    (N, H, W; any dtype, non-zero is foreground)."""
    if masks.shape[0] == 0:
        return []
    from faster_coco_eval.core import mask as mask_util

    stacked = np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8)
    return [
        {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        for rle in mask_util.encode(stacked)
    ]


def _polygons_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict[str, Any]:
    """COCO's rasterization of flat ``x, y`` polygons (one mask, their union) as an RLE."""
    from faster_coco_eval.core import mask as mask_util

    return mask_util.merge(mask_util.frPyObjects([list(p) for p in polygons], height, width))


def _polygons_area(polygons: Sequence[Sequence[float]], height: int, width: int) -> float:
    """COCO's ``area`` of polygons: the pixel count of their rasterization."""
    from faster_coco_eval.core import mask as mask_util

    return float(mask_util.area(_polygons_rle(polygons, height, width)))


def decode_rle(rle: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """The boolean (height, width) mask of a COCO RLE of that size (``rle["size"]`` is the
    caller's to check): ``counts`` compressed (str or bytes) or uncompressed (run lengths,
    background first, column-major).

    Raises ValueError: ``malformed compressed RLE string``, ``run lengths must be >= 0 and
    cover HxW pixels``, or ``expected a string or a list of integers, got ...``.
    """
    from faster_coco_eval.core import mask as mask_util

    counts = rle.get("counts")
    cover = f"run lengths must be >= 0 and cover {height}x{width} pixels"
    if isinstance(counts, bytes):
        counts = counts.decode("latin-1")
    if isinstance(counts, str):
        # the library decodes any byte as a 6-bit group; COCO writes only these characters
        if not _RLE_STRING.fullmatch(counts):
            raise ValueError("malformed compressed RLE string")
        compressed = {"size": [height, width], "counts": counts}
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        if any(v < 0 or v > _UINT32_MAX for v in counts) or sum(counts) != height * width:
            raise ValueError(cover)
        compressed = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        raise ValueError(f"expected a string or a list of integers, got {_shown(counts)}")
    try:
        return mask_util.decode([compressed])[:, :, 0].astype(bool)
    except RuntimeError:  # the string ends inside a value
        raise ValueError("malformed compressed RLE string") from None
    except ValueError:  # runs that do not add up to the frame (a compressed string can hold negative ones)
        raise ValueError(cover) from None


# ----------------------------------------------------------------------------- export
def to_coco(
    images: Sequence[CocoImage],
    detections: Sequence[Detections],
    categories: Sequence[str],
    *,
    info: dict | None = None,
    tags: Sequence[Tags] | None = None,
) -> dict[str, Any]:
    """A COCO dict (``info, licenses, images, annotations, categories``), JSON-ready.

    ``detections[i]`` belongs to ``images[i]``; masks must have that image's size. Category
    ids are ``1..K`` in the order of ``categories``; a detection label not among them raises
    ValueError. Each annotation has ``id`` (from 1), ``image_id``, ``category_id``,
    ``bbox [x, y, w, h]``, ``area``, ``iscrowd`` (``data["iscrowd"]`` if present, else 0),
    ``score`` and ``segmentation``:
    - masks present: compressed RLE, ``area`` = mask pixel count;
    - else a ``polygons`` entry with rings: flat polygons, ``area`` = their rasterized area
      (as COCO computes it);
    - else ``[]`` and ``area`` = box area.

    ``tags[i]``, when given, are the image-level labels of ``images[i]``: its entry gets
    ``"tags"`` (`image_tags`, scores kept; ``[]`` for none).
    """
    images, detections = list(images), list(detections)
    categories = [str(name) for name in categories]
    category_ids = _check_export(images, detections, categories)
    if tags is not None and len(tags) != len(images):
        raise ValueError(f"images and tags must align, got {len(images)} images and {len(tags)} tags")
    annotations: list[dict[str, Any]] = []
    for image, det in zip(images, detections):
        annotations.extend(_image_annotations(image, det, category_ids, first_id=len(annotations) + 1))
    entries = [
        {"id": int(im.id), "file_name": str(im.file_name), "width": int(im.width), "height": int(im.height)}
        for im in images
    ]
    for entry, given in zip(entries, tags or ()):
        entry["tags"] = image_tags(given, category_ids)
    return {
        "info": dict(info or {}),
        "licenses": [],
        "images": entries,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(categories)
        ],
    }


def image_tags(tags: Tags, category_ids: Mapping[str, int], *, scores: bool = True) -> list[dict[str, Any]]:
    """An image's tags as its COCO entry's ``"tags"``: ``{"category_id", "score"}`` each, in
    order (``score`` left out when not ``scores``: human tags). A label missing from
    ``category_ids`` raises ValueError."""
    if not isinstance(tags, Tags):
        raise ValueError(f"expected Tags, got {type(tags).__name__}")
    unknown = sorted({str(name) for name in tags.labels} - set(category_ids))
    if unknown:
        raise ValueError(f"tag labels not in categories: {unknown}")
    entries = []
    for name, score in zip(tags.labels.tolist(), tags.scores.tolist()):
        entry: dict[str, Any] = {"category_id": int(category_ids[str(name)])}
        if scores:
            entry["score"] = plain_float(score)
        entries.append(entry)
    return entries


def _check_export(images: list[CocoImage], detections: list[Detections], categories: list[str]) -> dict[str, int]:
    """Category name → id (1..K) after checking `to_coco`'s arguments (ValueError)."""
    if len(images) != len(detections):
        raise ValueError(
            f"images and detections must align, got {len(images)} images "
            f"and {len(detections)} detections"
        )
    duplicates = sorted({name for name in categories if categories.count(name) > 1})
    if duplicates:
        raise ValueError(f"categories must be unique, got duplicates {duplicates}")
    seen_ids: set[int] = set()
    for image in images:
        if image.id in seen_ids:
            raise ValueError(f"image ids must be unique, got {image.id} twice")
        seen_ids.add(image.id)
        if image.width <= 0 or image.height <= 0:
            raise ValueError(
                f"image {image.id} must have a positive size, got {image.width}x{image.height}"
            )
    category_ids = {name: i + 1 for i, name in enumerate(categories)}
    for image, det in zip(images, detections):
        unknown = sorted({str(name) for name in det.labels} - set(category_ids))
        if unknown:
            raise ValueError(f"image {image.id}: labels not in categories: {unknown}")
        if det.masks is not None and det.masks.shape[1:] != (image.height, image.width):
            raise ValueError(
                f"image {image.id}: masks must have shape (N, {image.height}, {image.width}), "
                f"got {det.masks.shape}"
            )
    return category_ids


def _image_annotations(
    image: CocoImage, det: Detections, category_ids: dict[str, int], *, first_id: int
) -> list[dict[str, Any]]:
    """The COCO annotations of one image's detections (see `to_coco`), ids from ``first_id``."""
    width, height = int(image.width), int(image.height)
    iscrowd = det.data.get("iscrowd")
    rles = encode_masks(det.masks) if det.masks is not None else []
    annotations = []
    for i in range(len(det)):
        x1, y1, x2, y2 = (plain_float(v) for v in det.xyxy[i])
        ann: dict[str, Any] = {
            "id": first_id + i,
            "image_id": int(image.id),
            "category_id": category_ids[str(det.labels[i])],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1),
            "iscrowd": 0 if iscrowd is None else int(bool(iscrowd[i])),
            "score": plain_float(det.scores[i]),
            "segmentation": [],
        }
        if det.masks is not None:
            ann["segmentation"] = rles[i]
            ann["area"] = float(det.masks[i].sum())
        elif det.polygons is not None and det.polygons[i]:
            polygons = [[plain_float(v) for v in ring.reshape(-1)] for ring in det.polygons[i]]
            ann["segmentation"] = polygons
            ann["area"] = _polygons_area(polygons, height, width)
        annotations.append(ann)
    return annotations


# ----------------------------------------------------------------------------- import
def _shown(value: Any) -> str:
    """``repr`` of a value read from a file, cut short (long lists, strings and integers, deep
    nesting) so that an error message stays one readable line."""
    return _SHORT.repr(value)


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a number (bools are not) or does not
    fit a finite float (NaN, infinity, an integer beyond float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class _Checker:
    """Builds `CocoFormatError` messages ``SOURCE: PATH: what was expected, got what``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> CocoFormatError:
        return CocoFormatError(f"{self.source}: {path}: {message}")

    def as_object(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {type(value).__name__}")
        return value

    def as_list(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {type(value).__name__}")
        return value

    def as_int(self, value: Any, path: str, *, positive: bool = False, maximum: int = _INT64[1]) -> int:
        """An integer in ``1..maximum`` (``positive``) or in the 64-bit range up to ``maximum``."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_shown(value)}")
        if positive and value <= 0:
            raise self.fail(path, f"expected a positive integer, got {_shown(value)}")
        if not _INT64[0] <= value <= maximum:
            lowest = 1 if positive else _INT64[0]
            raise self.fail(path, f"expected an integer from {lowest} to {maximum}, got {_shown(value)}")
        return value

    def as_number(self, value: Any, path: str) -> float:
        number = _finite(value)
        if number is None:
            raise self.fail(path, f"expected a finite number, got {_shown(value)}")
        return number

    def as_numbers(self, value: Any, path: str, what: str) -> list[float]:
        numbers = [_finite(v) for v in value] if isinstance(value, list) else [None]
        if any(number is None for number in numbers):
            raise self.fail(path, f"expected {what}, got {_shown(value)}")
        return numbers  # type: ignore[return-value]  (no None left)

    def as_coordinates(self, numbers: list[float], path: str, raw: Any) -> None:
        """Refuse pixel coordinates beyond ±`MAX_COORDINATE` (naming the field and its value)."""
        if any(abs(v) > MAX_COORDINATE for v in numbers):
            raise self.fail(
                path, f"expected pixel coordinates within ±{MAX_COORDINATE:.0f}, got {_shown(raw)}"
            )


def _decode_segmentation(
    seg: Any, path: str, check: _Checker, height: int, width: int
) -> tuple[np.ndarray | None, tuple[np.ndarray, ...] | None]:
    """(mask, rings) of one ``segmentation``; (None, None) when it is absent or empty."""
    if seg is None or seg == []:
        return None, None
    if isinstance(seg, list):
        polygons = []
        for j, poly in enumerate(seg):
            flat = check.as_numbers(poly, f"{path}[{j}]", "a flat list of x, y numbers")
            if len(flat) % 2 or len(flat) < 6:
                raise check.fail(
                    f"{path}[{j}]",
                    f"expected an even number >= 6 of coordinates (3 or more x, y points), got {len(flat)}",
                )
            check.as_coordinates(flat, f"{path}[{j}]", poly)
            polygons.append(flat)
        rings = tuple(np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in polygons)
        return decode_rle(_polygons_rle(polygons, height, width), height, width), rings
    if isinstance(seg, dict):
        size = seg.get("size")
        if size != [height, width]:
            raise check.fail(f"{path}.size", f"expected [{height}, {width}], got {_shown(size)}")
        try:
            return decode_rle(seg, height, width), None
        except ValueError as err:
            raise check.fail(f"{path}.counts", str(err)) from None
    raise check.fail(
        path, f"expected a list of polygons or an RLE object, got {type(seg).__name__}"
    )


def from_coco(
    data: Any, *, source: str = "<coco>"
) -> tuple[list[CocoImage], list[str], list[Detections]]:
    """Images, category names and per-image `Detections` from a COCO dict.

    Returns ``(images, categories, detections)``: images in file order, category names
    sorted by category id, and one `Detections` per image (annotations in file order).
    ``class_ids`` index into the category list; ``scores`` come from ``score`` (1.0 when
    absent). An image gets ``masks`` (full frame) when any of its annotations has a
    non-empty ``segmentation`` (RLE or polygons; box-only annotations become their box's
    pixels) and ``polygons`` when any has polygons (the others get ``()``). ``data``
    columns: ``coco_id`` (int64, -1 when absent) and ``iscrowd`` (bool).

    Raises `CocoFormatError` naming ``source`` and the offending path, e.g.
    ``<coco>: annotations[3].bbox: expected 4 numbers, got [1, 2]``.
    """
    check = _Checker(source)
    if not isinstance(data, dict):
        raise CocoFormatError(
            f"{source}: expected a JSON object at top level, got {type(data).__name__}"
        )
    images = _read_images(data, check)
    image_index = {image.id: i for i, image in enumerate(images)}
    category_names = _read_categories(data, check)
    sorted_ids = sorted(category_names)
    class_of = {c: i for i, c in enumerate(sorted_ids)}

    per_image: list[list[dict[str, Any]]] = [[] for _ in images]
    seen_ann_ids: set[int] = set()
    for i, raw in enumerate(check.as_list(data.get("annotations", []), "annotations")):
        path = f"annotations[{i}]"
        ann = check.as_object(raw, path)
        ann_id = -1
        if ann.get("id") is not None:
            ann_id = check.as_int(ann["id"], f"{path}.id")
            if ann_id in seen_ann_ids:
                raise check.fail(f"{path}.id", f"duplicate annotation id {ann_id}")
            seen_ann_ids.add(ann_id)
        image_id = check.as_int(ann.get("image_id"), f"{path}.image_id")
        if image_id not in image_index:
            raise check.fail(f"{path}.image_id", f"unknown image id {image_id}")
        category_id = check.as_int(ann.get("category_id"), f"{path}.category_id")
        if category_id not in category_names:
            raise check.fail(f"{path}.category_id", f"unknown category id {category_id}")
        row = _read_annotation(ann, path, check, images[image_index[image_id]])
        row.update(class_id=class_of[category_id], label=category_names[category_id], coco_id=ann_id)
        per_image[image_index[image_id]].append(row)

    detections = [_image_detections(rows, image) for rows, image in zip(per_image, images)]
    return images, [category_names[c] for c in sorted_ids], detections


def from_coco_tags(data: Any, *, source: str = "<coco>") -> list[Tags]:
    """The image-level labels of a COCO dict, one `Tags` per image in file order (images
    without ``"tags"`` have none): ``class_ids`` index the category list `from_coco` returns
    (sorted by id), ``scores`` come from ``score`` (1.0 when absent). Raises `CocoFormatError`
    naming the path (``images[2].tags[0].category_id: unknown category id 9``)."""
    check = _Checker(source)
    if not isinstance(data, dict):
        raise CocoFormatError(f"{source}: expected a JSON object at top level, got {type(data).__name__}")
    _read_images(data, check)
    category_names = _read_categories(data, check)
    class_of = {c: i for i, c in enumerate(sorted(category_names))}
    found = []
    for i, entry in enumerate(data["images"]):
        rows = []
        for j, raw in enumerate(check.as_list(entry.get("tags", []), f"images[{i}].tags")):
            path = f"images[{i}].tags[{j}]"
            tag = check.as_object(raw, path)
            category_id = check.as_int(tag.get("category_id"), f"{path}.category_id")
            if category_id not in category_names:
                raise check.fail(f"{path}.category_id", f"unknown category id {category_id}")
            score = 1.0
            if tag.get("score") is not None:
                score = check.as_number(tag["score"], f"{path}.score")
                if not 0.0 <= score <= 1.0:
                    raise check.fail(f"{path}.score", f"expected a number in 0..1, got {_shown(tag['score'])}")
            rows.append((class_of[category_id], score, category_names[category_id]))
        found.append(
            Tags(
                class_ids=np.asarray([r[0] for r in rows], dtype=np.int64),
                scores=np.asarray([r[1] for r in rows], dtype=np.float32),
                labels=np.asarray([r[2] for r in rows], dtype=str) if rows else np.zeros(0, dtype="<U1"),
            )
        )
    return found


def _read_images(data: dict, check: _Checker) -> list[CocoImage]:
    """The checked ``images`` entries, in file order (ids unique)."""
    images: list[CocoImage] = []
    seen: set[int] = set()
    for i, raw in enumerate(check.as_list(data.get("images"), "images")):
        path = f"images[{i}]"
        entry = check.as_object(raw, path)
        image_id = check.as_int(entry.get("id"), f"{path}.id")
        if image_id in seen:
            raise check.fail(f"{path}.id", f"duplicate image id {image_id}")
        seen.add(image_id)
        file_name = entry.get("file_name")
        if not isinstance(file_name, str):
            raise check.fail(f"{path}.file_name", f"expected a string, got {_shown(file_name)}")
        width = check.as_int(entry.get("width"), f"{path}.width", positive=True, maximum=_INT32_MAX)
        height = check.as_int(entry.get("height"), f"{path}.height", positive=True, maximum=_INT32_MAX)
        images.append(CocoImage(id=image_id, file_name=file_name, width=width, height=height))
    return images


def _read_categories(data: dict, check: _Checker) -> dict[int, str]:
    """Category id → name of the checked ``categories`` (ids and names unique)."""
    category_names: dict[int, str] = {}
    for i, raw in enumerate(check.as_list(data.get("categories"), "categories")):
        path = f"categories[{i}]"
        entry = check.as_object(raw, path)
        category_id = check.as_int(entry.get("id"), f"{path}.id")
        if category_id in category_names:
            raise check.fail(f"{path}.id", f"duplicate category id {category_id}")
        name = entry.get("name")
        if not isinstance(name, str):
            raise check.fail(f"{path}.name", f"expected a string, got {_shown(name)}")
        if name in category_names.values():
            raise check.fail(f"{path}.name", f"duplicate category name {_shown(name)}")
        category_names[category_id] = name
    return category_names


def _read_annotation(ann: dict, path: str, check: _Checker, image: CocoImage) -> dict[str, Any]:
    """Box, score, crowd flag and segmentation of one annotation of ``image`` (checked)."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise check.fail(f"{path}.bbox", f"expected 4 numbers, got {_shown(bbox)}")
    x, y, w, h = check.as_numbers(bbox, f"{path}.bbox", "4 numbers")
    if w < 0 or h < 0:
        raise check.fail(
            f"{path}.bbox", f"expected a non-negative width and height, got {_shown(bbox)}"
        )
    check.as_coordinates([x, y, x + w, y + h], f"{path}.bbox", bbox)
    score = 1.0
    if ann.get("score") is not None:
        score = check.as_number(ann["score"], f"{path}.score")
        if not 0.0 <= score <= 1.0:
            raise check.fail(
                f"{path}.score", f"expected a number in 0..1, got {_shown(ann['score'])}"
            )
    iscrowd = ann.get("iscrowd", 0)
    if type(iscrowd) is not int or iscrowd not in (0, 1):
        raise check.fail(f"{path}.iscrowd", f"expected 0 or 1, got {_shown(iscrowd)}")
    mask, rings = _decode_segmentation(
        ann.get("segmentation"), f"{path}.segmentation", check, image.height, image.width
    )
    return {
        "xyxy": [x, y, x + w, y + h],
        "score": score,
        "mask": mask,
        "rings": rings,
        "iscrowd": bool(iscrowd),
    }


def _image_detections(rows: list[dict[str, Any]], image: CocoImage) -> Detections:
    n = len(rows)
    masks = None
    if any(row["mask"] is not None for row in rows):
        masks = np.stack(
            [
                row["mask"] if row["mask"] is not None
                else box_mask(row["xyxy"], image.height, image.width)
                for row in rows
            ]
        )
    polygons = None
    if any(row["rings"] is not None for row in rows):
        polygons = tuple(row["rings"] or () for row in rows)
    return Detections(
        xyxy=np.asarray([row["xyxy"] for row in rows], dtype=np.float32).reshape(n, 4),
        scores=np.asarray([row["score"] for row in rows], dtype=np.float32),
        class_ids=np.asarray([row["class_id"] for row in rows], dtype=np.int64),
        labels=(
            np.asarray([row["label"] for row in rows], dtype=str) if n
            else np.zeros(0, dtype="<U1")
        ),
        masks=masks,
        polygons=polygons,
        data={
            "coco_id": np.asarray([row["coco_id"] for row in rows], dtype=np.int64),
            "iscrowd": np.asarray([row["iscrowd"] for row in rows], dtype=bool),
        },
    )


# ----------------------------------------------------------------------------- files
def write_coco(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write a COCO dict as compact UTF-8 JSON, atomically (temporary file + rename).

    The file gets the mode a plain ``open(path, "w")`` would give it
    (`serverless.files.write_text_atomic`). NaN and infinity are refused (ValueError), since
    they are not JSON.
    """
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")))


class _LongInteger(ValueError):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _json_int(text: str) -> int:
    """``parse_int`` of `read_coco`: refuses integers of more than ``_MAX_INT_DIGITS`` digits
    (Python refuses over 4300 with a message about its own settings)."""
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _LongInteger(len(text.lstrip("-")))
    return int(text)


def read_coco(path: str | os.PathLike) -> dict[str, Any]:
    """Read a COCO JSON file into a dict (validate it with ``from_coco(data, source=path)``).

    Raises `CocoFormatError` ``FILE: invalid JSON at line L column C: ...`` for bad JSON,
    ``FILE: invalid JSON: ...`` for JSON nested too deeply to read or holding an integer of
    more than 100 digits, and ``FILE: expected a JSON object at top level`` for other JSON
    values.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_int=_json_int)
    except UnicodeDecodeError as err:
        raise CocoFormatError(f"{path}: not UTF-8 text at byte {err.start}") from err
    except json.JSONDecodeError as err:
        raise CocoFormatError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except _LongInteger as err:
        raise CocoFormatError(
            f"{path}: invalid JSON: an integer of {err.digits} digits (at most {_MAX_INT_DIGITS} are read)"
        ) from None
    except RecursionError:
        raise CocoFormatError(
            f"{path}: invalid JSON: arrays or objects nested too deeply to read (a COCO file nests a few levels)"
        ) from None
    if not isinstance(data, dict):
        raise CocoFormatError(
            f"{path}: expected a JSON object at top level, got {type(data).__name__}"
        )
    return data
