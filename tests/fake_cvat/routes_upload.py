"""Uploads: task data (Upload-Start / Upload-Multiple / Upload-Finish), TUS, annotation import.

The CVAT upload protocol on ``POST /api/tasks/{id}/data/``:
``Upload-Start`` → 202 (empty); ``Upload-Multiple`` (multipart ``client_files[i]``) → 200
(empty); big files through TUS (POST with ``Upload-Length`` → 201 + ``Location``; HEAD →
offset; PATCH chunks → 204); ``Upload-Finish`` (data params) → 202 ``{"rq_id"}``.
Annotation imports use the same handshake on ``…/annotations/`` with ``format`` and
``filename`` in the query.
"""

from __future__ import annotations

import base64
import binascii
import uuid

from tests.fake_cvat.auth import forbidden, is_task_staff
from tests.fake_cvat.lookup import get_job, get_task
from tests.fake_cvat.media import MediaError
from tests.fake_cvat.multipart import form_fields, parse_multipart
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.routes_requests import finish, start_request
from tests.fake_cvat.state import AnnotationFile, Task, TusUpload
from tests.fake_cvat.taskdata import build_task_data, parse_params
from tests.fake_cvat.web import ApiError, Ctx, Response, Router, bad_request, empty_response, json_response

TUS_HEADERS = [
    ("Tus-Resumable", "1.0.0"),
    ("Tus-Version", "1.0.0"),
    ("Tus-Extension", ""),
    ("Tus-Max-Size", "26843545600"),
]
TUS_MAX_SIZE = 26843545600


def _metadata(header: str) -> dict[str, str]:
    result = {}
    for item in (header or "").split(","):
        key, _, value = item.strip().partition(" ")
        if key:
            try:
                result[key] = base64.b64decode(value).decode() if value else ""
            except (binascii.Error, UnicodeDecodeError):
                raise bad_request({"detail": "Upload-Metadata is not valid base64"}) from None
    return result


def _tus_create(ctx: Ctx, task: Task, target: str, url_prefix: str) -> Response:
    try:
        length = int(ctx.headers.get("Upload-Length", ""))
    except ValueError:
        raise bad_request({"detail": "Upload-Length must be an integer"}) from None
    if not 0 <= length <= TUS_MAX_SIZE:
        raise ApiError(413, {"detail": "Upload-Length exceeds Tus-Max-Size"})
    filename = _metadata(ctx.headers.get("Upload-Metadata", "")).get("filename")
    if not filename:
        raise bad_request({"detail": "Upload-Metadata must carry a filename"})
    upload_id = str(uuid.uuid4())
    if ctx.profile.tus_ids_prefixed_with_user:
        upload_id = f"{ctx.user.id}_{upload_id}"
    ctx.db.tus_uploads[upload_id] = TusUpload(
        id=upload_id, owner_id=ctx.user.id, task_id=task.id, target=target, filename=filename, length=length
    )
    shown_name = upload_id if target == "annotations" and ctx.profile.tus_annotation_filename_is_id else filename
    headers = [*TUS_HEADERS, ("Location", ctx.abs_url(f"{url_prefix}/{upload_id}")), ("Upload-Filename", shown_name)]
    return empty_response(201, headers)


def _tus_upload(ctx: Ctx, upload_id: str, task_id: int) -> TusUpload:
    upload = ctx.db.tus_uploads.get(upload_id)
    if upload is None or upload.task_id != task_id or upload.owner_id != ctx.user.id:
        raise ApiError(404, ctx.profile.not_found("File"), headers=list(TUS_HEADERS))
    return upload


def tus_head(ctx: Ctx, upload: TusUpload) -> Response:
    headers = [*TUS_HEADERS, ("Upload-Offset", str(len(upload.content))), ("Upload-Length", str(upload.length))]
    return empty_response(200, headers)


