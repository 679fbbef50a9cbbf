"""The route table of one fake server (what exists depends on the version profile)."""

from __future__ import annotations

from tests.fake_cvat import (
    routes_annotations,
    routes_auth,
    routes_data,
    routes_jobs,
    routes_projects,
    routes_requests,
    routes_tasks,
    routes_upload,
)
from tests.fake_cvat.profiles import VersionProfile
from tests.fake_cvat.web import Router

_MODULES = (
    routes_auth,
    routes_projects,
    routes_tasks,
    routes_upload,
    routes_data,
    routes_jobs,
    routes_annotations,
    routes_requests,
)


def build_router(profile: VersionProfile) -> Router:
    """All routes for ``profile``."""
    router = Router()
    for module in _MODULES:
        module.register_routes(router, profile)
    return router
