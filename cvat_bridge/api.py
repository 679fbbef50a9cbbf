"""Small helpers over cvat-sdk's low-level API that behave the same on SDK 2.17 … 2.8x.

`call` is the one place where SDK and transport exceptions become `CvatError`; its messages
name the server (without credentials), the call and the reason, never a request header or
a credential. Retries are not made here but in the transport (`cvat_bridge.transport`), the
one retry layer.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

from cvat_bridge import transport

__all__ = ["CvatError", "call", "iter_pages", "read_json", "short_body", "translate"]


class CvatError(RuntimeError):
    """A CVAT call failed; the message names the server (without credentials) and the call.

    ``status`` is the HTTP status of the answer (None when there was no answer);
    ``retryable`` says whether trying again may succeed (a status the transport retries,
    `cvat_bridge.transport.RETRY_STATUSES`; a dropped connection, a timeout).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def short_body(body: Any) -> str:
    """The first 200 characters of an error body, on one line."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return " ".join(text.split())[:200]


def _status(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def translate(what: str, server: str, err: BaseException) -> CvatError | None:
    """The `CvatError` for an exception raised by cvat-sdk or its transport, or None when
    ``err`` is not one of theirs (a bug to let through)."""
    import urllib3
    from cvat_sdk.api_client.exceptions import ApiException, OpenApiException
    from cvat_sdk.core.exceptions import CvatSdkException

    if isinstance(err, CvatError):
        return err
    if isinstance(err, ApiException):
        status = _status(err.status)
        if status is None:  # SDK 2.17 reports a failed background request this way
            return CvatError(f"{server}: {what}: failed: {short_body(err.reason)}")
        return CvatError(
            f"{server}: {what}: {status} {err.reason or ''}: {short_body(err.body)}".replace("  ", " "),
            status=status,
            retryable=status in transport.RETRY_STATUSES,
        )
    if isinstance(err, OpenApiException):
        return CvatError(f"{server}: {what}: unexpected answer: {str(err).splitlines()[0] if str(err) else ''}")
    if isinstance(err, CvatSdkException):
        # "Too many upload errors" may pass on a retry; a failed background request will not
        failed_request = type(err).__name__ == "BackgroundRequestException"
        return CvatError(f"{server}: {what}: {short_body(str(err))}", retryable=not failed_request)
    if isinstance(err, (urllib3.exceptions.HTTPError, OSError)):
        tls = _tls_failure(err)
        if tls is not None:
            return CvatError(f"{server}: {what}: connection failed: {tls}")
        reason = getattr(err, "reason", None)
        detail = type(err).__name__ + (f" ({type(reason).__name__})" if isinstance(reason, BaseException) else "")
        return CvatError(f"{server}: {what}: connection failed: {detail}", retryable=True)
    return None


TRUST_HINT = (
    "to trust a private CA pass --ca-cert FILE or set CVAT_CA_CERT (REQUESTS_CA_BUNDLE and SSL_CERT_FILE "
    "are read too); --insecure turns verification off"
)


def _tls_failure(err: BaseException) -> str | None:
    """A one-line account of a TLS failure somewhere in ``err``'s chain (urllib3 wraps the
    `ssl` error in SSLError inside MaxRetryError), or None when it is not one."""
    seen: set[int] = set()
    pending: list[object] = [err]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            reason = current.verify_message or current.reason or "certificate verify failed"
            return f"the server's TLS certificate is not trusted ({reason}); {TRUST_HINT}"
        if isinstance(current, ssl.SSLError):
            reason = current.reason or str(current)
            return f"TLS handshake failed ({str(reason).lower().replace('_', ' ')})"
        pending.extend([getattr(current, "reason", None), current.__cause__, current.__context__, *current.args])
    return None


def call(what: str, server: str, fn: Callable[..., Any], *args: Any, repeatable: bool = False, **kwargs: Any) -> Any:
    """Run an SDK call once, turning its errors into `CvatError` naming ``what`` (no secrets).

    The transport retries idempotent requests (`cvat_bridge.transport`); ``repeatable`` lets
    it retry this call's requests whatever their method: pass it only for calls that are
    idempotent by meaning (logging in, setting a job's stage with PATCH), since a call whose
    answer was lost may have taken effect.
    """
    try:
        with transport.repeatable() if repeatable else nullcontext():
            return fn(*args, **kwargs)
    except Exception as err:  # translated below; anything else is re-raised
        error = translate(what, server, err)
        if error is None:
            raise
        raise error from None


def read_json(what: str, server: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a low-level endpoint without the SDK's model parsing and return its JSON answer.

    For bulk data (annotations) the SDK's per-value type checks cost far more than the
    request. The body is read inside the request (`cvat_bridge.transport.preloaded`), so the
    transport retries an idempotent request whose answer is cut off halfway too.
    """

    def fetch() -> Any:
        with transport.preloaded():
            _, response = fn(*args, _parse_response=False, **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    try:
        return call(what, server, fetch)
    except ValueError as err:
        raise CvatError(f"{server}: {what}: the answer is not JSON ({err})") from None


def iter_pages(list_fn: Callable[..., Any], page_size: int = 100, **filters: Any) -> Iterator[Any]:
    """Every result of a paginated low-level ``*_api.list`` call, page by page."""
    page = 1
    while True:
        data, _ = list_fn(page=page, page_size=page_size, **filters)
        yield from data.results
        if not data.next:
            return
        page += 1
