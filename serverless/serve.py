"""``autolabel serve``: host Nuclio function directories over HTTP, without Nuclio.

One process serves one or more function directories (``function.yaml`` + ``main.py``), each
model loaded once (functions that use the same weights share them through
`serverless.models.registry.load_once`). It speaks both ways CVAT's lambda manager talks to
Nuclio, so CVAT started with ``CVAT_NUCLIO_HOST``/``CVAT_NUCLIO_PORT`` pointing here lists and
runs the functions with either ``CVAT_NUCLIO_INVOKE_METHOD``:

- ``dashboard``: ``GET /api/functions[/<name>]`` and ``POST /api/function_invocations`` on the
  dashboard port;
- ``direct``: ``POST /`` on the function's own port, reported as ``status.httpPort``. CVAT in
  Docker posts to ``host.docker.internal:<httpPort>``, so listen on an address the containers
  reach (``--host 0.0.0.0`` or the docker bridge address).

Ports: the dashboard on ``port``; function *i* (in the order given) on ``port + 1 + i``, or
on an ephemeral port with ``function_ports="ephemeral"``; a port pinned in ``function.yaml``
(``triggers.*.attributes.port``) always wins.

HTTP: one uvicorn server per port (``http="h11"`` with `serverless.serve_protocol`'s strict
framing), all on one asyncio loop in a background thread, serving the Starlette apps of
`serverless.serve_http`. Connections are kept alive (idle ones close after
`KEEP_ALIVE_SECONDS`); any number of them may be open at once.

Each function runs its requests one at a time on its own worker thread (as Nuclio with
``maxWorkers: 1``; the yaml's ``maxWorkers`` is ignored, since workers would share one model
here); concurrent requests wait in order, up to ``queue_size`` per function (more get 503 with
``Retry-After``). Each request has ``timeout`` seconds (default: the function's
``spec.eventTimeout``, else 120 s), or less when CVAT's ``X-Nuclio-Invoke-Timeout`` says so; at
the deadline it is answered 504, and a request nobody waits for any more (deadline passed,
client gone) never starts. Functions initialise one after another at start-up; requests that
arrive meanwhile wait for them. With ``micro_batch`` N, each detector function whose model can
batch (`serverless.micro_batch`) runs up to N requests at once instead, and the frames that
arrive within ``batch_window_ms`` of each other go to the model in one call; interactors are
never batched. `FunctionHost.stop` (``autolabel serve`` on SIGTERM or Ctrl-C)
is graceful: no new connections, idle ones closed, requests in flight answered, then exit. See
`serve_spec` for the checks on ``function.yaml``, `serve_function` for the worker and the
replies, `serve_isolation` for how each function gets its own modules and ``spec.env``,
`serve_http` for the routes.

    with FunctionHost(["serverless/functions/grounding-dino"], ServeOptions(port=0)) as host:
        print(host.dashboard_url, host.functions["grounding-dino"].port)
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import h11
import uvicorn
from starlette.types import ASGIApp

from serverless.serve_framing import MAX_HEAD
from serverless.serve_function import HostedFunction
from serverless.serve_http import dashboard_app, function_app
from serverless.serve_protocol import StrictH11Protocol
from serverless.serve_spec import DEFAULT_MAX_BODY_SIZE, DEFAULT_QUEUE_SIZE, ServeError, read_function_dir

if TYPE_CHECKING:
    from serverless.micro_batch import MicroBatchSettings

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "KEEP_ALIVE_SECONDS",
    "SERVER_STACK",
    "FunctionHost",
    "LogFormatter",
    "ServeError",
    "ServeOptions",
    "load_function_dirs",
]

log = logging.getLogger("autolabel.serve")

PORT_MODES = ("next", "ephemeral")
KEEP_ALIVE_SECONDS = 75
"""How long an idle keep-alive connection (or a new one that sends nothing) stays open."""
_BACKLOG = 128
SERVER_STACK = f"starlette {version('starlette')} + uvicorn {uvicorn.__version__} (h11 {h11.__version__})"
"""The HTTP stack under ``autolabel serve``, in words (for logs and benchmarks)."""


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to serve."""

    host: str = "127.0.0.1"
    """Address every listener binds to."""
    port: int = 8070
    """Dashboard port (CVAT's ``CVAT_NUCLIO_PORT``); 0 picks a free one."""
    function_ports: str = "next"
    """``next``: function *i* listens on ``port + 1 + i``; ``ephemeral``: free ports."""
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    """Request body limit in bytes for functions without ``maxRequestBodySize``."""
    namespace: str = "nuclio"
    """Namespace reported when a request names none (``x-nuclio-function-namespace``)."""
    timeout: float | None = None
    """Seconds each request may take, queue wait included, for every function; None: each
    function's ``spec.eventTimeout``, else 120 s (CVAT's default)."""
    queue_size: int = DEFAULT_QUEUE_SIZE
    """Requests that may wait per function behind the running one; more get 503."""
    micro_batch: int | None = None
    """Most frames per model call for functions whose model batches (`serverless.micro_batch`);
    None: off, one request at a time per function."""
    batch_window_ms: float = 5.0
    """With ``micro_batch``: how long the first waiting frame waits for others to join its call."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must lie in 0..65535, got {self.port}")
        if self.function_ports not in PORT_MODES:
            raise ValueError(f"function_ports must be one of {PORT_MODES}, got {self.function_ports!r}")
        if self.max_body_size <= 0:
            raise ValueError(f"max_body_size must be positive, got {self.max_body_size}")
        if self.timeout is not None and not 0 < self.timeout <= 86400:
            raise ValueError(f"timeout must be more than 0 and at most 86400 seconds, got {self.timeout}")
        if not 0 <= self.queue_size <= 10000:
            raise ValueError(f"queue_size must lie in 0..10000, got {self.queue_size}")
        self.micro_batch_settings()  # ValueError for a bad size or window

    def micro_batch_settings(self) -> MicroBatchSettings | None:
        """``micro_batch`` and ``batch_window_ms`` checked (ValueError), None when off."""
        from serverless.micro_batch import MicroBatchSettings

        settings = MicroBatchSettings(1 if self.micro_batch is None else self.micro_batch, self.batch_window_ms)
        return None if self.micro_batch is None else settings  # the window is checked even when off


class LogFormatter(logging.Formatter):
    """``time level message key=value…``: also prints the ``*_with`` fields of the Nuclio logger
    that functions use (``context.logger.info_with("done", frames=3)``)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "with", None)
        if isinstance(fields, Mapping) and fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


