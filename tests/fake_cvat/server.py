"""The fake CVAT server: a real HTTP server in a thread, with fault injection and a request log."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import struct
import sys
import threading
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Self

from tests.fake_cvat.auth import authenticate, enforce_csrf, enforce_read_only_token, random_key, unauthorized
from tests.fake_cvat.faults import FaultInjector, FaultPlan
from tests.fake_cvat.profiles import PROFILES, VersionProfile
from tests.fake_cvat.routes import build_router
from tests.fake_cvat.state import AccessToken, State, User
from tests.fake_cvat.web import (
    HTML,
    NOT_FOUND_HTML,
    SERVER_ERROR_HTML,
    ApiError,
    Ctx,
    Response,
    empty_response,
)

_PROXY_PAGES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


class FakeCvatError(RuntimeError):
    """Misuse of the fake (unknown version, unknown user, feature absent in this version)."""


class LoggedRequest(NamedTuple):
    """One request as the server saw it. ``status`` is 0 when no answer was sent."""

    method: str
    path: str
    query: str
    status: int
    fault: str | None
    username: str | None


def _fault_page(status: int) -> Response:
    if status == 500:
        return Response(500, SERVER_ERROR_HTML.encode(), HTML)
    title = f"{status} {_PROXY_PAGES[status]}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Response(status, page.encode(), "text/html")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args) -> None:
        """Silence the default stderr logging; the fake keeps its own log."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, not in accept(): a stalled client blocks one thread only

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, add=False)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        fake = self.server.fake
        body = self._read_body()
        target = self.path
        if "://" in target:  # absolute-form request target
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        plan = fake.faults.pick(self.command, path)
        slowed = None
        if plan is not None and plan.kind == "slow":
            fake._stopping.wait(plan.delay)
            plan, slowed = None, "slow"
        if plan is not None and plan.when == "before":
            self._inject(plan, path, query)
            return
        response, username = fake._dispatch(self.command, path, query, self.headers, body)
        if plan is not None:
            self._inject(plan, path, query, username)
            return
        fake._log(LoggedRequest(self.command, path, query, response.status, slowed, username))
        self._write(response)

    def _inject(self, plan: FaultPlan, path: str, query: str, username: str | None = None) -> None:
        fake = self.server.fake
        fake._log(LoggedRequest(self.command, path, query, plan.status, plan.kind, username))
        if plan.status:
            self._write(_fault_page(plan.status))
            return
        if plan.kind == "timeout":
            fake._stopping.wait(plan.delay)
        self.close_connection = True
        try:
            if plan.kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            # headers and body in one write: two small writes meet Nagle + delayed ACK (40 ms)
            self._headers_buffer.append(b"\r\n")
            if self.command != "HEAD" and response.body:
                self._headers_buffer.append(response.body)
            self.flush_headers()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeCvat) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        """Clients hanging up are normal (faults, timeouts); anything else is a fake bug."""
        if not isinstance(sys.exc_info()[1], OSError):
            self.fake.errors.append(traceback.format_exc())


