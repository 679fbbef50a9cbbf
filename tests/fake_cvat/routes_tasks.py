"""Tasks: create, list, retrieve, update, delete."""

from __future__ import annotations

from tests.fake_cvat.auth import can_view_project, can_view_task, forbidden, is_task_staff
from tests.fake_cvat.labels import create_labels, patch_labels
from tests.fake_cvat.listing import Field, ListSpec, list_response
from tests.fake_cvat.lookup import get_task, user_id_field, username_of
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.serializers import task_json, task_status
from tests.fake_cvat.state import Task
from tests.fake_cvat.web import Ctx, Response, Router, bad_request, json_response


def tasks_spec(ctx: Ctx) -> ListSpec:
    db = ctx.db

    def project_name(task: Task):
        project = db.projects.get(task.project_id) if task.project_id is not None else None
        return project.name if project else None

    return ListSpec(
        fields={
            "id": Field("int", lambda t: t.id),
            "name": Field("str", lambda t: t.name),
            "project_id": Field("int", lambda t: t.project_id),
            "project_name": Field("str", project_name),
            "owner": Field("str", lambda t: username_of(ctx, t.owner_id)),
            "assignee": Field("str", lambda t: username_of(ctx, t.assignee_id)),
            "status": Field("choice", lambda t: task_status(ctx, t), ("annotation", "validation", "completed")),
            "mode": Field("str", lambda t: "annotation" if t.data is not None else ""),
            "dimension": Field("choice", lambda t: "2d", ("2d", "3d")),
            "subset": Field("str", lambda t: t.subset),
            "updated_date": Field("datetime", lambda t: t.updated_date),
            "created_date": Field("datetime", lambda t: t.created_date),
        },
        simple_filters=(
            "id",
            "name",
            "project_id",
            "project_name",
            "owner",
            "assignee",
            "status",
            "mode",
            "dimension",
            "subset",
        ),
        search=("name", "project_name", "owner", "assignee", "status", "mode", "subset"),
    )


def _int_field(data: dict, name: str, *, minimum: int = 0) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise bad_request({name: ["A valid integer is required."]})
    return value


def task_create(ctx: Ctx) -> Response:
    data = ctx.json_object()
    if not str(data.get("name") or "").strip():
        raise bad_request({"name": ["This field is required."]})
    db = ctx.db
    project_id = _int_field(data, "project_id")
    if project_id is not None:
        project = db.projects.get(project_id)
        if project is None:
            raise bad_request({"project_id": [f"The specified project #{project_id} does not exist."]})
        if not can_view_project(db, ctx.user, project):
            raise forbidden()
        if data.get("labels"):
            raise bad_request({"labels": ["Can't set labels to a task inside a project."]})
    now = db.now()
    task = Task(
        id=db.next_id("task"),
        name=str(data["name"]),
        owner_id=user_id_field(ctx, data, "owner_id") or ctx.user.id,
        created_date=now,
        updated_date=now,
        project_id=project_id,
        assignee_id=user_id_field(ctx, data, "assignee_id"),
        bug_tracker=str(data.get("bug_tracker") or ""),
        subset=str(data.get("subset") or ""),
        segment_size=_int_field(data, "segment_size") or 0,
        overlap=_int_field(data, "overlap"),
    )
    if project_id is None:
        create_labels(db, data.get("labels"), task_id=task.id)
    db.tasks[task.id] = task
    body = task_json(ctx, task)
    return json_response(body, 201, [("Location", body["url"])])


def task_list(ctx: Ctx) -> Response:
    db = ctx.db
    visible = [t for t in db.tasks.values() if can_view_task(db, ctx.user, t)]
    return list_response(ctx, visible, tasks_spec(ctx), lambda t: task_json(ctx, t))


def task_retrieve(ctx: Ctx, task_id: str) -> Response:
    return json_response(task_json(ctx, get_task(ctx, task_id)))


def task_update(ctx: Ctx, task_id: str) -> Response:
    task = get_task(ctx, task_id)
    db = ctx.db
    if not is_task_staff(db, ctx.user, task):
        raise forbidden()
    data = ctx.json_object()
    for name in ("name", "bug_tracker", "subset"):
        if name in data:
            setattr(task, name, str(data[name] or ""))
    if "assignee_id" in data:
        assignee = user_id_field(ctx, data, "assignee_id")
        if assignee != task.assignee_id:
            task.assignee_id = assignee
            task.assignee_updated_date = db.now()
    if "labels" in data:
        if task.project_id is not None:
            raise bad_request({"labels": ["Can't set labels to a task inside a project."]})
        patch_labels(db, data["labels"], db.owner_labels(task_id=task.id), project_id=None, task_id=task.id)
    if "project_id" in data and data["project_id"] != task.project_id:
        raise bad_request({"project_id": ["Moving tasks between projects is not supported by the fake CVAT."]})
    db.touch(task)
    return json_response(task_json(ctx, task))


def task_delete(ctx: Ctx, task_id: str) -> Response:
    task = get_task(ctx, task_id)
    if not is_task_staff(ctx.db, ctx.user, task):
        raise forbidden()
    ctx.db.remove_task(task)
    return Response(204)


def register_routes(router: Router, profile: VersionProfile) -> None:
    router.add(r"/api/tasks", {"GET": task_list, "POST": task_create})
    router.add(
        r"/api/tasks/(?P<task_id>\d+)",
        {"GET": task_retrieve, "PATCH": task_update, "DELETE": task_delete},
    )
