"""The HTTP side of ``autolabel serve``: Starlette apps for Nuclio's dashboard routes and for each
function's own port (served by uvicorn, see `serverless.serve`).

Dashboard listener (``--port``, CVAT's ``CVAT_NUCLIO_PORT``):

- ``GET /api/functions`` → ``{name: function object}``; ``GET /api/functions/<name>`` → one
  object, or 404 ``{"error": "function <name> not found"}``;
- ``<any method but HEAD> /api/function_invocations`` → invokes the function named by the
  ``x-nuclio-function-name`` header (missing → 400, unknown → 404) at ``x-nuclio-path``
  (default ``/``), and passes the function's reply through unchanged;
- ``GET /healthz`` → ``{"status", "functions": {name: {state, httpPort, type, queued,
  invocations, errors, timeouts, dropped, rejected}}}``, 200 when every function is ready,
  else 503. With ``--micro-batch`` each function also has ``microBatch: {size, windowMs,
  batched, modelCalls, frames, largestCall}`` (`serverless.micro_batch`).

``HEAD`` on the ``GET`` routes answers the same status and headers without a body.

Function listeners (``status.httpPort``): every request but ``HEAD``, whatever its path,
invokes the function, as Nuclio's HTTP trigger does (CVAT posts to ``/``). The event's headers
carry Go's canonical names (``Content-Type``, ``X-Nuclio-Invoke-Timeout``), as under Nuclio.

Every error this server produces is JSON ``{"error": "..."}``; a body over the function's limit
(``Content-Length`` or chunked) gets 413 (with ``size`` and ``limit``) after the body has been
read and discarded (up to 512 MiB, or the limit where that is larger), so the client sees the
reply instead of a reset connection.
Malformed framing is refused before it gets here (`serverless.serve_framing`).

While a request waits for its function, its connection is watched: a client that hangs up
gets its request dropped (`serverless.serve_function.HostedFunction.invoke_async`).
Each request is logged as one line (method, path without query, function, status, sizes,
latency), never bodies or header values (`RequestLog`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serverless.serve_framing import SCOPE_KEY, printable
from serverless.serve_function import ClientGone, HostedFunction, Reply, error_reply, json_reply

__all__ = ["HostApp", "RequestLog", "dashboard_app", "function_app", "log_request"]

log = logging.getLogger("autolabel.serve")

_DRAIN_LIMIT = 512 * 1024 * 1024  # read and discard a refused body up to this size, so the client sees the reply


class HostApp(Protocol):
    """What the apps need from the server that owns them (`serverless.serve.FunctionHost`)."""

    functions: Mapping[str, HostedFunction]
    max_body_size: int
    """The body limit for functions without their own; a request answered without reading its
    body is not drained past it (the connection is closed instead)."""
    namespace: str

    def health(self) -> tuple[int, dict[str, Any]]: ...


def log_request(
    method: str, path: str, function: str, status: int | str, bytes_in: int, bytes_out: int, began: float, note: str = ""
) -> None:
    """The one log line of a request (``began``: its `time.perf_counter`)."""
    log.info(
        "%s %s function=%s status=%s in=%dB out=%dB %.1fms%s",
        printable(method, 20),
        printable(path or "-"),
        function,
        status,
        bytes_in,
        bytes_out,
        (time.perf_counter() - began) * 1000.0,
        note,
    )


@dataclass
class _Exchange:
    """What the log line of one request says, filled in while it is served."""

    function: str = "-"
    status: int | str = "-"
    bytes_in: int = 0
    bytes_out: int = 0
    note: str = ""
    body_read: bool = False


def _exchange(request: Request) -> _Exchange:
    return request.state.exchange


class _NoReply(Response):
    """No response at all (the client is gone, or the server has answered the connection)."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def _response(reply: Reply, *, close: bool = False) -> Response:
    headers = {"content-type": reply.content_type, **dict(reply.headers)}
    if close:
        headers["connection"] = "close"
    return Response(reply.body, status_code=reply.status, headers=headers)


