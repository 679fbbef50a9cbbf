"""Fetch records for a request: 404 when missing, 403 when the user may not see them."""

from __future__ import annotations

from tests.fake_cvat.auth import can_view_job, can_view_project, can_view_task, forbidden
from tests.fake_cvat.state import Job, Label, Project, Task
from tests.fake_cvat.web import ApiError, Ctx, bad_request


def int_id(raw: str | int) -> int:
    """A path id (the router already checked it is digits)."""
    return int(raw)


def get_project(ctx: Ctx, project_id: str | int) -> Project:
    project = ctx.db.projects.get(int_id(project_id))
    if project is None:
        raise ApiError(404, ctx.profile.not_found("Project"))
    if not can_view_project(ctx.db, ctx.user, project):
        raise forbidden()
    return project


def get_task(ctx: Ctx, task_id: str | int) -> Task:
    task = ctx.db.tasks.get(int_id(task_id))
    if task is None:
        raise ApiError(404, ctx.profile.not_found("Task"))
    if not can_view_task(ctx.db, ctx.user, task):
        raise forbidden()
    return task


def get_job(ctx: Ctx, job_id: str | int) -> Job:
    job = ctx.db.jobs.get(int_id(job_id))
    if job is None:
        raise ApiError(404, ctx.profile.not_found("Job"))
    if not can_view_job(ctx.db, ctx.user, job):
        raise forbidden()
    return job


def get_label(ctx: Ctx, label_id: str | int) -> Label:
    db = ctx.db
    label = db.labels.get(int_id(label_id))
    if label is None:
        raise ApiError(404, ctx.profile.not_found("Label"))
    if label.project_id is not None:
        visible = can_view_project(db, ctx.user, db.projects[label.project_id])
    else:
        visible = can_view_task(db, ctx.user, db.tasks[label.task_id])
    if not visible:
        raise forbidden()
    return label


def username_of(ctx: Ctx, user_id: int | None) -> str | None:
    """The username of a user id (for ``assignee``/``owner`` filters), or None."""
    user = ctx.db.users.get(user_id) if user_id is not None else None
    return user.username if user else None


def user_id_field(ctx: Ctx, data: dict, name: str) -> int | None:
    """A user-id field of a request body (``owner_id``, ``assignee_id``), DRF's errors."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request({name: [f"Incorrect type. Expected pk value, received {type(value).__name__}."]})
    if value not in ctx.db.users:
        raise bad_request({name: [f'Invalid pk "{value}" - object does not exist.']})
    return value
