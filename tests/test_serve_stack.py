"""``autolabel serve`` on its ASGI stack (Starlette + uvicorn/h11): keep-alive under concurrency,
graceful shutdown of a real ``autolabel serve`` process on SIGTERM, each function's own
``spec.env`` and modules without touching the process, and the framing guard against h11."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serverless.serve import FunctionHost, ServeOptions
from serverless.serve_framing import FramingGuard
from serverless.serve_isolation import FunctionEnviron
from tests.conftest import ROOT
from tests.test_serve import CVAT_DIRECT_HEADERS, call, invocation_headers, sleeper_main, write_function
from tests.test_serve_http import exchange, parse

ECHO_MAIN = sleeper_main(0.002)


# --------------------------------------------------------------------------- keep-alive


def test_32_concurrent_keep_alive_clients_are_all_answered(tmp_path):
    clients, requests_each = 32, 4
    directory = write_function(tmp_path, "echo", ECHO_MAIN)
    options = ServeOptions(port=0, function_ports="ephemeral", queue_size=clients)
    with FunctionHost([directory], options) as host:
        answers: dict[int, list[dict]] = {}
        local_ports: dict[int, set[int]] = {}
        failures: list[BaseException] = []
        start = threading.Barrier(clients)

        def client(i: int) -> None:
            dashboard = i % 2 == 0
            port = host.dashboard_port if dashboard else host.functions["echo"].port
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                start.wait()
                for n in range(requests_each):
                    body = json.dumps({"client": i, "n": n}).encode()
                    if dashboard:
                        conn.request("POST", "/api/function_invocations", body, invocation_headers("echo"))
                    else:
                        conn.request("POST", "/", body, CVAT_DIRECT_HEADERS)
                    response = conn.getresponse()
                    assert response.status == 200, response.read()[:200]
                    assert response.getheader("connection") != "close"
                    answers.setdefault(i, []).append(json.loads(response.read()))
                    local_ports.setdefault(i, set()).add(conn.sock.getsockname()[1])
            except BaseException as err:  # noqa: BLE001 - reported below
                failures.append(err)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures[:3]
        assert {i: [(a["client"], a["n"]) for a in got] for i, got in answers.items()} == {
            i: [(i, n) for n in range(requests_each)] for i in range(clients)
        }
        assert all(len(ports) == 1 for ports in local_ports.values()), "a connection was not kept alive"
        assert max(a["max_concurrent"] for got in answers.values() for a in got) == 1  # one worker
        health = call(host.dashboard_port, "GET", "/healthz").json()["functions"]["echo"]
        assert (health["invocations"], health["rejected"], health["dropped"]) == (clients * requests_each, 0, 0)


def test_a_bad_request_pipelined_after_a_good_one_is_refused_after_the_good_one_is_answered(tmp_path):
    directory = write_function(tmp_path, "echo", ECHO_MAIN)
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral")) as host:
        good = b'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n'
        good += b'{"client": 1, "n": 0}'
        bad = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"
        data, closed = exchange(host.functions["echo"].port, good + bad)
        assert closed
        first, second = parse(data)
        assert (first.status, json.loads(first.body)["client"]) == (200, 1)
        assert second.status == 400 and second.headers["connection"] == "close"
        assert "Content-Length" in json.loads(second.body)["error"]


def test_protocol_errors_h11_finds_are_json_too(tmp_path):
    directory = write_function(tmp_path, "echo", ECHO_MAIN)
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral")) as host:
        data, closed = exchange(host.dashboard_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert closed
        (reply,) = parse(data)
        assert reply.status == 400 and reply.headers["content-type"] == "application/json"
        assert "malformed request" in json.loads(reply.body)["error"]


# --------------------------------------------------------------------------- the framing guard

_HEADS = st.sampled_from([b"POST / HTTP/1.1\r\nHost: x\r\n", b"PUT /a?b=1 HTTP/1.1\r\nHost: y\r\nX-A: 1\r\n"])
_BODIES = st.binary(max_size=40)


@st.composite
def _request(draw) -> tuple[bytes, bytes]:
    """A well-framed request (Content-Length or chunked, extensions, trailers) and its body."""
    head, body = draw(_HEADS), draw(_BODIES)
    if not draw(st.booleans()):
        return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, body
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(body))), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]
    chunks = b"".join(
        f"{len(p):x}".encode() + draw(st.sampled_from([b"", b";ext=1", b" "])) + b"\r\n" + p + b"\r\n" for p in pieces
    )
    trailer = draw(st.sampled_from([b"", b"X-T: 1\r\n"]))
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n" + trailer + b"\r\n", body


def _h11_bodies(stream: bytes) -> list[bytes]:
    """The bodies of the requests h11 reads from ``stream``."""
    conn, bodies = h11.Connection(h11.SERVER), []
    conn.receive_data(stream)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return bodies
        if isinstance(event, h11.Request):
            bodies.append(b"")
        elif isinstance(event, h11.Data):
            bodies[-1] += event.data
        elif isinstance(event, h11.EndOfMessage):
            conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()


def _feed_in_pieces(stream: bytes, cuts: list[int]) -> tuple[bytes, FramingGuard]:
    guard = FramingGuard()
    bounds = sorted({min(c, len(stream)) for c in cuts})
    passed = b"".join(guard.feed(stream[a:b]) for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True))
    return passed, guard


@settings(max_examples=150, deadline=None)
@given(st.lists(_request(), min_size=1, max_size=3), st.lists(st.integers(0, 400), max_size=6))
def test_the_guard_passes_well_framed_requests_whole_and_h11_reads_them_alike(requests, cuts):
    stream = b"".join(raw for raw, _ in requests)
    passed, guard = _feed_in_pieces(stream, cuts)
    assert guard.refusal is None and passed == stream
    assert _feed_in_pieces(stream, list(range(len(stream))))[0] == stream  # a byte at a time too
    assert _h11_bodies(passed) == [body for _, body in requests]


@settings(max_examples=150, deadline=None)
@given(_request(), st.binary(max_size=60), st.lists(st.integers(0, 400), max_size=6))
def test_how_the_bytes_arrive_does_not_change_what_the_guard_decides(request, tail, cuts):
    stream = request[0] + tail
    whole, one = _feed_in_pieces(stream, [])
    pieces, other = _feed_in_pieces(stream, cuts)
    assert (pieces, other.refusal) == (whole, one.refusal)
    assert whole.startswith(request[0])  # a fault in what follows never takes back a good request


# --------------------------------------------------------------------------- spec.env and modules

ENV_MAIN = """
    import os
    from os import getenv

    from serverless.serve_function import function_environ

    def init_context(context):
        context.user_data.at_init = os.environ.get("SERVE_ISO_VALUE")
        context.user_data.loader = function_environ().get("SERVE_ISO_VALUE")

    def handler(context, event):
        import helper  # a sibling module imported while serving (no sys.path entry needed)

        os.environ["SERVE_ISO_WRITTEN"] = helper.WHO  # stays in this function's view
        return {
            "init": context.user_data.at_init,
            "loader_at_init": context.user_data.loader,
            "handler": getenv("SERVE_ISO_VALUE"),
            "loader": function_environ().get("SERVE_ISO_VALUE"),
            "written": os.environ.get("SERVE_ISO_WRITTEN"),
            "kept": os.environ.get("SERVE_ISO_KEPT"),
            "helper": helper.WHO,
        }