class RequestLog:
    """ASGI middleware: one log line per request, and a JSON 500 for anything that escapes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        exchange = _Exchange()
        scope.setdefault("state", {})["exchange"] = exchange

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            elif message["type"] == "http.response.body":
                exchange.bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:  # a forced stop abandons the requests in flight: answer, end quietly
            exchange.note = " (abandoned: the server was stopped)"
            if exchange.status == "-":
                reply = error_reply(503, "autolabel serve was stopped before this request was answered")
                await _response(reply, close=True)(scope, receive, sending)
        except Exception as err:  # keep serving; the client gets JSON (see _internal_error), the log the traceback
            log.exception("internal error while serving %s %s", scope["method"], printable(scope["path"]))
            if exchange.status == "-":
                await _response(_internal_error_reply(err), close=True)(scope, receive, sending)
        finally:
            log_request(scope["method"], scope["path"], exchange.function, exchange.status, exchange.bytes_in,
                        exchange.bytes_out, began, exchange.note)


def _internal_error_reply(err: BaseException) -> Reply:
    return error_reply(500, f"internal error in autolabel serve: {type(err).__name__}")


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _response(_internal_error_reply(exc), close=True)


def _too_large(size: int, limit: int, who: str, *, at_least: bool = False) -> Reply:
    return json_reply(
        413,
        {
            "error": f"request body is {'more than ' if at_least else ''}{size} bytes; {who} accepts at most "
            f"{limit} bytes (maxRequestBodySize in function.yaml, or autolabel serve --max-body-size)",
            "size": size,
            "limit": limit,
        },
    )


async def _read_body(request: Request, limit: int, who: str) -> bytes | Reply:
    """The request body, or the 413 that refuses it (after reading it, up to `_DRAIN_LIMIT`
    or ``limit``, whichever is larger)."""
    exchange = _exchange(request)
    exchange.body_read = True
    drain = max(limit, _DRAIN_LIMIT)
    declared = request.headers.get("content-length")  # plain digits: the framing guard saw to it
    if declared and int(declared) > drain:
        return _too_large(int(declared), limit, who)
    parts: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > drain:
            return _too_large(total, limit, who, at_least=True)
        if total <= limit:
            parts.append(chunk)
    exchange.bytes_in = total
    if total > limit:
        return _too_large(total, limit, who)
    return b"".join(parts)


def _gone(request: Request) -> Response:
    """The body never arrived: the client left, or the server refused its framing (and logged why)."""
    exchange = _exchange(request)
    refused = request.scope.get("extensions", {}).get(SCOPE_KEY)
    if refused is not None:
        exchange.status, exchange.bytes_out = refused["refusal"].status, refused["bytes_out"]
    else:
        exchange.note = " (client gone before the body arrived)"
    return _NoReply()


def _canonical(name: str) -> str:
    """Go's canonical header name, as Nuclio hands headers to the handler (``X-Nuclio-Path``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


async def _invoke(request: Request, function: HostedFunction, target: str, max_body_size: int) -> Response:
    """Read the body and run ``function`` on it at ``target`` (path and query)."""
    exchange = _exchange(request)
    exchange.function = function.name
    if request.method == "HEAD":
        return _reply(request, error_reply(405, "HEAD does not invoke a function; use POST"), max_body_size)
    try:
        body = await _read_body(request, function.max_body_size, f"function {function.name}")
    except ClientDisconnect:
        return _gone(request)
    if isinstance(body, Reply):
        return _response(body, close=True)
    path, _, query = target.partition("?")
    gone = asyncio.ensure_future(request.receive())  # completes when the client hangs up
    try:
        reply = await function.invoke_async(
            body=body,
            method=request.method,
            path=path or "/",
            headers={_canonical(k): v for k, v in request.headers.items()},
            query=dict(parse_qsl(query, keep_blank_values=True)),
            url=target,
            client_gone=gone,
        )
    except ClientGone:
        exchange.note = " (client gone while the request waited; dropped)"
        return _NoReply()
    finally:
        gone.cancel()
    return _response(reply)


