"""Client faults never become 500s: every checked-in function (``serverless/functions``, on tiny
models) answers hostile bodies with a 4xx JSON message, on the dashboard route and on its own
port, whichever side decodes the JSON (``autolabel serve`` for exactly ``application/json``, as
the Nuclio runtime does; the function for any other content type).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest

from tests.test_serve import CVAT_DIRECT_HEADERS, call, cvat_body, invocation_headers, real_png_b64
from tests.test_serve import real_served  # noqa: F401 - the fixture

FUNCTIONS = ["grounding-dino", "grounded-sam", "pth-facebookresearch-sam-vit-h", "sam-interactor"]
CLICK = {"pos_points": [[0, 0]], "neg_points": [], "obj_bbox": None}
QUICK = {**CLICK, "threshold": 1.0}  # detectors keep nothing, so grounded-sam skips SAM (slow on CPU)


def png_header_b64(width: int, height: int) -> str:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` (a few kB even when huge)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)
    raw = zlib.compress(row * height, 9)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    png += chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode("ascii")


def thin_png_b64(width: int, height: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height), 0).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def payloads() -> dict[str, tuple[bytes, str]]:
    """Each hostile body and a word its error message must contain."""
    click = json.dumps(CLICK)[1:-1].encode()
    return {
        "nested-100000": (b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b", " + click + b"}", "nested"),
        "int-5000-digits": (b'{"image": "AAAA", "threshold": ' + b"9" * 5000 + b", " + click + b"}", "digits"),
        "png-1x30000": (cvat_body(image=thin_png_b64(1, 30000), **CLICK), "elongated"),
        "png-99000000x1": (cvat_body(image=png_header_b64(99_000_000, 1), **CLICK), "elongated"),
    }


def post(served, name: str, via: str, body: bytes, content_type: str = "application/json"):
    if via == "dashboard":
        headers = {**invocation_headers(name), "Content-Type": content_type}
        return call(served.dashboard_port, "POST", "/api/function_invocations", headers, body)
    headers = {**CVAT_DIRECT_HEADERS, "Content-Type": content_type}
    return call(served.functions[name].port, "POST", "/", headers, body)


@pytest.mark.parametrize("via", ["dashboard", "direct"])
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("case", ["nested-100000", "int-5000-digits", "png-1x30000", "png-99000000x1"])
def test_client_faults_are_4xx_with_a_message(real_served, payloads, function, via, case):
    body, word = payloads[case]
    answer = post(real_served, function, via, body)
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == "application/json"
    message = answer.json()["error"]
    assert word in message and len(message) < 400


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("case", ["nested-100000", "int-5000-digits"])
def test_json_the_function_decodes_itself_is_refused_too(real_served, payloads, function, case):
    body, word = payloads[case]
    answer = post(real_served, function, "direct", body, content_type="application/json; charset=utf-8")
    assert answer.status == 400 and word in answer.json()["error"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_still_answer_after_hostile_requests(real_served, payloads, function):
    for body, _ in payloads.values():
        post(real_served, function, "direct", body)
    answer = post(real_served, function, "direct", cvat_body(image=real_png_b64(32, 24), **QUICK))
    assert answer.status == 200, answer.body[:300]
    health = call(real_served.dashboard_port, "GET", "/healthz").json()["functions"][function]
    assert health["errors"] == 0


def test_a_frame_at_the_aspect_limit_is_served(real_served):
    body = cvat_body(image=thin_png_b64(500, 1), **QUICK)
    for function in FUNCTIONS:
        assert post(real_served, function, "direct", body).status == 200, function


def test_too_many_clicks_are_refused(real_served):
    points = [[1, 1]] * 1001
    answer = post(real_served, "sam-interactor", "direct", cvat_body(image=real_png_b64(32, 24), pos_points=points))
    assert answer.status == 422 and "at most 1000" in answer.json()["error"]
