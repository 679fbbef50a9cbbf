"""Bring labels from a COCO file into the store as one finished ``import`` run.

`import_coco` reads a COCO instances or results file (boxes, polygons, RLE masks, ``iscrowd``,
with or without ``score``) with `serverless.convert.coco`, resolves every image under an
images folder and stores the labels as a run of kind ``"import"``:

- Samples use the pre-label scheme (`sync.prelabel_store.sample_uri`: the absolute path, and
  ``"sha256:<hex>"`` of the file bytes), so an import of files that were pre-labelled lines up
  with the pre-label run sample by sample. The size checked and stored is the one a pre-label
  run records: the decoded size after EXIF orientation.
- ``role="prediction"`` keeps the scores (when the file has any); ``role="revision"`` stores
  none (human truth). The role, file name, counts and label names go into the run's
  ``params``; there is no ontology (labels are the COCO category names).
- Shapes: a polygon annotation is stored as a ``polygon`` row (its rings, plus the mask
  COCO's mask code rasterizes from them), an RLE annotation as a ``mask`` row, an annotation with an
  empty ``segmentation`` as a ``rectangle``. ``iscrowd=1`` annotations get the attributes
  ``{"iscrowd": true}``.
- Tags (image-level labels: an image entry's ``"tags"``, as ``autolabel prelabel --out`` and
  ``autolabel export`` write them, `serverless.convert.coco`) are stored as rows of shape type
  ``tag`` (the whole image as their box, `sync.store.convert.tags_to_detections`), scored as
  the annotations are.
- Every COCO image is covered by the run (an image without annotations is an empty sample).
- Only files inside the images folder are read: a ``file_name`` that resolves (``..``, an
  absolute path, symlinks followed) to a path outside it is refused.

All or nothing: the whole file is read and checked (JSON, structure, every image file and its
size, every annotation row) before anything is written; then samples are registered, the run
is created with all its annotations and finished in one transaction (`Store.add_finished_run`),
so a database error leaves no run at all (the samples, keyed by file, may stay registered).
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sync.prelabel_store import file_sha256, sample_uri
from sync.store import AnnotationIn, Provenance, RunInfo, SampleIn, Store, StoreError

__all__ = ["ROLES", "CocoImportError", "image_size", "import_coco"]

ROLES = ("prediction", "revision")
"""``params["role"]`` of an import run: model output (scores kept) or human truth (no scores)."""

_NAME = reprlib.Repr()
_NAME.maxstring = 200
"""Quotes file names in messages (a hostile one may be megabytes long)."""

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}
"""EXIF orientations that swap width and height."""


class CocoImportError(ValueError):
    """A COCO import cannot go ahead: the message names the file, and the JSON line/column,
    field path (``images[3].width``) or image at fault."""


@dataclass(frozen=True)
class _Image:
    """One COCO image resolved to a file: where it is and what the store will know it as."""

    index: int
    file_name: str
    path: Path
    sample: SampleIn


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as decoded (after EXIF orientation), from its header.

    Raises `serverless.images.ImageError` for a file that is not a readable image or is larger
    than `serverless.images.max_pixels`.
    """
    from PIL import Image, UnidentifiedImageError

    from serverless.images import ImageError, max_pixels

    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION)
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not a recognised image format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot read image: {err}") from err
    if width * height > max_pixels():
        raise ImageError(f"{path}: {width}x{height} pixels exceeds the limit of {max_pixels()} pixels")
    if orientation in _TRANSPOSED:
        width, height = height, width
    return width, height


def _read(coco_file: Path) -> dict[str, Any]:
    from serverless.convert.coco import CocoFormatError, read_coco

    try:
        return read_coco(coco_file)
    except CocoFormatError as err:
        raise CocoImportError(str(err)) from err
    except OSError as err:
        raise CocoImportError(f"{coco_file}: cannot read: {err.strerror or err}") from err


def _inside(images_dir: Path, file_name: str, where: str) -> Path:
    """The file ``file_name`` names, relative to ``images_dir`` (an absolute one as is), with
    every symlink resolved; `CocoImportError` unless it lies inside ``images_dir`` (so
    ``../x``, ``/etc/passwd`` and a symlink pointing out of the folder are all refused)."""
    root = images_dir.resolve()
    try:
        path = (images_dir / file_name).resolve()
    except (OSError, ValueError) as err:  # a NUL byte, a symlink loop
        raise CocoImportError(f"{where}: not a usable file name: {err}") from None
    if not path.is_relative_to(root):
        raise CocoImportError(
            f"{where}: {path} is outside the images folder {root}; only files inside it are read"
        )
    return path


