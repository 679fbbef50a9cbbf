"""The HTTP side of ``autolabel serve``: Nuclio's dashboard routes and one listener per function.

Dashboard listener (``--port``, CVAT's ``CVAT_NUCLIO_PORT``):

- ``GET /api/functions`` → ``{name: function object}``; ``GET /api/functions/<name>`` → one
  object, or 404 ``{"error": "function <name> not found"}``;
- ``<any method> /api/function_invocations`` → invokes the function named by the
  ``x-nuclio-function-name`` header (missing → 400, unknown → 404) at ``x-nuclio-path``
  (default ``/``), and passes the function's reply through unchanged;
- ``GET /healthz`` → ``{"status", "functions": {name: {state, httpPort, type, queued,
  invocations, errors}}}``, 200 when every function is ready, else 503.

Function listeners (``status.httpPort``): every request, whatever its path, invokes the
function, as Nuclio's HTTP trigger does (CVAT posts to ``/``).

Every error this server produces is JSON ``{"error": "..."}``; a body over the function's limit
(``Content-Length`` or chunked) gets 413 (with ``size`` and ``limit``) after the body has been
read and discarded, so the client sees the reply instead of a reset connection.
Each request is logged as one line (method, path
without query, function, status, sizes, latency), never bodies or header values.
"""

from __future__ import annotations

import abc

import logging
import socket
import socketserver
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from serverless.serve_function import HostedFunction, Reply, error_reply, json_reply

__all__ = ["DashboardHandler", "FunctionHandler", "HostApp", "Listener"]

log = logging.getLogger("autolabel.serve")

_DRAIN_LIMIT = 512 * 1024 * 1024  # read and discard a refused body up to this size, so the client sees the reply
_CHUNK = 1024 * 1024


class HostApp(Protocol):
    """What the handlers need from the server that owns them (`serverless.serve.FunctionHost`)."""

    functions: Mapping[str, HostedFunction]
    max_body_size: int
    namespace: str

    def health(self) -> tuple[int, dict[str, Any]]: ...


