"""Annotation storage rules of CVAT's dataset manager, for task and job scopes.

Observed behaviour reproduced here (golden flows 05 and 07):
- ids are server-global per kind (tags, shapes, tracks, tracked shapes); skeleton elements
  take the ids right after their parent; deleted ids are never reused;
- PUT replaces everything in the scope and answers with the stored set; PATCH
  ``create|update|delete`` answers with the affected objects only (delete echoes them);
- objects on frames outside the scope are dropped silently; an unknown ``label_id`` or
  ``spec_id`` is a 400 whose body is a list with one message;
- GET fills missing attributes with label defaults (tracks: immutable ones on the track,
  mutable ones on each tracked shape, inherited from earlier keyframes);
- ``group`` is null unless sent; ``score`` is dropped unless the profile keeps it;
- every write touches ``updated_date`` of the affected jobs, the task and its project.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

from tests.fake_cvat.state import Attribute, Job, Label, State, Task, TaskAnnotations
from tests.fake_cvat.web import Ctx, bad_request

SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")
SOURCES = ("manual", "semi-auto", "auto", "file", "consensus")
ACTIONS = ("create", "update", "delete")
KINDS = ("tags", "shapes", "tracks")
REQUIRED = ["This field is required."]


@dataclass(frozen=True)
class Scope:
    """The frames an annotation request covers (inclusive) and the jobs over them."""

    task: Task
    first: int
    last: int
    jobs: tuple[Job, ...]

    def contains(self, frame: int) -> bool:
        return self.first <= frame <= self.last


def task_scope(db: State, task: Task) -> Scope:
    return Scope(task, 0, len(task.data.frames) - 1 if task.data else -1, tuple(db.task_jobs(task.id)))


def job_scope(db: State, job: Job) -> Scope:
    return Scope(db.tasks[job.task_id], job.start_frame, job.stop_frame, (job,))


# ---- pass 1: field validation (DRF serializer errors, a dict body) -----------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _shape_field_errors(raw, *, tracked: bool = False, element: bool = False) -> dict:
    if not isinstance(raw, dict):
        return {"non_field_errors": ["Invalid data. Expected a dictionary."]}
    errors: dict = {}
    if raw.get("type") is None:
        errors["type"] = REQUIRED
    elif raw["type"] not in SHAPE_TYPES:
        errors["type"] = [f'"{raw["type"]}" is not a valid choice.']
    if raw.get("frame") is None:
        errors["frame"] = REQUIRED
    elif not _is_int(raw["frame"]) or raw["frame"] < 0:
        errors["frame"] = ["A valid integer is required."]
    if not tracked:
        if raw.get("label_id") is None:
            errors["label_id"] = REQUIRED
        elif not _is_int(raw["label_id"]):
            errors["label_id"] = ["A valid integer is required."]
    points = raw.get("points", [])
    if not isinstance(points, list) or not all(_is_number(p) for p in points):
        errors["points"] = ["Expected a list of numbers."]
    for name in ("occluded", "outside"):
        if name in raw and not isinstance(raw[name], bool):
            errors[name] = ["Must be a valid boolean."]
    if "z_order" in raw and not _is_int(raw["z_order"]):
        errors["z_order"] = ["A valid integer is required."]
    if "rotation" in raw and not _is_number(raw["rotation"]):
        errors["rotation"] = ["A valid number is required."]
    errors.update(_common_field_errors(raw, tracked=tracked))
    if not element and not tracked:
        elements = raw.get("elements", [])
        if not isinstance(elements, list):
            errors["elements"] = [f'Expected a list of items but got type "{type(elements).__name__}".']
        else:
            nested = [_shape_field_errors(e, element=True) for e in elements]
            if any(nested):
                errors["elements"] = nested
    return errors


def _common_field_errors(raw: dict, *, tracked: bool = False) -> dict:
    errors: dict = {}
    if not tracked:
        if raw.get("group") is not None and (not _is_int(raw["group"]) or raw["group"] < 0):
            errors["group"] = ["A valid integer is required."]
        if "source" in raw and raw["source"] not in SOURCES:
            errors["source"] = [f'"{raw["source"]}" is not a valid choice.']
    attributes = raw.get("attributes", [])
    if not isinstance(attributes, list):
        errors["attributes"] = [f'Expected a list of items but got type "{type(attributes).__name__}".']
    else:
        nested = []
        for attribute in attributes:
            item: dict = {}
            if not isinstance(attribute, dict):
                item["non_field_errors"] = ["Invalid data. Expected a dictionary."]
            else:
                if attribute.get("spec_id") is None:
                    item["spec_id"] = REQUIRED
                elif not _is_int(attribute["spec_id"]):
                    item["spec_id"] = ["A valid integer is required."]
                value = attribute.get("value")
                if value is None:
                    item["value"] = REQUIRED
                elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                    item["value"] = ["Not a valid string."]
            nested.append(item)
        if any(nested):
            errors["attributes"] = nested
    return errors


def _tag_field_errors(raw) -> dict:
    if not isinstance(raw, dict):
        return {"non_field_errors": ["Invalid data. Expected a dictionary."]}
    errors: dict = {}
    for name in ("frame", "label_id"):
        if raw.get(name) is None:
            errors[name] = REQUIRED
        elif not _is_int(raw[name]):
            errors[name] = ["A valid integer is required."]
    errors.update(_common_field_errors(raw))
    return errors


def _track_field_errors(raw) -> dict:
    errors = _tag_field_errors(raw)
    if errors.get("non_field_errors"):
        return errors
    shapes = raw.get("shapes")
    if shapes is None:
        errors["shapes"] = REQUIRED
    elif not isinstance(shapes, list):
        errors["shapes"] = [f'Expected a list of items but got type "{type(shapes).__name__}".']
    else:
        nested = [_shape_field_errors(s, tracked=True) for s in shapes]
        if any(nested):
            errors["shapes"] = nested
    elements = raw.get("elements", [])
    if isinstance(elements, list):
        nested = [_track_field_errors(e) for e in elements]
        if any(nested):
            errors["elements"] = nested
    return errors


_FIELD_CHECKS: dict[str, Callable] = {
    "tags": _tag_field_errors,
    "shapes": _shape_field_errors,
    "tracks": _track_field_errors,
}


def _validate_fields(data) -> dict[str, list]:
    if not isinstance(data, dict):
        raise bad_request({"non_field_errors": ["Invalid data. Expected a dictionary."]})
    result: dict[str, list] = {}
    errors: dict = {}
    for kind in KINDS:
        items = data.get(kind, [])
        if items is None:
            items = []
        if not isinstance(items, list):
            errors[kind] = [f'Expected a list of items but got type "{type(items).__name__}".']
            continue
        nested = [_FIELD_CHECKS[kind](item) for item in items]
        if any(nested):
            errors[kind] = nested
        result[kind] = items
    if errors:
        raise bad_request(errors)
    return result


# ---- pass 2: labels, attributes, normalization (the dataset manager's list errors) ---------------
class _Normalizer:
    def __init__(self, ctx: Ctx, task: Task) -> None:
        self.labels: dict[int, Label] = ctx.db.all_task_labels(task)
        self.keep_score = ctx.profile.shape_score

    def label(self, label_id: int) -> Label:
        label = self.labels.get(label_id)
        if label is None:
            raise bad_request([f"label_id `{label_id}` is invalid"])
        return label

    def attributes(self, raw: list, label: Label) -> list[dict]:
        known = {a.id for a in label.attributes}
        result = []
        for attribute in raw:
            if attribute["spec_id"] not in known:
                raise bad_request([f"spec_id `{attribute['spec_id']}` is invalid"])
            result.append({"spec_id": attribute["spec_id"], "value": str(attribute["value"])})
        return result

    def shape(self, raw: dict, *, element: bool = False) -> dict:
        label = self.label(raw["label_id"])
        shape = {
            "type": raw["type"],
            "occluded": raw.get("occluded", False),
            "outside": raw.get("outside", False),
            "z_order": raw.get("z_order", 0),
            "rotation": float(raw.get("rotation", 0.0)),
            "points": _stored_points(raw.get("points", [])),
            "id": raw.get("id"),
            "frame": raw["frame"],
            "label_id": raw["label_id"],
            "group": raw.get("group"),
            "source": raw.get("source", "manual"),
            "attributes": self.attributes(raw.get("attributes", []), label),
        }
        if self.keep_score and _is_number(raw.get("score")):
            shape["score"] = float(raw["score"])
        if not element:
            shape["elements"] = [self.shape(e, element=True) for e in raw.get("elements", [])]
        return shape

    def tag(self, raw: dict) -> dict:
        label = self.label(raw["label_id"])
        return {
            "id": raw.get("id"),
            "frame": raw["frame"],
            "label_id": raw["label_id"],
            "group": raw.get("group"),
            "source": raw.get("source", "manual"),
            "attributes": self.attributes(raw.get("attributes", []), label),
        }

    def track(self, raw: dict) -> dict:
        label = self.label(raw["label_id"])
        track = self.tag(raw)
        track["shapes"] = [
            {
                "type": s["type"],
                "occluded": s.get("occluded", False),
                "outside": s.get("outside", False),
                "z_order": s.get("z_order", 0),
                "rotation": float(s.get("rotation", 0.0)),
                "points": _stored_points(s.get("points", [])),
                "id": s.get("id"),
                "frame": s["frame"],
                "attributes": self.attributes(s.get("attributes", []), label),
            }
            for s in raw["shapes"]
        ]
        track["elements"] = [self.track(e) for e in raw.get("elements", [])]
        return track


def _stored_points(points: list) -> list[float]:
    """``points`` as CVAT keeps them: a ``FloatArrayField`` (text of Python floats), so they
    come back as exactly the floats sent (integers as floats), whatever the shape type."""
    return [float(p) for p in points]


def _frames(kind: str, obj: dict) -> list[int]:
    if kind == "tracks":
        return [obj["frame"], *(s["frame"] for s in obj["shapes"])]
    return [obj["frame"]]


def _normalize(ctx: Ctx, scope: Scope, data) -> dict[str, list[dict]]:
    raw = _validate_fields(data)
    normalizer = _Normalizer(ctx, scope.task)
    build = {"tags": normalizer.tag, "shapes": normalizer.shape, "tracks": normalizer.track}
    result = {kind: [build[kind](item) for item in raw.get(kind, [])] for kind in KINDS}
    return {kind: [obj for obj in objs if scope.contains(obj["frame"])] for kind, objs in result.items()}


# ---- ids -----------------------------------------------------------------------------------------
def _assign_ids(db: State, kind: str, obj: dict, *, keep: bool) -> None:
    if kind == "tags":
        if not (keep and obj["id"]):
            obj["id"] = db.next_id("tag")
    elif kind == "shapes":
        if not (keep and obj["id"]):
            obj["id"] = db.next_id("shape")
        for element in obj.get("elements", []):
            if not (keep and element["id"]):
                element["id"] = db.next_id("shape")
    else:
        if not (keep and obj["id"]):
            obj["id"] = db.next_id("track")
        for shape in obj["shapes"]:
            if not (keep and shape["id"]):
                shape["id"] = db.next_id("tracked_shape")
        for element in obj["elements"]:
            _assign_ids(db, "tracks", element, keep=keep)


def _table(store: TaskAnnotations, kind: str) -> dict[int, dict]:
    return getattr(store, kind)


def _touch(ctx: Ctx, scope: Scope, frames: set[int], *, all_jobs: bool = False) -> None:
    if all_jobs or len(scope.jobs) == 1:
        jobs = list(scope.jobs)
    else:
        jobs = [job for job in scope.jobs if any(job.contains(f) for f in frames)]
    ctx.db.touch(scope.task, jobs)


def _payload(ctx: Ctx, objs: dict[str, list[dict]]) -> dict:
    return {"version": 0, **{kind: [dict(o) for o in objs[kind]] for kind in KINDS}}


# ---- operations ---------------------------------------------------------------------------------
def put(ctx: Ctx, scope: Scope, data) -> dict:
    """Replace every annotation in the scope; answer with the stored set."""
    objs = _normalize(ctx, scope, data)
    store = ctx.db.annotations[scope.task.id]
    for kind in KINDS:
        table = _table(store, kind)
        for obj_id in [i for i, o in table.items() if scope.contains(o["frame"])]:
            del table[obj_id]
        for obj in objs[kind]:
            _assign_ids(ctx.db, kind, obj, keep=False)
            table[obj["id"]] = obj
    _touch(ctx, scope, set(), all_jobs=True)
    return _payload(ctx, objs)


def patch(ctx: Ctx, scope: Scope, data, action: str | None) -> dict:
    """PATCH ``action=create|update|delete``; answer with the affected objects only."""
    if action not in ACTIONS:
        raise bad_request(["Please specify a correct 'action' for the request"])
    objs = _normalize(ctx, scope, data)
    store = ctx.db.annotations[scope.task.id]
    affected: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    frames: set[int] = set()
    for kind in KINDS:
        table = _table(store, kind)
        for obj in objs[kind]:
            if action == "create":
                _assign_ids(ctx.db, kind, obj, keep=False)
                table[obj["id"]] = obj
            elif action == "update":
                old = table.get(obj["id"]) if obj["id"] is not None else None
                if old is None or not scope.contains(old["frame"]):
                    continue
                frames.update(_frames(kind, old))
                _assign_ids(ctx.db, kind, obj, keep=True)
                table[obj["id"]] = obj
            else:
                old = table.get(obj["id"]) if obj["id"] is not None else None
                if old is None or not scope.contains(old["frame"]):
                    continue
                frames.update(_frames(kind, old))
                del table[obj["id"]]
            frames.update(_frames(kind, obj))
            affected[kind].append(obj)
    _touch(ctx, scope, frames)
    return _payload(ctx, affected)


def delete_all(ctx: Ctx, scope: Scope) -> None:
    """Remove every annotation in the scope."""
    store = ctx.db.annotations[scope.task.id]
    for kind in KINDS:
        table = _table(store, kind)
        for obj_id in [i for i, o in table.items() if scope.contains(o["frame"])]:
            del table[obj_id]
    _touch(ctx, scope, set(), all_jobs=True)


# ---- reads -----------------------------------------------------------------------------------------
def _fill(given: list[dict], label: Label | None, wanted: Callable[[Attribute], bool]) -> list[dict]:
    result = [dict(a) for a in given]
    if label is None:
        return result
    present = {a["spec_id"] for a in given}
    result += [
        {"spec_id": a.id, "value": a.default_value} for a in label.attributes if a.id not in present and wanted(a)
    ]
    return result


def _read_shape(obj: dict, labels: dict[int, Label], *, element: bool = False) -> dict:
    shape = {
        "id": obj["id"],
        "label_id": obj["label_id"],
        "type": obj["type"],
        "frame": obj["frame"],
        "group": obj["group"],
        "source": obj["source"],
        "occluded": obj["occluded"],
        "outside": obj["outside"],
        "z_order": obj["z_order"],
        "rotation": obj["rotation"],
        "points": list(obj["points"]),
    }
    if "score" in obj:
        shape["score"] = obj["score"]
    shape["attributes"] = _fill(obj["attributes"], labels.get(obj["label_id"]), lambda a: True)
    if not element:
        shape["elements"] = [_read_shape(e, labels, element=True) for e in obj.get("elements", [])]
    return shape


def _read_tag(obj: dict, labels: dict[int, Label]) -> dict:
    return {
        "id": obj["id"],
        "label_id": obj["label_id"],
        "frame": obj["frame"],
        "group": obj["group"],
        "source": obj["source"],
        "attributes": _fill(obj["attributes"], labels.get(obj["label_id"]), lambda a: True),
    }


def _read_track(obj: dict, labels: dict[int, Label]) -> dict:
    label = labels.get(obj["label_id"])
    mutable = [a for a in label.attributes if a.mutable] if label else []
    current: dict[int, str] = {}
    shapes = []
    for shape in sorted(obj["shapes"], key=lambda s: s["frame"]):
        for attribute in shape["attributes"]:
            current[attribute["spec_id"]] = attribute["value"]
        given = {a["spec_id"] for a in shape["attributes"]}
        attributes = [dict(a) for a in shape["attributes"]] + [
            {"spec_id": a.id, "value": current.get(a.id, a.default_value)} for a in mutable if a.id not in given
        ]
        shapes.append(
            {
                "id": shape["id"],
                "type": shape["type"],
                "frame": shape["frame"],
                "occluded": shape["occluded"],
                "outside": shape["outside"],
                "z_order": shape["z_order"],
                "rotation": shape["rotation"],
                "points": list(shape["points"]),
                "attributes": attributes,
            }
        )
    return {
        "id": obj["id"],
        "label_id": obj["label_id"],
        "frame": obj["frame"],
        "group": obj["group"],
        "source": obj["source"],
        "shapes": shapes,
        "attributes": _fill(obj["attributes"], label, lambda a: not a.mutable),
        "elements": [_read_track(e, labels) for e in obj.get("elements", [])],
    }


def read(ctx: Ctx, scope: Scope) -> dict:
    """GET: the scope's annotations with attribute defaults filled in."""
    store = ctx.db.annotations[scope.task.id]
    labels = {label.id: label for label in ctx.db.labels.values()}
    readers = {"tags": _read_tag, "shapes": _read_shape, "tracks": _read_track}
    result: dict = {"version": 0}
    for kind in KINDS:
        objs = sorted(
            (o for o in _table(store, kind).values() if scope.contains(o["frame"])),
            key=lambda o: (o["frame"], o["id"]),
        )
        result[kind] = [readers[kind](o, labels) for o in objs]
    return result