def _resolve_images(coco_file: Path, images_dir: Path, images: Sequence[Any]) -> list[_Image]:
    """Each COCO image as a file inside ``images_dir`` (`_inside`), checked to exist, be an
    image and have the size the COCO file says."""
    from serverless.images import ImageError

    resolved: list[_Image] = []
    seen: dict[str, int] = {}
    for i, image in enumerate(images):
        where = f"{coco_file}: images[{i}] ({_NAME.repr(image.file_name)})"
        if not image.file_name:
            raise CocoImportError(f"{where}: no such image file (the file_name is empty)")
        path = _inside(images_dir, image.file_name, where)
        try:
            found = path.is_file()
        except OSError as err:  # e.g. a name too long for the file system
            raise CocoImportError(f"{where}: cannot read {_NAME.repr(str(path))}: {err.strerror or err}") from None
        if not found:
            raise CocoImportError(f"{where}: no such image file {images_dir / image.file_name}")
        uri = sample_uri(path)
        if uri in seen:
            raise CocoImportError(f"{where}: the same file as images[{seen[uri]}] ({uri})")
        seen[uri] = i
        try:
            width, height = image_size(path)
            digest = file_sha256(path)
        except ImageError as err:
            raise CocoImportError(f"{where}: {err}") from err
        except OSError as err:
            raise CocoImportError(f"{where}: cannot read {path}: {err.strerror or err}") from err
        if (width, height) != (image.width, image.height):
            raise CocoImportError(
                f"{where}: the COCO file says {image.width}x{image.height} but {path} is {width}x{height} "
                "(width x height, after EXIF orientation)"
            )
        resolved.append(_Image(i, image.file_name, path, SampleIn(uri, width, height, digest)))
    return resolved


_ANNOTATION_PATH = re.compile(r"annotations\[(\d+)\]")


def _segmented_detections(coco_file: Path, data: dict[str, Any], image_index: int, ann_indices: list[int]) -> Any:
    """`Detections` of one image whose annotations have segmentations, decoded by
    `serverless.convert.coco.from_coco` one image at a time (full-frame masks of one image in
    memory, not of the whole file); error paths name the annotation's index in the file."""
    from serverless.convert.coco import CocoFormatError, from_coco

    annotations = data["annotations"]
    sub = {
        "images": [data["images"][image_index]],
        "categories": data["categories"],
        "annotations": [annotations[k] for k in ann_indices],
    }
    try:
        return from_coco(sub, source=str(coco_file))[2][0]
    except CocoFormatError as err:
        prefix = f"{coco_file}: "
        message = str(err)
        rest = message.removeprefix(prefix)
        rest = _ANNOTATION_PATH.sub(lambda m: f"annotations[{ann_indices[int(m.group(1))]}]", rest, count=1)
        raise CocoImportError(prefix + rest) from err


def _is_empty_segmentation(seg: Any) -> bool:
    """No segmentation (a plain box); ``[[]]`` is not empty but a malformed polygon list."""
    return seg is None or seg == []


def _shape_type(segmentation: Any) -> str:
    """The stored shape type of a COCO ``segmentation``: RLE → mask, polygons → polygon, none → rectangle."""
    if _is_empty_segmentation(segmentation):
        return "rectangle"
    return "mask" if isinstance(segmentation, dict) else "polygon"


def _rows(det: Any, segmentations: list[Any], *, with_scores: bool) -> list[AnnotationIn]:
    """Annotation rows of one image (sample id 0; set when the samples are registered)."""
    from sync.store import detections_to_rows

    n = len(det)
    shape_types = np.array([_shape_type(seg) for seg in segmentations], dtype="<U9").reshape(n)
    crowd = np.asarray(det.data["iscrowd"], dtype=bool)
    attributes = np.empty(n, dtype=object)
    for i in range(n):
        attributes[i] = {"iscrowd": True} if crowd[i] else None
    data = {"shape_type": shape_types, "attributes": attributes}
    polygons = det.polygons
    if polygons is not None:  # rings only on polygon rows
        polygons = tuple(rings if shape == "polygon" else () for rings, shape in zip(polygons, shape_types))
    det = det.with_columns(polygons=polygons, data=data)
    rows = detections_to_rows(0, det, with_scores=with_scores, source="file")
    # a box-only annotation in an image with masks got its box's pixels as a mask: not stored
    return [replace(row, mask_rle=None) if row.shape_type == "rectangle" else row for row in rows]


def _read_tags(coco_file: Path, data: dict[str, Any]) -> list[Any]:
    """The images' tags (`serverless.convert.coco.from_coco_tags`), checked."""
    from serverless.convert.coco import CocoFormatError, from_coco_tags

    try:
        return from_coco_tags(data, source=str(coco_file))
    except CocoFormatError as err:
        raise CocoImportError(str(err)) from err


def _tag_rows(tags: Any, image: Any, *, with_scores: bool) -> list[AnnotationIn]:
    """Annotation rows of one image's tags (sample id 0; set when the samples are registered)."""
    from sync.store import detections_to_rows
    from sync.store.convert import tags_to_detections

    det = tags_to_detections(tags, width=image.width, height=image.height)
    return detections_to_rows(0, det, with_scores=with_scores, source="file")


