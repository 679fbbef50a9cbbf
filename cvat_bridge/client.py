"""Connecting to CVAT through cvat-sdk: settings, authentication, transport policy.

Resolution order for settings: explicit argument → environment (``CVAT_URL``,
``CVAT_ACCESS_TOKEN`` or ``CVAT_USERNAME``/``CVAT_PASSWORD``, ``CVAT_ORG``,
``CVAT_INSECURE``, ``CVAT_CA_CERT``, ``CVAT_RETRIES``, ``CVAT_TIMEOUT`` = read timeout in
seconds) → default. Secrets are kept out of ``repr``, logs, exceptions and the
store; a URL carrying credentials (``https://user:pw@host``) is refused.

A URL without a scheme (``cvat.example.com:8443``) means ``https://`` (as cvat-cli and
cvat-sdk >= 2.2x read it; cvat-sdk 2.17 probed https then http, which could silently fall back
to plain HTTP). Errors about the URL quote it as the user typed it.

Transport policy (`cvat_bridge.transport`, installed on the SDK's urllib3 pool, used by every
SDK request including uploads):
- the one retry layer: idempotent calls (GET, HEAD, PUT, DELETE, OPTIONS) are retried
  ``retries`` times (``CVAT_RETRIES``) with exponential ``backoff`` on 500/502/503/504,
  timeouts and dropped connections; POST and PATCH are not retried blindly (the bridge
  reconciles them explicitly: `cvat_bridge.tasks.ensure_task`,
  `cvat_bridge.annotations.upload_job_shapes`; `cvat_bridge.jobs.set_job` and the login are
  idempotent by meaning and marked so);
- every call has a connect and read timeout (the SDK itself passes none);
- TLS verification is on unless the user turns it off (``--insecure`` / ``CVAT_INSECURE=1``);
  the certificates trusted are those of a CA bundle (a PEM file, or a directory of hashed
  certificates) from ``--ca-cert`` / ``CVAT_CA_CERT`` / ``REQUESTS_CA_BUNDLE`` /
  ``SSL_CERT_FILE`` (the first one set), else the system's.

`connect` gives a `CvatSession`: the only handle the rest of the project holds on a server.
The cvat-sdk client inside it is for the bridge's own modules; `sync` gets the bridge's
frozen values (`cvat_bridge.tasks.TaskInfo`, `TaskMeta`, `LabelInfo`,
`cvat_bridge.jobs.JobInfo`, `cvat_bridge.annotations.JobAnnotations`), never SDK objects.

Works with cvat-sdk 2.17 (CVAT 2.17 servers: username/password only) and 2.8x (also
personal access tokens, CVAT >= 2.48). Pin the SDK to the server's minor version.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cvat_bridge import transport
from cvat_bridge.api import CvatError, call

if TYPE_CHECKING:
    from cvat_sdk import Client

__all__ = [
    "CA_CERT_VARIABLES",
    "CvatError",
    "CvatSession",
    "CvatSettings",
    "connect",
    "normalize_url",
    "public_url",
    "sdk_version",
]

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}

CA_CERT_VARIABLES = ("CVAT_CA_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
"""Environment variables naming a CA bundle, in the order they are looked at (after ``--ca-cert``)."""


def normalize_url(url: str) -> str:
    """``url`` stripped, with ``https://`` in front when it has no scheme (``host[:port][/path]``)."""
    text = url.strip()
    return text if "://" in text else f"https://{text}"


def _as_typed(url: str) -> str:
    """What the user typed, for a message: without user info, query and fragment (they may
    hold secrets)."""
    text = url.strip().split("?", 1)[0].split("#", 1)[0]
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/@]*@", r"\1", text)


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to log and to store (no scheme
    means ``https://``; an IPv6 host keeps its brackets)."""
    parts = urlsplit(normalize_url(url))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme or "https", host, parts.path.rstrip("/"), "", ""))


