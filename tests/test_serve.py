"""``autolabel serve``: a real HTTP server in this process, driven the way CVAT 2.17 drives Nuclio.

Requests carry the exact headers CVAT 2.17's lambda manager sent to a Nuclio stand-in
(``cvat_golden/2.17/11_lambda_manager_detector.json``; copied below so the tests do not need
the shared folder). Function directories are written by the tests (function.yaml + main.py,
the contract of ``serverless/functions/<name>``).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from serverless.serve import FunctionHost, ServeError, ServeOptions, load_function_dirs
from serverless.serve_function import reply_from_output
from serverless.serve_spec import read_function_dir
from tests.conftest import ROOT

# --------------------------------------------------------------------------- what CVAT sends

CVAT_DASHBOARD_HEADERS = {  # every dashboard request (golden 11, seq 4/6/13)
    "User-Agent": "CVAT/2.17.0 python-requests/2.32.3",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
    "Connection": "keep-alive",
    "x-nuclio-project-name": "cvat",
    "x-nuclio-function-namespace": "nuclio",
    "x-nuclio-invoke-via": "domain-name",
    "X-Nuclio-Invoke-Timeout": "120s",
}
CVAT_DIRECT_HEADERS = {  # direct invocation (golden 11, seq 50): no x-nuclio-* headers
    "User-Agent": "CVAT/2.17.0 python-requests/2.32.3",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
    "Connection": "keep-alive",
    "Content-Type": "application/json",
}


INVOKE = "/api/function_invocations"


def invocation_headers(name: str) -> dict[str, str]:
    return {
        **CVAT_DASHBOARD_HEADERS,
        "x-nuclio-function-name": name,
        "x-nuclio-path": "/",
        "Content-Type": "application/json",
    }


def png_b64(width: int = 320, height: int = 240) -> str:
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)  # compresses well
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def cvat_body(**fields) -> bytes:
    """``requests.post(json=...)`` as CVAT sends it: keys in CVAT's order, default separators."""
    return json.dumps(fields).encode()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"", host_header=None):
    """One request with exactly these headers (plus Host and Content-Length), on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host_header or f"127.0.0.1:{port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------- function dirs


def write_function(root: Path, name: str, main_py: str, *, kind: str = "detector", spec_labels=None, **extra) -> Path:
    """A function directory in the Nuclio format that CVAT's bundled functions use."""
    directory = root / name
    directory.mkdir(parents=True)
    annotations = {"name": extra.pop("display_name", name.title()), "type": kind, "framework": "pytorch"}
    annotations["spec"] = json.dumps(spec_labels, indent=2) if spec_labels is not None else ""
    annotations.update(extra.pop("annotations", {}))
    trigger = {"kind": "http", "maxWorkers": 1, "workerAvailabilityTimeoutMilliseconds": 10000, "attributes": {}}
    if "max_body" in extra:
        trigger["attributes"]["maxRequestBodySize"] = extra.pop("max_body")
    spec = {
        "description": extra.pop("description", f"{name} (test function)"),
        "runtime": "python:3.11",
        "handler": "main:handler",
        "eventTimeout": "30s",
        "env": [{"name": k, "value": v} for k, v in extra.pop("env", {}).items()],
        "triggers": {"myHttpTrigger": trigger},
    }
    spec.update(extra.pop("spec", {}))
    if spec.get("description") is None:
        del spec["description"]
    data = {"metadata": {"name": name, "namespace": "cvat", "annotations": annotations}, "spec": spec}
    assert not extra, extra
    yaml = YAML()
    with (directory / "function.yaml").open("w") as out:
        yaml.dump(data, out)
    (directory / "main.py").write_text(textwrap.dedent(main_py))
    return directory


DETECTOR_MAIN = """
    import base64, binascii, json
    from serverless.images import ImageError, decode_image

    INITS = []

    def init_context(context):
        INITS.append(1)
        context.logger.info("detector ready")

    def _bad(context, message):
        return context.Response(body=json.dumps({"error": message}), content_type="application/json", status_code=400)

    def handler(context, event):
        body = event.body
        if not isinstance(body, dict):
            return _bad(context, "body must be a JSON object")
        try:
            image = decode_image(base64.b64decode(body.get("image", ""), validate=True))
        except (ImageError, binascii.Error, ValueError) as err:
            return _bad(context, f"image: {err}")
        height, width = image.shape[:2]
        items = [{"label": "car", "type": "rectangle", "points": [0.0, 0.0, float(width), float(height)],
                  "confidence": 0.9, "attributes": [{"name": "score", "value": "90"}],
                  "threshold": body.get("threshold"), "inits": len(INITS)}]
        return context.Response(body=json.dumps(items), content_type="application/json", status_code=200)
"""

