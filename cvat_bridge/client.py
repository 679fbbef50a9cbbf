"""Connecting to CVAT through cvat-sdk: settings, authentication, transport policy.

Resolution order for settings: explicit argument → environment (``CVAT_URL``,
``CVAT_ACCESS_TOKEN`` or ``CVAT_USERNAME``/``CVAT_PASSWORD``, ``CVAT_ORG``) → default.
Secrets are kept out of ``repr``, logs, exceptions and the store.

Transport policy (installed on the SDK's urllib3 pool):
- idempotent calls (GET, HEAD, PUT, DELETE, OPTIONS) are retried with exponential backoff on
  500/502/503/504, timeouts and dropped connections; POST and PATCH are never retried by the
  transport (the bridge reconciles them explicitly);
- every call has a connect and read timeout (the SDK itself passes none);
- TLS verification is on unless the user turns it off (``--insecure`` / ``CVAT_INSECURE=1``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cvat_bridge.api import short_body

__all__ = ["CvatError", "CvatSettings", "connect", "public_url", "sdk_version"]

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = (500, 502, 503, 504)


class CvatError(RuntimeError):
    """A CVAT call failed; the message names the server (without credentials) and the call."""


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to log and to store."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme or "https", host, parts.path.rstrip("/"), "", ""))


def sdk_version() -> tuple[int, int]:
    import cvat_sdk

    match = re.match(r"(\d+)\.(\d+)", cvat_sdk.__version__)
    if not match:
        raise CvatError(f"cannot read the cvat-sdk version {cvat_sdk.__version__!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class CvatSettings:
    url: str
    access_token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    organization: str | None = None
    verify_tls: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    retries: int = 5
    backoff: float = 0.5

    @classmethod
    def from_env(cls, **overrides: Any) -> CvatSettings:
        """Settings from explicit values, else ``CVAT_*`` variables."""
        env = os.environ
        values: dict[str, Any] = {
            "url": env.get("CVAT_URL"),
            "access_token": env.get("CVAT_ACCESS_TOKEN") or None,
            "username": env.get("CVAT_USERNAME") or None,
            "password": env.get("CVAT_PASSWORD") or None,
            "organization": env.get("CVAT_ORG") or None,
            "verify_tls": env.get("CVAT_INSECURE", "") not in {"1", "true", "yes"},
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.get("url"):
            raise CvatError("no CVAT server: set CVAT_URL or pass --url")
        if not values.get("access_token") and not (values.get("username") and values.get("password")):
            raise CvatError(
                "no CVAT credentials: set CVAT_ACCESS_TOKEN, or CVAT_USERNAME and CVAT_PASSWORD"
            )
        return cls(**values)

    @property
    def server(self) -> str:
        return public_url(self.url)


def _install_transport_policy(client: Any, settings: CvatSettings) -> None:
    """Retries for idempotent calls, and timeouts, on the SDK's urllib3 pool manager."""
    import urllib3

    retry = urllib3.util.Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        backoff_factor=settings.backoff,
        backoff_max=10.0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=IDEMPOTENT_METHODS,
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
    rest = client.api_client.rest_client
    manager = rest.pool_manager
    manager.connection_pool_kw["retries"] = retry
    manager.clear()
    original = manager.request

    def request_with_timeout(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeout
        return original(method, url, *args, **kwargs)

    manager.request = request_with_timeout  # the SDK passes timeout=None on every call


def connect(settings: CvatSettings) -> Any:
    """A logged-in ``cvat_sdk.Client`` with the transport policy installed.

    Errors are ``CvatError`` with the server URL (never credentials) and the reason.
    """
    from cvat_sdk import Client, Config
    from cvat_sdk.api_client.exceptions import ApiException
    import urllib3

    server = settings.server
    try:
        client = Client(
            settings.url,
            config=Config(verify_ssl=settings.verify_tls),
            check_server_version=False,
        )
        _install_transport_policy(client, settings)
        client.check_server_version()
        if settings.access_token:
            try:
                from cvat_sdk.core.client import AccessTokenCredentials
            except ImportError as err:
                raise CvatError(
                    f"{server}: personal access tokens need cvat-sdk >= 2.48 and a server >= 2.48; "
                    "use CVAT_USERNAME/CVAT_PASSWORD"
                ) from err
            client.login(AccessTokenCredentials(settings.access_token))
        else:
            client.login((settings.username or "", settings.password or ""))
        if settings.organization is not None:
            client.organization_slug = settings.organization
        client.users.retrieve_current_user()
    except CvatError:
        raise
    except ApiException as err:
        raise CvatError(f"{server}: {err.status} {err.reason}: {short_body(err.body)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise CvatError(f"{server}: cannot connect: {type(err).__name__}") from None
    except TypeError as err:
        # cvat-sdk newer than the server fails while parsing its answers (protocol §5)
        raise CvatError(
            f"{server}: this cvat-sdk ({'.'.join(map(str, sdk_version()))}) does not match the server "
            f"version: install the cvat-sdk of the server's minor version ({err})"
        ) from None
    log.info("connected to %s", server)
    return client