def tus_patch(ctx: Ctx, upload: TusUpload, task: Task) -> Response:
    if (ctx.headers.get("Content-Type") or "") != "application/offset+octet-stream":
        raise ApiError(
            415, {"detail": "Content-Type must be application/offset+octet-stream"}, headers=list(TUS_HEADERS)
        )
    try:
        offset = int(ctx.headers.get("Upload-Offset", ""))
    except ValueError:
        raise bad_request({"detail": "Upload-Offset must be an integer"}) from None
    if offset != len(upload.content):
        raise ApiError(
            409,
            {"detail": "Upload-Offset does not match"},
            headers=[*TUS_HEADERS, ("Upload-Offset", str(len(upload.content)))],
        )
    if offset + len(ctx.body) > upload.length:
        raise ApiError(413, {"detail": "The chunk goes past Upload-Length"}, headers=list(TUS_HEADERS))
    upload.content.extend(ctx.body)
    headers = [*TUS_HEADERS, ("Upload-Offset", str(len(upload.content)))]
    if ctx.profile.tus_patch_sends_filename:
        headers.append(("Upload-Filename", upload.filename))
    if upload.complete:
        _complete(ctx, upload, task)
    return empty_response(204, headers)


def _complete(ctx: Ctx, upload: TusUpload, task: Task) -> None:
    content = bytes(upload.content)
    if upload.target == "data":
        task.pending_files.append((upload.filename, content))
    else:
        key = upload.id if ctx.profile.tus_annotation_filename_is_id else upload.filename
        ctx.db.annotation_files[(task.id, key)] = AnnotationFile(upload.filename, content)
    del ctx.db.tus_uploads[upload.id]


# ---- task data -------------------------------------------------------------------------------
def _writable_task(ctx: Ctx, task_id: str) -> Task:
    task = get_task(ctx, task_id)
    if not is_task_staff(ctx.db, ctx.user, task):
        raise forbidden()
    return task


def _finish_data(ctx: Ctx, task: Task) -> Response:
    params = parse_params(form_fields(ctx))
    rq = start_request(ctx, action="create", type_="create:task", task=task, polls=list(ctx.profile.create_task_polls))
    try:
        build_task_data(ctx.db, task, params, ctx.server.share_dir)
    except MediaError as err:
        task.pending_files = []
        finish(ctx, rq, failed=str(err))
    else:
        finish(ctx, rq, progress=ctx.profile.finished_create_progress)
    return json_response({"rq_id": rq.id}, 202)


def _client_files(ctx: Ctx) -> list[tuple[str, bytes]]:
    parts = parse_multipart(ctx.body, ctx.headers.get("Content-Type") or "")
    return [(p.basename, p.data) for p in parts if p.filename is not None and p.name.startswith("client_files")]


def task_data_post(ctx: Ctx, task_id: str) -> Response:
    task = _writable_task(ctx, task_id)
    headers = ctx.headers
    if task.data is not None:
        raise bad_request(["Adding more data is not supported"])
    if "Upload-Start" in headers:
        task.upload_open = True
        task.pending_files = []
        return empty_response(202)
    if "Upload-Multiple" in headers:
        task.pending_files.extend(_client_files(ctx))
        return empty_response(200)
    if "Upload-Finish" in headers:
        return _finish_data(ctx, task)
    if "Upload-Length" in headers:
        return _tus_create(ctx, task, "data", f"/api/tasks/{task.id}/data")
    if (headers.get("Content-Type") or "").lower().startswith("multipart/"):
        task.pending_files = _client_files(ctx)
    return _finish_data(ctx, task)


def task_data_tus_head(ctx: Ctx, task_id: str, upload_id: str) -> Response:
    task = _writable_task(ctx, task_id)
    return tus_head(ctx, _tus_upload(ctx, upload_id, task.id))


def task_data_tus_patch(ctx: Ctx, task_id: str, upload_id: str) -> Response:
    task = _writable_task(ctx, task_id)
    return tus_patch(ctx, _tus_upload(ctx, upload_id, task.id), task)


