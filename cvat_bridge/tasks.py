"""Tasks: labels from an ontology, idempotent creation with data, and the label map.

Task creation is not idempotent on the server (POST), so `ensure_task` reconciles: an
existing task of the same name (and project) is reused, and a task left without data by an
interrupted upload gets its data uploaded again instead of a second task being created.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvat_bridge.api import call, iter_pages
from cvat_bridge.client import CvatError

__all__ = ["LabelInfo", "Resources", "ensure_task", "find_task", "labels_spec", "task_labels", "SCORE_ATTRIBUTE"]

SCORE_ATTRIBUTE = "score"


@dataclass(frozen=True)
class LabelInfo:
    """A server label: its id, type and attribute spec ids by name."""

    id: int
    name: str
    type: str
    attributes: dict[str, int]


@dataclass(frozen=True)
class Resources:
    """Where a task's images come from: ``local`` files, the server's ``share``, or a
    ``cloud`` storage (paths inside the storage, ``cloud_storage_id`` set)."""

    kind: str
    paths: tuple[str, ...]
    cloud_storage_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in {"local", "share", "cloud"}:
            raise ValueError(f"resources kind must be local, share or cloud, got {self.kind!r}")
        if (self.kind == "cloud") != (self.cloud_storage_id is not None):
            raise ValueError("cloud_storage_id is required for cloud resources, and only for them")
        if not self.paths:
            raise ValueError("a task needs at least one image")


def labels_spec(ontology: Any) -> list[dict[str, Any]]:
    """CVAT label specs for an ontology (with the score attribute when it asks for one)."""
    attributes = []
    if ontology.score_attribute:
        attributes = [
            {
                "name": SCORE_ATTRIBUTE,
                "input_type": "number",
                "mutable": False,
                "values": ["0", "100", "1"],
                "default_value": "0",
            }
        ]
    return [{"name": label.name, "type": label.type, "attributes": attributes} for label in ontology.labels]


def find_task(client: Any, name: str, *, project_id: int | None = None) -> Any | None:
    """The task named exactly ``name`` (in ``project_id`` when given), or None."""
    server = client.api_map.host
    matches = [
        t
        for t in call("list tasks", server, lambda: list(iter_pages(client.api_client.tasks_api.list, name=name)))
        if t.name == name and (project_id is None or t.project_id == project_id)
    ]
    if len(matches) > 1:
        raise CvatError(f"{server}: {len(matches)} tasks are named {name!r}; rename or pass a project")
    return client.tasks.retrieve(matches[0].id) if matches else None


def _data_params(resources: Resources, image_quality: int) -> dict[str, Any]:
    params: dict[str, Any] = {"image_quality": image_quality, "sorting_method": "predefined"}
    if resources.kind == "cloud":
        params["cloud_storage_id"] = resources.cloud_storage_id
        params["use_cache"] = True
    return params


def _resource_type(resources: Resources) -> Any:
    from cvat_sdk.core.proxies.tasks import ResourceType

    return ResourceType.LOCAL if resources.kind == "local" else ResourceType.SHARE


def ensure_task(
    client: Any,
    name: str,
    resources: Resources,
    *,
    labels: list[dict[str, Any]] | None = None,
    project_id: int | None = None,
    segment_size: int | None = None,
    image_quality: int = 95,
    status_check_period: float | None = None,
) -> Any:
    """The task ``name`` with ``resources`` as its data: created, completed or reused.

    Frames keep the order of ``resources.paths`` (``sorting_method: predefined``).
    """
    server = client.api_map.host
    if project_id is None and not labels:
        raise ValueError("a task outside a project needs labels (pass an ontology)")
    if resources.kind == "local":
        missing = [p for p in resources.paths if not Path(p).is_file()]
        if missing:
            raise CvatError(f"{len(missing)} image files are missing, e.g. {missing[0]}")
    task = find_task(client, name, project_id=project_id)
    if task is None:
        spec: dict[str, Any] = {"name": name}
        if project_id is not None:
            spec["project_id"] = project_id
        else:
            spec["labels"] = labels
        if segment_size:
            spec["segment_size"] = segment_size
        try:
            task = call("create task", server, client.tasks.create, spec)
        except CvatError:
            # The POST may have reached the server before the connection failed.
            task = find_task(client, name, project_id=project_id)
            if task is None:
                raise
    if not getattr(task, "size", 0):
        kwargs: dict[str, Any] = {
            "resource_type": _resource_type(resources),
            "params": _data_params(resources, image_quality),
        }
        if status_check_period is not None:
            client.config.status_check_period = status_check_period
        call("upload task data", server, task.upload_data, list(resources.paths), **kwargs)
        task.fetch()
    if getattr(task, "size", 0) != len(resources.paths):
        raise CvatError(
            f"{server}: task {task.id} ({name!r}) has {task.size} frames, expected {len(resources.paths)}"
        )
    return task


def task_labels(client: Any, task: Any) -> dict[str, LabelInfo]:
    """The task's labels by name (its own, or its project's)."""
    server = client.api_map.host
    filters = {"project_id": task.project_id} if task.project_id else {"task_id": task.id}
    result = {}
    for label in call("list labels", server, lambda: list(iter_pages(client.api_client.labels_api.list, **filters))):
        attrs = {a.name: a.id for a in (label.attributes or [])}
        result[label.name] = LabelInfo(label.id, label.name, str(getattr(label, "type", "any") or "any"), attrs)
    return result


def frame_names(client: Any, task: Any) -> list[str]:
    """The file name of each task frame, in frame order."""
    meta = call("read task meta", client.api_map.host, task.get_meta)
    return [frame.name for frame in meta.frames]