"""


def test_each_function_sees_its_own_spec_env_and_modules_and_the_process_is_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVE_ISO_KEPT", "exported")
    for name in ("SERVE_ISO_VALUE", "SERVE_ISO_WRITTEN"):
        monkeypatch.delenv(name, raising=False)
    dirs = []
    for who in ("a", "b"):
        directory = write_function(tmp_path, f"iso-{who}", ENV_MAIN,
                                   env={"SERVE_ISO_VALUE": f"from-{who}", "SERVE_ISO_KEPT": f"yaml-{who}"})
        (directory / "helper.py").write_text(f"WHO = {who!r}\n")
        dirs.append(directory)
    environ_before, path_before = dict(os.environ), list(sys.path)
    with FunctionHost(dirs, ServeOptions(port=0, function_ports="ephemeral")) as host:
        seen = {who: call(host.functions[f"iso-{who}"].port, "POST", "/", CVAT_DIRECT_HEADERS, b"{}").json()
                for who in ("a", "b")}
        assert dict(os.environ) == environ_before and sys.path == path_before
        assert "helper" not in sys.modules
    for who, values in seen.items():
        own = f"from-{who}"
        assert values == {"init": own, "loader_at_init": own, "handler": own, "loader": own, "written": who,
                          "kept": "exported", "helper": who}
    assert dict(os.environ) == environ_before and sys.path == path_before
    assert not [name for name in sys.modules if name.startswith("_autolabel_fn_")]  # stop() forgot them


_NAMES = st.sampled_from(["A", "B", "C", "D"])
_VALUES = st.text(max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES), st.dictionaries(_NAMES, _VALUES),
       st.lists(st.tuples(st.booleans(), _NAMES, _VALUES), max_size=12))
def test_a_function_environ_is_its_own_copy_of_the_process_environment(process, own, operations):
    process_before = dict(process)
    environ, expected = FunctionEnviron(own, process=process), {**process, **own}
    for write, name, value in operations:
        if write:
            environ[name] = expected[name] = value
        elif name in expected:
            del environ[name], expected[name]
        else:
            with pytest.raises(KeyError):
                del environ[name]
    assert dict(environ) == expected and len(environ) == len(expected)
    assert process == process_before


def test_relative_and_package_imports_inside_a_function(tmp_path):
    main = """
        from . import util
        from pkg.sub import VALUE
        import pkg

        def handler(context, event):
            return {"util": util.NAME, "value": VALUE, "pkg": pkg.NAME}
    """
    directory = write_function(tmp_path, "imports", main)
    (directory / "util.py").write_text("NAME = 'util'\n")
    (directory / "pkg").mkdir()
    (directory / "pkg" / "__init__.py").write_text("from .sub import VALUE as _V\nNAME = 'pkg'\n")
    (directory / "pkg" / "sub.py").write_text("import util\nVALUE = util.NAME + '-sub'\n")
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral")) as host:
        answer = call(host.functions["imports"].port, "POST", "/", CVAT_DIRECT_HEADERS, b"{}")
    assert answer.json() == {"util": "util", "value": "util-sub", "pkg": "pkg"}
    assert "util" not in sys.modules and "pkg" not in sys.modules


# --------------------------------------------------------------------------- graceful shutdown

SLOW_MAIN = """
    import time
    from pathlib import Path

    def handler(context, event):
        work = Path(event.body["dir"])
        (work / "started").touch()
        for _ in range(3000):  # at most 30 s, so a broken test cannot hang
            if (work / "release").exists():
                break
            time.sleep(0.01)
        return {"finished": True}