INTERACTOR_MAIN = """
    import json

    def handler(context, event):
        body = event.body
        if not isinstance(body, dict) or not body.get("pos_points"):
            return context.Response(
                body=json.dumps({"error": "pos_points needed"}), content_type="application/json", status_code=400
            )
        x, y = (int(v) for v in body["pos_points"][0])
        return {"mask": [[255]], "bounds": [x, y, x, y]}
"""


def sleeper_main(seconds: float) -> str:
    """A function that takes ``seconds`` per request and answers its JSON body, plus the most
    requests it has seen running at once and the thread that ran it."""
    return f"""
    import threading, time
    LOCK = threading.Lock()
    STATE = {{"running": 0, "max": 0}}

    def handler(context, event):
        with LOCK:
            STATE["running"] += 1
            STATE["max"] = max(STATE["max"], STATE["running"])
        time.sleep({seconds!r})
        with LOCK:
            STATE["running"] -= 1
        return {{**event.body, "max_concurrent": STATE["max"], "thread": threading.current_thread().name}}
"""


SLEEPER_MAIN = sleeper_main(0.05)

SHAPES_MAIN = """
    import json

    def handler(context, event):
        mode = event.body["mode"]
        if mode == "raise":
            raise RuntimeError("boom in handler")
        if mode == "str":
            return "plain text"
        if mode == "dict":
            return {"a": 1}
        if mode == "tuple":
            return 201, {"created": True}
        if mode == "list":
            return [{"label": "car"}]
        if mode == "bytes":
            return b"\\x00\\x01binary"
        if mode == "response_dict":
            return context.Response(body={"b": 2}, status_code=202, headers={"X-Extra": "yes"})
        if mode == "echo":
            return {"method": event.method, "path": event.path, "fields": event.fields,
                    "content_type": event.content_type, "body_type": type(event.body).__name__,
                    "header": event.get_header("x-test"), "trigger": event.trigger.kind}
        return context.Response(body="unknown mode", status_code=422)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server hosting four test functions on ephemeral ports (127.0.0.1 only)."""
    root = tmp_path_factory.mktemp("functions")
    labels = [{"id": 0, "name": "car", "type": "rectangle", "attributes": [
        {"name": "score", "input_type": "number", "values": ["0", "100", "1"]}]}]
    write_function(root, "test-detector", DETECTOR_MAIN, spec_labels=labels, max_body=64 * 1024)
    write_function(
        root,
        "test-interactor",
        INTERACTOR_MAIN,
        kind="interactor",
        annotations={"version": 2, "min_pos_points": 1, "min_neg_points": 0, "help_message": "Click inside"},
    )
    write_function(root, "test-sleeper", SLEEPER_MAIN)
    write_function(root, "test-shapes", SHAPES_MAIN)
    options = ServeOptions(host="127.0.0.1", port=0, function_ports="ephemeral", max_body_size=16 * 1024)
    with FunctionHost(load_function_dirs([root]), options) as host:
        yield host


@pytest.fixture()
def request_log():
    """Every line the server logs for requests, collected on the logger itself."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("autolabel.serve")
    handler = Collect(level=logging.INFO)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def lambda_function_as_cvat_reads_it(data: dict) -> dict:
    """What CVAT 2.17's ``LambdaFunction.__init__`` reads from a dashboard function object."""
    annotations = data["metadata"]["annotations"]
    kind = annotations.get("type")
    return {
        "id": data["metadata"]["name"],
        "kind": kind if kind in ("detector", "interactor", "tracker", "reid") else "unknown",
        "labels": [label["name"] for label in json.loads(annotations.get("spec") or "[]")],
        "description": data["spec"]["description"],
        "name": annotations.get("name", data["metadata"]["name"]),
        "version": int(annotations.get("version", "1")),
        "min_pos_points": int(annotations.get("min_pos_points", 1)),
        "min_neg_points": int(annotations.get("min_neg_points", -1)),
        "port": data["status"]["httpPort"],
    }


# --------------------------------------------------------------------------- discovery


