"""The HTTP side of ``autolabel serve``: Nuclio's dashboard routes and one listener per function.

Dashboard listener (``--port``, CVAT's ``CVAT_NUCLIO_PORT``):

- ``GET /api/functions`` → ``{name: function object}``; ``GET /api/functions/<name>`` → one
  object, or 404 ``{"error": "function <name> not found"}``;
- ``<any method but HEAD> /api/function_invocations`` → invokes the function named by the
  ``x-nuclio-function-name`` header (missing → 400, unknown → 404) at ``x-nuclio-path``
  (default ``/``), and passes the function's reply through unchanged;
- ``GET /healthz`` → ``{"status", "functions": {name: {state, httpPort, type, queued,
  invocations, errors, timeouts, dropped, rejected}}}``, 200 when every function is ready,
  else 503.

``HEAD`` on the ``GET`` routes answers the same status and headers without a body.

Function listeners (``status.httpPort``): every request but ``HEAD``, whatever its path,
invokes the function, as Nuclio's HTTP trigger does (CVAT posts to ``/``).

Every error this server produces is JSON ``{"error": "..."}``; a body over the function's limit
(``Content-Length`` or chunked) gets 413 (with ``size`` and ``limit``) after the body has been
read and discarded, so the client sees the reply instead of a reset connection.

Message framing is strict, since a lenient reading lets a body smuggle a second request: two
``Content-Length`` headers (even equal ones), ``Content-Length`` beside ``Transfer-Encoding``, a
``Content-Length`` that is not plain digits, a chunk size that is not 1–8 hex digits (optionally
followed by ``;extension``), or a chunk not followed by CRLF get 400 and the connection is
closed. A transfer coding other than ``chunked`` gets 501 and a closed connection.

While a request waits for its function, its connection is watched: a client that hangs up
gets its request dropped (`serverless.serve_function.HostedFunction.invoke`).
Each request is logged as one line (method, path
without query, function, status, sizes, latency), never bodies or header values.
"""

from __future__ import annotations

import abc
import logging
import re
import select
import socket
import socketserver
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from serverless.serve_function import ClientGone, HostedFunction, Reply, error_reply, json_reply

__all__ = ["DashboardHandler", "FunctionHandler", "HostApp", "Listener"]

log = logging.getLogger("autolabel.serve")

