"""Small argument checks shared by the store's methods; each raises `StoreError` naming
the argument."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import numpy as np

from sync.store.errors import StoreError

__all__ = ["CHUNK", "as_aware", "as_int", "chunks", "json_value", "optional_text"]

CHUNK = 500
"""Ids or keys per ``IN (...)`` query (well below SQLite's variable limit)."""

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def as_int(value: Any, where: str, *, minimum: int | None = None) -> int:
    """``value`` as an int (Python or NumPy integer, not bool), at least ``minimum``."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"{where} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise StoreError(f"{where} must be >= {minimum}, got {value}")
    return value


def as_aware(value: datetime | str | None, where: str) -> datetime | None:
    """A timezone-aware datetime from a datetime or an ISO 8601 string (``Z`` allowed)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise StoreError(f"{where} must be an ISO 8601 date, got {value!r}") from None
    if not isinstance(value, datetime):
        raise StoreError(f"{where} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise StoreError(f"{where} must be timezone-aware, got {value.isoformat()}")
    return value


def optional_text(value: Any, where: str, limit: int = 255) -> str | None:
    """None, or a string of at most ``limit`` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise StoreError(f"{where} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise StoreError(f"{where} must be at most {limit} characters, got {len(value)}")
    return value


def json_value(value: Any, where: str) -> Any:
    """``value`` if it is JSON-serializable without NaN or infinity, else `StoreError`."""
    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StoreError(f"{where} must be JSON-serializable: {err}") from err
    return value
