"""``autolabel serve`` on the wire: message framing under hostile input, and HEAD.

Everything here talks to a real server over raw sockets and looks only at bytes on the wire and
at ``/healthz``, so the tests hold for any server stack behind ``autolabel serve``. A framing a
second parser could read differently (request smuggling) must get 400 JSON, ``Connection:
close`` and the end of the connection, and nothing after it may run as a second request: the
function's invocation counter in ``/healthz`` does not move.
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serverless.serve import FunctionHost, ServeOptions
from tests.test_serve import write_function

ECHO_MAIN = """
    def handler(context, event):
        body = event.body
        return {"got": body if isinstance(body, dict) else len(body)}
"""
SMUGGLED = b'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("functions")
    directory = write_function(root, "echo", ECHO_MAIN, max_body=4096)
    options = ServeOptions(host="127.0.0.1", port=0, function_ports="ephemeral")
    with FunctionHost([directory], options) as served:
        yield served


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def exchange(port: int, payload: bytes, *, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send ``payload`` on a new connection and read until the server closes it (True) or
    stays silent for ``timeout`` seconds (False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return received, False
            except ConnectionResetError:
                return received, True
            if not data:
                return received, True
            received += data


def parse(data: bytes, *, head_first: bool = False) -> list[Response]:
    """The responses in ``data``; with ``head_first`` the first has no body (a HEAD reply)."""
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if (head_first and not responses) else int(headers.get("content-length", 0))
        responses.append(Response(status, headers, rest[:length]))
        data = rest[length:]
    return responses


def invocations(host) -> int:
    data, _ = exchange(host.dashboard_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return json.loads(parse(data)[0].body)["functions"]["echo"]["invocations"]


def assert_refused(host, payload: bytes, status: int = 400) -> dict:
    """``payload`` gets one ``status`` JSON reply, Connection: close, then the end of the
    connection; the function never runs."""
    before = invocations(host)
    data, closed = exchange(host.functions["echo"].port, payload)
    assert closed, f"the connection stayed open after {data[:300]!r}"
    responses = parse(data)
    assert [r.status for r in responses] == [status], data[:500]
    assert responses[0].headers.get("connection", "").lower() == "close"
    assert responses[0].headers["content-type"] == "application/json"
    error = json.loads(responses[0].body)["error"]
    assert invocations(host) == before, "a request ran"
    return {"error": error}


def chunked_request(*lines: bytes, close: bool = False) -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    return head + (b"Connection: close\r\n" if close else b"") + b"\r\n" + b"".join(lines)


# --------------------------------------------------------------------------- chunk sizes


@pytest.mark.parametrize(
    "size_line",
    [b"-1\r\n", b"-5\r\n", b"0x2\r\n", b"+2\r\n", b"2_0\r\n", b" 2\r\n", b"123456789\r\n", b"2\n", b"\r\n"],
    ids=["minus-one", "negative", "0x-prefix", "plus", "underscore", "leading-space", "nine-digits", "bare-lf", "empty"],
)
def test_a_chunk_size_that_is_not_plain_hex_is_refused(host, size_line):
    reply = assert_refused(host, chunked_request(size_line, b"{}\r\n0\r\n\r\n", SMUGGLED))
    assert "chunk" in reply["error"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters=";"), max_size=12))
def test_only_one_to_eight_hex_digits_make_a_chunk_size(host, token):
    valid = 1 <= len(token.rstrip(" \t")) <= 8 and all(c in "0123456789abcdefABCDEF" for c in token.rstrip(" \t"))
    if valid:
        return
    assert_refused(host, chunked_request(token.encode() + b"\r\n", b"{}\r\n0\r\n\r\n"))


def test_chunk_data_longer_than_its_size_is_refused(host):
    assert_refused(host, chunked_request(b"2\r\n", b'{"a": 1}\r\n0\r\n\r\n', SMUGGLED))


def test_an_over_long_chunk_size_line_is_refused(host):
    assert_refused(host, chunked_request(b"2;" + b"x" * 5000 + b"\r\n{}\r\n0\r\n\r\n"))


def test_well_formed_chunks_with_extensions_and_trailers_still_work(host):
    payload = chunked_request(b"2;name=value\r\n", b"{}\r\n", b"0\r\n", b"X-Trailer: yes\r\n", b"\r\n", close=True)
    before = invocations(host)
    data, _ = exchange(host.functions["echo"].port, payload)
    responses = parse(data)
    assert [r.status for r in responses] == [200]
    assert json.loads(responses[0].body) == {"got": {}}
    assert invocations(host) == before + 1


# --------------------------------------------------------------------------- smuggling


def test_two_different_content_lengths_are_refused(host):
    body = b"{}" + SMUGGLED
    payload = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: 2\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert "Content-Length" in assert_refused(host, payload)["error"]


def test_a_repeated_equal_content_length_is_refused_too(host):
    payload = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"
    assert "Content-Length" in assert_refused(host, payload)["error"]


@pytest.mark.parametrize("order", ["length-first", "chunked-first"])
def test_content_length_with_transfer_encoding_is_refused(host, order):
    chunks = b"2\r\n{}\r\n0\r\n\r\n" + SMUGGLED
    headers = [b"Content-Length: 4", b"Transfer-Encoding: chunked"]
    if order == "chunked-first":
        headers.reverse()
    payload = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    assert "Transfer-Encoding" in assert_refused(host, payload + chunks)["error"]


@pytest.mark.parametrize("value", [b"+2", b"2_0", b"0x2", b"2, 2", b"-1", b"1" * 20])
def test_a_content_length_that_is_not_plain_digits_is_refused(host, value):
    payload = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + value + b"\r\n\r\n{}"
    assert "Content-Length" in assert_refused(host, payload + SMUGGLED)["error"]


def test_an_unknown_transfer_coding_is_501_and_closes(host):
    payload = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + SMUGGLED
    assert_refused(host, payload, status=501)


def test_smuggling_through_the_dashboard_route_is_refused(host):
    before = invocations(host)
    body = b"{}" + SMUGGLED
    payload = (
        b"POST /api/function_invocations HTTP/1.1\r\nHost: x\r\nx-nuclio-function-name: echo\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: 2\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data, closed = exchange(host.dashboard_port, payload)
    assert closed and [r.status for r in parse(data)] == [400]
    assert invocations(host) == before


def test_keep_alive_still_serves_requests_one_after_another(host):
    one = b'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"a": 1}'
    last = one.replace(b"Host: x", b"Host: x\r\nConnection: close")
    data, closed = exchange(host.functions["echo"].port, one + one + last)
    assert closed
    assert [json.loads(r.body) for r in parse(data)] == [{"got": {"a": 1}}] * 3


# --------------------------------------------------------------------------- HEAD


@pytest.mark.parametrize("path", ["/healthz", "/api/functions", "/api/functions/echo", "/api/functions/nope"])
def test_head_answers_like_get_without_a_body(host, path):
    request = f"{{}} {path} HTTP/1.1\r\nHost: x\r\n\r\n"
    last = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, closed = exchange(host.dashboard_port, request.format("HEAD").encode() + last.encode())
    assert closed
    head, get = parse(data, head_first=True)  # nothing may follow HEAD's headers but the next reply
    assert head.body == b"" and get.body
    assert head.status == get.status
    drop = {"date", "connection"}
    assert {k: v for k, v in head.headers.items() if k not in drop} == {
        k: v for k, v in get.headers.items() if k not in drop
    }
    assert int(head.headers["content-length"]) == len(get.body)


def test_head_does_not_invoke_a_function(host):
    before = invocations(host)
    data, _ = exchange(host.functions["echo"].port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert parse(data, head_first=True)[0].status == 405
    assert invocations(host) == before