class FunctionHost:
    """The server: a dashboard listener plus one listener per function, all in this process.

    ``FunctionHost(dirs, options)`` reads and checks every ``function.yaml`` (`ServeError` on a
    bad one or on two functions with one name). `start` binds every port (`ServeError` naming
    the address if one is taken), starts one uvicorn server per port on an asyncio loop in a
    background thread, and begins loading the functions on their workers; `wait_ready` waits
    for them and raises `ServeError` listing the ones that failed. `stop` shuts down
    gracefully: the ports stop accepting, idle keep-alive connections close, the requests in
    flight (queued ones included) are answered, then the workers stop. As a context manager it
    starts, waits and stops.
    """

    def __init__(self, function_dirs: Sequence[str | os.PathLike[str]], options: ServeOptions | None = None) -> None:
        self.options = options or ServeOptions()
        if not function_dirs:
            raise ServeError("give at least one function directory")
        functions: dict[str, HostedFunction] = {}
        for directory in function_dirs:
            definition = read_function_dir(directory)
            if definition.name in functions:
                raise ServeError(
                    f"two directories define function {definition.name!r}: "
                    f"{functions[definition.name].definition.directory} and {definition.directory}"
                )
            functions[definition.name] = HostedFunction(
                definition,
                namespace=self.options.namespace,
                timeout=self.options.timeout,
                queue_size=self.options.queue_size,
                max_body_size=self.options.max_body_size,
                micro_batch=self.options.micro_batch_settings(),
            )
        self.functions: Mapping[str, HostedFunction] = functions
        self.max_body_size = self.options.max_body_size
        self.namespace = self.options.namespace
        self.dashboard_port = 0
        self._init_lock = threading.Lock()
        self._http: _Servers | None = None
        self._loading: dict[str, Future] = {}
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._started = False

    # ------------------------------------------------------------- lifecycle
    def start(self) -> FunctionHost:
        """Bind all ports, serve, and start loading the functions (returns once serving)."""
        if self._started:
            raise ServeError("this server has already been started (a stopped server cannot restart)")
        self._started = True
        host, port = self.options.host, self.options.port
        listeners: list[tuple[socket.socket, ASGIApp]] = []
        try:
            listeners.append((_bind(host, port, "the dashboard"), dashboard_app(self)))
            for i, function in enumerate(self.functions.values()):
                if function.definition.port is not None:
                    wanted = function.definition.port
                elif self.options.function_ports == "next" and port != 0:
                    wanted = port + 1 + i
                else:
                    wanted = 0
                sock = _bind(host, wanted, f"function {function.name}")
                listeners.append((sock, function_app(self, function)))
                function.port = sock.getsockname()[1]
        except ServeError:
            for sock, _ in listeners:
                sock.close()
            raise
        self.dashboard_port = listeners[0][0].getsockname()[1]
        grace = max(fn.timeout for fn in self.functions.values()) + 5  # every request has met its deadline
        self._http = _Servers(listeners, grace)
        self._http.start()
        for name, function in self.functions.items():
            self._loading[name] = function.start_loading(self._init_lock)
        log.info(
            "dashboard on %s:%d; %s (%s)",
            host,
            self.dashboard_port,
            ", ".join(f"{fn.name} on {fn.port}" for fn in self.functions.values()),
            SERVER_STACK,
        )
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every function has run ``init_context``; `ServeError` lists failures."""
        failures = []
        for name, future in self._loading.items():
            try:
                future.result(timeout=timeout)
            except ServeError as err:
                failures.append(str(err))
            except TimeoutError as err:
                raise ServeError(f"function {name} was not ready after {timeout} s") from err
        if failures:
            raise ServeError("; ".join(failures))

    def request_stop(self) -> None:
        """Make `serve_forever` return (thread-safe; `stop` does the stopping)."""
        self._stop_requested.set()

    def serve_forever(self) -> None:
        """Block until `request_stop` or `stop` is called (from another thread)."""
        self._stop_requested.wait()

    def stop(self, *, force: bool = False) -> None:
        """Stop gracefully (idempotent): stop accepting, close idle connections, answer the
        requests in flight, then stop every function's worker. ``force``: abandon the
        requests in flight instead of waiting for them."""
        self._stop_requested.set()
        with self._stop_lock:
            if self._http is not None:
                self._http.stop(force=force)
            if self._stopped:
                return
            self._stopped = True
            for function in self.functions.values():
                function.close()

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- views
    @property
    def dashboard_url(self) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.dashboard_port}"

    def function_url(self, name: str) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.functions[name].port}/"

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 when every function is ready, else 503; per-function state and counters."""
        functions = {name: fn.health() for name, fn in self.functions.items()}
        states = {entry["state"] for entry in functions.values()}
        status = "ok" if states == {"ready"} else ("error" if "error" in states else "starting")
        if self._stop_requested.is_set():
            status = "stopping"
        return (200 if status == "ok" else 503), {"status": status, "functions": functions}