@dataclass(frozen=True)
class _Checked:
    """A COCO file read and checked in full, ready to be written."""

    files: list[_Image]
    rows: list[list[AnnotationIn]]
    """Per image, its annotation rows (sample id 0 until the samples are registered)."""
    params: dict[str, Any]


def _check(coco_file: Path, images_dir: Path, role: str) -> _Checked:
    """Read and check everything (JSON, structure, image files and sizes, annotation rows)."""
    from serverless.convert.coco import CocoFormatError, from_coco
    from sync.store.convert import row_values

    data = _read(coco_file)
    # structure and boxes of the whole file first, without decoding a single mask
    raw_annotations = data.get("annotations", [])
    stripped = dict(data)
    if isinstance(raw_annotations, list):
        stripped["annotations"] = [
            {k: v for k, v in ann.items() if k != "segmentation"} if isinstance(ann, dict) else ann
            for ann in raw_annotations
        ]
    try:
        images, categories, box_dets = from_coco(stripped, source=str(coco_file))
    except CocoFormatError as err:
        raise CocoImportError(str(err)) from err
    files = _resolve_images(coco_file, images_dir, images)

    position = {image.id: i for i, image in enumerate(images)}
    per_image: list[list[int]] = [[] for _ in images]
    for k, ann in enumerate(raw_annotations):
        per_image[position[ann["image_id"]]].append(k)
    image_tags = _read_tags(coco_file, data)
    scored = any(ann.get("score") is not None for ann in raw_annotations) or any(
        isinstance(tag, dict) and tag.get("score") is not None
        for entry in data["images"]
        for tag in (entry.get("tags") or [])
    )
    with_scores = role == "prediction" and scored

    rows_per_image: list[list[AnnotationIn]] = []
    for i, det in enumerate(box_dets):
        segmentations = [raw_annotations[k].get("segmentation") for k in per_image[i]]
        if not all(_is_empty_segmentation(seg) for seg in segmentations):
            det = _segmented_detections(coco_file, data, i, per_image[i])
        rows = _rows(det, segmentations, with_scores=with_scores)
        for j, row in enumerate(rows):
            try:
                row_values(row, f"annotations[{per_image[i][j]}]")
            except StoreError as err:
                raise CocoImportError(f"{coco_file}: {err}") from err
        rows_per_image.append(rows + _tag_rows(image_tags[i], images[i], with_scores=with_scores))

    params = {
        "role": role,
        "source_file": coco_file.name,
        "source_sha256": file_sha256(coco_file).removeprefix("sha256:"),
        "images_dir": str(images_dir.resolve()),
        "images": len(files),
        "annotations": sum(row.shape_type != "tag" for rows in rows_per_image for row in rows),
        "crowd_annotations": sum(1 for rows in rows_per_image for row in rows if row.attributes),
        "tags": sum(len(tags) for tags in image_tags),
        "with_scores": with_scores,
        "categories": list(categories),
    }
    return _Checked(files, rows_per_image, params)


def import_coco(store: Store, dataset: str, coco_file: Path, images_dir: Path, *, name: str, role: str) -> RunInfo:
    """Import a COCO file as a finished run of kind ``"import"`` named ``name`` in ``dataset``
    (created if missing); returns the run (its ``params`` hold the counts).

    ``role`` is ``"prediction"`` (scores kept, if the file has any) or ``"revision"`` (human
    truth, scores dropped). ``images_dir`` is the folder the COCO ``file_name`` entries are
    relative to (``sub/a.jpg`` is ``images_dir/sub/a.jpg``; an absolute ``file_name``, as
    `autolabel export --format coco` writes, is used as is); every file must resolve, symlinks
    followed, to a path inside ``images_dir``.

    Raises `CocoImportError` for a bad file or image (nothing is written then) and
    `sync.store.StoreError` when the store refuses (e.g. ``name`` is taken, or a file is
    already stored with another content hash or size; nothing is written then either).
    """
    if role not in ROLES:
        raise CocoImportError(f"role must be one of {list(ROLES)}, got {role!r}")
    if not isinstance(name, str) or not name.strip():
        raise CocoImportError(f"the run name must be a non-empty string, got {name!r}")
    coco_file, images_dir = Path(coco_file), Path(images_dir)
    if not images_dir.is_dir():
        raise CocoImportError(f"{images_dir}: not a folder (the images the COCO file names)")
    checked = _check(coco_file, images_dir, role)

    if dataset in {d.name for d in store.list_datasets()} and any(r.name == name for r in store.list_runs(dataset)):
        raise StoreError(f"dataset {dataset!r} already has a run named {name!r}; runs are never overwritten")
    ds = store.get_or_create_dataset(dataset)
    sample_ids = store.add_samples(ds, [f.sample for f in checked.files])
    rows = [replace(row, sample_id=sid) for sid, image_rows in zip(sample_ids, checked.rows) for row in image_rows]
    return store.add_finished_run(
        ds, "import", rows, name=name, provenance=Provenance(params=checked.params), cover=sample_ids
    )
