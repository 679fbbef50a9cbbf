"""Tasks: labels from an ontology, idempotent creation with data, the label map, and what a
task holds (meta, frames), as the bridge's frozen values.

Task creation and the data upload are POSTs, which neither the transport nor a blind retry
may repeat, so `ensure_task` reconciles after every failure instead:
- a task of the same name (and project) is reused, so a creation whose answer was lost is
  found instead of made twice;
- the images go in one multipart request when they are small enough (`ONE_SHOT_BYTES`), so an
  upload either happened or did not; larger sets use the SDK's chunked upload, restarted from
  ``Upload-Start`` (which discards a half-finished upload) after a failure;
- after a failed upload the task is read back and the server's data-processing request for it
  awaited, so data that did arrive is never uploaded twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvat_bridge import transport
from cvat_bridge.api import CvatError, call, iter_pages, read_json
from serverless.convert.cvat_contract import SCORE_ATTRIBUTE, score_attribute_spec

if TYPE_CHECKING:
    from cvat_bridge.client import CvatSession, CvatSettings
    from serverless.ontology import Ontology

__all__ = [
    "SCORE_ATTRIBUTE",
    "FrameInfo",
    "LabelInfo",
    "Resources",
    "TaskInfo",
    "TaskMeta",
    "ensure_task",
    "frame_bytes",
    "get_task",
    "labels_spec",
    "read_task",
    "task_labels",
    "task_meta",
]

log = logging.getLogger(__name__)

_BUSY = ("queued", "started")

ONE_SHOT_BYTES = 64 * 1024 * 1024
"""Local images up to this total size go in one multipart request (atomic: it either made
the data or did not); larger sets use the SDK's chunked upload (Upload-Start, -Multiple,
-Finish), which is restarted as a whole after a failure."""


@dataclass(frozen=True)
class LabelInfo:
    """A server label: its id, type and attribute spec ids by name."""

    id: int
    name: str
    type: str
    attributes: dict[str, int]


@dataclass(frozen=True)
class TaskInfo:
    """A task as the server describes it: ``size`` is its number of frames (0 before its
    data is uploaded); ``project_id`` is None outside a project."""

    id: int
    name: str
    size: int
    project_id: int | None

    @classmethod
    def from_model(cls, task: Any) -> TaskInfo:
        """From an SDK task (``TaskRead`` or its proxy)."""
        project_id = getattr(task, "project_id", None)
        return cls(
            id=int(task.id),
            name=str(task.name),
            size=int(getattr(task, "size", 0) or 0),
            project_id=int(project_id) if project_id else None,
        )


@dataclass(frozen=True)
class FrameInfo:
    """One entry of a task's frame meta: the file name and size in pixels."""

    name: str
    width: int
    height: int


@dataclass(frozen=True)
class TaskMeta:
    """A task's frame meta: one `FrameInfo` per frame (a single one for a video, whose frames
    share it), and the frames deleted in CVAT."""

    frames: tuple[FrameInfo, ...]
    deleted_frames: frozenset[int]


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


def labels_spec(ontology: Ontology) -> list[dict[str, Any]]:
    """CVAT label specs for an ontology (with the score attribute when it asks for one)."""
    return [
        {
            "name": label.name,
            "type": label.type,
            "attributes": [score_attribute_spec()] if ontology.score_attribute else [],
        }
        for label in ontology.labels
    ]


def _find_task(client: Any, name: str, *, project_id: int | None = None) -> Any | None:
    """The SDK proxy of the task named exactly ``name`` (in ``project_id`` when given), or None."""
    server = client.api_map.host
    filters: dict[str, Any] = {"name": name}
    if project_id is not None:
        filters["project_id"] = project_id
    listing = client.api_client.tasks_api.list
    found = call(f"look up task {name!r}", server, lambda: list(iter_pages(listing, **filters)))
    matches = [t for t in found if t.name == name and (project_id is None or t.project_id == project_id)]
    if len(matches) > 1:
        ids = sorted(int(t.id) for t in matches)
        raise CvatError(f"{server}: {len(matches)} tasks are named {name!r} (ids {ids}); rename them or pass a project")
    return call(f"read task {matches[0].id}", server, client.tasks.retrieve, matches[0].id) if matches else None