def test_listing_has_every_field_cvat_reads(served):
    answer = call(served.dashboard_port, "GET", "/api/functions", CVAT_DASHBOARD_HEADERS)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    listing = answer.json()
    assert set(listing) == {"test-detector", "test-interactor", "test-sleeper", "test-shapes"}
    for name, data in listing.items():
        assert set(data) == {"metadata", "spec", "status"}
        assert data["metadata"]["labels"]["nuclio.io/project-name"] == "cvat"
        assert data["metadata"]["namespace"] == "nuclio"  # from x-nuclio-function-namespace
        assert all(isinstance(v, str) for v in data["metadata"]["annotations"].values())
        assert data["status"] == {"state": "ready", "httpPort": served.functions[name].port}
        assert "env" not in data["spec"]
    detector = lambda_function_as_cvat_reads_it(listing["test-detector"])
    assert detector["kind"] == "detector" and detector["labels"] == ["car"]
    assert detector["description"] == "test-detector (test function)"
    interactor = lambda_function_as_cvat_reads_it(listing["test-interactor"])
    assert (interactor["kind"], interactor["version"], interactor["min_pos_points"], interactor["min_neg_points"]) == (
        "interactor", 2, 1, 0)
    assert listing["test-interactor"]["metadata"]["annotations"]["version"] == "2"


def test_retrieve_one_function_and_unknown_is_404_json(served):
    one = call(served.dashboard_port, "GET", "/api/functions/test-detector", CVAT_DASHBOARD_HEADERS)
    assert one.status == 200
    listing = call(served.dashboard_port, "GET", "/api/functions", CVAT_DASHBOARD_HEADERS).json()
    assert one.json() == listing["test-detector"]
    missing = call(served.dashboard_port, "GET", "/api/functions/no-such-function", CVAT_DASHBOARD_HEADERS)
    assert missing.status == 404
    assert missing.json() == {"error": "function no-such-function not found"}


def test_namespace_follows_the_header(served):
    headers = {**CVAT_DASHBOARD_HEADERS, "x-nuclio-function-namespace": "cvat-ns"}
    answer = call(served.dashboard_port, "GET", "/api/functions/test-shapes", headers)
    assert answer.json()["metadata"]["namespace"] == "cvat-ns"


def test_health_reports_each_function(served):
    answer = call(served.dashboard_port, "GET", "/healthz")
    assert answer.status == 200
    health = answer.json()
    assert health["status"] == "ok"
    assert health["functions"]["test-interactor"]["state"] == "ready"
    assert health["functions"]["test-interactor"]["type"] == "interactor"
    assert health["functions"]["test-detector"]["httpPort"] == served.functions["test-detector"].port


def test_unknown_dashboard_route_and_wrong_method_are_json(served):
    assert call(served.dashboard_port, "GET", "/api/projects").status == 404
    wrong = call(served.dashboard_port, "POST", "/api/functions", body=b"{}")
    assert wrong.status == 405 and "error" in wrong.json()
    head = call(served.dashboard_port, "HEAD", "/api/functions")  # HEAD works on GET routes (tests/test_serve_limits.py)
    assert head.status == 200 and head.body == b""


# --------------------------------------------------------------------------- invocation


@pytest.mark.parametrize("via", ["dashboard", "direct"])
def test_detector_call_as_cvat_sends_it(served, via):
    body = cvat_body(threshold=0.5, image=png_b64(320, 240))
    if via == "dashboard":
        answer = call(served.dashboard_port, "POST", INVOKE, invocation_headers("test-detector"), body)
    else:
        port = served.functions["test-detector"].port
        answer = call(port, "POST", "/", CVAT_DIRECT_HEADERS, body, host_header=f"host.docker.internal:{port}")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    items = answer.json()
    assert isinstance(items, list) and len(items) == 1
    assert items[0]["points"] == [0.0, 0.0, 320.0, 240.0]
    assert items[0]["threshold"] == 0.5
    assert items[0]["inits"] == 1  # init_context ran exactly once, whatever the route


@pytest.mark.parametrize("via", ["dashboard", "direct"])
def test_interactor_call_as_cvat_sends_it(served, via):
    body = cvat_body(image=png_b64(64, 48), pos_points=[[40, 30]], neg_points=[], obj_bbox=None)
    if via == "dashboard":
        answer = call(served.dashboard_port, "POST", INVOKE, invocation_headers("test-interactor"), body)
    else:
        answer = call(served.functions["test-interactor"].port, "POST", "/", CVAT_DIRECT_HEADERS, body)
    assert answer.status == 200
    assert answer.json() == {"mask": [[255]], "bounds": [40, 30, 40, 30]}