class FakeCvat:
    """An in-process CVAT server for tests, acting as CVAT 2.17 or 2.54.

    ``FakeCvat(version="2.54", faults=None, *, instant_requests=False, shape_score=None,
    share_dir=None, ssl_context=None)``; with an ``ssl_context`` (server side, holding its
    certificate) it speaks HTTPS and ``url`` starts with ``https://``. Start it with ``start()`` or ``with FakeCvat() as server:``; its base
    URL is ``server.url``. State lives in ``server.db`` (``tests.fake_cvat.state.State``);
    every request is in ``server.request_log`` (``server.requests`` gives
    ``(method, path, status)`` tuples); faults served are in ``server.faults.injected``.
    Unexpected exceptions inside the fake (bugs of the fake, not CVAT's scripted 500s) are
    collected in ``server.errors`` and answered with CVAT's 500 page.
    """

    def __init__(
        self,
        version: str = "2.54",
        faults: FaultPlan | Iterable[FaultPlan] | None = None,
        *,
        instant_requests: bool = False,
        shape_score: bool | None = None,
        share_dir: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if version not in PROFILES:
            raise FakeCvatError(f"unknown CVAT version {version!r}; known: {sorted(PROFILES)}")
        profile: VersionProfile = PROFILES[version]
        if shape_score is not None:
            profile = dataclasses.replace(profile, shape_score=shape_score)
        self.version = version
        self.profile = profile
        self.instant_requests = instant_requests
        self.share_dir = share_dir
        self.db = State()
        self.faults = FaultInjector()
        self.faults.set_plans(faults)
        self.request_log: list[LoggedRequest] = []
        self.errors: list[str] = []
        self._router = build_router(profile)
        self._address = (host, port)
        self._ssl_context = ssl_context
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._log_lock = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        """Bind to an ephemeral port and serve in a daemon thread."""
        if self._httpd is not None:
            raise FakeCvatError("FakeCvat already started")
        self._stopping.clear()
        self._httpd = _HttpServer(self._address, self)
        if self._ssl_context is not None:
            self._httpd.socket = self._ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-cvat", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed faults and drop open connections."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._log_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with an ``ssl_context``); every absolute
        URL the fake sends starts with it."""
        if self._httpd is None:
            raise FakeCvatError("FakeCvat is not started")
        host, port = self._httpd.server_address[:2]
        return f"{'https' if self._ssl_context is not None else 'http'}://{host}:{port}"

    # ---- observation -------------------------------------------------------------------
    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request so far (status 0: no answer sent)."""
        with self._log_lock:
            return [(r.method, r.path, r.status) for r in self.request_log]

    def clear_log(self) -> None:
        """Forget the logged requests (faults served stay counted)."""
        with self._log_lock:
            self.request_log.clear()

    def set_faults(self, faults: FaultPlan | Iterable[FaultPlan] | None) -> None:
        """Replace the fault plans at runtime (None stops injecting)."""
        self.faults.set_plans(faults)

    def raise_errors(self) -> None:
        """Raise if the fake itself crashed while answering (a bug in the fake)."""
        if self.errors:
            raise FakeCvatError("the fake CVAT crashed while answering:\n" + "\n".join(self.errors))

    # ---- users and credentials ------------------------------------------------------------
    def add_user(
        self,
        username: str,
        password: str,
        is_admin: bool = False,
        *,
        email: str | None = None,
        first_name: str = "",
        last_name: str = "",
    ) -> User:
        """Create a user (``is_admin`` → CVAT's admin group, superuser and staff)."""
        with self.db.lock:
            if self.db.user_by_name(username) is not None:
                raise FakeCvatError(f"user {username!r} already exists")
            user = User(
                id=self.db.next_id("user"),
                username=username,
                password=password,
                email=email if email is not None else f"{username}@example.com",
                first_name=first_name,
                last_name=last_name,
                is_admin=is_admin,
                date_joined=self.db.now(),
            )
            self.db.users[user.id] = user
            return user

    def _user(self, username: str) -> User:
        user = self.db.user_by_name(username)
        if user is None:
            raise FakeCvatError(f"no user {username!r} on the fake server")
        return user

    def legacy_token(self, username: str) -> str:
        """The user's login token (``Authorization: Token <key>``), created if missing."""
        with self.db.lock:
            user = self._user(username)
            if user.token_key is None:
                user.token_key = random_key(40).lower()
            return user.token_key

    def mint_token(
        self,
        username: str,
        *,
        name: str = "test-token",
        read_only: bool = False,
        expiry_date: datetime | None = None,
    ) -> str:
        """Create a personal access token (CVAT ≥ 2.48 only) and return its secret value."""
        if not self.profile.access_tokens:
            raise FakeCvatError(f"CVAT {self.profile.version} has no personal access tokens")
        with self.db.lock:
            user = self._user(username)
            now = self.db.now()
            token = AccessToken(
                id=self.db.next_id("access_token"),
                name=name,
                value=random_key(41),
                owner_id=user.id,
                read_only=read_only,
                expiry_date=(
                    expiry_date.replace(tzinfo=UTC) if expiry_date and not expiry_date.tzinfo else expiry_date
                ),
                created_date=now,
                updated_date=now,
            )
            self.db.access_tokens[token.id] = token
            return token.value

    # ---- request handling (called from handler threads) ---------------------------------------
    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._log_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _log(self, record: LoggedRequest) -> None:
        with self._log_lock:
            self.request_log.append(record)

    def _dispatch(self, method: str, path: str, query: str, headers, body: bytes) -> tuple[Response, str | None]:
        with self.db.lock:
            ctx = Ctx(self, method, path, query, headers, body)
            try:
                response = self._route(ctx)
            except ApiError as err:
                response = err.response()
            except Exception:  # noqa: BLE001 - a crash of the fake must not kill the connection
                self.errors.append(f"{method} {path}?{query}\n{traceback.format_exc()}")
                response = Response(500, SERVER_ERROR_HTML.encode(), HTML)
            return response, ctx.user.username if ctx.user else None

    def _route(self, ctx: Ctx) -> Response:
        found = self._router.match(ctx.path)
        if found is None:
            raise ApiError(404, NOT_FOUND_HTML, content_type=HTML)
        route, params = found
        allow = [("Allow", route.allow)]
        try:
            if ctx.method == "OPTIONS":
                return empty_response(200, allow)
            handler = route.handlers.get(ctx.method)
            public = ctx.method in route.public
            if handler is None and ctx.method == "HEAD":
                handler = route.handlers.get("GET")
                public = "GET" in route.public
            if handler is None:
                raise ApiError(405, {"detail": f'Method "{ctx.method}" not allowed.'})
            authenticate(ctx)
            enforce_csrf(ctx)
            if not public and ctx.user is None:
                raise unauthorized(ctx, "Authentication credentials were not provided.")
            enforce_read_only_token(ctx)
            ctx.params = params
            response = handler(ctx, **params)
        except ApiError as err:
            if err.status != 500:  # Django's own 500 page carries no Allow header
                err.headers.extend(allow)
            raise
        response.headers.extend(allow)
        return response