class Listener(ThreadingHTTPServer):
    """A threaded HTTP listener with a large backlog: connections queue, they are not refused."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., BaseHTTPRequestHandler],
        *,
        app: HostApp,
        function: HostedFunction | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.function = function
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, which can stall on a DNS look-up.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class _ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


class _Handler(BaseHTTPRequestHandler, abc.ABC):
    protocol_version = "HTTP/1.1"
    server_version = "autolabel-serve"
    sys_version = ""
    timeout = 300  # seconds a connection may stay silent
    server: Listener

    # ------------------------------------------------------------- plumbing
    def handle_one_request(self) -> None:
        self._began = time.perf_counter()
        self._function = "-"
        self._bytes_in = 0
        self._body_read = False
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        """Silenced: `_log` writes one line per request instead."""

    def _log(self, status: int | str, bytes_out: int, note: str = "") -> None:
        path = _printable(urlsplit(getattr(self, "path", "") or "").path or "-")
        log.info(
            "%s %s function=%s status=%s in=%dB out=%dB %.1fms%s",
            getattr(self, "command", None) or "-",
            path,
            self._function,
            status,
            self._bytes_in,
            bytes_out,
            (time.perf_counter() - self._began) * 1000.0,
            note,
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors found by the stdlib (bad request line, unsupported method): JSON too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self.close_connection = True
        self._respond(error_reply(code, message or phrase))

    def _respond(self, reply: Reply) -> None:
        note = ""
        self._settle_unread_body()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            note = " (client gone before the reply)"
        self._log(reply.status, len(reply.body), note)

    def _declared_length(self) -> int | None:
        headers = getattr(self, "headers", None)
        raw = headers.get("Content-Length") if headers is not None else None
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    def _settle_unread_body(self) -> None:
        """Replying without reading the body: discard a small one, else close the connection."""
        if self._body_read:
            return
        self._body_read = True
        headers = getattr(self, "headers", None)
        if headers is not None and headers.get("Transfer-Encoding", "identity").strip().lower() != "identity":
            self.close_connection = True
            return
        length = self._declared_length()
        if length and length > 0:
            if length <= self.server.app.max_body_size:
                self._discard(length)
            else:
                self.close_connection = True

    def _discard(self, length: int) -> None:
        left = length
        try:
            while left > 0:
                chunk = self.rfile.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
        except (OSError, TimeoutError):
            self.close_connection = True
        if left:
            self.close_connection = True

    def _too_large(self, size: int, limit: int, who: str, *, at_least: bool = False) -> Reply:
        self.close_connection = True
        return json_reply(
            413,
            {
                "error": f"request body is {'more than ' if at_least else ''}{size} bytes; {who} accepts at most "
                f"{limit} bytes (maxRequestBodySize in function.yaml, or autolabel serve --max-body-size)",
                "size": size,
                "limit": limit,
            },
        )

    def _read_chunked(self, limit: int, who: str) -> bytes | Reply:
        """A ``Transfer-Encoding: chunked`` body; past ``limit`` the rest is discarded → 413."""
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            if not line.endswith(b"\n"):
                raise _ClientGone
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return error_reply(400, "malformed chunked request body (bad chunk size line)")
            if size == 0:
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            total += size
            if total > _DRAIN_LIMIT:
                return self._too_large(total, limit, who, at_least=True)
            data = self.rfile.read(size)
            if len(data) < size:
                raise _ClientGone
            if total <= limit:
                parts.append(data)
            self.rfile.readline(3)  # the CRLF after each chunk
        if total > limit:
            return self._too_large(total, limit, who)
        self._bytes_in = total
        return b"".join(parts)

    def _read_body(self, limit: int, who: str) -> bytes | Reply:
        """The request body, or the error reply (400, 413, 501) that refuses it."""
        headers = self.headers
        self._body_read = True
        encoding = headers.get("Transfer-Encoding", "identity").strip().lower()
        if encoding == "chunked":
            return self._read_chunked(limit, who)
        if encoding != "identity":
            self.close_connection = True
            return error_reply(501, f"Transfer-Encoding {_printable(encoding, 40)!r} is not supported")
        raw = headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True
            return error_reply(400, f"Content-Length must be a non-negative integer, got {_printable(raw, 40)!r}")
        if length > limit:
            if length <= _DRAIN_LIMIT:
                self._discard(length)
            return self._too_large(length, limit, who)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise _ClientGone
        self._bytes_in = length
        return body

    def _header_dict(self) -> dict[str, str]:
        return {name: value for name, value in self.headers.items()}

    def _invoke(self, function: HostedFunction, target: str) -> Reply:
        self._function = function.name
        body = self._read_body(function.max_body_size(self.server.app.max_body_size), f"function {function.name}")
        if isinstance(body, Reply):
            return body
        split = urlsplit(target)
        return function.invoke(
            body=body,
            method=self.command,
            path=split.path or "/",
            headers=self._header_dict(),
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            url=target,
        )

    def _dispatch(self) -> None:
        try:
            reply = self.route()
        except _ClientGone:
            self.close_connection = True
            self._log("-", 0, " (client gone before the body arrived)")
            return
        except (TimeoutError, ConnectionResetError):
            self.close_connection = True
            self._log("-", 0, " (connection timed out or reset while reading)")
            return
        except Exception as err:  # keep serving; the client gets JSON, the log the traceback
            log.exception("internal error while serving %s %s", self.command, _printable(self.path))
            reply = error_reply(500, f"internal error in autolabel serve: {type(err).__name__}")
        self._respond(reply)

    @abc.abstractmethod
    def route(self) -> Reply:
        """The reply to the current request (each port's handler routes its own paths)."""

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class FunctionHandler(_Handler):
    """A function's own port: any method and path invokes it (Nuclio's HTTP trigger)."""

    def route(self) -> Reply:
        function = self.server.function
        if function is None:  # a listener is always built with its function
            raise RuntimeError("function listener without a function")
        return self._invoke(function, self.path)


class DashboardHandler(_Handler):
    """The part of the Nuclio dashboard API that CVAT's lambda manager uses, plus ``/healthz``."""

    def route(self) -> Reply:
        app = self.server.app
        path = urlsplit(self.path).path
        namespace = self.headers.get("x-nuclio-function-namespace") or app.namespace
        if path == "/healthz":
            if self.command != "GET":
                return error_reply(405, "use GET /healthz")
            status, payload = app.health()
            return json_reply(status, payload)
        if path.rstrip("/") == "/api/functions":
            if self.command != "GET":
                return error_reply(405, "use GET /api/functions")
            return json_reply(200, {name: fn.nuclio_object(namespace) for name, fn in app.functions.items()})
        if path.startswith("/api/functions/"):
            name = unquote(path[len("/api/functions/") :]).rstrip("/")
            if self.command != "GET":
                return error_reply(405, "use GET /api/functions/<name>")
            function = app.functions.get(name)
            if function is None:
                return error_reply(404, f"function {_printable(name, 100)} not found")
            self._function = name
            return json_reply(200, function.nuclio_object(namespace))
        if path.rstrip("/") == "/api/function_invocations":
            name = self.headers.get("x-nuclio-function-name")
            if not name:
                return error_reply(400, "the x-nuclio-function-name header is missing (which function to invoke)")
            function = app.functions.get(name)
            if function is None:
                return error_reply(404, f"function {_printable(name, 100)} not found")
            return self._invoke(function, self.headers.get("x-nuclio-path") or "/")
        return error_reply(
            404,
            f"no route {_printable(path, 100)}; "
            "this server answers /api/functions, /api/function_invocations and /healthz",
        )
