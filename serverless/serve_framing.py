"""Strict HTTP/1.1 request framing for ``autolabel serve``, checked before h11 parses the bytes.

h11 (the parser under uvicorn's ``h11`` protocol) reads request framing leniently where RFC 9112
allows it: two equal ``Content-Length`` headers or ``Content-Length: 2, 2`` count as one, a
chunk size may have up to 20 hex digits, a chunk line may be as long as any header block. A
proxy in front of the server may read such a request differently (request smuggling), so
`FramingGuard` refuses them instead. It watches the bytes of one connection, passes on the ones
that are well framed and stops at the first that is not, with a `Refusal` (status and message)
for the server to answer, with ``Connection: close``:

- a head with two ``Content-Length`` or two ``Transfer-Encoding`` headers, or both; a
  ``Content-Length`` that is not 1 to 15 plain digits; a continuation line (obsolete line
  folding) → 400; a ``Transfer-Encoding`` other than ``chunked`` → 501; a head over
  ``max_head`` bytes → 431;
- in a chunked body: a chunk size that is not 1 to 8 hex digits (optionally followed by
  ``;extension``) ending in CRLF, a chunk size line over 1024 bytes, chunk data not followed by
  CRLF, a trailer line over 8192 bytes or not ending in CRLF, more than 64 trailer lines → 400.

It only checks: h11 still does all the parsing. Everything the guard passes, h11 reads the same
way (the guard's rules are a subset of h11's), so both see the same message boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["CHUNK_LINE_MAX", "MAX_HEAD", "SCOPE_KEY", "FramingGuard", "Refusal", "printable"]

MAX_HEAD = 64 * 1024
"""Largest request head (request line and headers) in bytes by default; over it: 431."""
CHUNK_LINE_MAX = 1024
"""Longest chunk size line (with its extensions and CRLF), in bytes."""
_TRAILER_LINE_MAX = 8192
_TRAILERS_MAX = 64
_HEAD_END = re.compile(rb"\n\r?\n")  # h11's end of a head: a blank line, CRLF or bare LF
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?[ \t]*\r\n")
_LENGTH = re.compile(rb"[0-9]{1,15}")

SCOPE_KEY = "autolabel.refusal"
"""Where the server puts the `Refusal` in the ASGI scope's ``extensions`` when it answers a
request whose body turned out malformed while the app was reading it."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status and a message for the JSON error body."""

    status: int
    message: str
    request_line: str = ""
    """The refused request's first line (for the log), when it is known."""


class _State(Enum):
    HEAD = "head"
    BODY = "body"
    CHUNK_LINE = "chunk line"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk end"
    TRAILER = "trailer"


def printable(raw: str | bytes | bytearray, limit: int = 200) -> str:
    """The first ``limit`` characters of ``raw`` (bytes read as latin-1) with every character
    that does not print as ``?``: request text as this server logs and quotes it."""
    text = raw[:limit] if isinstance(raw, str) else raw[:limit].decode("latin-1")
    return "".join(c if c.isprintable() else "?" for c in text)


def _malformed(what: str) -> Refusal:
    return Refusal(400, f"malformed chunked request body: {what}")