def sdk_version() -> tuple[int, int]:
    """The installed cvat-sdk's (major, minor)."""
    import cvat_sdk

    match = re.match(r"(\d+)\.(\d+)", cvat_sdk.__version__)
    if not match:
        raise CvatError(f"cannot read the cvat-sdk version {cvat_sdk.__version__!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class CvatSettings:
    """Where and how to reach a CVAT server. ``access_token`` and ``password`` never appear
    in ``repr``; use `server` (no credentials) in messages."""

    url: str
    access_token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    organization: str | None = None
    verify_tls: bool = True
    ca_cert: str | None = None
    """A CA bundle to trust instead of the system's: a PEM file, or a directory of hashed
    certificates (``c_rehash``)."""
    ca_cert_source: str = "ca_cert"
    """Where ``ca_cert`` came from (``--ca-cert``, ``CVAT_CA_CERT``, …), for messages."""
    url_as_typed: str = field(default="", init=False, compare=False)
    """``url`` as given, before `normalize_url` (for messages)."""
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    retries: int = 5
    backoff: float = 0.5
    status_check_period: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "url_as_typed", self.url or "")
        object.__setattr__(self, "url", _checked_url(self.url or ""))
        if self.ca_cert is not None and self.verify_tls:
            _check_ca_cert(self.ca_cert, self.ca_cert_source)
        for name in ("connect_timeout", "read_timeout", "status_check_period"):
            if not getattr(self, name) > 0:
                raise CvatError(f"{name} must be positive, got {getattr(self, name)}")
        if self.retries < 0 or self.backoff < 0:
            raise CvatError("retries and backoff must not be negative")

    @classmethod
    def from_env(cls, **overrides: Any) -> CvatSettings:
        """Settings from explicit values (None = not given), else ``CVAT_*`` variables; the
        CA bundle from ``ca_cert``, else the first of `CA_CERT_VARIABLES` that is set."""
        env = os.environ
        values: dict[str, Any] = {
            "url": env.get("CVAT_URL") or None,
            "access_token": env.get("CVAT_ACCESS_TOKEN") or None,
            "username": env.get("CVAT_USERNAME") or None,
            "password": env.get("CVAT_PASSWORD") or None,
            "organization": env.get("CVAT_ORG") or None,
            "verify_tls": env.get("CVAT_INSECURE", "").strip().lower() not in _TRUE,
        }
        if overrides.get("ca_cert") is None:
            source = next((name for name in CA_CERT_VARIABLES if env.get(name, "").strip()), None)
            if source is not None:
                values.update(ca_cert=env[source].strip(), ca_cert_source=source)
        for name, key, kind in (("CVAT_RETRIES", "retries", int), ("CVAT_TIMEOUT", "read_timeout", float)):
            text = env.get(name, "").strip()
            if text:
                try:
                    values[key] = kind(text)
                except ValueError:
                    raise CvatError(f"{name} must be a number, got {text!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.get("url"):
            raise CvatError("no CVAT server: set CVAT_URL or pass --url")
        if not values.get("access_token") and not (values.get("username") and values.get("password")):
            raise CvatError("no CVAT credentials: set CVAT_ACCESS_TOKEN, or CVAT_USERNAME and CVAT_PASSWORD")
        return cls(**values)

    @property
    def server(self) -> str:
        """The server URL without credentials, query or trailing slash."""
        return public_url(self.url)


def _checked_url(typed: str) -> str:
    """The server URL for what the user typed (`normalize_url`); `CvatError` quoting it when
    it is not ``[http(s)://]host[:port][/path]`` (credentials are refused, never quoted)."""
    url = normalize_url(typed)
    expected = "CVAT URL must be [http(s)://]host[:port], e.g. https://cvat.example.com or http://127.0.0.1:8080"
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [IPv6]
        raise CvatError(f"{expected}; got {_as_typed(typed)!r}") from None
    if parts.username is not None or parts.password is not None:
        raise CvatError(
            "the CVAT URL must not carry credentials (user:password@); "
            "set CVAT_USERNAME/CVAT_PASSWORD or CVAT_ACCESS_TOKEN instead"
        )
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or over 65535
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise CvatError(f"{expected}; got {_as_typed(typed)!r}")
    return url


def _check_ca_cert(path: str, source: str) -> None:
    """`CvatError` naming ``source`` unless ``path`` is a readable CA bundle (file or directory)."""
    if os.path.isdir(path):
        return  # OpenSSL reads a hashed directory lazily, certificate by certificate
    if not os.path.isfile(path):
        raise CvatError(f"{source} {path!r}: no such file (a PEM file of CA certificates is expected)")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as err:
        raise CvatError(f"{source} {path!r}: not a PEM file of CA certificates ({err})") from None


def _login(client: Any, settings: CvatSettings, server: str) -> None:
    if settings.access_token:
        try:
            from cvat_sdk.core.client import AccessTokenCredentials
        except ImportError:
            raise CvatError(
                f"{server}: personal access tokens need cvat-sdk >= 2.48 and CVAT >= 2.48 "
                "(this is cvat-sdk " + ".".join(map(str, sdk_version())) + "); use CVAT_USERNAME/CVAT_PASSWORD"
            ) from None
        client.login(AccessTokenCredentials(settings.access_token))
        return
    username = settings.username or ""
    # a lost answer to the login POST only leaves an unused session behind: safe to repeat
    call(f"log in as {username!r}", server, client.login, (username, settings.password or ""), repeatable=True)


@dataclass(frozen=True)
class CvatSession:
    """A logged-in connection to one CVAT server: what `connect` gives and every bridge
    function takes.

    ``sdk`` is the cvat-sdk client, with the transport policy installed; only the bridge's
    modules (and tests that play a CVAT user) reach into it.
    """

    sdk: Client = field(repr=False)
    settings: CvatSettings
    server_version: str
    """The server's version as it reports it (``2.54.1``)."""
    username: str
    """The user this session acts as."""

    @property
    def host(self) -> str:
        """The URL the SDK sends requests to (no credentials): for messages."""
        return str(self.sdk.api_map.host)

    @property
    def server(self) -> str:
        """The server's public URL (`public_url`): what the store records tasks under."""
        return public_url(self.host)


def connect(settings: CvatSettings) -> CvatSession:
    """A logged-in `CvatSession` with the transport policy installed.

    Errors are `CvatError` with the server URL (never credentials) and the reason.
    """
    from cvat_sdk import Client, Config

    server = settings.server
    config = Config(verify_ssl=settings.verify_tls, status_check_period=settings.status_check_period)
    try:
        client = Client(settings.url, config=config, check_server_version=False)
    except Exception as err:  # noqa: BLE001 - InvalidHostException and friends, without secrets
        raise CvatError(f"{server}: invalid CVAT URL: {type(err).__name__}") from None
    transport.install(client, settings)
    try:
        version = call("read the server version", server, client.get_server_version)
    except TypeError as err:
        # a cvat-sdk newer than the server fails while parsing its answers (protocol §5)
        raise CvatError(
            f"{server}: this cvat-sdk ({'.'.join(map(str, sdk_version()))}) cannot parse the server's answers: "
            f"install the cvat-sdk of the server's minor version ({err})"
        ) from None
    except CvatError as err:
        if err.status is None and "TLS handshake failed" in str(err) and "://" not in settings.url_as_typed:
            raise CvatError(
                f"{err}; the URL {_as_typed(settings.url_as_typed)!r} has no scheme, so https:// was assumed: "
                f"write http://{_as_typed(settings.url_as_typed)} for a plain-HTTP server"
            ) from None
        raise
    _login(client, settings, server)
    if settings.organization is not None:
        client.organization_slug = settings.organization
    user = call("read the current user", server, client.users.retrieve_current_user)
    log.info("connected to %s (CVAT %s, cvat-sdk %s) as %s", server, version,
             ".".join(map(str, sdk_version())), user.username)
    return CvatSession(sdk=client, settings=settings, server_version=str(version), username=str(user.username))
