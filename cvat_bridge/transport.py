"""The bridge's one retry layer, and its timeouts and TLS trust, installed on cvat-sdk's
urllib3 pool (so every SDK request goes through it, uploads included).

- Idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) are retried on 500/502/503/504,
  timeouts and dropped or reset connections: at most `CvatSettings.retries` times
  (``CVAT_RETRIES``), waiting ``backoff * 2**n`` seconds between tries (at most 10 s; a
  ``Retry-After`` header is honoured). One failing GET is thus sent ``retries + 1`` times.
- POST and PATCH are never retried here: the bridge reconciles them explicitly
  (`cvat_bridge.tasks.ensure_task`, `cvat_bridge.annotations.upload_job_shapes`). A call that
  is idempotent by meaning (logging in again, setting a job's fields) runs inside
  `repeatable()`, which lets this same layer retry it whatever its method.
- Bodies read inside `preloaded()` are read within the retried request, so a connection
  dropped in the middle of an answer is retried too (`cvat_bridge.api.read_json`).
- Every request has a connect and a read timeout (the SDK itself passes none).
- The reconciliation loops of POST and PATCH follow the same settings: at most
  ``retries + 1`` sends (`sends`), waiting as this layer does between them (`pause`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import urllib3
    from cvat_sdk import Client

    from cvat_bridge.client import CvatSettings

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "install",
    "pause",
    "preloaded",
    "repeatable",
    "retry_policy",
    "sends",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({500, 502, 503, 504})
BACKOFF_MAX = 10.0

_repeatable: ContextVar[bool] = ContextVar("cvat_bridge_repeatable", default=False)
_preloaded: ContextVar[bool] = ContextVar("cvat_bridge_preloaded", default=False)


@contextmanager
def repeatable() -> Iterator[None]:
    """Requests made inside are retried whatever their method: only for calls that are
    idempotent by meaning, since a request whose answer was lost may have taken effect."""
    token = _repeatable.set(True)
    try:
        yield
    finally:
        _repeatable.reset(token)


@contextmanager
def preloaded() -> Iterator[None]:
    """Answers to requests made inside are read completely before the request returns, so
    a body cut off halfway is retried with the request."""
    token = _preloaded.set(True)
    try:
        yield
    finally:
        _preloaded.reset(token)


def retry_policy(settings: CvatSettings, *, any_method: bool = False) -> urllib3.util.Retry:
    """The urllib3 ``Retry`` of ``settings``: idempotent methods only, unless ``any_method``."""
    import urllib3

    return urllib3.util.Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        backoff_factor=settings.backoff,
        backoff_max=BACKOFF_MAX,
        status_forcelist=sorted(RETRY_STATUSES),
        allowed_methods=None if any_method else IDEMPOTENT_METHODS,
        raise_on_status=False,
        respect_retry_after_header=True,
    )


def sends(settings: CvatSettings) -> int:
    """How many times a reconciled POST or PATCH may be sent: ``retries + 1``, as an
    idempotent request is."""
    return settings.retries + 1


def pause(settings: CvatSettings, failures: int) -> None:
    """Wait before a reconciled POST or PATCH is sent again after its ``failures``-th failure
    (1, 2, …): ``backoff * 2**(failures - 1)`` seconds (the settings' backoff), at most
    `BACKOFF_MAX`."""
    time.sleep(min(settings.backoff * 2 ** (failures - 1), BACKOFF_MAX))


def install(client: Client, settings: CvatSettings) -> None:
    """Install the retries, timeouts and CA bundle of ``settings`` on ``client``'s pool."""
    import urllib3

    retry = retry_policy(settings)
    retry_any = retry_policy(settings, any_method=True)
    timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
    manager = client.api_client.rest_client.pool_manager
    manager.connection_pool_kw["retries"] = retry
    if settings.verify_tls and settings.ca_cert is not None:
        key = "ca_cert_dir" if os.path.isdir(settings.ca_cert) else "ca_certs"
        manager.connection_pool_kw[key] = settings.ca_cert
    manager.clear()
    original = manager.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:  # the SDK passes timeout=None on every call
            kwargs["timeout"] = timeout
        if _repeatable.get():
            kwargs["retries"] = retry_any
        if _preloaded.get():
            kwargs["preload_content"] = True
        return original(method, url, *args, **kwargs)

    manager.request = request
