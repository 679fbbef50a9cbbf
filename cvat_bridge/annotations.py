"""Bulk annotation upload and download, per job, as plain JSON.

Shapes travel as plain dicts (the JSON of ``LabeledShapeRequest`` / ``LabeledShape``): the
SDK's models type-check every number of ``points``, which for masks costs far more than the
request itself. The SDK's endpoints still make every request (authentication, transport
policy); only its model layer is skipped.

Upload is a few requests per job, never one per shape: the shapes are split into chunks of at
most ``max_request_bytes`` of JSON. The first chunk is a ``PUT`` (idempotent: it replaces the
job's annotations, so a rerun after a crash starts clean) and later chunks are ``PATCH
action=create``; a failed ``PATCH`` is reconciled by reading the job back before it is
retried, so a chunk that reached the server before its answer was lost is never sent twice.
The server's id for each uploaded shape is returned in the input order.

Tags (image-level labels) go with the first request (they are small: a frame, a label and a
few attributes each) and get their server ids back the same way; CVAT numbers tags apart from
shapes.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from cvat_bridge import transport
from cvat_bridge.api import CvatError, read_json

if TYPE_CHECKING:
    from cvat_bridge.client import CvatSession

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "JobAnnotations",
    "chunk_shapes",
    "job_annotations",
    "shape_key",
    "shape_type",
    "tag_key",
    "upload_job_annotations",
    "upload_job_shapes",
]

log = logging.getLogger(__name__)

#: CVAT (Django) accepts request bodies up to 100 MiB; stay well below.
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


class JobAnnotations(TypedDict):
    """A job's annotations as CVAT's JSON (`job_annotations`): shapes as dicts with ``id``,
    ``frame`` (task-relative), ``label_id``, ``type``, ``points``, ``source``,
    ``attributes`` ([{spec_id, value}]), …; tags and tracks likewise."""

    version: int
    shapes: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    tracks: list[dict[str, Any]]


def _as_dict(shape: Any) -> Mapping[str, Any]:
    return shape if isinstance(shape, Mapping) else shape.to_dict()


def shape_type(shape: Any) -> str:
    """The CVAT type of a shape (dict or SDK model): ``rectangle``, ``mask``, …"""
    kind = _as_dict(shape).get("type")
    return str(getattr(kind, "value", kind))


def shape_key(shape: Any) -> tuple[Any, ...]:
    """What identifies a shape's content: frame, label, type, points rounded to 1/100 px
    (long point lists, i.e. masks, as bytes)."""
    data = _as_dict(shape)
    points = data.get("points") or ()
    if len(points) <= 16:
        key: Any = tuple(round(float(p), 2) + 0.0 for p in points)  # + 0.0: -0.0 == 0.0
    else:
        import numpy as np

        key = (np.round(np.asarray(points, dtype=np.float64), 2) + 0.0).tobytes()
    return int(data["frame"]), int(data["label_id"]), shape_type(data), key


def tag_key(tag: Any) -> tuple[int, int]:
    """What identifies a tag's content: its frame and label (a relabelled tag differs)."""
    data = _as_dict(tag)
    return int(data["frame"]), int(data["label_id"])


def chunk_shapes(shapes: Sequence[Any], max_bytes: int) -> list[list[Any]]:
    """Consecutive chunks whose JSON stays under ``max_bytes`` (a single larger shape is alone)."""
    chunks: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for shape in shapes:
        shape_size = len(json.dumps(_as_dict(shape), default=str)) + 2
        if current and size + shape_size > max_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(shape)
        size += shape_size
    if current:
        chunks.append(current)
    return chunks


def _match_ids(
    sent: Sequence[Any], returned: Sequence[Any], key: Callable[[Any], tuple[Any, ...]] = shape_key, what: str = "shape"
) -> list[int]:
    pool: dict[tuple[Any, ...], deque[int]] = defaultdict(deque)
    for item in returned:
        pool[key(item)].append(int(item["id"]))
    ids = []
    for item in sent:
        bucket = pool.get(key(item))
        if not bucket:
            raise CvatError(f"the server's answer lacks an uploaded {what} {key(item)[:3]}")
        ids.append(bucket.popleft())
    return ids


