"""Records → CVAT JSON, field for field as the golden exchanges show (per version)."""

from __future__ import annotations

from tests.fake_cvat.state import (
    AccessToken,
    Attribute,
    BackgroundRequest,
    Job,
    Label,
    Project,
    Task,
    User,
    iso,
)
from tests.fake_cvat.web import Ctx


def basic_user(ctx: Ctx, user_id: int | None) -> dict | None:
    """``{url, id, username, first_name, last_name}`` or None."""
    user = ctx.db.users.get(user_id) if user_id is not None else None
    if user is None:
        return None
    return {
        "url": ctx.abs_url(f"/api/users/{user.id}"),
        "id": user.id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
    }


def user_json(ctx: Ctx, user: User) -> dict:
    """The full user object of ``users/self`` and the users list."""
    data = {
        **basic_user(ctx, user.id),
        "email": user.email,
        "groups": ["admin"] if user.is_admin else ["user"],
        "is_staff": user.is_admin,
        "is_superuser": user.is_admin,
        "is_active": user.is_active,
        "last_login": iso(user.last_login),
        "date_joined": iso(user.date_joined),
    }
    if ctx.profile.user_analytics_field:
        data["has_analytics_access"] = user.is_admin
    return data


def attribute_json(attribute: Attribute) -> dict:
    return {
        "id": attribute.id,
        "name": attribute.name,
        "mutable": attribute.mutable,
        "input_type": attribute.input_type,
        "default_value": attribute.default_value,
        "values": list(attribute.values),
    }


def label_json(ctx: Ctx, label: Label) -> dict:
    """A label as ``GET /api/labels`` and ``/api/labels/{id}`` show it."""
    db = ctx.db
    data = {
        "id": label.id,
        "name": label.name,
        "color": label.color,
        "attributes": [attribute_json(a) for a in label.attributes],
        "type": label.type,
        "sublabels": [
            {
                "id": sub.id,
                "name": sub.name,
                "color": sub.color,
                "attributes": [attribute_json(a) for a in sub.attributes],
                "type": sub.type,
                "has_parent": True,
            }
            for sub in (db.labels[i] for i in label.sublabel_ids)
        ],
    }
    if label.project_id is not None:
        data["project_id"] = label.project_id
    else:
        data["task_id"] = label.task_id
    data["parent_id"] = label.parent_id
    data["has_parent"] = label.parent_id is not None
    if label.svg is not None:
        data["svg"] = label.svg
    return data


def project_json(ctx: Ctx, project: Project) -> dict:
    db = ctx.db
    tasks = [t for t in db.tasks.values() if t.project_id == project.id]
    data = {
        "url": ctx.abs_url(f"/api/projects/{project.id}"),
        "id": project.id,
        "name": project.name,
        "owner": basic_user(ctx, project.owner_id),
        "assignee": basic_user(ctx, project.assignee_id),
        "guide_id": None,
        "bug_tracker": project.bug_tracker,
        "created_date": iso(project.created_date),
        "updated_date": iso(project.updated_date),
        "status": "annotation",
        "dimension": "2d" if any(t.data is not None for t in tasks) else None,
        "organization": None,
    }
    if ctx.profile.organization_id_field:
        data["organization_id"] = None
    data.update(
        {
            "target_storage": None,
            "source_storage": None,
            "tasks": {"count": len(tasks), "url": ctx.abs_url(f"/api/tasks?project_id={project.id}")},
            "labels": {"url": ctx.abs_url(f"/api/labels?project_id={project.id}")},
            "assignee_updated_date": iso(project.assignee_updated_date),
            "task_subsets": sorted({t.subset for t in tasks if t.subset}),
        }
    )
    return data


def task_status(ctx: Ctx, task: Task) -> str:
    """Derived from the jobs: annotation, then validation, then completed."""
    statuses = {job.status for job in ctx.db.task_jobs(task.id)}
    if not statuses or "annotation" in statuses:
        return "annotation"
    if "validation" in statuses:
        return "validation"
    return "completed"


def task_json(ctx: Ctx, task: Task) -> dict:
    """A task; data fields appear only once the data is uploaded (as on the real server)."""
    profile = ctx.profile
    jobs = ctx.db.task_jobs(task.id)
    data: dict = {
        "url": ctx.abs_url(f"/api/tasks/{task.id}"),
        "id": task.id,
        "name": task.name,
        "project_id": task.project_id,
        "mode": "annotation" if task.data is not None else "",
        "owner": basic_user(ctx, task.owner_id),
        "assignee": basic_user(ctx, task.assignee_id),
        "bug_tracker": task.bug_tracker,
        "created_date": iso(task.created_date),
        "updated_date": iso(task.updated_date),
        "overlap": task.overlap,
        "segment_size": task.segment_size,
        "status": task_status(ctx, task),
    }
    if task.data is not None:
        data["data_chunk_size"] = task.data.chunk_size
        if profile.task_extra_fields:
            data["data_original_chunk_type"] = "imageset"
            data["data_compressed_chunk_type"] = "imageset"
            data["data_cloud_storage_id"] = None
            data["guide_id"] = None
        else:
            data["data_compressed_chunk_type"] = "imageset"
            data["guide_id"] = None
            data["data_original_chunk_type"] = "imageset"
        data["size"] = len(task.data.frames)
        data["image_quality"] = task.data.image_quality
        data["data"] = task.data.id
    else:
        data["guide_id"] = None
    data["dimension"] = "2d"
    data["subset"] = task.subset
    if profile.organization_id_field:
        data["organization_id"] = None
    data.update(
        {
            "organization": None,
            "target_storage": None,
            "source_storage": None,
            "jobs": {
                "count": len(jobs),
                "completed": sum(job.status == "completed" for job in jobs),
                "validation": sum(job.status == "validation" for job in jobs),
                "url": ctx.abs_url(f"/api/jobs?task_id={task.id}"),
            },
            "labels": {"url": ctx.abs_url(f"/api/labels?task_id={task.id}")},
            "assignee_updated_date": iso(task.assignee_updated_date),
        }
    )
    if profile.task_extra_fields:
        data["validation_mode"] = None
        data["consensus_enabled"] = False
    return data


