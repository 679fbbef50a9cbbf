"""Background requests (``/api/requests``): task creation and annotation import.

The work itself is done when the request is created; polling replays the states the real
server goes through (per version) before showing the outcome, so the SDK's polling loop
runs as it does against CVAT. ``FakeCvat(instant_requests=True)`` skips the intermediate
states.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import unquote

from tests.fake_cvat.listing import Field, ListSpec, list_response
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.serializers import request_json
from tests.fake_cvat.state import BackgroundRequest, Task
from tests.fake_cvat.web import HTML, ApiError, Ctx, Response, Router, json_response

_EXPIRY = {"create:task": timedelta(minutes=8, seconds=20), "import:annotations": timedelta(hours=1)}


def start_request(
    ctx: Ctx,
    *,
    action: str,
    type_: str,
    task: Task,
    subresource: str | None = None,
    polls: list[tuple[str, float]] | None = None,
    job_id: int | None = None,
    fmt: str | None = None,
) -> BackgroundRequest:
    """Register a request on ``task``; the caller sets its outcome."""
    db = ctx.db
    rq_id = ctx.profile.rq_id(action, task.id, subresource=subresource)
    rq = BackgroundRequest(
        id=rq_id,
        type=type_,
        target="task",
        owner_id=ctx.user.id,
        created_date=db.now(),
        task_id=task.id,
        project_id=task.project_id,
        job_id=job_id,
        format=fmt,
        polls=[] if ctx.server.instant_requests else list(polls or []),
    )
    db.requests.pop(rq_id, None)  # a new request with the same id replaces the old one
    db.requests[rq_id] = rq
    return rq


def finish(ctx: Ctx, rq: BackgroundRequest, *, failed: str | None = None, progress: float = 0.0) -> None:
    """Set the outcome a poll shows once the intermediate states are replayed."""
    rq.outcome_status = "failed" if failed else "finished"
    rq.outcome_message = failed or ""
    rq.outcome_progress = progress


def _current(ctx: Ctx, rq: BackgroundRequest, *, advance: bool) -> dict:
    db = ctx.db
    if rq.poll_index < len(rq.polls):
        message, progress = rq.polls[rq.poll_index]
        if rq.started_date is None:
            rq.started_date = db.now()
        if advance:
            rq.poll_index += 1
        return request_json(ctx, rq, "started", message, progress)
    if rq.finished_date is None:
        if rq.started_date is None:
            rq.started_date = db.now()
        rq.finished_date = db.now()
        rq.expiry_date = rq.finished_date + _EXPIRY.get(rq.type, timedelta(hours=1))
    return request_json(ctx, rq, rq.outcome_status, rq.outcome_message, rq.outcome_progress)


def _visible(ctx: Ctx, rq: BackgroundRequest) -> bool:
    return ctx.user.is_admin or rq.owner_id == ctx.user.id


def request_retrieve(ctx: Ctx, rq_id: str) -> Response:
    rq = ctx.db.requests.get(unquote(rq_id))
    if rq is None or not _visible(ctx, rq):
        raise ApiError(404, ctx.profile.request_not_found(unquote(rq_id)), content_type=HTML)
    return json_response(_current(ctx, rq, advance=True))


def _action(rq: BackgroundRequest) -> str:
    return rq.type.split(":", 1)[0]


REQUESTS_SPEC = ListSpec(
    fields={
        "id": Field("str", lambda rq: rq.id),
        "created_date": Field("datetime", lambda rq: rq.created_date),
        "task_id": Field("int", lambda rq: rq.task_id),
        "job_id": Field("int", lambda rq: rq.job_id),
        "project_id": Field("int", lambda rq: rq.project_id),
        "action": Field("choice", _action, ("create", "import", "export")),
        "target": Field("choice", lambda rq: rq.target, ("project", "task", "job")),
        "subresource": Field("str", lambda rq: rq.type.split(":", 1)[1] if ":" in rq.type else None),
        "format": Field("str", lambda rq: rq.format),
    },
    simple_filters=("task_id", "job_id", "project_id", "action", "target", "subresource", "format"),
    default_sort=("-created_date",),
)


def request_list(ctx: Ctx) -> Response:
    mine = [rq for rq in ctx.db.requests.values() if _visible(ctx, rq)]
    return list_response(ctx, mine, REQUESTS_SPEC, lambda rq: _current(ctx, rq, advance=False))


def register_routes(router: Router, profile: VersionProfile) -> None:
    router.add(r"/api/requests", {"GET": request_list})
    router.add(r"/api/requests/(?P<rq_id>[^/]+)", {"GET": request_retrieve})
