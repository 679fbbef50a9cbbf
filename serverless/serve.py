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

Each function runs its requests one at a time on its own worker thread (as Nuclio with
``maxWorkers: 1``; the yaml's ``maxWorkers`` is ignored, since workers would share one model
here); concurrent requests wait in order, up to ``queue_size`` per function (more get 503 with
``Retry-After``), and connections beyond the running ones wait in a 128-deep listen backlog.
Each request has ``timeout`` seconds (default: the function's ``spec.eventTimeout``, else 120 s),
or less when CVAT's ``X-Nuclio-Invoke-Timeout`` says so; at the deadline it is answered 504, and
a request nobody waits for any more (deadline passed, client gone) never starts. Functions
initialise one after another at start-up; requests that arrive meanwhile wait for them. See `serve_spec` for the checks
on ``function.yaml``, `serve_function` for how ``spec.env`` is applied and how handler replies
are built, `serve_http` for the routes.

    with FunctionHost(["serverless/functions/grounding-dino"], ServeOptions(port=0)) as host:
        print(host.dashboard_url, host.functions["grounding-dino"].port)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from serverless.serve_function import DEFAULT_QUEUE_SIZE, EnvApplier, HostedFunction
from serverless.serve_http import DashboardHandler, FunctionHandler, Listener
from serverless.serve_spec import DEFAULT_MAX_BODY_SIZE, ServeError, read_function_dir

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "FunctionHost",
    "LogFormatter",
    "ServeError",
    "ServeOptions",
    "load_function_dirs",
]

log = logging.getLogger("autolabel.serve")

PORT_MODES = ("next", "ephemeral")


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
    the address if one is taken), starts serving and begins loading the functions in the
    background; `wait_ready` waits for them and raises `ServeError` listing the ones that
    failed. `stop` closes everything. As a context manager it starts, waits and stops.
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
            )
        self.functions: Mapping[str, HostedFunction] = functions
        self.max_body_size = self.options.max_body_size
        self.namespace = self.options.namespace
        self._env = EnvApplier()
        self._init_lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._threads: list[tuple[Listener, threading.Thread]] = []
        self._loading: dict[str, Future] = {}
        self._stopped = threading.Event()
        self._started = False
        self.dashboard_port = 0

    # ------------------------------------------------------------- lifecycle
    def start(self) -> FunctionHost:
        """Bind all ports, serve, and start loading the functions (returns at once)."""
        if self._started:
            raise ServeError("this server has already been started (a stopped server cannot restart)")
        self._started = True
        host, port = self.options.host, self.options.port
        try:
            dashboard = self._bind(host, port, DashboardHandler, None, "the dashboard")
            for i, function in enumerate(self.functions.values()):
                if function.definition.port is not None:
                    wanted = function.definition.port
                elif self.options.function_ports == "next" and port != 0:
                    wanted = port + 1 + i
                else:
                    wanted = 0
                listener = self._bind(host, wanted, FunctionHandler, function, f"function {function.name}")
                function.port = listener.server_port
        except ServeError:
            self._close_listeners()
            raise
        self.dashboard_port = dashboard.server_port
        for listener in self._listeners:
            thread = threading.Thread(
                target=listener.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"serve-{listener.server_port}",
                daemon=True,
            )
            thread.start()
            self._threads.append((listener, thread))
        for name, function in self.functions.items():
            self._loading[name] = function.start_loading(self._init_lock, self._env)
        log.info(
            "dashboard on %s:%d; %s",
            host,
            self.dashboard_port,
            ", ".join(f"{fn.name} on {fn.port}" for fn in self.functions.values()),
        )
        return self

    def _bind(self, host: str, port: int, handler: Any, function: HostedFunction | None, what: str) -> Listener:
        try:
            listener = Listener((host, port), handler, app=self, function=function)
        except OSError as err:
            raise ServeError(f"cannot listen on {host}:{port} for {what}: {err.strerror or err}") from err
        self._listeners.append(listener)
        return listener

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

    def serve_forever(self) -> None:
        """Block until `stop` is called (from another thread) or the process is interrupted."""
        self._stopped.wait()

    def stop(self) -> None:
        """Stop listening, stop every function's worker and remove the ``spec.env`` variables
        this server set (idempotent)."""
        self._stopped.set()
        self._close_listeners()
        for function in self.functions.values():
            function.close()
        self._env.restore()

    def _close_listeners(self) -> None:
        for listener, thread in self._threads:
            listener.shutdown()  # returns once its serve_forever loop has ended
            thread.join(timeout=5)
        for listener in self._listeners:
            listener.server_close()
        self._listeners.clear()
        self._threads.clear()

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
        if self._stopped.is_set():
            status = "stopping"
        return (200 if status == "ok" else 503), {"status": status, "functions": functions}


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