def job_json(ctx: Ctx, job: Job) -> dict:
    task = ctx.db.tasks[job.task_id]
    data: dict = {
        "url": ctx.abs_url(f"/api/jobs/{job.id}"),
        "id": job.id,
        "task_id": job.task_id,
        "project_id": task.project_id,
        "assignee": basic_user(ctx, job.assignee_id),
        "guide_id": None,
        "dimension": "2d",
        "bug_tracker": task.bug_tracker,
        "status": job.status,
        "stage": job.stage,
        "state": job.state,
        "mode": "annotation",
        "frame_count": job.frame_count,
        "start_frame": job.start_frame,
        "stop_frame": job.stop_frame,
        "data_chunk_size": task.data.chunk_size if task.data else None,
        "data_compressed_chunk_type": "imageset",
    }
    if ctx.profile.job_extra_fields:
        data["data_original_chunk_type"] = "imageset"
    data.update(
        {
            "created_date": iso(job.created_date),
            "updated_date": iso(job.updated_date),
            "issues": {"url": ctx.abs_url(f"/api/issues?job_id={job.id}"), "count": 0},
            "labels": {"url": ctx.abs_url(f"/api/labels?job_id={job.id}")},
            "type": job.type,
            "organization": None,
            "target_storage": None,
            "source_storage": None,
            "assignee_updated_date": iso(job.assignee_updated_date),
        }
    )
    if ctx.profile.job_extra_fields:
        data["parent_job_id"] = None
        data["consensus_replicas"] = 0
    return data


def meta_json(ctx: Ctx, task: Task, job: Job | None = None) -> dict:
    """``data/meta`` of a task, or of one job (its own frames, absolute start/stop)."""
    frames = task.data.frames
    start, stop = (job.start_frame, job.stop_frame) if job else (0, len(frames) - 1)
    data: dict = {}
    if ctx.profile.meta_extra_fields:
        data["chapters"] = None
        data["chunks_updated_date"] = iso(task.data.chunks_updated_date)
    data.update(
        {
            "chunk_size": task.data.chunk_size,
            "size": stop - start + 1,
            "image_quality": task.data.image_quality,
            "start_frame": start,
            "stop_frame": stop,
            "frame_filter": task.data.frame_filter,
            "frames": [
                {
                    "width": f.width,
                    "height": f.height,
                    "name": f.name,
                    "related_files": 0,
                    "has_related_context": False,
                }
                for f in frames[start : stop + 1]
            ],
            "deleted_frames": sorted(i for i in task.data.deleted_frames if start <= i <= stop),
            "included_frames": None,
        }
    )
    if ctx.profile.meta_extra_fields:
        data["storage"] = "local"
        data["cloud_storage_id"] = None
    return data


def request_json(ctx: Ctx, rq: BackgroundRequest, status: str, message: str, progress: float) -> dict:
    """A ``/api/requests`` object in the given state."""
    operation = {
        "type": rq.type,
        "target": rq.target,
        "project_id": rq.project_id,
        "task_id": rq.task_id,
        "job_id": rq.job_id,
        "format": rq.format,
    }
    if ctx.profile.request_lightweight_field:
        operation["lightweight"] = None
    owner = ctx.db.users.get(rq.owner_id)
    return {
        "status": status,
        "message": message,
        "id": rq.id,
        "operation": operation,
        "progress": progress,
        "created_date": iso(rq.created_date),
        "started_date": iso(rq.started_date),
        "finished_date": iso(rq.finished_date) if status in ("finished", "failed") else None,
        "expiry_date": iso(rq.expiry_date) if status in ("finished", "failed") else None,
        "owner": {"id": owner.id, "username": owner.username} if owner else None,
        "result_url": rq.result_url,
        "result_id": rq.result_id,
    }


def access_token_json(ctx: Ctx, token: AccessToken, *, with_value: bool = False) -> dict:
    owner = basic_user(ctx, token.owner_id)
    data = {
        "id": token.id,
        "name": token.name,
        "created_date": iso(token.created_date),
        "updated_date": iso(token.updated_date),
        "expiry_date": iso(token.expiry_date),
        "last_used_date": iso(token.last_used_date),
        "read_only": token.read_only,
        "owner": owner,
    }
    if with_value:
        data["value"] = token.value
    return data