def test_invocation_needs_a_known_function_name(served):
    headers = invocation_headers("no-such-function")
    unknown = call(served.dashboard_port, "POST", "/api/function_invocations", headers, cvat_body(image="x"))
    assert unknown.status == 404 and unknown.json() == {"error": "function no-such-function not found"}
    del headers["x-nuclio-function-name"]
    missing = call(served.dashboard_port, "POST", "/api/function_invocations", headers, cvat_body(image="x"))
    assert missing.status == 400 and "x-nuclio-function-name" in missing.json()["error"]


def test_bad_bodies_reach_the_function_which_answers_4xx(served):
    port = served.functions["test-detector"].port
    broken = call(port, "POST", "/", CVAT_DIRECT_HEADERS, b'{"image": ')  # not JSON: the handler sees bytes
    assert broken.status == 400 and broken.json() == {"error": "body must be a JSON object"}
    as_text = call(port, "POST", "/", {**CVAT_DIRECT_HEADERS, "Content-Type": "text/plain"}, cvat_body(image="x"))
    assert as_text.status == 400  # only exactly application/json is decoded, as in Nuclio
    not_image = call(port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(image=base64.b64encode(b"not a PNG").decode()))
    assert not_image.status == 400 and not_image.json()["error"].startswith("image:")


def test_event_carries_method_path_query_headers(served):
    port = served.functions["test-shapes"].port
    headers = {"Content-Type": "application/json", "X-Test": "yes"}
    answer = call(port, "PUT", "/some/path?a=1&b=", headers, cvat_body(mode="echo"))
    assert answer.json() == {
        "method": "PUT", "path": "/some/path", "fields": {"a": "1", "b": ""}, "content_type": "application/json",
        "body_type": "dict", "header": "yes", "trigger": "http",
    }
    via_dashboard = call(
        served.dashboard_port,
        "POST",
        "/api/function_invocations",
        {**invocation_headers("test-shapes"), "x-nuclio-path": "/sub?q=2"},
        cvat_body(mode="echo"),
    )
    assert via_dashboard.json()["path"] == "/sub" and via_dashboard.json()["fields"] == {"q": "2"}


@pytest.mark.parametrize(
    ("mode", "status", "content_type", "body"),
    [
        ("str", 200, "text/plain", b"plain text"),
        ("dict", 200, "application/json", b'{"a": 1}'),
        ("tuple", 201, "application/json", b'{"created": true}'),
        ("bytes", 200, "text/plain", b"\x00\x01binary"),
        ("response_dict", 202, "application/json", b'{"b": 2}'),
        ("other", 422, "text/plain", b"unknown mode"),
    ],
)
def test_handler_outputs_become_replies_like_nuclio(served, mode, status, content_type, body):
    answer = call(served.functions["test-shapes"].port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(mode=mode))
    assert (answer.status, answer.headers["content-type"], answer.body) == (status, content_type, body)
    if mode == "response_dict":
        assert answer.headers["x-extra"] == "yes"


def test_bare_list_reply_is_refused_with_a_clear_500(served):
    answer = call(served.functions["test-shapes"].port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(mode="list"))
    assert answer.status == 500
    assert "bare list" in answer.json()["error"]


def test_handler_exception_is_500_json_and_serving_goes_on(served, request_log):
    port = served.functions["test-shapes"].port
    errors_before = served.functions["test-shapes"].health()["errors"]
    failed = call(port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(mode="raise"))
    assert failed.status == 500
    assert failed.headers["content-type"] == "application/json"
    assert failed.json() == {"error": "function test-shapes failed: RuntimeError: boom in handler"}
    assert "Traceback" not in failed.body.decode()
    assert any(r.exc_info and "boom in handler" in str(r.exc_info[1]) for r in request_log)  # traceback logged
    assert call(port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(mode="dict")).status == 200
    assert served.functions["test-shapes"].health()["errors"] == errors_before + 1


# --------------------------------------------------------------------------- limits


def test_body_over_the_function_limit_is_413_json(served):
    limit = 64 * 1024  # test-detector's maxRequestBodySize
    big = cvat_body(image="A" * (limit + 10))
    for port, path, headers in [
        (served.functions["test-detector"].port, "/", CVAT_DIRECT_HEADERS),
        (served.dashboard_port, "/api/function_invocations", invocation_headers("test-detector")),
    ]:
        answer = call(port, "POST", path, headers, big)
        assert answer.status == 413
        reply = answer.json()
        assert reply["size"] == len(big) and reply["limit"] == limit
        assert "test-detector" in reply["error"] and "maxRequestBodySize" in reply["error"]
    ok = call(served.functions["test-detector"].port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(image=png_b64(8, 8)))
    assert ok.status == 200


