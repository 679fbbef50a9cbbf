"""``autolabel serve FUNCTION_DIR...``: host Nuclio function directories for CVAT, without Nuclio.

Register on the main app with ``register(app)`` (same as ``app.command("serve")(serve)``).
The server itself lives in `serverless.serve`; this module only parses options, prints how to
point CVAT at it, and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from serverless.serve_spec import DEFAULT_MAX_BODY_SIZE, DEFAULT_QUEUE_SIZE  # light: no HTTP stack

__all__ = ["parse_size", "print_banner", "register", "serve"]

err = Console(stderr=True)

_SIZE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 2**20, "mb": 2**20, "mib": 2**20}
_UNITS |= {"g": 2**30, "gb": 2**30, "gib": 2**30}


def parse_size(text: str) -> int:
    """``"33554432"``, ``"32MiB"``, ``"512k"`` → bytes (units are powers of 1024)."""
    match = _SIZE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a positive size such as 33554432, 32MiB or 512KiB, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _as_option(message: str) -> str:
    """A `ServeOptions` message that starts with a field's name, with the option as typed
    (``queue_size must ...`` → ``--queue-size must ...``): each field is the option of its name."""
    from dataclasses import fields

    from serverless.serve import ServeOptions

    field, _, rest = message.partition(" ")
    named = field in {option.name for option in fields(ServeOptions)}
    return f"--{field.replace('_', '-')} {rest}" if named else message


def _fail(message: str) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def _serve_logging(level: str) -> Iterator[None]:
    """One line per request (and the functions' logs) on stderr while serving."""
    from serverless.serve import LogFormatter

    logger = logging.getLogger("autolabel.serve")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    handler = _StderrHandler()
    handler.setFormatter(LogFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def print_banner(host, console: Console) -> None:
    """What a user needs to point CVAT at the server, one function per block. Ids and URLs are
    never wrapped or cut, whatever the terminal width: they are there to be copied."""
    from rich.padding import Padding
    from rich.text import Text

    def line(*parts: str | tuple[str, str]) -> None:
        console.print(Text.assemble(*parts), soft_wrap=True, highlight=False)

    line(("autolabel serve", "bold"), ": Nuclio dashboard API on ", (host.dashboard_url, "bold"))
    for function in host.functions.values():
        d = function.definition
        line("  ", (d.name, "bold cyan"), f"  ({d.kind or 'no type'})")
        line("    direct: ", host.function_url(d.name))
        description = str(d.spec.get("description", "")).strip()
        if description:
            console.print(Padding(Text(description, style="dim"), (0, 0, 0, 4), expand=False), highlight=False)
    bind = host.options.host
    cvat_host = "host.docker.internal" if bind in ("0.0.0.0", "::") else bind
    line(
        "Point CVAT at it: CVAT_SERVERLESS=1 "
        f"CVAT_NUCLIO_HOST={cvat_host} CVAT_NUCLIO_PORT={host.dashboard_port} "
        "CVAT_NUCLIO_INVOKE_METHOD=dashboard (or direct)"
    )
    if bind in ("127.0.0.1", "localhost", "::1"):
        console.print(
            "[yellow]Listening on loopback only: CVAT in Docker cannot reach it. Use --host 0.0.0.0 "
            "(direct mode posts to host.docker.internal:<httpPort>).[/]"
        )
    if host.options.micro_batch is not None:
        batched = ", ".join(fn.name for fn in host.functions.values() if fn.batched) or "none (no model batches)"
        line(f"Micro-batching: up to {host.options.micro_batch} frames per model call "
             f"(window {host.options.batch_window_ms:g} ms) for: {batched}")
    if any(_tiny(fn.environ) for fn in host.functions.values()):
        console.print("[bold red]TINY RANDOM MODELS IN USE: every box, mask and score is meaningless.[/]")
    console.print("Ctrl-C (or SIGTERM) stops the server once the requests in flight are answered.")


def _tiny(environ) -> bool:
    """Whether a function's environment points its models at tiny random ones."""
    from serverless.pipeline import ModelSettings, ModelSpecError

    try:
        return ModelSettings.from_env(environ=environ).tiny
    except ModelSpecError:  # a function that names no models through the environment, or names bad ones
        return False


def serve(
    function_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Function directories (function.yaml + main.py), or folders holding them.",
            show_default=False,
            metavar="FUNCTION_DIR",
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for CVAT in Docker).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Dashboard port (CVAT_NUCLIO_PORT); 0 picks a free one.")] = 8070,
    function_ports: Annotated[
        str, typer.Option(help="'next': function i on PORT+1+i; 'ephemeral': free ports. A port in function.yaml wins.")
    ] = "next",
    max_body_size: Annotated[
        str, typer.Option(help="Request body limit for functions without maxRequestBodySize (e.g. 32MiB).")
    ] = f"{DEFAULT_MAX_BODY_SIZE // 2**20}MiB" if DEFAULT_MAX_BODY_SIZE % 2**20 == 0 else str(DEFAULT_MAX_BODY_SIZE),
    namespace: Annotated[str, typer.Option(help="Namespace reported when CVAT sends none.")] = "nuclio",
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a request may take, queue wait included (then 504); default: each function's "
            "spec.eventTimeout, else 120. CVAT's X-Nuclio-Invoke-Timeout lowers it.",
            show_default=False,
        ),
    ] = None,
    queue_size: Annotated[
        int, typer.Option(help="Requests that may wait per function behind the running one; more get 503.")
    ] = DEFAULT_QUEUE_SIZE,
    micro_batch: Annotated[
        int | None,
        typer.Option(
            help="Micro-batching: run up to N requests of a detector function at once and give the model their "
            "frames in one call (for cvat-sdk and bulk clients that send frames concurrently). Default: off, "
            "one request at a time. Interactors are never batched.",
            show_default=False,
            metavar="N",
        ),
    ] = None,
    batch_window_ms: Annotated[
        float, typer.Option(help="With --micro-batch: how long the first frame waits for others to join its call.")
    ] = 5.0,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error.")] = "info",
) -> None:
    """Serve Nuclio function directories over HTTP for CVAT (no Nuclio, no Docker needed).

    Speaks Nuclio's dashboard API (GET /api/functions, POST /api/function_invocations) on
    --port and direct invocation (POST /) on one port per function; GET /healthz reports each
    function's state. Each model loads once; requests to a function queue and run one at a time
    (with --micro-batch N, up to N at a time, their frames in one model call), each within
    --timeout; a request whose client has hung up is dropped before it runs.
    Each function sees its spec.env from function.yaml, except variables you exported (your
    AUTOLABEL_* exports win); the process environment is not changed. SIGTERM or Ctrl-C stops
    gracefully: the requests in flight are answered first (Ctrl-C again abandons them).
    """
    from serverless.serve import ServeOptions

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        _fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    try:
        options = ServeOptions(
            host=host,
            port=port,
            function_ports=function_ports,
            max_body_size=parse_size(max_body_size),
            namespace=namespace,
            timeout=timeout,
            queue_size=queue_size,
            micro_batch=micro_batch,
            batch_window_ms=batch_window_ms,
        )
    except ValueError as error:
        _fail(_as_option(str(error)))
    with _serve_logging(log_level):
        _run(function_dirs, options)


def _run(function_dirs: list[Path], options) -> None:
    from serverless.serve import FunctionHost, ServeError, load_function_dirs

    try:
        server = FunctionHost(load_function_dirs(function_dirs), options)
        err.print(f"loading {len(server.functions)} function(s)…")
        server.start()
    except ServeError as error:
        _fail(str(error))
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # SIGTERM (docker stop, systemd) stops as gracefully as Ctrl-C
        previous = signal.signal(
            signal.SIGTERM, lambda *_: threading.Thread(target=server.request_stop, daemon=True).start()
        )
    serving = False
    try:
        try:
            server.wait_ready()
        except ServeError as error:
            server.stop()
            _fail(str(error))
        print_banner(server, err)
        serving = True
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        _stop(server, serving)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _stop(server, serving: bool) -> None:
    """Stop gracefully; a Ctrl-C meanwhile abandons the requests still in flight."""
    if serving:
        err.print("stopping: answering the requests in flight (Ctrl-C again abandons them)")
    try:
        server.stop()
    except KeyboardInterrupt:
        err.print("abandoning the requests in flight")
        server.stop(force=True)
    if serving:
        err.print("stopped")


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``autolabel`` app."""
    app.command("serve")(serve)