# ---- annotation import -----------------------------------------------------------------------
def _import(ctx: Ctx, task: Task, url_prefix: str, job_id: int | None) -> Response:
    headers = ctx.headers
    if "Upload-Start" in headers:
        return empty_response(202)
    if "Upload-Length" in headers:
        return _tus_create(ctx, task, "annotations", url_prefix)
    fmt = ctx.q("format")
    if not fmt:
        raise bad_request(["Format is not specified"])
    if "Upload-Finish" in headers:
        key = ctx.q("filename") or ""
        upload = ctx.db.annotation_files.pop((task.id, key), None)
        if upload is None:
            raise bad_request([f"No such file were uploaded: {key}"])
    else:
        parts = [p for p in parse_multipart(ctx.body, headers.get("Content-Type") or "") if p.name == "annotation_file"]
        if not parts:
            raise bad_request({"annotation_file": ["No file was submitted."]})
    rq = start_request(
        ctx,
        action="import",
        type_="import:annotations",
        task=task,
        subresource="annotations",
        polls=[("", 0.0)],
        job_id=job_id,
    )
    finish(
        ctx,
        rq,
        failed=f"The fake CVAT cannot import annotations (format {fmt!r}); "
        "send them with PUT/PATCH .../annotations instead",
    )
    return json_response({"rq_id": rq.id}, 202)


def task_annotations_post(ctx: Ctx, task_id: str) -> Response:
    task = _writable_task(ctx, task_id)
    return _import(ctx, task, f"/api/tasks/{task.id}/annotations", None)


def task_annotations_tus_head(ctx: Ctx, task_id: str, upload_id: str) -> Response:
    task = _writable_task(ctx, task_id)
    return tus_head(ctx, _tus_upload(ctx, upload_id, task.id))


def task_annotations_tus_patch(ctx: Ctx, task_id: str, upload_id: str) -> Response:
    task = _writable_task(ctx, task_id)
    return tus_patch(ctx, _tus_upload(ctx, upload_id, task.id), task)


def _writable_job_task(ctx: Ctx, job_id: str) -> tuple[int, Task]:
    job = get_job(ctx, job_id)  # whoever may see a job may write its annotations
    return job.id, ctx.db.tasks[job.task_id]


def job_annotations_post(ctx: Ctx, job_id: str) -> Response:
    jid, task = _writable_job_task(ctx, job_id)
    return _import(ctx, task, f"/api/jobs/{jid}/annotations", jid)


def job_annotations_tus_head(ctx: Ctx, job_id: str, upload_id: str) -> Response:
    _, task = _writable_job_task(ctx, job_id)
    return tus_head(ctx, _tus_upload(ctx, upload_id, task.id))


def job_annotations_tus_patch(ctx: Ctx, job_id: str, upload_id: str) -> Response:
    _, task = _writable_job_task(ctx, job_id)
    return tus_patch(ctx, _tus_upload(ctx, upload_id, task.id), task)


TUS_ID = r"(?P<upload_id>(?:\d+_)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"


def register_routes(router: Router, profile: VersionProfile) -> None:
    router.add(r"/api/tasks/(?P<task_id>\d+)/data", {"POST": task_data_post})
    router.add(
        rf"/api/tasks/(?P<task_id>\d+)/data/{TUS_ID}", {"HEAD": task_data_tus_head, "PATCH": task_data_tus_patch}
    )
    router.add(r"/api/tasks/(?P<task_id>\d+)/annotations", {"POST": task_annotations_post})
    router.add(
        rf"/api/tasks/(?P<task_id>\d+)/annotations/{TUS_ID}",
        {"HEAD": task_annotations_tus_head, "PATCH": task_annotations_tus_patch},
    )
    router.add(r"/api/jobs/(?P<job_id>\d+)/annotations", {"POST": job_annotations_post})
    router.add(
        rf"/api/jobs/(?P<job_id>\d+)/annotations/{TUS_ID}",
        {"HEAD": job_annotations_tus_head, "PATCH": job_annotations_tus_patch},
    )
