"""Jobs: list (filters, JSON-logic, search, sort, pages), retrieve, PATCH stage/state/assignee."""

from __future__ import annotations

from tests.fake_cvat.auth import can_view_job
from tests.fake_cvat.listing import Field, ListSpec, list_response, paginate
from tests.fake_cvat.lookup import get_job, username_of
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.serializers import job_json
from tests.fake_cvat.state import Job
from tests.fake_cvat.web import Ctx, Response, Router, bad_request, json_response, server_error

STAGES = ("annotation", "validation", "acceptance")
STATES = ("new", "in progress", "completed", "rejected")


def jobs_spec(ctx: Ctx) -> ListSpec:
    db = ctx.db

    def task_name(job: Job) -> str:
        return db.tasks[job.task_id].name

    def project_name(job: Job) -> str | None:
        project_id = db.tasks[job.task_id].project_id
        return db.projects[project_id].name if project_id in db.projects else None

    return ListSpec(
        fields={
            "id": Field("int", lambda j: j.id),
            "task_id": Field("int", lambda j: j.task_id),
            "project_id": Field("int", lambda j: db.tasks[j.task_id].project_id),
            "task_name": Field("str", task_name),
            "project_name": Field("str", project_name),
            "assignee": Field("str", lambda j: username_of(ctx, j.assignee_id)),
            "stage": Field("choice", lambda j: j.stage, STAGES),
            "state": Field("choice", lambda j: j.state, STATES),
            "type": Field("choice", lambda j: j.type, ctx.profile.job_types),
            "dimension": Field("choice", lambda j: "2d", ("2d", "3d")),
            "start_frame": Field("int", lambda j: j.start_frame),
            "stop_frame": Field("int", lambda j: j.stop_frame),
            "frame_count": Field("int", lambda j: j.frame_count),
            "created_date": Field("datetime", lambda j: j.created_date),
            "updated_date": Field("datetime", lambda j: j.updated_date),
            "assignee_updated_date": Field("datetime", lambda j: j.assignee_updated_date),
            "parent_job_id": Field("int", lambda j: None),
        },
        simple_filters=(
            "id",
            "task_id",
            "project_id",
            "task_name",
            "project_name",
            "assignee",
            "stage",
            "state",
            "type",
            "dimension",
            "parent_job_id",
        ),
        search=("task_name", "project_name", "assignee", "state", "stage"),
    )


def job_list(ctx: Ctx) -> Response:
    db = ctx.db
    visible = [job for job in db.jobs.values() if can_view_job(db, ctx.user, job)]
    return list_response(ctx, visible, jobs_spec(ctx), lambda job: job_json(ctx, job))


def job_retrieve(ctx: Ctx, job_id: str) -> Response:
    return json_response(job_json(ctx, get_job(ctx, job_id)))


def _choice_error(name: str, value) -> None:
    raise bad_request({name: [f'"{value}" is not a valid choice.']})


def job_update(ctx: Ctx, job_id: str) -> Response:
    """PATCH a job. Changing ``stage`` without ``state`` resets the state to ``new``.

    As recorded on both servers: stage/state changes also touch the task and project
    ``updated_date``; an assignee-only change touches the job only; an unknown assignee id
    is Django's 500 page.
    """
    job = get_job(ctx, job_id)
    db = ctx.db
    data = ctx.json_object()
    if "stage" in data and data["stage"] not in STAGES:
        _choice_error("stage", data["stage"])
    if "state" in data and data["state"] not in STATES:
        _choice_error("state", data["state"])
    if "assignee" in data:
        assignee = data["assignee"]
        if assignee is not None and (not isinstance(assignee, int) or isinstance(assignee, bool)):
            raise bad_request({"assignee": [f"Incorrect type. Expected pk value, received {type(assignee).__name__}."]})
        if assignee is not None and assignee not in db.users:
            raise server_error()
    status_changed = False
    if "stage" in data and data["stage"] != job.stage:
        job.stage = data["stage"]
        if "state" not in data:
            job.state = "new"
        status_changed = True
    if "state" in data and data["state"] != job.state:
        job.state = data["state"]
        status_changed = True
    if "assignee" in data and data["assignee"] != job.assignee_id:
        job.assignee_id = data["assignee"]
        job.assignee_updated_date = db.now()
    task = db.tasks[job.task_id]
    if status_changed:
        db.touch(task, [job])
    else:
        job.updated_date = db.now()
    return json_response(job_json(ctx, job))


def issues_list(ctx: Ctx) -> Response:
    job_id = ctx.q("job_id")
    if job_id is not None and job_id.isdigit():
        get_job(ctx, job_id)
    return paginate(ctx, [], lambda issue: issue)


def register_routes(router: Router, profile: VersionProfile) -> None:
    router.add(r"/api/jobs", {"GET": job_list})
    router.add(r"/api/jobs/(?P<job_id>\d+)", {"GET": job_retrieve, "PATCH": job_update})
    router.add(r"/api/issues", {"GET": issues_list})
