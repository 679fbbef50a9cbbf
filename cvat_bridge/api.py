"""Small helpers over cvat-sdk's low-level API that behave the same on SDK 2.17 … 2.8x."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["iter_pages", "call", "short_body"]


def short_body(body: Any) -> str:
    """The first 200 characters of an error body, on one line."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return " ".join(text.split())[:200]


RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


def call(
    what: str, server: str, fn: Callable[..., Any], *args: Any, attempts: int = 1, **kwargs: Any
) -> Any:
    """Run an SDK call, turning its errors into ``CvatError`` naming ``what`` (no secrets).

    ``attempts`` > 1 retries 5xx answers and dropped connections with exponential backoff;
    pass it only for calls that are idempotent by meaning (e.g. setting a job's stage with
    PATCH), which the transport does not retry because of their HTTP method.
    """
    import urllib3
    from cvat_sdk.api_client.exceptions import ApiException, OpenApiException

    from cvat_bridge.client import CvatError

    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            if last or err.status not in RETRYABLE_STATUSES:
                raise CvatError(
                    f"{server}: {what}: {err.status} {err.reason}: {short_body(err.body)}"
                ) from None
        except OpenApiException as err:
            raise CvatError(f"{server}: {what}: unexpected answer: {str(err).splitlines()[0]}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            if last:
                raise CvatError(f"{server}: {what}: connection failed: {type(err).__name__}") from None
        time.sleep(min(0.2 * 2**attempt, 5.0))
    raise AssertionError("unreachable")


def iter_pages(list_fn: Callable[..., Any], page_size: int = 100, **filters: Any) -> Iterator[Any]:
    """Every result of a paginated low-level ``*_api.list`` call, page by page."""
    page = 1
    while True:
        data, _ = list_fn(page=page, page_size=page_size, **filters)
        yield from data.results
        if not data.next:
            return
        page += 1
