"""pytest fixtures: a started fake CVAT with an admin user.

``fake_cvat``: version from ``@pytest.mark.parametrize("fake_cvat", ["2.17"], indirect=True)``,
else ``$AUTOLABEL_FAKE_CVAT_VERSION``, else ``2.54``. ``fake_cvat_217``: always 2.17.
Both yield a started ``FakeCvat`` (URL at ``.url``) with the admin user
``ADMIN_USERNAME``/``ADMIN_PASSWORD``, and fail the test at teardown if the fake crashed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fake_cvat.server import FakeCvat

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-1"
VERSION_ENV = "AUTOLABEL_FAKE_CVAT_VERSION"
DEFAULT_VERSION = "2.54"


def _serve(version: str) -> Iterator[FakeCvat]:
    server = FakeCvat(version=version)
    server.add_user(ADMIN_USERNAME, ADMIN_PASSWORD, is_admin=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    server.raise_errors()


@pytest.fixture
def fake_cvat(request: pytest.FixtureRequest) -> Iterator[FakeCvat]:
    """A started fake CVAT (version: fixture param, then env, then 2.54) with an admin user."""
    version = getattr(request, "param", None) or os.environ.get(VERSION_ENV) or DEFAULT_VERSION
    yield from _serve(version)


@pytest.fixture
def fake_cvat_217() -> Iterator[FakeCvat]:
    """A started fake CVAT 2.17 with an admin user."""
    yield from _serve("2.17")
