"""``autolabel serve`` bounds the work one request can cause: a bounded queue (503 with
``Retry-After``), a deadline per request (504 JSON; a request that has not started by then never
runs, a running one is told to stop), and requests whose client hangs up while they wait are
dropped without running.

The test function blocks until the test creates a file, so nothing here depends on how fast the
machine is: deadlines are tiny and every wait is for an event, never for a duration. What ran is
read from files the handler writes and from ``/healthz``, over the wire.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from serverless import serve_http
from serverless.serve import FunctionHost, ServeError, ServeOptions
from serverless.serve_spec import parse_duration, read_function_dir
from tests.test_serve import CVAT_DIRECT_HEADERS, call, invocation_headers, write_function

BLOCKER_MAIN = """
    import time
    from pathlib import Path

    from serverless.serve_function import request_cancelled

    def handler(context, event):
        work, name = Path(event.body["dir"]), event.body["name"]
        (work / f"{name}.started").touch()
        for _ in range(6000):  # at most a minute, so a broken test cannot hang the suite
            if (work / f"{name}.release").exists():
                break
            time.sleep(0.01)
        if request_cancelled():  # a handler stops between stages once nobody waits for it
            (work / f"{name}.stopped").touch()
            return {"name": name, "stopped": True}
        (work / f"{name}.finished").touch()
        return {"name": name}
