"""uvicorn's h11 protocol with ``autolabel serve``'s framing rules and JSON protocol errors.

`StrictH11Protocol` is uvicorn's ``H11Protocol`` (``http="h11"``) with three changes:

- every received byte goes through a `serverless.serve_framing.FramingGuard` before h11 sees
  it, so framings that h11 reads leniently (equal duplicate ``Content-Length``, 9 to 20 hex
  digit chunk sizes, kilobyte-long chunk lines...) are refused instead;
- refusals, the guard's and h11's own (a bad request line, an illegal header), are answered with
  the JSON error body this server uses everywhere (``{"error": ...}``), ``Connection: close``,
  and the end of the connection, instead of uvicorn's plain-text 400; when the fault is in the
  body of a request the app is already reading, the app is told (`serve_framing.SCOPE_KEY` in
  the scope's ``extensions``) and stops without answering;
- a connection that is silent before its first request is closed after the keep-alive timeout
  too (uvicorn starts that timer only after a response).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from serverless.serve_framing import MAX_HEAD, SCOPE_KEY, FramingGuard, Refusal, printable
from serverless.serve_function import error_reply
from serverless.serve_http import log_request

__all__ = ["StrictH11Protocol"]

_quiet = logging.getLogger("autolabel.serve.protocol")
_quiet.setLevel(logging.ERROR)  # uvicorn's "Invalid HTTP request received." duplicates our request line


class _Connection(h11.Connection):
    """An h11 connection that remembers the last protocol error it raised (uvicorn only
    passes a fixed message to `H11Protocol.send_400_response`)."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as err:
            self.last_error = err
            raise


class StrictH11Protocol(H11Protocol):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = self.config.h11_max_incomplete_event_size or MAX_HEAD
        self.conn = _Connection(h11.SERVER, limit)
        self.logger = _quiet
        self._guard = FramingGuard(max_head=limit)
        self._began = time.perf_counter()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._wait_for_a_request()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self._began = time.perf_counter()
        passed = self._guard.feed(data)
        if passed:
            self.conn.receive_data(passed)
            self.handle_events()
        self._settle_refusal()
        if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self._wait_for_a_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._settle_refusal()

    def send_400_response(self, msg: str) -> None:
        """h11 refused the bytes (uvicorn calls this with a fixed message): answer JSON."""
        error = self.conn.last_error
        status = error.error_status_hint if error is not None else 400
        detail = printable(str(error)) if error is not None and str(error) else msg
        self._answer(Refusal(status, f"malformed request: {detail}", self._guard.request_line))

    # ------------------------------------------------------------- internals
    def _wait_for_a_request(self) -> None:
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _settle_refusal(self) -> None:
        """Answer the guard's refusal once nothing else is being answered on this connection."""
        refusal = self._guard.refusal
        if refusal is None or self.transport.is_closing():
            return
        theirs, ours = self.conn.their_state, self.conn.our_state
        answering = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        if theirs is h11.SEND_BODY and ours is h11.SEND_RESPONSE and not answering:
            self._answer(refusal)  # the fault is in the body of the request in flight
        elif theirs is h11.IDLE and ours is h11.IDLE:
            self._answer(refusal)  # the fault is in the head of the next request
        elif theirs is h11.SEND_BODY and ours in (h11.DONE, h11.MUST_CLOSE):
            self.transport.close()  # answered already; the rest of its body is malformed
        # else an earlier request is still being answered: on_response_complete comes back here

    def _answer(self, refusal: Refusal) -> None:
        """Send ``refusal`` as JSON with ``Connection: close`` and close the connection."""
        reply = error_reply(refusal.status, refusal.message)
        body = reply.body
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app is reading this request's body: it stops, and logs the refusal.
            cycle.scope.setdefault("extensions", {})[SCOPE_KEY] = {"refusal": refusal, "bytes_out": len(body)}
            cycle.disconnected = True
            cycle.message_event.set()
        else:
            method, _, rest = refusal.request_line.partition(" ")
            path = rest.rpartition(" ")[0].partition("?")[0]
            log_request(method or "-", path or "-", "-", refusal.status, 0, len(body), self._began)
        headers = [
            *self.server_state.default_headers,
            (b"content-type", reply.content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            for event in (
                h11.Response(status_code=refusal.status, headers=headers, reason=STATUS_PHRASES[refusal.status]),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # h11 cannot answer in its state: just close
            pass
        self.transport.close()
