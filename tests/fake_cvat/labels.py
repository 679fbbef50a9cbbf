"""Creating and changing labels (with attributes and skeleton sublabels) from request specs."""

from __future__ import annotations

from tests.fake_cvat.state import Attribute, Label, State
from tests.fake_cvat.web import bad_request

LABEL_TYPES = ("any", "rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton", "tag")
INPUT_TYPES = ("checkbox", "radio", "number", "text", "select")
_PALETTE = (
    "#33ddff",
    "#fa3253",
    "#34d1b7",
    "#ff007c",
    "#ff6037",
    "#ddff33",
    "#24b353",
    "#b83df5",
    "#66ff66",
    "#32b7fa",
    "#ffcc33",
    "#83e070",
    "#fafa37",
    "#5986b3",
    "#8c78f0",
    "#ff6a4d",
)


def _attribute(db: State, spec: object, where: str) -> Attribute:
    if not isinstance(spec, dict) or not spec.get("name"):
        raise bad_request({"labels": [{where: {"name": ["This field is required."]}}]})
    input_type = spec.get("input_type")
    if input_type not in INPUT_TYPES:
        raise bad_request({"labels": [{where: {"input_type": [f'"{input_type}" is not a valid choice.']}}]})
    values = [str(v) for v in spec.get("values") or []]
    default = spec.get("default_value")
    if default in (None, ""):
        default = values[0] if values else ""
    return Attribute(
        id=db.next_id("attribute"),
        name=str(spec["name"]),
        mutable=bool(spec.get("mutable", False)),
        input_type=input_type,
        default_value=str(default),
        values=values,
    )


def _new_label(
    db: State, spec: dict, index: int, *, project_id: int | None, task_id: int | None, parent_id: int | None
) -> Label:
    label_type = spec.get("type") or "any"
    if label_type not in LABEL_TYPES:
        raise bad_request({"labels": [{"type": [f'"{label_type}" is not a valid choice.']}]})
    label = Label(
        id=db.next_id("label"),
        name=str(spec["name"]),
        color=str(spec.get("color") or _PALETTE[index % len(_PALETTE)]),
        type=label_type,
        attributes=[],
        project_id=project_id,
        task_id=task_id,
        parent_id=parent_id,
    )
    db.labels[label.id] = label
    label.attributes = [_attribute(db, a, f"attributes[{i}]") for i, a in enumerate(spec.get("attributes") or [])]
    names = [a.name for a in label.attributes]
    if len(set(names)) != len(names):
        raise bad_request({"labels": [f"Attribute names of label '{label.name}' must be unique"]})
    return label


def _check_names(specs: list, existing: set[str]) -> None:
    for spec in specs:
        if not isinstance(spec, dict) or not str(spec.get("name") or "").strip():
            raise bad_request({"labels": [{"name": ["This field is required."]}]})
    names = [spec["name"] for spec in specs if not spec.get("deleted")]
    if len(set(names)) != len(names) or existing & set(names):
        raise bad_request({"labels": ["All label names must be unique"]})


def create_labels(
    db: State,
    specs: object,
    *,
    project_id: int | None = None,
    task_id: int | None = None,
    existing: set[str] = frozenset(),
) -> list[Label]:
    """Create top-level labels (and skeleton sublabels, whose ids follow their parent's)."""
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise bad_request({"labels": [f'Expected a list of items but got type "{type(specs).__name__}".']})
    _check_names(specs, set(existing))
    created = []
    for index, spec in enumerate(specs):
        label = _new_label(db, spec, index + len(existing), project_id=project_id, task_id=task_id, parent_id=None)
        sublabels = spec.get("sublabels") or []
        if sublabels and label.type != "skeleton":
            raise bad_request({"labels": [f"Only skeleton labels can have sublabels ('{label.name}')"]})
        _check_names(sublabels, set())
        svg = spec.get("svg")
        for sub_index, sub_spec in enumerate(sublabels):
            sub = _new_label(db, sub_spec, sub_index, project_id=project_id, task_id=task_id, parent_id=label.id)
            label.sublabel_ids.append(sub.id)
            if svg:
                svg = svg.replace(f'data-label-name="{sub.name}"', f'data-label-id="{sub.id}"')
        if label.type == "skeleton":
            label.svg = svg or ""
        created.append(label)
    return created


def delete_label(db: State, label: Label) -> None:
    """Remove a label with its sublabels and, as CVAT's foreign keys cascade, every tag,
    shape and track that uses them."""
    gone = {label.id, *label.sublabel_ids}
    for sub_id in label.sublabel_ids:
        db.labels.pop(sub_id, None)
    db.labels.pop(label.id, None)
    for stored in db.annotations.values():
        for objects in (stored.tags, stored.shapes, stored.tracks):
            for object_id in [k for k, obj in objects.items() if obj.get("label_id") in gone]:
                del objects[object_id]


def patch_labels(
    db: State, specs: object, current: list[Label], *, project_id: int | None, task_id: int | None
) -> None:
    """Apply a PATCH ``labels`` list: new labels, renamed/extended ones, ``deleted: true``."""
    if not isinstance(specs, list):
        raise bad_request({"labels": ["Expected a list of items."]})
    by_id = {label.id: label for label in current}
    new_specs = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise bad_request({"labels": ["Expected a list of objects."]})
        if "id" not in spec:
            new_specs.append(spec)
            continue
        label = by_id.get(spec["id"])
        if label is None:
            raise bad_request({"labels": [f"Label {spec['id']} does not exist"]})
        if spec.get("deleted"):
            delete_label(db, label)
            continue
        label.name = str(spec.get("name", label.name))
        label.color = str(spec.get("color", label.color))
        for attr_spec in spec.get("attributes") or []:
            if isinstance(attr_spec, dict) and "id" in attr_spec:
                continue
            label.attributes.append(_attribute(db, attr_spec, "attributes"))
    remaining = {label.name for label in current if label.id in db.labels}
    create_labels(db, new_specs, project_id=project_id, task_id=task_id, existing=remaining)