class FramingGuard:
    """The framing checker of one connection: `feed` each block of received bytes and pass
    on what it returns; once `refusal` is set, nothing more is passed."""

    def __init__(self, *, max_head: int = MAX_HEAD) -> None:
        self.max_head = max_head
        self.refusal: Refusal | None = None
        self._state = _State.HEAD
        self._pending = bytearray()  # the start of a head or line not complete yet
        self._searched = 0  # bytes of the pending head already searched for its end
        self._left = 0  # body or chunk bytes still to pass
        self._trailers = 0
        self.request_line = ""
        """The first line of the last request head seen (printable, at most 200 characters)."""

    def feed(self, data: bytes) -> bytes:
        """The prefix of ``pending + data`` that is well framed (everything up to the first
        fault); an incomplete head or line is kept until more bytes arrive."""
        if self.refusal is not None:
            return b""
        buffer: bytes | bytearray = data
        if self._pending:  # appended in place: a head sent a byte at a time costs linear time
            self._pending += data
            buffer = self._pending
        self._pending = bytearray()
        passed: list[bytes | bytearray] = []
        at = 0
        while at < len(buffer) and self.refusal is None:
            end = self._step(buffer, at)
            if end is None:  # more bytes needed
                self._pending = buffer if at == 0 and isinstance(buffer, bytearray) else bytearray(buffer[at:])
                break
            if self.refusal is None:
                passed.append(buffer[at:end])
            at = end
        return b"".join(passed)

    def _step(self, buffer: bytes | bytearray, at: int) -> int | None:
        """Check what starts at ``at``; the offset where the checked part ends, or None."""
        state = self._state
        if state in (_State.BODY, _State.CHUNK_DATA):
            end = min(len(buffer), at + self._left)
            self._left -= end - at
            if self._left == 0:
                self._state = _State.HEAD if state is _State.BODY else _State.CHUNK_END
            return end
        if state is _State.HEAD:
            return self._head(buffer, at)
        if state is _State.CHUNK_END:
            got = buffer[at : at + 2]
            if got != b"\r\n"[: len(got)]:
                self._refuse(_malformed("a chunk is not followed by CRLF (chunk size and data disagree)"))
                return at
            if len(got) < 2:
                return None
            self._state = _State.CHUNK_LINE
            return at + 2
        if state is _State.CHUNK_LINE:
            return self._chunk_line(buffer, at)
        return self._trailer(buffer, at)

    def _refuse(self, refusal: Refusal) -> None:
        self.refusal = Refusal(refusal.status, refusal.message, self.request_line)

    # ------------------------------------------------------------- heads
    def _head(self, buffer: bytes | bytearray, at: int) -> int | None:
        if buffer[at : at + 1] == b"\n" or buffer[at : at + 2] == b"\r\n":
            self.request_line = ""
            self._refuse(Refusal(400, "malformed request: a blank line where the request line should be"))
            return at
        match = _HEAD_END.search(buffer, at + max(0, self._searched - 2))
        if match is None or match.end() - at > self.max_head:
            if len(buffer) - at > self.max_head:
                self.request_line = ""
                self._refuse(Refusal(431, f"the request line and headers are over {self.max_head} bytes"))
                return at
            self._searched = len(buffer) - at
            return None
        self._searched = 0
        lines = [line.rstrip(b"\r") for line in buffer[at : match.start()].split(b"\n")]
        self.request_line = printable(lines[0], 200)
        refusal = self._framing(lines[1:])
        if refusal is not None:
            self._refuse(refusal)
            return at
        return match.end()

    def _framing(self, lines: list[bytes | bytearray]) -> Refusal | None:
        """Check the header lines' framing and choose how the body is read."""
        lengths: list[bytes | bytearray] = []
        codings: list[bytes | bytearray] = []
        for line in lines:
            if line[:1] in (b" ", b"\t"):
                return Refusal(400, "malformed request: a header continuation line (obsolete line folding)")
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                lengths.append(value.strip(b" \t"))
            elif name == b"transfer-encoding":
                codings.append(value.strip(b" \t"))
        if lengths and codings:
            return Refusal(400, "a request must not carry both Content-Length and Transfer-Encoding")
        if len(lengths) > 1 or len(codings) > 1:
            which = "Content-Length" if len(lengths) > 1 else "Transfer-Encoding"
            return Refusal(400, f"{which} given more than once")
        if codings:
            if codings[0].lower() != b"chunked":
                shown = printable(codings[0].lower(), 40)
                return Refusal(501, f"Transfer-Encoding {shown!r} is not supported (only chunked)")
            self._state = _State.CHUNK_LINE
            self._trailers = 0
            return None
        if lengths:
            if not _LENGTH.fullmatch(lengths[0]):
                shown = printable(lengths[0], 40)
                return Refusal(400, f"Content-Length must be a non-negative integer, got {shown!r}")
            self._left = int(lengths[0])
            self._state = _State.BODY if self._left else _State.HEAD
        return None

    # ------------------------------------------------------------- chunked bodies
    def _line(self, buffer: bytes | bytearray, at: int, limit: int, what: str) -> bytes | bytearray | int | None:
        """The line starting at ``at`` (LF included); None: incomplete; ``at``: refused."""
        newline = buffer.find(b"\n", at, at + limit)
        if newline < 0:
            if len(buffer) - at >= limit:
                self._refuse(_malformed(f"{what} is longer than {limit} bytes"))
                return at
            return None
        return buffer[at : newline + 1]

    def _chunk_line(self, buffer: bytes | bytearray, at: int) -> int | None:
        line = self._line(buffer, at, CHUNK_LINE_MAX, "a chunk size line")
        if isinstance(line, int) or line is None:
            return line
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            shown = printable(line.rstrip(b"\r\n"), 20)
            self._refuse(_malformed(f"chunk size {shown!r} is not 1 to 8 hex digits ending in CRLF"))
            return at
        self._left = int(match.group(1), 16)
        self._state = _State.CHUNK_DATA if self._left else _State.TRAILER
        return at + len(line)

    def _trailer(self, buffer: bytes | bytearray, at: int) -> int | None:
        line = self._line(buffer, at, _TRAILER_LINE_MAX, "a trailer line")
        if isinstance(line, int) or line is None:
            return line
        if not line.endswith(b"\r\n"):
            self._refuse(_malformed("a trailer line does not end in CRLF"))
            return at
        if line == b"\r\n":
            self._state = _State.HEAD
        elif line[:1] in (b" ", b"\t"):
            self._refuse(_malformed("a trailer continuation line (obsolete line folding)"))
            return at
        else:
            self._trailers += 1
            if self._trailers > _TRAILERS_MAX:
                self._refuse(_malformed(f"more than {_TRAILERS_MAX} trailer lines"))
                return at
        return at + len(line)
