"""One Nuclio function directory hosted in this process (the core of ``autolabel serve``).

A function directory holds ``function.yaml`` (Nuclio format; read by
`serverless.serve_spec.read_function_dir`) and the handler module (``main.py`` for
``spec.handler: main:handler``). `HostedFunction` imports the module (under a unique name, with
the directory on ``sys.path`` meanwhile), runs ``init_context`` once and then calls
``handler(context, event)`` per request, on **one worker thread per function**. Replies are
built the way the Nuclio Python runtime builds them (`nuclio_sdk.Response.from_entrypoint_output`).

Bounds on the work one request can cause (`HostedFunction.invoke`):

- **Queue**: requests wait in order behind the running one; when ``queue_size`` are already
  waiting, a new one is answered 503 with ``Retry-After`` at once.
- **Time limit**: each request has ``timeout`` seconds from its arrival, queue wait included,
  lowered by the request's ``X-Nuclio-Invoke-Timeout`` header (CVAT sends its own limit there).
  At the deadline the caller gets 504 JSON. A request that has not started by then never runs.
  A running handler cannot be killed (it is a thread): it is told to stop through
  `request_cancelled`, which handlers may check between stages, and its late reply is discarded.
- **Abandoned requests**: when the caller's connection closes while its request waits, the
  request is dropped from the queue without running (and a running one is told to stop).

Environment: ``spec.env`` is applied to ``os.environ`` before ``init_context``, except for
variables that were already set when the host was created, so a developer's exports (e.g.
``AUTOLABEL_GDINO_MODEL``) win over the yaml. All functions share one process and one
environment: when two functions set the same variable to different values, each
``init_context`` sees its own value (they run one after another) and a warning is logged;
afterwards the last value stays.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import importlib.util
import inspect
import json
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serverless.serve_spec import DEFAULT_TIMEOUT, FunctionDefinition, ServeError, parse_duration

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "ClientGone",
    "EnvApplier",
    "HostedFunction",
    "Reply",
    "cancellation_scope",
    "error_reply",
    "json_reply",
    "reply_from_output",
    "request_cancelled",
]

DEFAULT_QUEUE_SIZE = 16
"""Requests that may wait per function behind the running one before new ones get 503."""

_POLL_SECONDS = 0.2  # how often a waiting request checks its deadline and its client
_CANCELLED: ContextVar[threading.Event | None] = ContextVar("autolabel_request_cancelled", default=None)


def request_cancelled() -> bool:
    """True when the request the calling handler is serving has been given up (its deadline
    passed, or its client left): the handler may stop between stages, since nobody will read
    its reply. Always False outside ``autolabel serve`` (e.g. under Nuclio)."""
    flag = _CANCELLED.get()
    return flag is not None and flag.is_set()


@contextmanager
def cancellation_scope(cancelled: threading.Event) -> Iterator[None]:
    """Within the block, `request_cancelled` reports ``cancelled`` (the host wraps each handler
    call in one; other hosts of the same handlers may too)."""
    token = _CANCELLED.set(cancelled)
    try:
        yield
    finally:
        _CANCELLED.reset(token)


class ClientGone(Exception):
    """The caller closed its connection while its request waited; the request was dropped."""

log = logging.getLogger("autolabel.serve")

_HOP_HEADERS = {"content-length", "content-type", "transfer-encoding", "connection", "keep-alive"}


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, content type, body bytes and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, payload: Any) -> Reply:
    """A JSON reply (``application/json``)."""
    return Reply(status, "application/json", json.dumps(payload).encode("utf-8"))


def error_reply(status: int, message: str) -> Reply:
    """The JSON error body used for every error this server produces: ``{"error": message}``."""
    return json_reply(status, {"error": message})


def reply_from_output(output: Any) -> Reply:
    """Convert a handler's return value like the Nuclio Python runtime does.

    ``Response`` → its status, content type, headers and body (a dict body → JSON); ``str`` →
    200 ``text/plain``; ``dict`` → 200 JSON; ``(status, body)`` → that status (a non-str body →
    JSON); ``bytes`` → the bytes. A bare ``list`` is refused with `ValueError`: Nuclio's runtime
    treats a returned list as a *batch* of responses, so a function must wrap list replies in
    ``context.Response(body=json.dumps(items), content_type="application/json")``.
    """
    import nuclio_sdk
    from nuclio_sdk.json_encoder import Encoder

    if isinstance(output, list):
        raise ValueError(
            "handler returned a bare list; Nuclio treats a list as a batch of responses. Return "
            "context.Response(body=json.dumps(items), content_type='application/json') instead"
        )
    try:
        response = nuclio_sdk.Response.from_entrypoint_output(Encoder().encode, output)
    except (TypeError, ValueError) as err:
        raise ValueError(f"handler output cannot be encoded: {err}") from err
    try:
        status = int(response["status_code"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"handler returned status code {response['status_code']!r}, not an integer") from err
    if not 100 <= status <= 599:
        raise ValueError(f"handler returned status code {status}, outside 100..599")
    raw = response["body"]
    body = base64.b64decode(raw) if response["body_encoding"] == "base64" else str(raw).encode("utf-8")
    headers = tuple(
        (str(name), str(value))
        for name, value in (response["headers"] or {}).items()
        if str(name).lower() not in _HOP_HEADERS
    )
    return Reply(status, str(response["content_type"] or "text/plain"), body, headers)


# --------------------------------------------------------------------------- environment


class EnvApplier:
    """Applies each function's ``spec.env`` before its ``init_context``; variables set before
    the host started (the developer's exports) are never changed."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._original = frozenset(os.environ if environ is None else environ)
        self._set_by: dict[str, tuple[str, str]] = {}

    def apply(self, definition: FunctionDefinition) -> None:
        for name, value in definition.env:
            if name in self._original:
                log.info("function %s: %s kept from the environment (spec.env not applied)", definition.name, name)
                continue
            previous = self._set_by.get(name)
            if previous is not None and previous[1] != value:
                log.warning(
                    "function %s sets %s differently from function %s; one process has one environment, "
                    "so the last value stays after start-up",
                    definition.name,
                    name,
                    previous[0],
                )
            os.environ[name] = value
            self._set_by[name] = (definition.name, value)

    def restore(self) -> None:
        """Remove the variables `apply` set (for in-process use: tests, benchmarks)."""
        for name in self._set_by:
            os.environ.pop(name, None)
        self._set_by.clear()


# --------------------------------------------------------------------------- hosting


def _run_maybe_async(value: Any) -> Any:
    return asyncio.run(value) if inspect.iscoroutine(value) else value


@contextmanager
def _import_scope(directory: Path) -> Iterator[None]:
    """``directory`` on ``sys.path`` while the function is imported and initialised; sibling
    modules it imported are then dropped from ``sys.modules`` (the function keeps its
    references), so two functions may each have a ``model_handler.py``."""
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(directory))
        except ValueError:
            pass
        for module_name in set(sys.modules) - before:
            module_file = getattr(sys.modules[module_name], "__file__", None)
            if module_file and Path(module_file).resolve().is_relative_to(directory):
                sys.modules.pop(module_name, None)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@dataclass