def test_default_limit_applies_without_max_request_body_size(served):
    body = cvat_body(mode="dict", pad="x" * (16 * 1024))  # the server default here is 16 KiB
    answer = call(served.functions["test-shapes"].port, "POST", "/", CVAT_DIRECT_HEADERS, body)
    assert answer.status == 413 and answer.json()["limit"] == 16 * 1024


def test_chunked_bodies_are_read_and_limited(served):
    port = served.functions["test-shapes"].port

    def chunked(parts):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/", body=iter(parts), headers={"Content-Type": "application/json"},
                         encode_chunked=True)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    assert chunked([b'{"mode": ', b'"dict"}']) == (200, {"a": 1})
    status, reply = chunked([b'{"mode": "dict", "pad": "', b"x" * (20 * 1024), b'"}'])
    assert status == 413 and reply["limit"] == 16 * 1024 and reply["size"] > 20 * 1024


def test_bad_content_length_is_400_json(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.functions["test-shapes"].port, timeout=30)
    try:
        conn.putrequest("POST", "/")
        conn.putheader("Content-Length", "-3")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 400 and "Content-Length" in json.loads(response.read())["error"]
    finally:
        conn.close()


def test_keep_alive_connection_serves_several_requests(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.dashboard_port, timeout=30)
    try:
        for _ in range(3):
            conn.request("GET", "/api/functions/test-shapes", headers=CVAT_DASHBOARD_HEADERS)
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["metadata"]["name"] == "test-shapes"
        conn.request("GET", "/api/functions/nope")  # an error on the same connection
        response = conn.getresponse()
        assert response.status == 404
        response.read()
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


# --------------------------------------------------------------------------- concurrency, logs


def test_concurrent_requests_are_queued_not_dropped(served):
    port = served.functions["test-sleeper"].port
    before = served.functions["test-sleeper"].health()["invocations"]
    answers: dict[int, Answer] = {}

    def one(i: int) -> None:
        via_dashboard = i % 2 == 0
        if via_dashboard:
            answers[i] = call(served.dashboard_port, "POST", "/api/function_invocations",
                              invocation_headers("test-sleeper"), cvat_body(id=i))
        else:
            answers[i] = call(port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(id=i))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == list(range(8))
    assert all(a.status == 200 for a in answers.values())
    assert {a.json()["id"] for a in answers.values()} == set(range(8))
    assert max(a.json()["max_concurrent"] for a in answers.values()) == 1  # one worker: one at a time
    assert len({a.json()["thread"] for a in answers.values()}) == 1
    assert served.functions["test-sleeper"].health()["invocations"] == before + 8


def _wait_for(predicate, attempts: int = 200) -> None:
    event = threading.Event()
    for _ in range(attempts):
        if predicate():
            return
        event.wait(0.01)


def test_one_log_line_per_request_without_bodies_or_secrets(served, request_log):
    secret = "s3cr3t-token-value"
    port = served.functions["test-detector"].port
    call(served.dashboard_port, "GET", "/api/functions", {**CVAT_DASHBOARD_HEADERS, "Authorization": f"Token {secret}"})
    call(served.dashboard_port, "GET", "/api/functions/nope", CVAT_DASHBOARD_HEADERS)
    call(port, "POST", "/?key=" + secret, CVAT_DIRECT_HEADERS, cvat_body(image=png_b64(16, 16), note=secret))
    call(served.dashboard_port, "POST", "/api/function_invocations", invocation_headers("test-detector"),
         cvat_body(image="A" * (70 * 1024)))
    expected = [
        "GET /api/functions function=- status=200 ",
        "GET /api/functions/nope function=- status=404 ",
        "POST / function=test-detector status=200 ",
        "POST /api/function_invocations function=test-detector status=413 ",
    ]

    def lines():  # request lines of this test (a late line of an earlier test matches none of these)
        return [r.getMessage() for r in request_log if r.getMessage().startswith(tuple(expected))]

    _wait_for(lambda: len(lines()) >= len(expected))
    got = lines()
    assert [sum(line.startswith(prefix) for line in got) for prefix in expected] == [1, 1, 1, 1], got
    assert all(re.search(r" in=\d+B out=\d+B \d+\.\dms$", line) for line in got), got
    everything = "\n".join(r.getMessage() for r in request_log)
    assert secret not in everything and "iVBOR" not in everything  # no header values, query or body


