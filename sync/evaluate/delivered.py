"""Pre-labels as the annotators were shown them, so an untouched shape compares equal to
what a pull brings back from CVAT.

The store keeps a Grounded-SAM pre-label as the detector's box plus SAM's mask, but CVAT
holds what push sent: a rectangle, a polygon or a mask, by the label's type. An evaluation
compares the truth with that, per pre-label of a ``prelabel`` run:

1. the shape recorded when it was pushed into the CVAT task the sample's truth was pulled
   from (`sync.store.api.Store.pushed_geometry`);
2. else the shape a push would send, by the label types of the run's own ontology
   (`serverless.convert.cvat_shapes.delivered_shape_dicts`, the rule push itself calls);
3. a pre-label with nothing to show (an empty mask) is left out: nobody saw it.

Tags (image-level labels) have no shape to show: they are split off first
(`sync.store.convert.split_tags`) and returned as stored, in `Delivered.tags`.

Either shape is then read as a pull reads CVAT's shapes
(`serverless.convert.cvat_shapes.from_cvat_shapes`, whose output the store keeps exactly), so
both sides of an unchanged shape come out of the same code with the same numbers. Runs whose pre-labels are
all boxes, and imported runs (which have no ontology), are evaluated as stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serverless.detections import Detections
from sync.store.convert import TAG, split_tags

if TYPE_CHECKING:
    from sync.store import RunInfo, Store

__all__ = ["Delivered", "delivered_predictions", "label_types"]

_CHUNK = 64
"""Samples whose full-frame masks are decoded at once."""


@dataclass(frozen=True)
class Delivered:
    """A run's pre-labels per sample as shown (no tags), how many had nothing to show, and
    the run's tags per sample as stored."""

    detections: dict[int, Detections]
    left_out: int = 0
    tags: dict[int, Detections] = field(default_factory=dict)


def _split(parts: Mapping[int, Detections]) -> tuple[dict[int, Detections], dict[int, Detections]]:
    """``(shapes, tags)`` per sample (`split_tags`)."""
    shapes, tags = {}, {}
    for sample_id, det in parts.items():
        shapes[sample_id], tags[sample_id] = split_tags(det)
    return shapes, tags


def label_types(run: RunInfo) -> dict[str, str] | None:
    """``{label: rectangle|polygon|mask}`` from the run's ontology (None without one); tag
    labels are left out (they are no shapes)."""
    if run.kind != "prelabel" or not run.ontology_yaml:
        return None
    from serverless.ontology import OntologyError, parse_ontology

    try:
        ontology = parse_ontology(run.ontology_yaml, f"run {run.name}")
    except OntologyError:
        return None
    return {label.name: label.type for label in ontology.labels if label.type != TAG}


def _recorded(store: Store, truth: Mapping[int, RunInfo], parts: Mapping[int, Detections]) -> dict[int, tuple]:
    """``{annotation id: (type, points)}`` pushed into the task each sample's truth came from."""
    by_task: dict[tuple[str, int], list[int]] = {}
    for sample_id, run in truth.items():
        if run.kind == "human" and run.cvat_server and run.cvat_task_id is not None and sample_id in parts:
            by_task.setdefault((run.cvat_server, int(run.cvat_task_id)), []).append(sample_id)
    found: dict[int, tuple] = {}
    for (server, task_id), sample_ids in by_task.items():
        link = store.get_cvat_task(server, task_id)
        if link is None:
            continue
        ids = [int(a) for sid in sample_ids for a in parts[sid].data["annotation_id"].tolist()]
        found.update(store.pushed_geometry(link, ids))
    return found


def _as_pulled(det: Detections, shapes: Sequence[dict], width: int, height: int, masks: bool) -> Detections:
    """``det`` with the geometry of ``shapes`` (one per detection) read as a pull reads CVAT
    shapes (`from_cvat_shapes`; the store keeps what it gives exactly, `sync.store.convert`)."""
    from serverless.convert.cvat_shapes import from_cvat_shapes

    names = {i: str(name) for i, name in enumerate(det.labels.tolist())}
    shown = from_cvat_shapes(
        [{**shape, "label_id": i} for i, shape in enumerate(shapes)], names, width=width, height=height
    )
    data = {**det.data, "shape_type": shown.data["shape_type"]}
    return det.with_columns(
        xyxy=shown.xyxy, masks=shown.masks if masks else None, polygons=shown.polygons, data=data
    )


def _sample(det: Detections, types: Mapping[str, str], recorded: Mapping[int, tuple], size: tuple[int, int],
            masks: bool) -> tuple[Detections, int]:
    from serverless.convert.cvat_shapes import delivered_shape_dicts

    index = {name: i for i, name in enumerate(sorted(set(det.labels.tolist())))}
    derived, origin = delivered_shape_dicts(det, types, index, frame=0, score_field=False)
    by_index = dict(zip(origin, derived))
    keep, shapes = [], []
    for i, annotation_id in enumerate(det.data["annotation_id"].tolist()):
        sent = recorded.get(int(annotation_id))
        shape = {"type": sent[0], "points": sent[1]} if sent is not None else by_index.get(i)
        if shape is not None:
            keep.append(i)
            shapes.append({"type": shape["type"], "points": shape["points"]})
    kept = det[np.asarray(keep, dtype=np.int64)]
    if not shapes:
        return kept.with_columns(masks=None, polygons=None), len(det) - len(keep)
    return _as_pulled(kept, shapes, size[0], size[1], masks), len(det) - len(keep)


def delivered_predictions(
    store: Store,
    run: RunInfo,
    sample_ids: Sequence[int],
    truth: Mapping[int, RunInfo],
    sizes: Mapping[int, tuple[int, int]],
    *,
    masks: bool,
) -> Delivered:
    """The pre-labels of ``run`` on ``sample_ids`` as the annotators were shown them (see the
    module docstring); ``truth`` maps each sample to its truth run, ``sizes`` to its
    ``(width, height)``. Full-frame masks are kept only with ``masks``."""
    ids = list(sample_ids)
    types = label_types(run)
    if types is None or set(types.values()) <= {"rectangle"}:
        shapes, tags = _split(store.annotations_of(run, sample_ids=ids, masks=masks))
        return Delivered(shapes, tags=tags)
    result: dict[int, Detections] = {}
    all_tags: dict[int, Detections] = {}
    left_out = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        parts, tags = _split(store.annotations_of(run, sample_ids=chunk, masks=True))
        all_tags.update(tags)
        recorded = _recorded(store, truth, parts)
        for sample_id, det in parts.items():
            shown, dropped = _sample(det, types, recorded, sizes[sample_id], masks)
            result[sample_id] = shown
            left_out += dropped
    return Delivered(result, left_out, all_tags)