_DRAIN_LIMIT = 512 * 1024 * 1024  # read and discard a refused body up to this size, so the client sees the reply
_CHUNK = 1024 * 1024
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?\r\n")
_CHUNK_LINE_MAX = 1024
_TRAILERS_MAX = 64
_LENGTH = re.compile(r"[0-9]{1,15}")
_CHUNKED = "chunked"


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
        self._framed: int | str | Reply | None = None
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

    def _framing(self) -> int | str | Reply:
        """How the request body is delimited: a length (0 without one), ``"chunked"``, or the
        reply (400, 501) refusing a framing that two parsers could read differently."""
        headers = self.headers
        lengths = headers.get_all("Content-Length") or []
        codings = headers.get_all("Transfer-Encoding") or []
        if lengths and codings:
            return error_reply(400, "a request must not carry both Content-Length and Transfer-Encoding")
        if len(lengths) > 1 or len(codings) > 1:
            which = "Content-Length" if len(lengths) > 1 else "Transfer-Encoding"
            return error_reply(400, f"{which} given more than once")
        if codings:
            coding = codings[0].strip().lower()
            if coding == _CHUNKED:
                return _CHUNKED
            return error_reply(501, f"Transfer-Encoding {_printable(coding, 40)!r} is not supported (only chunked)")
        if not lengths:
            return 0
        raw = lengths[0].strip()
        if not _LENGTH.fullmatch(raw):
            return error_reply(400, f"Content-Length must be a non-negative integer, got {_printable(raw, 40)!r}")
        return int(raw)

    def _settle_unread_body(self) -> None:
        """Replying without reading the body: discard a small one, else close the connection."""
        if self._body_read:
            return
        self._body_read = True
        framing = getattr(self, "_framed", None)
        if framing == _CHUNKED or isinstance(framing, Reply):
            self.close_connection = True
        elif isinstance(framing, int) and framing > 0:
            if framing <= self.server.app.max_body_size:
                self._discard(framing)
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

    def _malformed(self, what: str) -> Reply:
        self.close_connection = True
        return error_reply(400, f"malformed chunked request body: {what}")

    def _chunk_size(self) -> int | Reply:
        line = self.rfile.readline(_CHUNK_LINE_MAX + 1)
        if not line.endswith(b"\n"):
            if len(line) > _CHUNK_LINE_MAX:
                return self._malformed(f"a chunk size line is longer than {_CHUNK_LINE_MAX} bytes")
            raise _ClientGone
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            shown = _printable(line.decode("latin-1").rstrip("\r\n"), 20)
            return self._malformed(f"chunk size {shown!r} is not 1 to 8 hex digits ending in CRLF")
        return int(match.group(1), 16)

    def _read_trailers(self) -> Reply | None:
        for _ in range(_TRAILERS_MAX):
            line = self.rfile.readline(8192 + 1)
            if line == b"\r\n":
                return None
            if not line.endswith(b"\n"):
                if len(line) > 8192:
                    return self._malformed("a trailer line is longer than 8192 bytes")
                raise _ClientGone
        return self._malformed(f"more than {_TRAILERS_MAX} trailer lines")

    def _read_chunked(self, limit: int, who: str) -> bytes | Reply:
        """A ``Transfer-Encoding: chunked`` body; past ``limit`` the rest is discarded → 413."""
        parts: list[bytes] = []
        total = 0
        while True:
            size = self._chunk_size()
            if isinstance(size, Reply):
                return size
            if size == 0:
                refused = self._read_trailers()
                if refused is not None:
                    return refused
                break
            total += size
            if total > _DRAIN_LIMIT:
                return self._too_large(total, limit, who, at_least=True)
            data = self.rfile.read(size)
            if len(data) < size:
                raise _ClientGone
            if total <= limit:
                parts.append(data)
            end = self.rfile.read(2)
            if len(end) < 2:
                raise _ClientGone
            if end != b"\r\n":
                return self._malformed("a chunk is not followed by CRLF (chunk size and data disagree)")
        if total > limit:
            return self._too_large(total, limit, who)
        self._bytes_in = total
        return b"".join(parts)

    def _read_body(self, limit: int, who: str) -> bytes | Reply:
        """The request body, or the error reply (413) that refuses it."""
        self._body_read = True
        framing = self._framed
        if framing == _CHUNKED:
            return self._read_chunked(limit, who)
        length = int(framing) if isinstance(framing, int) else 0
        if length > limit:
            if length <= _DRAIN_LIMIT:
                self._discard(length)
            return self._too_large(length, limit, who)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise _ClientGone
        self._bytes_in = length
        return body

    def _client_gone(self) -> bool:
        """True when the client has closed its side of the connection (checked without
        blocking: data waiting to be read, e.g. a pipelined request, means it is still there)."""
        sock = self.connection
        try:
            poller = select.poll()  # not select.select: it fails for descriptors over 1023
            poller.register(sock, select.POLLIN)
            if not poller.poll(0):
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _header_dict(self) -> dict[str, str]:
        return {name: value for name, value in self.headers.items()}

    def _invoke(self, function: HostedFunction, target: str) -> Reply:
        self._function = function.name
        if self.command == "HEAD":
            return error_reply(405, "HEAD does not invoke a function; use POST")
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
            client_gone=self._client_gone,
        )

    def _dispatch(self) -> None:
        self._framed = self._framing()
        if isinstance(self._framed, Reply):
            self.close_connection = True
            self._body_read = True  # nothing after these headers can be trusted
            self._respond(self._framed)
            return
        try:
            reply = self.route()
        except _ClientGone:
            self.close_connection = True
            self._log("-", 0, " (client gone before the body arrived)")
            return
        except ClientGone:
            self.close_connection = True
            self._log("-", 0, " (client gone while the request waited; dropped)")
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

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


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
        readable = self.command in ("GET", "HEAD")
        if path == "/healthz":
            if not readable:
                return error_reply(405, "use GET /healthz")
            status, payload = app.health()
            return json_reply(status, payload)
        if path.rstrip("/") == "/api/functions":
            if not readable:
                return error_reply(405, "use GET /api/functions")
            return json_reply(200, {name: fn.nuclio_object(namespace) for name, fn in app.functions.items()})
        if path.startswith("/api/functions/"):
            name = unquote(path[len("/api/functions/") :]).rstrip("/")
            if not readable:
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