def read_task(session: CvatSession, task_id: int) -> TaskInfo:
    """The task ``task_id``; `CvatError` (status 404) when the server does not have it."""
    model, _ = call(f"read task {task_id}", session.host, session.sdk.api_client.tasks_api.retrieve, task_id)
    return TaskInfo.from_model(model)


def get_task(session: CvatSession, task_id: int) -> TaskInfo | None:
    """The task ``task_id``, or None when the server answers 404 (deleted, or hidden from this
    user and organization)."""
    try:
        return read_task(session, task_id)
    except CvatError as err:
        if err.status == 404:
            return None
        raise


def task_meta(session: CvatSession, task_id: int) -> TaskMeta:
    """The frame meta of task ``task_id`` (names, sizes, deleted frames)."""
    api = session.sdk.api_client.tasks_api
    meta, _ = call(f"read meta of task {task_id}", session.host, api.retrieve_data_meta, task_id)
    return TaskMeta(
        frames=tuple(FrameInfo(str(f.name), int(f.width), int(f.height)) for f in meta.frames),
        deleted_frames=frozenset(int(f) for f in (getattr(meta, "deleted_frames", None) or ())),
    )


def frame_bytes(session: CvatSession, task_id: int, frame: int, *, quality: str = "original") -> bytes:
    """The encoded image of a task frame (``original`` or ``compressed`` quality), as CVAT
    serves it."""
    api = session.sdk.api_client.tasks_api

    def fetch() -> bytes:
        _, response = api.retrieve_data(task_id, number=frame, quality=quality, type="frame")
        return bytes(response.data)

    return call(f"read frame {frame} of task {task_id}", session.host, fetch)


def _data_params(resources: Resources, image_quality: int) -> dict[str, Any]:
    params: dict[str, Any] = {"image_quality": image_quality, "sorting_method": "predefined"}
    if resources.kind == "cloud":
        params["cloud_storage_id"] = resources.cloud_storage_id
        params["use_cache"] = True
    return params


def _resource_type(resources: Resources) -> Any:
    from cvat_sdk.core.proxies.tasks import ResourceType

    return ResourceType.LOCAL if resources.kind == "local" else ResourceType.SHARE


def _create_task(client: Any, spec: dict[str, Any], settings: CvatSettings) -> Any:
    server = client.api_map.host
    name, project_id = spec["name"], spec.get("project_id")
    attempts = transport.sends(settings)
    for attempt in range(attempts):
        try:
            return call(f"create task {name!r}", server, client.tasks.create, spec)
        except CvatError as err:
            if not err.retryable:
                raise
            # The POST may have reached the server before its answer was lost.
            task = _find_task(client, name, project_id=project_id)
            if task is not None:
                log.info("%s; the task was created nonetheless (id %s)", err, task.id)
                return task
            if attempt == attempts - 1:
                raise
            log.info("%s; retrying", err)
        transport.pause(settings, attempt + 1)
    raise AssertionError("unreachable")


def _read_request(client: Any, task_id: int, rq_id: str | None) -> dict[str, Any] | None:
    """A background request as JSON: ``rq_id``'s, else the task's newest data-processing one."""
    server = client.api_map.host
    api = client.api_client.requests_api
    if rq_id is not None:
        return read_json(f"read request {rq_id}", server, api.retrieve, rq_id)
    answer = read_json(f"list requests of task {task_id}", server, api.list, task_id=task_id, action="create")
    results = answer.get("results") or []
    return results[0] if results else None


def _await_data(client: Any, task: Any, rq_id: str | None = None) -> bool:
    """Whether the task has its data, waiting for the server's data-processing request
    (``rq_id``, else the task's newest one) while it runs. False: no data and nothing
    running, so the upload must be started (again)."""
    server = client.api_map.host
    while True:
        call(f"read task {task.id}", server, task.fetch)
        if getattr(task, "size", 0):
            return True
        request = _read_request(client, task.id, rq_id)
        status = str((request or {}).get("status") or "")
        if status == "failed":
            raise CvatError(
                f"{server}: task {task.id}: the server failed to process its data: "
                f"{(request or {}).get('message') or 'no reason given'}; delete the task and push again"
            )
        if status not in _BUSY:
            if status == "finished" and rq_id is not None:
                rq_id = None  # finished: the next fetch shows the frames
                continue
            return False
        rq_id = str(request["id"])
        time.sleep(client.config.status_check_period)