# --------------------------------------------------------------------------- start-up rules


def test_spec_env_applies_only_where_unset_and_sibling_modules_stay_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVE_TEST_KEEP", "developer")
    monkeypatch.delenv("SERVE_TEST_NEW", raising=False)
    main = """
        import os
        import helper

        def init_context(context):
            context.user_data.seen = {k: os.environ.get(k) for k in ("SERVE_TEST_KEEP", "SERVE_TEST_NEW")}

        def handler(context, event):
            return {"env": context.user_data.seen, "helper": helper.WHO}
    """
    first = write_function(tmp_path, "env-a", main, env={"SERVE_TEST_KEEP": "yaml", "SERVE_TEST_NEW": "from-a"})
    second = write_function(tmp_path, "env-b", main, env={"SERVE_TEST_NEW": "from-b"})
    (first / "helper.py").write_text("WHO = 'a'\n")
    (second / "helper.py").write_text("WHO = 'b'\n")
    with FunctionHost([first, second], ServeOptions(port=0)) as host:
        a = call(host.functions["env-a"].port, "POST", "/", CVAT_DIRECT_HEADERS, b"{}").json()
        b = call(host.functions["env-b"].port, "POST", "/", CVAT_DIRECT_HEADERS, b"{}").json()
    assert a == {"env": {"SERVE_TEST_KEEP": "developer", "SERVE_TEST_NEW": "from-a"}, "helper": "a"}
    assert b == {"env": {"SERVE_TEST_KEEP": "developer", "SERVE_TEST_NEW": "from-b"}, "helper": "b"}
    assert "helper" not in sys.modules
    assert "SERVE_TEST_NEW" not in os.environ  # stop() removed what spec.env had set
    assert os.environ["SERVE_TEST_KEEP"] == "developer"


def test_next_port_mode_puts_functions_after_the_dashboard(tmp_path):
    import socket

    dirs = [write_function(tmp_path, f"fn-{i}", SHAPES_MAIN) for i in range(2)]
    for _attempt in range(5):  # another process may hold base+1 or base+2; then try another base
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base > 65533:
            continue
        try:
            host = FunctionHost(dirs, ServeOptions(port=base, function_ports="next")).start()
            break
        except ServeError as err:
            assert "cannot listen on 127.0.0.1:" in str(err)
    else:
        raise AssertionError("no free block of three ports found in five attempts")
    try:
        host.wait_ready()
        assert [host.functions[f"fn-{i}"].port for i in range(2)] == [base + 1, base + 2]
        listing = call(base, "GET", "/api/functions").json()
        assert listing["fn-1"]["status"]["httpPort"] == base + 2
    finally:
        host.stop()


def test_a_taken_port_is_a_clear_error(tmp_path):
    import socket

    directory = write_function(tmp_path, "fn", SHAPES_MAIN)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=rf"cannot listen on 127\.0\.0\.1:{port} for the dashboard"):
            FunctionHost([directory], ServeOptions(port=port)).start()


def test_failing_init_context_is_reported_and_answers_503(tmp_path):
    broken = write_function(tmp_path, "broken", "def init_context(context):\n    raise OSError('weights missing')\n"
                            "def handler(context, event):\n    return 'never'\n")
    good = write_function(tmp_path, "good", SHAPES_MAIN)
    host = FunctionHost([broken, good], ServeOptions(port=0)).start()
    try:
        with pytest.raises(ServeError, match="function broken: init_context failed: OSError: weights missing"):
            host.wait_ready()
        health = call(host.dashboard_port, "GET", "/healthz")
        assert health.status == 503 and health.json()["functions"]["broken"]["state"] == "error"
        answer = call(host.functions["broken"].port, "POST", "/", CVAT_DIRECT_HEADERS, b"{}")
        assert answer.status == 503 and "weights missing" in answer.json()["error"]
        assert call(host.functions["good"].port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(mode="dict")).status == 200
    finally:
        host.stop()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": {"description": None}}, "spec.description is required"),
        ({"annotations": {"spec": "{\"name\": \"car\"}"}}, "must be a JSON list of labels"),
        ({"annotations": {"spec": "[not json"}}, "not valid JSON"),
        ({"spec": {"handler": "main"}}, "spec.handler must look like"),
        ({"spec": {"handler": "other:handler"}}, "other.py, which does not exist"),
        ({"max_body": "lots"}, "maxRequestBodySize must be a positive integer"),
    ],
)
def test_function_yaml_problems_name_the_field(tmp_path, change, message):
    directory = write_function(tmp_path, "fn", SHAPES_MAIN, **change)
    with pytest.raises(ServeError, match=message):
        read_function_dir(directory)


