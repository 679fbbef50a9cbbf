"""Export the store's labels of a dataset as one COCO instances JSON.

Layout (written by `serverless.convert.coco.to_coco` / `write_coco`, so the conventions are
that module's: ``bbox`` is ``[x1, y1, x2 - x1, y2 - y1]`` of the exclusive boxes):

- ``images``: one per exported sample, ascending sample id; ``id`` is the store's sample id,
  ``file_name`` the sample's URI (the absolute path for local files). Extra keys
  ``autolabel_run`` (the run name the labels come from) and ``autolabel_source`` (`source_of`).
- ``categories``: the union of the exported label names (tags' among them) in **sorted**
  order, ids ``1..K`` (the YOLO export sorts its names the same way).
- tags (rows of shape type ``tag``: image-level labels) go on their image entry as
  ``"tags": [{"category_id", "score"}]``, as `serverless.convert.coco.image_tags` writes them
  (``score`` on the same terms as annotations'), never as annotations; ``autolabel import``
  reads them back.
- ``annotations``: ``segmentation`` is a compressed RLE for ``mask`` rows, the polygons for
  ``polygon`` rows and ``[]`` for rectangles; ``iscrowd`` is 1 for rows with the attribute
  ``iscrowd`` (COCO imports); ``score`` only for runs whose scores mean something (pre-label
  runs and imports with role ``"prediction"``).
- ``info``: ``dataset``, ``exported_at`` (UTC) and ``choice`` (rule, samples per source, runs,
  URIs of samples left out), see `sync.export.choice`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sync.crowd import crowd_column
from sync.export.choice import ExportError, ExportSummary, choose_runs, iter_labels
from sync.store import Store

__all__ = ["SCORED_SOURCES", "export_coco"]

SCORED_SOURCES = frozenset({"prelabel", "import-prediction"})
"""Sources whose annotations keep their ``score`` (human work reads as 1.0 and gets none)."""


def _crowd(det: Any) -> np.ndarray:
    return crowd_column(det.data.get("attributes"), len(det))


def _annotations(image: Any, det: Any, scored: bool) -> list[dict[str, Any]]:
    """COCO annotations of one sample, ``category_id`` holding the label name for now."""
    from serverless.convert.coco import to_coco

    names = sorted(set(det.labels.tolist()))
    plain = det.with_columns(masks=None, data={"iscrowd": _crowd(det)})
    anns = to_coco([image], [plain], names)["annotations"]
    mask_rows = np.flatnonzero(det.data["shape_type"] == "mask")
    if len(mask_rows) and det.masks is not None:
        masked = to_coco([image], [det[mask_rows].with_columns(data={})], names)["annotations"]
        for j, i in enumerate(mask_rows):
            anns[i]["segmentation"] = masked[j]["segmentation"]
            anns[i]["area"] = masked[j]["area"]
    for ann in anns:
        ann["category_id"] = names[ann["category_id"] - 1]
        if not scored:
            del ann["score"]
    return anns


def _check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; the COCO export is one JSON file")
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: exists; pass --overwrite to replace it")


def export_coco(
    store: Store, dataset: str, out: Path, *, revision: str | None = None, overwrite: bool = False
) -> ExportSummary:
    """Write the labels of ``dataset`` (one run per sample, see `sync.export.choice`) to the
    COCO file ``out`` (atomically); returns what was written.

    `ExportError` when ``out`` exists (unless ``overwrite``) or nothing can be exported;
    `sync.store.StoreError` for a missing dataset or run.
    """
    from serverless.convert.coco import CocoImage, image_tags, write_coco
    from serverless.models.base import Tags
    from sync.store.convert import split_tags

    out = Path(out)
    _check_out(out, overwrite)
    choice = choose_runs(store, dataset, revision=revision)
    choice.require_samples()
    exported_at = datetime.now(UTC)

    per_sample: dict[int, tuple[dict[str, Any], list[dict[str, Any]], Any, bool]] = {}
    for chosen, labelled in iter_labels(store, choice, masks=True):
        det, tags = split_tags(labelled)
        sample = chosen.sample
        image = CocoImage(id=sample.id, file_name=sample.uri, width=sample.width, height=sample.height)
        entry = {
            "id": sample.id,
            "file_name": sample.uri,
            "width": sample.width,
            "height": sample.height,
            "autolabel_run": chosen.run.name,
            "autolabel_source": chosen.source,
        }
        scored = chosen.source in SCORED_SOURCES
        per_sample[sample.id] = (entry, _annotations(image, det, scored), tags, scored)

    names = {ann["category_id"] for _, anns, _, _ in per_sample.values() for ann in anns}
    names |= {name for _, _, tags, _ in per_sample.values() for name in tags.labels.tolist()}
    categories = sorted(names)
    category_id = {name: i + 1 for i, name in enumerate(categories)}
    images, annotations = [], []
    for sample_id in sorted(per_sample):
        entry, anns, tags, scored = per_sample[sample_id]
        if len(tags):
            entry["tags"] = image_tags(Tags(tags.class_ids, tags.scores, tags.labels), category_id, scores=scored)
        images.append(entry)
        for ann in anns:
            ann["id"] = len(annotations) + 1
            ann["category_id"] = category_id[ann["category_id"]]
            annotations.append(ann)
    data = {
        "info": {
            "description": f"autolabel export of dataset {choice.dataset!r}",
            **choice.metadata(exported_at),
            "categories_order": "sorted label names",
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": category_id[n], "name": n, "supercategory": ""} for n in categories],
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_coco(out, data)
    except OSError as err:
        raise ExportError(f"{out}: cannot write: {err.strerror or err}") from err
    return ExportSummary(
        format="coco",
        out=out,
        images=len(images),
        annotations=len(annotations),
        categories=tuple(categories),
        counts=choice.counts(),
        left_out=len(choice.left_out),
    )

