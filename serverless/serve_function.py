"""One Nuclio function directory hosted in this process (the core of ``autolabel serve``).

A function directory holds ``function.yaml`` (Nuclio format; read by
`serverless.serve_spec.read_function_dir`) and the handler module (``main.py`` for
``spec.handler: main:handler``). `HostedFunction` loads the module from its file with importlib,
in a module namespace of its own (`serverless.serve_isolation.FunctionModules`: sibling modules
such as ``model_handler.py`` are found without ``sys.path``), runs ``init_context`` once and
then calls ``handler(context, event)`` per request, on **one worker thread per function** (one
model per function, as Nuclio with ``maxWorkers: 1``). Replies are built the way the Nuclio
Python runtime builds them (`nuclio_sdk.Response.from_entrypoint_output`).

**Micro-batching** (``micro_batch``, ``autolabel serve --micro-batch N``; off by default): the
function's environment view gets ``AUTOLABEL_MICRO_BATCH=N`` and
``AUTOLABEL_MICRO_BATCH_WINDOW_MS`` (hidden when off, so an export cannot switch it on), and
`serverless.nuclio_adapter` wraps the detector or classifier it builds in ``init_context``
(`serverless.micro_batch`). A function whose ``user_data`` then holds a batching model runs
its requests on N worker threads, so that N concurrent frames become one model call; any
other function (interactors, functions without a batchable model) keeps its one worker.

Bounds on the work one request can cause (`HostedFunction.invoke_async`):

- **Queue**: requests wait in order behind the running one (the running ones, with
  micro-batching); when ``queue_size`` are already waiting, a new one is answered 503 with
  ``Retry-After`` at once.
- **Time limit**: each request has ``timeout`` seconds from its arrival, queue wait included,
  lowered by the request's ``X-Nuclio-Invoke-Timeout`` header (CVAT sends its own limit there).
  At the deadline the caller gets 504 JSON. A request that has not started by then never runs.
  A running handler cannot be killed (it is a thread): it is told to stop through
  `request_cancelled`, which handlers may check between stages, and its late reply is discarded.
- **Abandoned requests**: when the caller's connection closes while its request waits, the
  request is dropped from the queue without running (and a running one is told to stop; one
  whose frame waits for a micro-batch stops waiting, and a frame not yet in a batch is dropped).

Environment: each function gets ``spec.env`` without the process environment changing. Its own
modules see ``os.environ``/``os.getenv`` as the process environment with ``spec.env`` laid over
it, except for variables the process already had when the host was created, so a developer's
exports (e.g. ``AUTOLABEL_GDINO_MODEL``) win over the yaml; the model loader reads the same view
through `function_environ`. Two functions may set one variable to different values: each sees
its own. Libraries that read the process environment themselves do not see ``spec.env`` (see
`serverless.serve_isolation`).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import inspect
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serverless.serve_isolation import FunctionEnviron, FunctionModules
from serverless.serve_spec import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_TIMEOUT,
    FunctionDefinition,
    ServeError,
    parse_duration,
)

if TYPE_CHECKING:
    from serverless.micro_batch import MicroBatchSettings

__all__ = [
    "ClientGone",
    "HostedFunction",
    "Reply",
    "cancellation_scope",
    "error_reply",
    "function_environ",
    "json_reply",
    "reply_from_output",
    "request_cancelled",
]

_CANCELLED: ContextVar[threading.Event | None] = ContextVar("autolabel_request_cancelled", default=None)
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("autolabel_function_environ", default=None)

log = logging.getLogger("autolabel.serve")


def request_cancelled() -> bool:
    """True when the request the calling handler is serving has been given up (its deadline
    passed, or its client left): the handler may stop between stages, since nobody will read
    its reply. Always False outside ``autolabel serve`` (e.g. under Nuclio)."""
    flag = _CANCELLED.get()
    return flag is not None and flag.is_set()


def function_environ() -> Mapping[str, str]:
    """The environment of the function whose ``init_context`` or handler is running: under
    ``autolabel serve`` the process environment with the function's ``spec.env`` over it,
    elsewhere (under Nuclio, where ``spec.env`` is the process environment) ``os.environ``."""
    environ = _ENVIRON.get()
    return os.environ if environ is None else environ


@contextmanager
def cancellation_scope(cancelled: threading.Event) -> Iterator[None]:
    """Within the block, `request_cancelled` reports ``cancelled`` (the host wraps each handler
    call in one; other hosts of the same handlers may too)."""
    token = _CANCELLED.set(cancelled)
    try:
        yield
    finally:
        _CANCELLED.reset(token)


@contextmanager
def _environ_scope(environ: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


class ClientGone(Exception):
    """The caller closed its connection while its request waited; the request was dropped."""


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


def error_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """The JSON error body used for every error this server produces: ``{"error": message}``."""
    return Reply(status, "application/json", json.dumps({"error": message}).encode("utf-8"), headers)


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


# --------------------------------------------------------------------------- hosting


def _run_maybe_async(value: Any) -> Any:
    return asyncio.run(value) if inspect.iscoroutine(value) else value


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
    body: bytes
    content_type: str
    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    url: str | None
    cancelled: threading.Event


@dataclass(frozen=True)
class _Admitted:
    """A request handed to the worker: its future, and until when its caller waits."""

    future: Future
    request: _Request
    deadline: float
    limit: float


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


def _set_micro_batch(environ: FunctionEnviron, settings: MicroBatchSettings | None) -> None:
    """Tell the function's loader about micro-batching (`serverless.micro_batch`): the
    variables when on, hidden when off (an exported one must not switch it on alone)."""
    from serverless.micro_batch import ENV_SIZE, ENV_WINDOW_MS

    if settings is None:
        for name in (ENV_SIZE, ENV_WINDOW_MS):
            environ.pop(name, None)
    else:
        environ[ENV_SIZE] = str(settings.size)
        environ[ENV_WINDOW_MS] = f"{settings.window_ms:g}"


def own_environment(definition: FunctionDefinition, process: Mapping[str, str]) -> dict[str, str]:
    """The ``spec.env`` variables that apply: those ``process`` does not set already."""
    own: dict[str, str] = {}
    for name, value in definition.env:
        if name in process:
            log.info("function %s: %s kept from the environment (spec.env not applied)", definition.name, name)
        else:
            own[name] = value
    return own


class HostedFunction:
    """A function directory served in this process: import + ``init_context`` once, then
    ``handler(context, event)`` per request on the function's single worker thread (N threads
    when ``micro_batch`` batches its model). Its limits come from the host, which has checked
    them (`serverless.serve.ServeOptions`)."""

    def __init__(
        self,
        definition: FunctionDefinition,
        *,
        namespace: str = "nuclio",
        timeout: float | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        micro_batch: MicroBatchSettings | None = None,
    ) -> None:
        self.definition = definition
        self.namespace = namespace
        self.timeout = timeout or definition.event_timeout or DEFAULT_TIMEOUT
        """Seconds a request may take from its arrival: ``timeout`` given by the host
        (``autolabel serve --timeout``), else ``spec.eventTimeout``, else `DEFAULT_TIMEOUT`."""
        self.queue_size = queue_size
        self.max_body_size = definition.max_body_size or max_body_size
        """Request body limit in bytes: ``maxRequestBodySize`` in function.yaml, else ``max_body_size``
        (``autolabel serve --max-body-size``)."""
        self.environ = FunctionEnviron(own_environment(definition, os.environ))
        """What the function's code sees as ``os.environ`` (`function_environ` for the loader)."""
        self.micro_batch = micro_batch
        """Micro-batching asked for by the host (None: off); it applies when the function's
        ``init_context`` built a batching model (`batched`)."""
        _set_micro_batch(self.environ, micro_batch)
        self.port: int | None = None
        self.state = "deploying"
        self.message = ""
        self._modules: FunctionModules | None = None
        self._handler: Any = None
        self._context: Any = None
        self._counters = _Counters()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"fn-{definition.name}")
        self._batch_workers: ThreadPoolExecutor | None = None  # N threads once a batching model is ready

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def batched(self) -> bool:
        """Whether requests run on N threads so that their frames share model calls."""
        return self._batch_workers is not None

    @property
    def context(self) -> Any:
        """The ``nuclio_sdk.Context`` the handler gets (``user_data`` as ``init_context`` left it);
        None before the function is ready."""
        return self._context

    # ------------------------------------------------------------- loading
    def start_loading(self, init_lock: threading.Lock) -> Future:
        """Queue the import and ``init_context`` on the worker (so requests wait behind it).
        ``init_lock`` makes functions initialise one at a time (models shared through the
        load-once registry load once; memory peaks do not add up)."""
        return self._worker.submit(self._load, init_lock)

    def _load(self, init_lock: threading.Lock) -> None:
        with init_lock:
            began = time.perf_counter()
            try:
                with _environ_scope(self.environ):
                    self._handler, self._context = self._import_and_init()
            except ServeError as err:
                self.state, self.message = "error", str(err)
                raise
            except Exception as err:  # report any start-up failure, never hang in "deploying"
                self.state, self.message = "error", f"function {self.name}: start-up failed: {_short(err)}"
                raise ServeError(self.message) from err
        self._start_batch_workers()
        self.state = "ready"
        log.info("function %s ready (%.1f s)", self.name, time.perf_counter() - began)

    def _start_batch_workers(self) -> None:
        """With micro-batching, N workers when ``init_context`` built a batching model."""
        from serverless.micro_batch import batchers_in

        if self.micro_batch is None:
            return
        if not batchers_in(self._context.user_data):
            log.info("function %s: no model to micro-batch; one request at a time", self.name)
            return
        self._batch_workers = ThreadPoolExecutor(
            max_workers=self.micro_batch.size, thread_name_prefix=f"fn-{self.name}-batch"
        )
        log.info("function %s: up to %d requests at a time, their frames in one model call (window %g ms)",
                 self.name, self.micro_batch.size, self.micro_batch.window_ms)

    def _import_and_init(self) -> tuple[Any, Any]:
        import nuclio_sdk

        d = self.definition
        self._modules = FunctionModules(d.name, d.directory, self.environ)
        try:
            module = self._modules.load(d.handler_module)
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
    def _admit(
        self,
        body: bytes,
        method: str,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None,
        url: str | None,
    ) -> _Admitted | Reply:
        """Queue the request on the worker, or the reply that refuses it (503, 400)."""
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
        with self._counters.lock:
            if self._counters.queued >= self.queue_size:
                self._counters.rejected += 1
                return self._queue_full()
            self._counters.queued += 1
        content_type = _header(headers, "content-type") or ""
        request = _Request(body, content_type, method, path, headers, dict(query or {}), url, threading.Event())
        try:
            future = (self._batch_workers or self._worker).submit(self._call, request)
        except RuntimeError:
            with self._counters.lock:
                self._counters.queued -= 1
            return error_reply(503, f"function {self.name} is shutting down")
        return _Admitted(future, request, began + limit, limit)

    async def invoke_async(
        self,
        *,
        body: bytes,
        method: str,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        url: str | None = None,
        client_gone: asyncio.Future[Any] | None = None,
    ) -> Reply:
        """Run the handler for one request (queued behind earlier ones) and build the reply.

        503 (with ``Retry-After``) when `queue_size` requests already wait; 504 at the
        deadline (`timeout`, or the ``X-Nuclio-Invoke-Timeout`` header when shorter); 400 for
        a malformed ``X-Nuclio-Invoke-Timeout``. When ``client_gone`` (a future that completes
        when the caller hangs up) completes first, the request is dropped and `ClientGone` is
        raised.
        """
        admitted = self._admit(body, method, path, headers, query, url)
        if isinstance(admitted, Reply):
            return admitted
        reply = asyncio.wrap_future(admitted.future)
        watched = {reply} if client_gone is None else {reply, client_gone}
        left = max(0.0, admitted.deadline - time.monotonic())
        done, _ = await asyncio.wait(watched, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if reply in done:
            try:
                return reply.result()
            except asyncio.CancelledError:
                return error_reply(503, f"function {self.name} stopped before running this request")
        reply.cancel()  # the worker's result goes nowhere
        if client_gone is not None and client_gone in done:
            self._give_up(admitted, timed_out=False)
            raise ClientGone(f"function {self.name}: the client left while its request waited")
        return self._timed_out(admitted)

    def _queue_full(self) -> Reply:
        waiting = self._counters.queued
        workers = self.micro_batch.size if self.batched and self.micro_batch else 1
        retry = max(1, min(int(self.timeout), math.ceil(self._counters.seconds * (waiting + 1) / workers)))
        return error_reply(
            503,
            f"function {self.name} is busy: {waiting} requests are already waiting (autolabel serve --queue-size); "
            f"retry in {retry} s",
            (("Retry-After", str(retry)),),
        )

    def _timed_out(self, admitted: _Admitted) -> Reply:
        ran = self._give_up(admitted, timed_out=True)
        log.warning("function %s: request %s its deadline of %g s", self.name,
                    "still running at" if ran else "dropped at", admitted.limit)
        return error_reply(
            504,
            f"function {self.name} did not answer within {admitted.limit:g} s (autolabel serve --timeout, "
            "spec.eventTimeout in function.yaml, or the request's X-Nuclio-Invoke-Timeout)",
        )

    def _give_up(self, admitted: _Admitted, *, timed_out: bool) -> bool:
        """Nobody will read this request's reply: drop it if it has not started, else tell the
        running handler (`request_cancelled`). True when it was already running."""
        admitted.request.cancelled.set()
        dropped = admitted.future.cancel()
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
            with cancellation_scope(request.cancelled), _environ_scope(self.environ):
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

        # Exactly application/json is decoded before the handler, as the Nuclio runtime does.
        body = _decode_json_body(request.body) if request.content_type == "application/json" else request.body
        event = nuclio_sdk.Event(
            body=body,
            content_type=request.content_type,
            trigger=nuclio_sdk.TriggerInfo("http", "myHttpTrigger"),
            fields=dict(request.query),
            headers=dict(request.headers),
            _id=str(uuid.uuid4()),
            method=request.method,
            path=request.path,
            size=len(request.body),
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
        if self.micro_batch is not None:
            counters["microBatch"] = self._micro_batch_health(self.micro_batch)
        return {**status, **counters}

    def _micro_batch_health(self, settings: MicroBatchSettings) -> dict[str, Any]:
        """The setting, whether it applies, and model calls / frames / largest call so far."""
        from serverless.micro_batch import BatchStats, batchers_in

        stats = BatchStats()
        user_data = getattr(self._context, "user_data", None)
        for batcher in batchers_in(user_data) if user_data is not None else ():
            stats = stats.add(batcher.stats())
        return {**settings.health(), "batched": self.batched, "modelCalls": stats.calls,
                "frames": stats.frames, "largestCall": stats.largest}

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
        """Stop accepting work (queued requests are answered 503 after the current one) and
        forget the function's modules."""
        self.state = "error" if self.state == "error" else "stopped"
        self.message = self.message or "server stopped"
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self._batch_workers is not None:
            self._batch_workers.shutdown(wait=False, cancel_futures=True)
        if self._modules is not None:
            self._modules.unload()