def test_annotations_spec_as_a_yaml_list_is_refused(tmp_path):
    directory = write_function(tmp_path, "fn", SHAPES_MAIN)
    yaml_file = directory / "function.yaml"
    yaml = YAML()
    data = yaml.load(yaml_file.read_text())
    data["metadata"]["annotations"]["spec"] = [{"name": "car"}]
    with yaml_file.open("w") as out:
        yaml.dump(data, out)
    with pytest.raises(ServeError, match=r"annotations.spec must be a string .*`spec: \|`"):
        read_function_dir(directory)


def test_bad_names_duplicates_and_missing_dirs(tmp_path):
    with pytest.raises(ServeError, match="no function.yaml"):
        read_function_dir(tmp_path)
    bad = write_function(tmp_path / "x", "fn", SHAPES_MAIN)
    text = (bad / "function.yaml").read_text().replace("name: fn", "name: bad/name", 1)
    (bad / "function.yaml").write_text(text)
    with pytest.raises(ServeError, match="metadata.name must match"):
        read_function_dir(bad)
    one = write_function(tmp_path / "a", "same", SHAPES_MAIN)
    two = write_function(tmp_path / "b", "same", SHAPES_MAIN)
    with pytest.raises(ServeError, match="two directories define function 'same'"):
        FunctionHost([one, two])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ServeError, match="no function.yaml in it or in its sub-directories"):
        load_function_dirs([empty])


# --------------------------------------------------------------------------- reply conversion


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), st.integers(200, 599))
def test_reply_from_output_round_trips_json(payload, status):
    import nuclio_sdk

    as_dict = reply_from_output(payload)
    assert (as_dict.status, as_dict.content_type) == (200, "application/json")
    assert json.loads(as_dict.body) == payload
    as_tuple = reply_from_output((status, payload))
    assert as_tuple.status == status and json.loads(as_tuple.body) == payload
    as_response = reply_from_output(
        nuclio_sdk.Response(body=json.dumps(payload), content_type="application/json", status_code=status)
    )
    assert as_response.status == status and json.loads(as_response.body) == payload


def test_reply_from_output_refuses_bad_status_and_unencodable_bodies():
    import nuclio_sdk

    with pytest.raises(ValueError, match="outside 100..599"):
        reply_from_output(nuclio_sdk.Response(body="x", status_code=700))
    with pytest.raises(ValueError, match="cannot be encoded"):  # Response bodies go through json.dumps
        reply_from_output(nuclio_sdk.Response(body={"labels": {"car"}}))
    # a bare dict goes through Nuclio's encoder, which writes what JSON cannot hold as str()
    assert json.loads(reply_from_output({"labels": {"car"}}).body) == {"labels": "{'car'}"}


# --------------------------------------------------------------------------- CLI


def test_cli_errors_exit_2_with_one_line(tmp_path):
    import typer
    from typer.testing import CliRunner

    from sync.commands.serve import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so "serve" is a sub-command as in autolabel
    runner = CliRunner()
    missing = runner.invoke(app, ["serve", str(tmp_path / "nope"), "--port", "0"])
    assert missing.exit_code == 2 and "no function.yaml" in missing.output
    size = runner.invoke(app, ["serve", str(tmp_path), "--max-body-size", "lots"])
    assert size.exit_code == 2 and "32MiB" in size.output


@pytest.mark.parametrize(("text", "size"), [("33554432", 33554432), ("32MiB", 32 * 2**20), ("512k", 512 * 1024),
                                            ("1 GiB", 2**30)])
def test_parse_size(text, size):
    from sync.commands.serve import parse_size

    assert parse_size(text) == size


