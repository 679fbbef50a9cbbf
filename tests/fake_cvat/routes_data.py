"""Media reads: data/meta, frames (original/compressed), zip chunks, previews (tasks and jobs).

Task chunks are numbered over the task's frames (chunk ``n`` holds frames
``n*chunk_size … (n+1)*chunk_size-1``), which is what ``cvat_sdk.datasets.TaskDataset`` reads.
Job frame numbers are absolute task frames; job chunks are numbered from the job's first frame.
"""

from __future__ import annotations

from tests.fake_cvat.auth import forbidden, is_task_staff
from tests.fake_cvat.lookup import get_job, get_task
from tests.fake_cvat.media import chunk_zip, compressed, preview
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.serializers import meta_json
from tests.fake_cvat.state import Frame, Job, Task
from tests.fake_cvat.web import ApiError, Ctx, Response, Router, bad_request, json_response

DATA_TYPES = ("chunk", "frame", "context_image")
QUALITIES = ("compressed", "original")


def _task_with_data(ctx: Ctx, task: Task) -> Task:
    if task.data is None:
        raise ApiError(404, {"detail": "The task has no data"})
    return task


def _choice(ctx: Ctx, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = ctx.q(name, default)
    if value is not None and value not in choices:
        raise bad_request({name: [f'"{value}" is not a valid choice.']})
    return value


def _number(ctx: Ctx, name: str = "number") -> int:
    raw = ctx.q(name)
    if raw is None or not raw.lstrip("-").isdigit():
        raise bad_request({name: ["A valid integer is required."]})
    return int(raw)


def _frame_response(ctx: Ctx, task: Task, frame: Frame, quality: str) -> Response:
    if quality == "original":
        return Response(200, frame.original, frame.mime)
    return Response(200, compressed(frame, task.data.image_quality), "image/jpeg")


def _chunk_response(ctx: Ctx, task: Task, frames: list[Frame], number: int, quality: str) -> Response:
    size = task.data.chunk_size
    last = max(0, (len(frames) - 1) // size)
    if not 0 <= number <= last:
        raise bad_request(ctx.profile.chunk_out_of_range(number, last))
    body = chunk_zip(
        frames[number * size : (number + 1) * size], original=quality == "original", quality=task.data.image_quality
    )
    headers = []
    if ctx.profile.chunk_content_disposition:
        headers.append(("Content-Disposition", f'inline; filename="{number}.zip"'))
    return Response(200, body, "application/zip", headers)


def task_data_get(ctx: Ctx, task_id: str) -> Response:
    task = _task_with_data(ctx, get_task(ctx, task_id))
    data_type = _choice(ctx, "type", DATA_TYPES, None)
    if data_type is None:
        raise bad_request({"type": ["This field is required."]})
    quality = _choice(ctx, "quality", QUALITIES, "compressed")
    number = _number(ctx)
    frames = task.data.frames
    if data_type == "frame":
        if not 0 <= number < len(frames):
            raise bad_request(f"The frame number should be in the [0, {len(frames) - 1}] range")
        return _frame_response(ctx, task, frames[number], quality)
    if data_type == "chunk":
        return _chunk_response(ctx, task, frames, number, quality)
    raise ApiError(404, {"detail": "No context images for this frame"})


def _meta_patch(ctx: Ctx, task: Task, job: Job | None) -> None:
    if not is_task_staff(ctx.db, ctx.user, task):
        raise forbidden()
    data = ctx.json_object()
    if "deleted_frames" in data:
        deleted = data["deleted_frames"]
        if not isinstance(deleted, list) or not all(isinstance(i, int) for i in deleted):
            raise bad_request({"deleted_frames": ["Expected a list of integers."]})
        lo, hi = (job.start_frame, job.stop_frame) if job else (0, len(task.data.frames) - 1)
        outside = [i for i in deleted if not lo <= i <= hi]
        if outside:
            raise bad_request({"deleted_frames": [f"Frame {outside[0]} is out of range"]})
        task.data.deleted_frames = {i for i in task.data.deleted_frames if not lo <= i <= hi} | set(deleted)
        ctx.db.touch(task, [job] if job else ctx.db.task_jobs(task.id))


def task_meta(ctx: Ctx, task_id: str) -> Response:
    task = _task_with_data(ctx, get_task(ctx, task_id))
    if ctx.method == "PATCH":
        _meta_patch(ctx, task, None)
    return json_response(meta_json(ctx, task))


def task_preview(ctx: Ctx, task_id: str) -> Response:
    task = _task_with_data(ctx, get_task(ctx, task_id))
    return Response(200, preview(task.data.frames[0]), "image/jpeg")


def job_data_get(ctx: Ctx, job_id: str) -> Response:
    job = get_job(ctx, job_id)
    task = _task_with_data(ctx, ctx.db.tasks[job.task_id])
    data_type = _choice(ctx, "type", DATA_TYPES, None)
    if data_type is None:
        raise bad_request({"type": ["This field is required."]})
    quality = _choice(ctx, "quality", QUALITIES, "compressed")
    job_frames = task.data.frames[job.start_frame : job.stop_frame + 1]
    if data_type == "frame":
        number = _number(ctx)
        if not job.contains(number):
            raise bad_request(ctx.profile.frame_outside_job(number))
        return _frame_response(ctx, task, task.data.frames[number], quality)
    if data_type == "chunk":
        number = _number(ctx, "index" if ctx.q("index") is not None else "number")
        return _chunk_response(ctx, task, job_frames, number, quality)
    raise ApiError(404, {"detail": "No context images for this frame"})


def job_meta(ctx: Ctx, job_id: str) -> Response:
    job = get_job(ctx, job_id)
    task = _task_with_data(ctx, ctx.db.tasks[job.task_id])
    if ctx.method == "PATCH":
        _meta_patch(ctx, task, job)
    return json_response(meta_json(ctx, task, job))


def job_preview(ctx: Ctx, job_id: str) -> Response:
    job = get_job(ctx, job_id)
    task = _task_with_data(ctx, ctx.db.tasks[job.task_id])
    return Response(200, preview(task.data.frames[job.start_frame]), "image/jpeg")


def register_routes(router: Router, profile: VersionProfile) -> None:
    router.add(r"/api/tasks/(?P<task_id>\d+)/data", {"GET": task_data_get})
    router.add(r"/api/tasks/(?P<task_id>\d+)/data/meta", {"GET": task_meta, "PATCH": task_meta})
    router.add(r"/api/tasks/(?P<task_id>\d+)/preview", {"GET": task_preview})
    router.add(r"/api/jobs/(?P<job_id>\d+)/data", {"GET": job_data_get})
    router.add(r"/api/jobs/(?P<job_id>\d+)/data/meta", {"GET": job_meta, "PATCH": job_meta})
    router.add(r"/api/jobs/(?P<job_id>\d+)/preview", {"GET": job_preview})
