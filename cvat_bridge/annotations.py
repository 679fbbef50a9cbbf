"""Bulk annotation upload and download, per job.

Upload is a few requests per job, never one per shape: the shapes are split into chunks of at
most ``max_request_bytes`` of JSON. The first chunk is a ``PUT`` (idempotent: it replaces the
job's annotations, so a rerun after a crash starts clean) and later chunks are ``PATCH
action=create``; a failed ``PATCH`` is reconciled by reading the job back before it is
retried, so a chunk that reached the server before the connection dropped is never sent twice.
The server's id for each uploaded shape is returned in the input order.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from cvat_bridge.api import call
from cvat_bridge.client import CvatError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "chunk_shapes", "job_annotations", "shape_key", "upload_job_shapes"]

#: CVAT (Django) accepts request bodies up to 100 MiB; stay well below.
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _as_dict(shape: Any) -> dict[str, Any]:
    return shape.to_dict() if hasattr(shape, "to_dict") else dict(shape)


def shape_key(shape: Any) -> tuple[Any, ...]:
    """What identifies an uploaded shape in the server's answer: frame, label, type, points."""
    data = _as_dict(shape)
    kind = data.get("type")
    kind = getattr(kind, "value", kind)
    points = tuple(round(float(p), 2) for p in data.get("points") or ())
    return int(data["frame"]), int(data["label_id"]), str(kind), points


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


def _match_ids(sent: Sequence[Any], returned: Sequence[Any]) -> list[int]:
    pool: dict[tuple[Any, ...], deque[int]] = defaultdict(deque)
    for shape in returned:
        pool[shape_key(shape)].append(int(_as_dict(shape)["id"]))
    ids = []
    for shape in sent:
        bucket = pool.get(shape_key(shape))
        if not bucket:
            raise CvatError(f"the server's answer lacks an uploaded shape {shape_key(shape)[:3]}")
        ids.append(bucket.popleft())
    return ids


def _answer_shapes(response: Any) -> list[dict[str, Any]]:
    """The shapes of a PUT/PATCH answer (the SDK declares no schema for it, so parse JSON)."""
    try:
        return list(json.loads(response.data).get("shapes") or [])
    except (ValueError, AttributeError) as err:
        raise CvatError(f"unexpected answer to an annotation upload: {err}") from None


def job_annotations(client: Any, job_id: int) -> Any:
    """The job's annotations (``LabeledData``: shapes, tags, tracks; frames are task-relative)."""
    server = client.api_map.host
    data, _ = call(
        f"read annotations of job {job_id}", server, client.api_client.jobs_api.retrieve_annotations, job_id
    )
    return data


def upload_job_shapes(
    client: Any,
    job_id: int,
    shapes: Sequence[Any],
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    attempts: int = 4,
) -> tuple[list[int], int]:
    """Replace the job's annotations with ``shapes``; return (server ids in input order,
    number of requests that carried shapes)."""
    from cvat_sdk.api_client import models

    server = client.api_map.host
    api = client.api_client.jobs_api
    chunks = chunk_shapes(shapes, max_request_bytes) or [[]]
    ids: list[int] = []
    first = chunks[0]
    _, response = call(
        f"upload annotations to job {job_id}",
        server,
        api.update_annotations,
        job_id,
        labeled_data_request=models.LabeledDataRequest(shapes=list(first), tags=[], tracks=[]),
        _parse_response=False,
    )
    ids.extend(_match_ids(first, _answer_shapes(response)))
    known = set(ids)
    for chunk in chunks[1:]:
        for attempt in range(attempts):
            try:
                _, response = call(
                    f"add annotations to job {job_id}",
                    server,
                    api.partial_update_annotations,
                    "create",
                    job_id,
                    patched_labeled_data_request=models.PatchedLabeledDataRequest(
                        shapes=list(chunk), tags=[], tracks=[]
                    ),
                    _parse_response=False,
                )
                new_ids = _match_ids(chunk, _answer_shapes(response))
                break
            except CvatError:
                # Did the chunk land before the failure? Read the job back before retrying.
                current = job_annotations(client, job_id)
                fresh = [s for s in current.shapes if int(s.id) not in known]
                try:
                    new_ids = _match_ids(chunk, fresh)
                    break
                except CvatError:
                    if attempt == attempts - 1:
                        raise
        ids.extend(new_ids)
        known.update(new_ids)
    return ids, len(chunks)