def _body(endpoint: Any, shapes: Sequence[Any], tags: Sequence[Any] = ()) -> dict[str, Any]:
    """The body argument of an annotation endpoint: its request model, built without the
    per-value type checks (its name and class differ between SDK versions: 2.17's PUT takes
    ``job_annotations_update_request``, 2.8x's ``labeled_data_request``)."""
    (name,) = [p for p in endpoint.params_map["all"] if p.endswith("_request")]
    model = endpoint.openapi_types[name][0]
    shapes = [dict(_as_dict(s)) for s in shapes]
    tags = [dict(_as_dict(t)) for t in tags]
    return {name: model(shapes=shapes, tags=tags, tracks=[], _check_type=False)}


def job_annotations(session: CvatSession, job_id: int) -> JobAnnotations:
    """The job's annotations as JSON: ``{"version", "tags", "shapes", "tracks"}``."""
    answer = read_json(
        f"read annotations of job {job_id}", session.host, session.sdk.api_client.jobs_api.retrieve_annotations, job_id
    )
    if not isinstance(answer, dict):
        raise CvatError(f"{session.host}: read annotations of job {job_id}: expected a JSON object")
    return JobAnnotations(
        version=int(answer.get("version") or 0),
        shapes=list(answer.get("shapes") or []),
        tags=list(answer.get("tags") or []),
        tracks=list(answer.get("tracks") or []),
    )


def upload_job_shapes(
    session: CvatSession,
    job_id: int,
    shapes: Sequence[Any],
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> tuple[list[int], int]:
    """Replace the job's annotations with ``shapes`` (dicts or SDK models); return (server
    ids in input order, number of requests that carried shapes). See `upload_job_annotations`."""
    ids, _, requests = upload_job_annotations(session, job_id, shapes, max_request_bytes=max_request_bytes)
    return ids, requests


def upload_job_annotations(
    session: CvatSession,
    job_id: int,
    shapes: Sequence[Any],
    tags: Sequence[Any] = (),
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> tuple[list[int], list[int], int]:
    """Replace the job's annotations with ``shapes`` and ``tags`` (dicts or SDK models);
    return (server shape ids and server tag ids, each in input order, number of requests
    sent). The first chunk's ``PUT`` carries every tag and is retried by the transport; each
    later chunk of shapes is sent as often (`cvat_bridge.transport.sends`), reconciled."""
    api = session.sdk.api_client.jobs_api
    chunks = chunk_shapes(shapes, max_request_bytes) or [[]]
    first = chunks[0]
    answer = read_json(
        f"upload annotations to job {job_id}",
        session.host,
        api.update_annotations,
        job_id,
        **_body(api.update_annotations_endpoint, first, tags),
    )
    ids = _match_ids(first, answer.get("shapes") or [])
    tag_ids = _match_ids(tags, answer.get("tags") or [], tag_key, "tag")
    known = set(ids)
    for chunk in chunks[1:]:
        new_ids = _add_chunk(session, job_id, chunk, known)
        ids.extend(new_ids)
        known.update(new_ids)
    return ids, tag_ids, len(chunks)


def _add_chunk(session: CvatSession, job_id: int, chunk: Sequence[Any], known: set[int]) -> list[int]:
    """PATCH ``action=create`` one chunk, exactly once even when answers are lost."""
    server = session.host
    api = session.sdk.api_client.jobs_api
    what = f"add annotations to job {job_id}"
    attempts = transport.sends(session.settings)
    for attempt in range(attempts):
        try:
            answer = read_json(
                what,
                server,
                api.partial_update_annotations,
                "create",
                job_id,
                **_body(api.partial_update_annotations_endpoint, chunk),
            )
            return _match_ids(chunk, answer.get("shapes") or [])
        except CvatError as err:
            if err.status is not None and not err.retryable:
                raise
            # Did the chunk land before the failure? Read the job back before sending it again.
            fresh = [s for s in job_annotations(session, job_id)["shapes"] if int(s["id"]) not in known]
            if fresh:
                try:
                    ids = _match_ids(chunk, fresh)
                except CvatError:
                    raise CvatError(
                        f"{server}: job {job_id} changed while its annotations were uploaded; push again"
                    ) from None
                log.info("%s; the chunk had arrived (%d shapes)", err, len(ids))
                return ids
            if attempt == attempts - 1:
                raise
            log.info("%s; sending the chunk again", err)
        transport.pause(session.settings, attempt + 1)
    raise AssertionError("unreachable")