def _bind(host: str, port: int, what: str) -> socket.socket:
    """A listening TCP socket on ``host:port``; `ServeError` naming the address if it is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as err:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} for {what}: {err.strerror or err}") from err
    return sock


class _Servers:
    """One uvicorn server per listening socket, all on one asyncio loop in a background thread."""

    def __init__(self, listeners: Sequence[tuple[socket.socket, ASGIApp]], grace: float) -> None:
        self._listeners = list(listeners)
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    http=StrictH11Protocol,  # uvicorn's h11 protocol, with our framing rules
                    ws="none",
                    lifespan="off",
                    interface="asgi3",
                    log_config=None,
                    access_log=False,  # RequestLog writes one line per request
                    proxy_headers=False,
                    server_header=False,
                    headers=[("server", "autolabel-serve")],
                    backlog=_BACKLOG,
                    timeout_keep_alive=KEEP_ALIVE_SECONDS,
                    timeout_graceful_shutdown=math.ceil(grace),
                    h11_max_incomplete_event_size=MAX_HEAD,
                )
            )
            for _, app in self._listeners
        ]
        self._thread = threading.Thread(target=self._run, name="serve-http", daemon=True)
        self._serving = threading.Event()
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._serving.wait()
        if self._failure is not None:
            raise ServeError(f"the HTTP servers did not start: {self._failure}") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # noqa: BLE001 - reported by start (or logged once serving)
            self._failure = err
            if self._serving.is_set():
                log.error("the HTTP servers stopped: %s", err)
        finally:
            self._serving.set()
            for sock, _ in self._listeners:
                sock.close()

    async def _serve(self) -> None:
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, (sock, _) in zip(self._servers, self._listeners, strict=True)
        ]
        while not all(server.started for server in self._servers):
            done = [task for task in tasks if task.done()]
            if done:
                done[0].result()  # a server failed to start: raise its error
                raise RuntimeError("a server ended before it started")
            await asyncio.sleep(0.005)
        self._serving.set()
        await asyncio.gather(*tasks)

    def stop(self, *, force: bool = False) -> None:
        """Ask every server to shut down and wait for them (see `FunctionHost.stop`)."""
        for server in self._servers:
            server.should_exit = True
            server.force_exit = server.force_exit or force
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10 if force else None)


def load_function_dirs(paths: Sequence[Path]) -> list[Path]:
    """Expand the CLI arguments: a directory with ``function.yaml`` is a function; a directory
    without one stands for its sub-directories that have one (``serverless/functions``)."""
    found: list[Path] = []
    for path in paths:
        if (path / "function.yaml").is_file() or not path.is_dir():
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / "function.yaml").is_file())
        if not children:
            raise ServeError(f"{path}: no function.yaml in it or in its sub-directories")
        found.extend(children)
    return found
