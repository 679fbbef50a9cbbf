"""The bridge runs on the installed cvat-sdk against the CVAT version that SDK is for, and
says clearly what is wrong when SDK and server (or credentials) do not match."""

from __future__ import annotations

import cvat_sdk
import pytest

from cvat_bridge.client import CvatError, connect, sdk_version
from tests.bridge_support import FAKE_VERSION, SDK_IS_217, serve, settings_for
from tests.fake_cvat import FakeCvat


@pytest.fixture
def fake():
    yield from serve()


def test_the_fake_server_follows_the_installed_sdk(fake):
    assert FAKE_VERSION == ("2.17" if cvat_sdk.__version__.startswith("2.17.") else "2.54")
    assert sdk_version() == tuple(int(v) for v in cvat_sdk.__version__.split(".")[:2])
    client = connect(settings_for(fake))
    assert client.sdk.get_server_version().base_version.startswith(FAKE_VERSION)
    assert client.sdk.users.retrieve_current_user().username == "admin"


def test_a_mismatch_is_a_clear_error(fake):
    if SDK_IS_217:
        # cvat-sdk 2.17 has no personal access tokens (CVAT 2.17 neither)
        with pytest.raises(CvatError, match=r"personal access tokens need cvat-sdk >= 2\.48"):
            connect(settings_for(fake, username=None, password=None, access_token="x" * 40))
        return
    # a newer SDK cannot parse the answers of a CVAT 2.17 server (protocol §5)
    with FakeCvat("2.17") as old, pytest.raises(CvatError, match=r"cvat-sdk \(2\.\d+\) cannot parse the server's"):
        connect(settings_for(old))