def _post_files(client: Any, task: Any, paths: Sequence[str], params: dict[str, Any]) -> str:
    """Send every file in one multipart request (CVAT's one-shot data upload); the rq_id.
    The files are read into memory (at most `ONE_SHOT_BYTES`), not held open."""
    import io

    from cvat_sdk.api_client import models

    files = []
    for path in paths:
        buffer = io.BytesIO(Path(path).read_bytes())
        buffer.name = str(path)  # the multipart file name (the server keeps the base name)
        files.append(buffer)
    request = models.DataRequest(client_files=files, **params)
    api = client.api_client.tasks_api
    data, _ = api.create_data(task.id, data_request=request, _content_type="multipart/form-data")
    return str(data.rq_id)


def _upload_once(client: Any, task: Any, resources: Resources, image_quality: int) -> None:
    server = client.api_map.host
    params = _data_params(resources, image_quality)
    what = f"upload data of task {task.id}"
    if resources.kind == "local" and sum(Path(p).stat().st_size for p in resources.paths) <= ONE_SHOT_BYTES:
        rq_id = call(what, server, _post_files, client, task, resources.paths, params)
        if not _await_data(client, task, rq_id):
            raise CvatError(f"{server}: task {task.id}: the server finished processing its data but shows no frames")
        return
    call(what, server, task.upload_data, list(resources.paths), resource_type=_resource_type(resources), params=params)
    call(f"read task {task.id}", server, task.fetch)


def _upload_data(client: Any, task: Any, resources: Resources, image_quality: int, settings: CvatSettings) -> None:
    attempts = transport.sends(settings)
    for attempt in range(attempts):
        try:
            _upload_once(client, task, resources, image_quality)
            return
        except CvatError as err:
            # "Adding more data is not supported": an earlier upload did reach the server
            if not err.retryable and err.status != 400:
                raise
            if _await_data(client, task):
                log.info("%s; the data arrived nonetheless", err)
                return
            if not err.retryable or attempt == attempts - 1:
                raise
            log.info("%s; uploading again", err)
        transport.pause(settings, attempt + 1)


def ensure_task(
    session: CvatSession,
    name: str,
    resources: Resources,
    *,
    labels: list[dict[str, Any]] | None = None,
    project_id: int | None = None,
    segment_size: int | None = None,
    image_quality: int = 95,
) -> TaskInfo:
    """The task ``name`` with ``resources`` as its data: created, completed or reused.

    Frames keep the order of ``resources.paths`` (``sorting_method: predefined``). A reused
    task must hold exactly as many frames as ``resources``. The creation and the upload are
    sent again after 5xx answers, timeouts or dropped connections, reconciled, as often as
    the session's settings retry a request (`cvat_bridge.transport.sends`).
    """
    client = session.sdk
    server = session.host
    if project_id is None and not labels:
        raise ValueError("a task outside a project needs labels (pass an ontology)")
    if resources.kind == "local":
        missing = [p for p in resources.paths if not Path(p).is_file()]
        if missing:
            raise CvatError(f"{len(missing)} image files are missing, e.g. {missing[0]}")
    task = _find_task(client, name, project_id=project_id)
    reused = task is not None
    if task is None:
        spec: dict[str, Any] = {"name": name}
        if project_id is not None:
            spec["project_id"] = project_id
        else:
            spec["labels"] = labels
        if segment_size:
            spec["segment_size"] = segment_size
        task = _create_task(client, spec, session.settings)
    if not getattr(task, "size", 0) and not (reused and _await_data(client, task)):
        _upload_data(client, task, resources, image_quality, session.settings)
    if getattr(task, "size", 0) != len(resources.paths):
        raise CvatError(
            f"{server}: task {task.id} ({name!r}) has {task.size} frames, expected {len(resources.paths)}"
        )
    return TaskInfo.from_model(task)


def task_labels(session: CvatSession, task: TaskInfo) -> dict[str, LabelInfo]:
    """The task's labels by name (its own, or its project's)."""
    filters = {"project_id": task.project_id} if task.project_id else {"task_id": task.id}
    listing = session.sdk.api_client.labels_api.list
    result = {}
    for label in call("list labels", session.host, lambda: list(iter_pages(listing, **filters))):
        attrs = {a.name: a.id for a in (label.attributes or [])}
        result[label.name] = LabelInfo(label.id, label.name, str(getattr(label, "type", "any") or "any"), attrs)
    return result