"""


def _wait_for(predicate, what: str, attempts: int = 3000) -> None:
    event = threading.Event()
    for _ in range(attempts):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Blocker:
    """Requests to the blocking function, each named, each released by the test."""

    def __init__(self, host: FunctionHost, work: Path) -> None:
        self.host, self.work = host, work
        self.answers: dict[str, object] = {}
        self.threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.host.functions["blocker"].port

    def body(self, name: str) -> bytes:
        return json.dumps({"dir": str(self.work), "name": name}).encode()

    def send(self, name: str, *, headers: dict[str, str] | None = None, via: str = "direct") -> None:
        """Send in the background; the answer lands in ``self.answers[name]``."""

        def run() -> None:
            if via == "direct":
                self.answers[name] = call(self.port, "POST", "/", {**CVAT_DIRECT_HEADERS, **(headers or {})},
                                          self.body(name))
            else:
                self.answers[name] = call(self.host.dashboard_port, "POST", "/api/function_invocations",
                                          {**invocation_headers("blocker"), **(headers or {})}, self.body(name))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def ran(self, name: str, stage: str = "started") -> bool:
        return (self.work / f"{name}.{stage}").exists()

    def release(self, *names: str) -> None:
        for name in names:
            (self.work / f"{name}.release").touch()

    def answer(self, name: str):
        _wait_for(lambda: name in self.answers, f"the answer to {name}")
        return self.answers[name]

    def health(self) -> dict:
        return call(self.host.dashboard_port, "GET", "/healthz").json()["functions"]["blocker"]


@contextlib.contextmanager
def serve_blocker(tmp_path: Path, **options) -> Iterator[Blocker]:
    """A server with the blocking function (`ServeOptions` as given); every request it started
    is released at the end."""
    directory = write_function(tmp_path / "functions", "blocker", BLOCKER_MAIN)
    work = tmp_path / "work"
    work.mkdir()
    with FunctionHost([directory], ServeOptions(host="127.0.0.1", port=0, function_ports="ephemeral", **options)) as host:
        blocker = Blocker(host, work)
        try:
            yield blocker
        finally:
            blocker.release(*(p.name.split(".")[0] for p in work.glob("*.started")), "a", "b", "c")


@pytest.fixture()
def blocker(tmp_path):
    """A server with one blocking function that lets one request wait behind the running one."""
    with serve_blocker(tmp_path, queue_size=1) as served:
        yield served


# --------------------------------------------------------------------------- queue


def test_a_full_queue_answers_503_with_retry_after(blocker):
    blocker.send("a")
    _wait_for(lambda: blocker.ran("a"), "a to start")
    blocker.send("b", via="dashboard")
    _wait_for(lambda: blocker.health()["queued"] == 1, "b to queue")
    full = call(blocker.port, "POST", "/", CVAT_DIRECT_HEADERS, blocker.body("c"))
    assert full.status == 503
    assert "busy" in full.json()["error"] and "--queue-size" in full.json()["error"]
    assert int(full.headers["retry-after"]) >= 1
    assert not blocker.ran("c")
    assert blocker.health()["rejected"] == 1
    blocker.release("a", "b")
    assert blocker.answer("a").status == 200 and blocker.answer("b").status == 200
    assert blocker.health()["invocations"] == 2


# --------------------------------------------------------------------------- deadlines


def test_a_request_past_its_deadline_gets_504_and_never_starts(blocker):
    blocker.send("a")
    _wait_for(lambda: blocker.ran("a"), "a to start")
    blocker.send("b", headers={"X-Nuclio-Invoke-Timeout": "50ms"}, via="dashboard")  # CVAT's header
    late = blocker.answer("b")
    assert late.status == 504 and late.headers["content-type"] == "application/json"
    assert "did not answer within 0.05 s" in late.json()["error"]
    health = blocker.health()
    assert (health["queued"], health["timeouts"], health["dropped"]) == (0, 1, 1)
    blocker.release("a", "b")
    assert blocker.answer("a").status == 200
    _wait_for(lambda: blocker.health()["invocations"] == 1, "a to finish")
    assert not blocker.ran("b")


def test_a_running_request_past_its_deadline_gets_504_and_is_told_to_stop(tmp_path):
    with serve_blocker(tmp_path, timeout=0.05) as blocker:
        try:
            blocker.send("a")
            answer = blocker.answer("a")
            assert answer.status == 504 and "within 0.05 s" in answer.json()["error"]
            assert blocker.ran("a")
        finally:
            blocker.release("a")
        _wait_for(lambda: blocker.ran("a", "stopped"), "the handler to see it was given up on")
        assert not blocker.ran("a", "finished")


def test_a_malformed_invoke_timeout_header_is_400(blocker):
    answer = call(blocker.port, "POST", "/", {**CVAT_DIRECT_HEADERS, "X-Nuclio-Invoke-Timeout": "soon"},
                  blocker.body("a"))
    assert answer.status == 400 and "X-Nuclio-Invoke-Timeout" in answer.json()["error"]
    assert not blocker.ran("a")


def test_event_timeout_in_function_yaml_is_the_default_limit(tmp_path):
    directory = write_function(tmp_path, "fn", BLOCKER_MAIN, spec={"eventTimeout": "1m30s"})
    assert read_function_dir(directory).event_timeout == 90.0
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral")) as host:
        assert host.functions["fn"].timeout == 90.0
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral", timeout=5)) as host:
        assert host.functions["fn"].timeout == 5.0
    bad = write_function(tmp_path, "bad", BLOCKER_MAIN, spec={"eventTimeout": "soon"})
    with pytest.raises(ServeError, match=r"function\.yaml: spec\.eventTimeout: expected a duration"):
        read_function_dir(bad)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("2m", 120.0), ("1m30s", 90.0), ("500ms", 0.5),
                                               ("120", 120.0), ("1.5s", 1.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1s", "30x", "1e9", "30 s", "s"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# --------------------------------------------------------------------------- abandoned requests


def test_a_request_whose_client_hangs_up_is_dropped_without_running(blocker):
    blocker.send("a")
    _wait_for(lambda: blocker.ran("a"), "a to start")
    body = blocker.body("b")
    sock = socket.create_connection(("127.0.0.1", blocker.port), timeout=30)
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    _wait_for(lambda: blocker.health()["queued"] == 1, "b to queue")
    sock.close()  # the client gives up
    _wait_for(lambda: blocker.health()["dropped"] == 1, "b to be dropped")
    assert blocker.health()["queued"] == 0
    blocker.release("a", "b")
    assert blocker.answer("a").status == 200
    _wait_for(lambda: blocker.ran("a", "finished"), "a to finish")
    assert blocker.health()["invocations"] == 1
    assert not blocker.ran("b")


# --------------------------------------------------------------------------- body limit


SIZE_MAIN = """
    def handler(context, event):
        return {"size": len(event.body)}
"""


def test_a_body_limit_above_the_drain_limit_accepts_every_body_within_it(tmp_path, monkeypatch):
    """Refused bodies are read and discarded up to a drain limit (512 MiB), so the client sees the
    413; a --max-body-size above it still accepts bodies between the two, whole or chunked."""
    monkeypatch.setattr(serve_http, "_DRAIN_LIMIT", 16)
    directory = write_function(tmp_path, "size", SIZE_MAIN)
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral", max_body_size=64)) as host:
        port = host.functions["size"].port
        plain = {"Content-Type": "application/octet-stream"}
        whole = call(port, "POST", "/", plain, b"x" * 40)
        assert (whole.status, whole.json()) == (200, {"size": 40})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/", body=iter([b"x" * 30, b"x" * 30]), headers=plain, encode_chunked=True)
            response = conn.getresponse()
            assert (response.status, json.loads(response.read())) == (200, {"size": 60})
        finally:
            conn.close()
        over = call(port, "POST", "/", plain, b"x" * 65)
        assert over.status == 413 and (over.json()["size"], over.json()["limit"]) == (65, 64)