"""


def _banner_ports(process: subprocess.Popen, timeout: float = 60.0) -> tuple[int, int]:
    """The dashboard and the function port, read from the start-up banner on stderr."""
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        text += line
        if "Point CVAT at it" in line:
            dashboard = re.search(r"Nuclio dashboard API on http://127\.0\.0\.1:(\d+)", text)
            direct = re.search(r"direct: http://127\.0\.0\.1:(\d+)/", text)
            return int(dashboard.group(1)), int(direct.group(1))
    raise AssertionError(f"no banner from autolabel serve:\n{text}")


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_answers_the_request_in_flight_then_exits_0(tmp_path):
    directory = write_function(tmp_path / "functions", "slow", SLOW_MAIN)
    work = tmp_path / "work"
    work.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "serve", str(directory), "--port", "0", "--function-ports", "ephemeral"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    try:
        dashboard, port = _banner_ports(process)
        idle = http.client.HTTPConnection("127.0.0.1", dashboard, timeout=30)  # an idle keep-alive connection
        idle.request("GET", "/healthz")
        assert idle.getresponse().read() and idle.sock is not None
        answer: dict[str, object] = {}
        slow = threading.Thread(target=lambda: answer.update(reply=call(
            port, "POST", "/", CVAT_DIRECT_HEADERS, json.dumps({"dir": str(work)}).encode())))
        slow.start()
        deadline = time.monotonic() + 30
        while not (work / "started").exists():
            assert time.monotonic() < deadline and process.poll() is None, "the slow request never started"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        while not _refuses_connections(dashboard):  # new connections are refused at once...
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        time.sleep(1.0)  # past uvicorn's shutdown steps: a forced stop would have cancelled the request by now
        assert process.poll() is None  # ...while the request in flight keeps the process up
        (work / "release").touch()
        slow.join(timeout=30)
        reply = answer["reply"]
        assert (reply.status, reply.json()) == (200, {"finished": True})
        assert process.wait(timeout=30) == 0
        assert "stopped" in process.stderr.read()
        idle.close()
    finally:
        (work / "release").touch()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()

