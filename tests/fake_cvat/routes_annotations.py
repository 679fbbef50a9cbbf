"""``/api/tasks/{id}/annotations`` and ``/api/jobs/{id}/annotations``: GET, PUT, PATCH, DELETE."""

from __future__ import annotations

from tests.fake_cvat import annotations
from tests.fake_cvat.lookup import get_job, get_task
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.web import Ctx, Response, Router, json_response


def _task_scope(ctx: Ctx, task_id: str) -> annotations.Scope:
    return annotations.task_scope(ctx.db, get_task(ctx, task_id))


def _job_scope(ctx: Ctx, job_id: str) -> annotations.Scope:
    return annotations.job_scope(ctx.db, get_job(ctx, job_id))


def _get(scope_of):
    def handler(ctx: Ctx, **ids: str) -> Response:
        return json_response(annotations.read(ctx, scope_of(ctx, *ids.values())))

    return handler


def _put(scope_of):
    def handler(ctx: Ctx, **ids: str) -> Response:
        return json_response(annotations.put(ctx, scope_of(ctx, *ids.values()), ctx.json()))

    return handler


def _patch(scope_of):
    def handler(ctx: Ctx, **ids: str) -> Response:
        scope = scope_of(ctx, *ids.values())
        return json_response(annotations.patch(ctx, scope, ctx.json(), ctx.q("action")))

    return handler


def _delete(scope_of):
    def handler(ctx: Ctx, **ids: str) -> Response:
        annotations.delete_all(ctx, scope_of(ctx, *ids.values()))
        return Response(204)

    return handler


def register_routes(router: Router, profile: VersionProfile) -> None:
    for pattern, scope_of in (
        (r"/api/tasks/(?P<task_id>\d+)/annotations", _task_scope),
        (r"/api/jobs/(?P<job_id>\d+)/annotations", _job_scope),
    ):
        router.add(
            pattern,
            {"GET": _get(scope_of), "PUT": _put(scope_of), "PATCH": _patch(scope_of), "DELETE": _delete(scope_of)},
        )