def _reply(request: Request, reply: Reply, max_body_size: int) -> Response:
    """``reply`` to a request whose body was not read: a body that is chunked or over
    ``max_body_size`` is not drained, the connection is closed instead."""
    if _exchange(request).body_read:
        return _response(reply)
    declared = request.headers.get("content-length")
    large = "transfer-encoding" in request.headers or (declared is not None and int(declared) > max_body_size)
    return _response(reply, close=large)


def _target(request: Request) -> str:
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode("latin-1")
    query = request.scope.get("query_string", b"")
    return raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


def _errors(host: HostApp, missing: Callable[[Request], str]) -> dict[Any, Callable[..., Awaitable[Response]]]:
    """JSON for Starlette's own 404/405 and for internal errors."""

    async def not_found(request: Request, exc: Exception) -> Response:
        return _reply(request, error_reply(404, missing(request)), host.max_body_size)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        allow = exc.headers.get("Allow") if isinstance(exc, HTTPException) and exc.headers else None
        reply = error_reply(405, f"use GET {printable(request.url.path, 100)}", (("Allow", allow),) if allow else ())
        return _reply(request, reply, host.max_body_size)

    return {404: not_found, 405: not_allowed, Exception: _internal_error}


class _EveryMethod:
    """A route endpoint for every HTTP method (Starlette gives plain function endpoints GET only)."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _app(routes: list[Route], errors: dict[Any, Callable[..., Awaitable[Response]]]) -> ASGIApp:
    app = Starlette(routes=routes, exception_handlers=errors)
    app.router.redirect_slashes = False
    return RequestLog(app)


def dashboard_app(host: HostApp) -> ASGIApp:
    """The dashboard listener's app (see the module docstring)."""

    def namespace(request: Request) -> str:
        return request.headers.get("x-nuclio-function-namespace") or host.namespace

    async def health(request: Request) -> Response:
        status, payload = host.health()
        return _reply(request, json_reply(status, payload), host.max_body_size)

    async def listing(request: Request) -> Response:
        functions = {name: fn.nuclio_object(namespace(request)) for name, fn in host.functions.items()}
        return _reply(request, json_reply(200, functions), host.max_body_size)

    async def one(request: Request) -> Response:
        name = request.path_params["name"].rstrip("/")
        function = host.functions.get(name)
        if function is None:
            return _reply(request, error_reply(404, f"function {printable(name, 100)} not found"), host.max_body_size)
        _exchange(request).function = name
        return _reply(request, json_reply(200, function.nuclio_object(namespace(request))), host.max_body_size)

    async def invoke(request: Request) -> Response:
        name = request.headers.get("x-nuclio-function-name")
        if not name:
            reply = error_reply(400, "the x-nuclio-function-name header is missing (which function to invoke)")
            return _reply(request, reply, host.max_body_size)
        function = host.functions.get(name)
        if function is None:
            return _reply(request, error_reply(404, f"function {printable(name, 100)} not found"), host.max_body_size)
        return await _invoke(request, function, request.headers.get("x-nuclio-path") or "/", host.max_body_size)

    routes = [
        Route("/healthz", health, methods=["GET"]),
        Route("/api/functions", listing, methods=["GET"]),
        Route("/api/functions/", listing, methods=["GET"]),
        Route("/api/functions/{name:path}", one, methods=["GET"]),
        Route("/api/function_invocations", _EveryMethod(invoke)),  # an ASGI endpoint: every method
        Route("/api/function_invocations/", _EveryMethod(invoke)),
    ]
    return _app(
        routes,
        _errors(
            host,
            lambda request: f"no route {printable(request.url.path, 100)}; "
            "this server answers /api/functions, /api/function_invocations and /healthz",
        ),
    )


def function_app(host: HostApp, function: HostedFunction) -> ASGIApp:
    """A function's own listener: any method and path invokes it (Nuclio's HTTP trigger)."""

    async def invoke(request: Request) -> Response:
        return await _invoke(request, function, _target(request), host.max_body_size)

    return _app(
        [Route("/{path:path}", _EveryMethod(invoke))],  # an ASGI endpoint: every method
        _errors(host, lambda request: f"function {function.name} answers paths that start with /"),
    )
