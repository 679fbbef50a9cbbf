"""An in-process fake CVAT server (2.17 or 2.54 behaviour) driven by the real cvat-sdk.

    from tests.fake_cvat import FakeCvat, FaultPlan

    with FakeCvat(version="2.54") as server:
        server.add_user("admin", "admin-password-1", is_admin=True)
        client = cvat_sdk.Client(server.url)
        ...

See ``server.FakeCvat`` for the API and ``fixtures`` for the pytest fixtures.
"""

from tests.fake_cvat.faults import FaultPlan
from tests.fake_cvat.server import FakeCvat, FakeCvatError, LoggedRequest

__all__ = ["FakeCvat", "FakeCvatError", "FaultPlan", "LoggedRequest"]
