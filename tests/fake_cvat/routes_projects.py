"""Projects and labels."""

from __future__ import annotations

from tests.fake_cvat.auth import can_view_project, can_view_task, forbidden, is_project_staff
from tests.fake_cvat.labels import create_labels, delete_label, patch_labels
from tests.fake_cvat.listing import Field, ListSpec, list_response
from tests.fake_cvat.lookup import get_job, get_label, get_project, get_task, user_id_field, username_of
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.serializers import label_json, project_json
from tests.fake_cvat.state import Project
from tests.fake_cvat.web import ApiError, Ctx, Response, Router, bad_request, json_response


def projects_spec(ctx: Ctx) -> ListSpec:
    return ListSpec(
        fields={
            "id": Field("int", lambda p: p.id),
            "name": Field("str", lambda p: p.name),
            "owner": Field("str", lambda p: username_of(ctx, p.owner_id)),
            "assignee": Field("str", lambda p: username_of(ctx, p.assignee_id)),
            "status": Field("choice", lambda p: "annotation", ("annotation", "validation", "completed")),
            "updated_date": Field("datetime", lambda p: p.updated_date),
            "created_date": Field("datetime", lambda p: p.created_date),
        },
        simple_filters=("id", "name", "owner", "assignee", "status"),
        search=("name", "owner", "assignee", "status"),
    )


def project_create(ctx: Ctx) -> Response:
    data = ctx.json_object()
    if not str(data.get("name") or "").strip():
        raise bad_request({"name": ["This field is required."]})
    db = ctx.db
    now = db.now()
    project = Project(
        id=db.next_id("project"),
        name=str(data["name"]),
        owner_id=user_id_field(ctx, data, "owner_id") or ctx.user.id,
        created_date=now,
        updated_date=now,
        assignee_id=user_id_field(ctx, data, "assignee_id"),
        bug_tracker=str(data.get("bug_tracker") or ""),
    )
    create_labels(db, data.get("labels"), project_id=project.id)
    db.projects[project.id] = project
    body = project_json(ctx, project)
    return json_response(body, 201, [("Location", body["url"])])


def project_list(ctx: Ctx) -> Response:
    db = ctx.db
    visible = [p for p in db.projects.values() if can_view_project(db, ctx.user, p)]
    return list_response(ctx, visible, projects_spec(ctx), lambda p: project_json(ctx, p))


def project_retrieve(ctx: Ctx, project_id: str) -> Response:
    return json_response(project_json(ctx, get_project(ctx, project_id)))


def project_update(ctx: Ctx, project_id: str) -> Response:
    project = get_project(ctx, project_id)
    if not is_project_staff(ctx.user, project):
        raise forbidden()
    data = ctx.json_object()
    db = ctx.db
    if "name" in data:
        project.name = str(data["name"])
    if "bug_tracker" in data:
        project.bug_tracker = str(data["bug_tracker"] or "")
    if "assignee_id" in data:
        assignee = user_id_field(ctx, data, "assignee_id")
        if assignee != project.assignee_id:
            project.assignee_id = assignee
            project.assignee_updated_date = db.now()
    if "labels" in data:
        patch_labels(db, data["labels"], db.owner_labels(project_id=project.id), project_id=project.id, task_id=None)
    project.updated_date = db.now()
    return json_response(project_json(ctx, project))


def project_delete(ctx: Ctx, project_id: str) -> Response:
    project = get_project(ctx, project_id)
    if not is_project_staff(ctx.user, project):
        raise forbidden()
    db = ctx.db
    for task in [t for t in db.tasks.values() if t.project_id == project.id]:
        db.remove_task(task)
    for label in db.owner_labels(project_id=project.id):
        delete_label(db, label)
    del db.projects[project.id]
    return Response(204)


LABELS_SPEC = ListSpec(
    fields={
        "id": Field("int", lambda label: label.id),
        "name": Field("str", lambda label: label.name),
        "type": Field("str", lambda label: label.type),
        "color": Field("str", lambda label: label.color),
        "parent_id": Field("int", lambda label: label.parent_id),
    },
    simple_filters=("id", "name", "type", "color", "parent_id"),
    search=("name",),
    default_sort=("id",),
)


def label_list(ctx: Ctx) -> Response:
    db = ctx.db
    owner_filters = {name: ctx.q(name) for name in ("project_id", "task_id", "job_id") if ctx.q(name)}
    for name, value in owner_filters.items():
        if not value.isdigit():
            raise bad_request({name: ["Enter a number."]})
    if "job_id" in owner_filters:
        labels = db.task_labels(db.tasks[get_job(ctx, owner_filters["job_id"]).task_id])
    elif "task_id" in owner_filters:
        labels = db.task_labels(get_task(ctx, owner_filters["task_id"]))
    elif "project_id" in owner_filters:
        labels = db.owner_labels(project_id=get_project(ctx, owner_filters["project_id"]).id)
    else:
        labels = [
            label
            for label in db.labels.values()
            if label.parent_id is None
            and (
                can_view_project(db, ctx.user, db.projects[label.project_id])
                if label.project_id is not None
                else can_view_task(db, ctx.user, db.tasks[label.task_id])
            )
        ]
    return list_response(ctx, labels, LABELS_SPEC, lambda label: label_json(ctx, label))


def label_retrieve(ctx: Ctx, label_id: str) -> Response:
    return json_response(label_json(ctx, get_label(ctx, label_id)))


def label_delete(ctx: Ctx, label_id: str) -> Response:
    label = get_label(ctx, label_id)
    if label.parent_id is not None:
        raise ApiError(400, ["Sublabels cannot be deleted separately"])
    delete_label(ctx.db, label)
    return Response(204)


def register_routes(router: Router, profile: VersionProfile) -> None:
    router.add(r"/api/projects", {"GET": project_list, "POST": project_create})
    router.add(
        r"/api/projects/(?P<project_id>\d+)",
        {"GET": project_retrieve, "PATCH": project_update, "DELETE": project_delete},
    )
    router.add(r"/api/labels", {"GET": label_list})
    router.add(r"/api/labels/(?P<label_id>\d+)", {"GET": label_retrieve, "DELETE": label_delete})