class _Counters:
    queued: int = 0
    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    dropped: int = 0
    rejected: int = 0
    seconds: float = 0.0  # moving average of a handler call, for Retry-After
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _Request:
    body: Any
    content_type: str
    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    url: str | None
    size: int
    cancelled: threading.Event


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _decode_json_body(body: bytes) -> Any:
    """The body decoded as JSON, as the Nuclio runtime does for ``application/json``; bytes
    that do not decode (bad JSON, nesting too deep, an integer over Python's digit limit) are
    handed over raw, for the handler to answer 4xx."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return body


class HostedFunction:
    """A function directory served in this process: import + ``init_context`` once, then
    ``handler(context, event)`` per request on the function's single worker thread."""

    def __init__(
        self,
        definition: FunctionDefinition,
        *,
        namespace: str = "nuclio",
        timeout: float | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        if queue_size < 0:
            raise ValueError(f"queue_size must be 0 or more, got {queue_size!r}")
        self.definition = definition
        self.namespace = namespace
        self.timeout = timeout or definition.event_timeout or DEFAULT_TIMEOUT
        """Seconds a request may take from its arrival: ``timeout`` given by the host
        (``autolabel serve --timeout``), else ``spec.eventTimeout``, else `DEFAULT_TIMEOUT`."""
        self.queue_size = queue_size
        self.port: int | None = None
        self.state = "deploying"
        self.message = ""
        self._handler: Any = None
        self._context: Any = None
        self._counters = _Counters()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fn-{definition.name}")

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def context(self) -> Any:
        """The ``nuclio_sdk.Context`` the handler gets (``user_data`` as ``init_context`` left it);
        None before the function is ready."""
        return self._context

    # ------------------------------------------------------------- loading
    def start_loading(self, init_lock: threading.Lock, env: EnvApplier) -> Future:
        """Queue the import and ``init_context`` on the worker (so requests wait behind it).
        ``init_lock`` makes functions initialise one at a time (environment, ``sys.path``)."""
        return self._worker.submit(self._load, init_lock, env)

    def _load(self, init_lock: threading.Lock, env: EnvApplier) -> None:
        with init_lock:
            began = time.perf_counter()
            try:
                env.apply(self.definition)
                self._handler, self._context = self._import_and_init()
            except ServeError as err:
                self.state, self.message = "error", str(err)
                raise
            except Exception as err:  # report any start-up failure, never hang in "deploying"
                self.state, self.message = "error", f"function {self.name}: start-up failed: {_short(err)}"
                raise ServeError(self.message) from err
        self.state = "ready"
        log.info("function %s ready (%.1f s)", self.name, time.perf_counter() - began)

    def _import_and_init(self) -> tuple[Any, Any]:
        import nuclio_sdk

        d = self.definition
        module_name = "_autolabel_function_" + re.sub(r"\W", "_", f"{d.name}_{d.handler_module}")
        with _import_scope(d.directory):
            try:
                spec = importlib.util.spec_from_file_location(module_name, d.module_file)
                if spec is None or spec.loader is None:
                    raise ServeError(f"function {d.name}: cannot import {d.module_file}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except ServeError:
                raise
            except Exception as err:  # any error in user code becomes a ServeError
                log.exception("function %s: importing %s failed", d.name, d.module_file)
                raise ServeError(f"function {d.name}: importing {d.module_file} failed: {_short(err)}") from err
            handler = getattr(module, d.handler_name, None)
            if not callable(handler):
                raise ServeError(f"function {d.name}: {d.module_file} defines no function {d.handler_name!r}")
            context = nuclio_sdk.Context(
                logger=nuclio_sdk.Logger(logging.INFO, name=f"autolabel.serve.fn.{d.name}"),
                platform=nuclio_sdk.Platform("local", namespace=self.namespace),
                worker_id=0,
                trigger=nuclio_sdk.TriggerInfo("http", "myHttpTrigger"),
            )
            init = getattr(module, "init_context", None)
            if callable(init):
                try:
                    _run_maybe_async(init(context))
                except Exception as err:  # user code
                    log.exception("function %s: init_context failed", d.name)
                    raise ServeError(f"function {d.name}: init_context failed: {_short(err)}") from err
        return handler, context

    # ------------------------------------------------------------- serving
    def max_body_size(self, default: int) -> int:
        return self.definition.max_body_size or default

    def invoke(
        self,
        *,
        body: bytes,
        method: str,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        url: str | None = None,
        client_gone: Callable[[], bool] | None = None,
    ) -> Reply:
        """Run the handler for one request (queued behind earlier ones) and build the reply.

        503 (with ``Retry-After``) when `queue_size` requests already wait; 504 at the
        deadline (`timeout`, or the ``X-Nuclio-Invoke-Timeout`` header when shorter); 400 for
        a malformed ``X-Nuclio-Invoke-Timeout``. ``client_gone`` is polled while the request
        waits: when it turns true the request is dropped and `ClientGone` is raised.
        """
        began = time.monotonic()
        if self.state == "error":
            return error_reply(503, f"function {self.name} is not available: {self.message}")
        limit = self.timeout
        asked = _header(headers, "x-nuclio-invoke-timeout")
        if asked is not None:
            try:
                limit = min(limit, parse_duration(asked))
            except ValueError as err:
                return error_reply(400, f"X-Nuclio-Invoke-Timeout: {err}")
        content_type = _header(headers, "content-type") or ""
        with self._counters.lock:
            if self._counters.queued >= self.queue_size:
                self._counters.rejected += 1
                return self._queue_full()
            self._counters.queued += 1
        # Exactly application/json is decoded before the handler, as the Nuclio runtime does.
        decoded = _decode_json_body(body) if content_type == "application/json" else body
        request = _Request(
            decoded, content_type, method, path, headers, dict(query or {}), url, len(body), threading.Event()
        )
        try:
            future = self._worker.submit(self._call, request)
        except RuntimeError:
            with self._counters.lock:
                self._counters.queued -= 1
            return error_reply(503, f"function {self.name} is shutting down")
        return self._wait(future, request, began + limit, limit, client_gone)

    def _queue_full(self) -> Reply:
        waiting = self._counters.queued
        retry = max(1, min(int(self.timeout), math.ceil(self._counters.seconds * (waiting + 1))))
        reply = error_reply(
            503,
            f"function {self.name} is busy: {waiting} requests are already waiting (autolabel serve --queue-size); "
            f"retry in {retry} s",
        )
        return Reply(reply.status, reply.content_type, reply.body, (("Retry-After", str(retry)),))

    def _wait(
        self,
        future: Future,
        request: _Request,
        deadline: float,
        limit: float,
        client_gone: Callable[[], bool] | None,
    ) -> Reply:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                ran = self._give_up(future, request, timed_out=True)
                log.warning("function %s: request %s its deadline of %g s", self.name,
                            "still running at" if ran else "dropped at", limit)
                return error_reply(
                    504,
                    f"function {self.name} did not answer within {limit:g} s (autolabel serve --timeout, "
                    "spec.eventTimeout in function.yaml, or the request's X-Nuclio-Invoke-Timeout)",
                )
            try:
                return future.result(timeout=min(left, _POLL_SECONDS))
            except TimeoutError:
                pass
            except CancelledError:
                return error_reply(503, f"function {self.name} stopped before running this request")
            if client_gone is not None and client_gone():
                self._give_up(future, request, timed_out=False)
                raise ClientGone(f"function {self.name}: the client left while its request waited")

    def _give_up(self, future: Future, request: _Request, *, timed_out: bool) -> bool:
        """Nobody will read this request's reply: drop it if it has not started, else tell the
        running handler (`request_cancelled`). True when it was already running."""
        request.cancelled.set()
        dropped = future.cancel()
        with self._counters.lock:
            if dropped:
                self._counters.queued -= 1
                self._counters.dropped += 1
            if timed_out:
                self._counters.timeouts += 1
        return not dropped

    def _call(self, request: _Request) -> Reply:
        with self._counters.lock:
            self._counters.queued -= 1
            self._counters.invocations += 1
        if self.state != "ready":
            return error_reply(503, f"function {self.name} is not available: {self.message or self.state}")
        began = time.perf_counter()
        try:
            with cancellation_scope(request.cancelled):
                reply = self._run_handler(request)
        finally:
            with self._counters.lock:
                seconds = time.perf_counter() - began
                self._counters.seconds = seconds if not self._counters.seconds else (
                    0.8 * self._counters.seconds + 0.2 * seconds
                )
        if request.cancelled.is_set():
            log.info("function %s: a request given up on finished after %.1f s; its reply is discarded",
                     self.name, time.perf_counter() - began)
        return reply

    def _run_handler(self, request: _Request) -> Reply:
        import nuclio_sdk

        event = nuclio_sdk.Event(
            body=request.body,
            content_type=request.content_type,
            trigger=nuclio_sdk.TriggerInfo("http", "myHttpTrigger"),
            fields=dict(request.query),
            headers=dict(request.headers),
            _id=str(uuid.uuid4()),
            method=request.method,
            path=request.path,
            size=request.size,
            timestamp=time.time(),
            url=request.url,
        )
        try:
            output = _run_maybe_async(self._handler(self._context, event))
        except Exception as err:  # user code: a 500 JSON, never a traceback
            with self._counters.lock:
                self._counters.errors += 1
            log.exception("function %s: handler raised", self.name)
            return error_reply(500, f"function {self.name} failed: {_short(err)}")
        try:
            return reply_from_output(output)
        except ValueError as err:
            with self._counters.lock:
                self._counters.errors += 1
            log.error("function %s: unusable handler output: %s", self.name, err)
            return error_reply(500, f"function {self.name} returned an unusable reply: {err}")

    def health(self) -> dict[str, Any]:
        with self._counters.lock:
            c = self._counters
            counters = {
                "queued": c.queued,
                "invocations": c.invocations,
                "errors": c.errors,
                "timeouts": c.timeouts,
                "dropped": c.dropped,
                "rejected": c.rejected,
            }
        status: dict[str, Any] = {"state": self.state, "httpPort": self.port, "type": self.definition.kind}
        if self.message:
            status["message"] = self.message
        return {**status, **counters}

    def nuclio_object(self, namespace: str) -> dict[str, Any]:
        """The function as the Nuclio dashboard lists it (``GET /api/functions[/<name>]``)."""
        d = self.definition
        status: dict[str, Any] = {"state": self.state, "httpPort": self.port}
        if self.message:
            status["message"] = self.message
        return {
            "metadata": {
                "name": d.name,
                "namespace": namespace,
                "labels": {**d.labels, "nuclio.io/project-name": "cvat"},
                "annotations": dict(d.annotations),
            },
            "spec": copy.deepcopy(dict(d.spec)),
            "status": status,
        }

    def close(self) -> None:
        """Stop accepting work; queued requests are answered 503 after the current one."""
        self.state = "error" if self.state == "error" else "stopped"
        self.message = self.message or "server stopped"
        self._worker.shutdown(wait=False, cancel_futures=True)