def test_serve_modules_do_not_import_torch():
    code = (
        "import sys, serverless.serve, sync.commands.serve\n"
        "print([m for m in ('torch', 'transformers', 'segment_anything', 'cv2') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.stdout.strip() == "[]", result.stderr


# --------------------------------------------------------------------------- the real functions

FUNCTIONS = ROOT / "serverless" / "functions"


@pytest.fixture(scope="module")
def real_served(tiny_models):
    """serverless/functions/* served with tiny models (the developer's exports win over spec.env)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in tiny_models.environment().items():
            mp.setenv(name, value)
        mp.setenv("AUTOLABEL_DEVICE", "cpu")
        options = ServeOptions(port=0, function_ports="ephemeral")
        with FunctionHost(load_function_dirs([FUNCTIONS]), options) as host:
            yield host


def real_png_b64(width: int = 64, height: int = 48) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(ROOT / "samples" / "chelsea.jpg").convert("RGB").resize((width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_real_functions_are_listed_as_cvat_reads_them(real_served):
    listing = call(real_served.dashboard_port, "GET", "/api/functions", CVAT_DASHBOARD_HEADERS).json()
    assert {"grounding-dino", "grounded-sam", "sam-interactor", "pth-facebookresearch-sam-vit-h"} <= set(listing)
    seen = {name: lambda_function_as_cvat_reads_it(data) for name, data in listing.items()}
    assert seen["grounding-dino"]["kind"] == "detector" and "car" in seen["grounding-dino"]["labels"]
    assert seen["sam-interactor"]["kind"] == "interactor" and seen["sam-interactor"]["version"] >= 2
    for name, data in listing.items():
        assert data["status"]["httpPort"] == real_served.functions[name].port
        assert data["status"]["state"] == "ready"


def test_models_are_loaded_once_and_shared(real_served):
    user_data = {name: fn.context.user_data for name, fn in real_served.functions.items()}
    grounded = user_data["grounded-sam"]
    # each detector is bound to its function's ontology; the Grounding DINO weights under them are one
    assert user_data["grounding-dino"].detector.model is grounded.detector.model
    assert user_data["sam-interactor"].segmenter is grounded.segmenter
    assert user_data["pth-facebookresearch-sam-vit-h"].segmenter is grounded.segmenter


@pytest.mark.parametrize("via", ["dashboard", "direct"])
def test_real_grounding_dino_answers_cvat(real_served, via):
    body = cvat_body(image=real_png_b64(64, 48))
    if via == "dashboard":
        answer = call(real_served.dashboard_port, "POST", "/api/function_invocations",
                      invocation_headers("grounding-dino"), body)
    else:
        answer = call(real_served.functions["grounding-dino"].port, "POST", "/", CVAT_DIRECT_HEADERS, body)
    assert answer.status == 200, answer.body[:300]
    items = answer.json()
    labels = set(lambda_function_as_cvat_reads_it(
        call(real_served.dashboard_port, "GET", "/api/functions/grounding-dino").json())["labels"])
    assert isinstance(items, list)
    for item in items:
        assert item["label"] in labels and item["type"] == "rectangle"
        x1, y1, x2, y2 = item["points"]
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 48


@pytest.mark.parametrize("via", ["dashboard", "direct"])
def test_real_sam_interactor_answers_cvat(real_served, via):
    body = cvat_body(image=real_png_b64(64, 48), pos_points=[[20, 30]], neg_points=[[5.5, 6.5]], obj_bbox=None)
    if via == "dashboard":
        answer = call(real_served.dashboard_port, "POST", "/api/function_invocations",
                      invocation_headers("sam-interactor"), body)
    else:
        answer = call(real_served.functions["sam-interactor"].port, "POST", "/", CVAT_DIRECT_HEADERS, body)
    assert answer.status == 200, answer.body[:300]
    reply = answer.json()
    x1, y1, x2, y2 = reply["bounds"]
    assert len(reply["mask"]) in (1, y2 - y1 + 1)
    assert 0 <= x1 <= x2 < 64 and 0 <= y1 <= y2 < 48


def test_real_sam_embedding_answers_cvat(real_served):
    body = cvat_body(image=real_png_b64(64, 48), pos_points=[], neg_points=[], obj_bbox=None)
    answer = call(real_served.dashboard_port, "POST", "/api/function_invocations",
                  invocation_headers("pth-facebookresearch-sam-vit-h"), body)
    assert answer.status == 200
    assert len(base64.b64decode(answer.json()["blob"])) == 4 * 256 * 64 * 64


def test_real_functions_answer_bad_requests_with_4xx_json(real_served):
    port = real_served.functions["grounding-dino"].port
    broken = call(port, "POST", "/", CVAT_DIRECT_HEADERS, b'{"image": ')
    assert 400 <= broken.status < 500 and "error" in broken.json()
    not_image = call(port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(image=base64.b64encode(b"nope").decode()))
    assert 400 <= not_image.status < 500 and "error" in not_image.json()
    assert call(port, "POST", "/", CVAT_DIRECT_HEADERS, cvat_body(image=real_png_b64(32, 24))).status == 200
