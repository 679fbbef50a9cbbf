"""Argument types the benchmarks' command lines share (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["at_least", "sizes"]


def at_least(minimum: int) -> Callable[[str], int]:
    """A whole number of at least ``minimum``."""

    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def sizes(minimum: int, example: str) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated whole numbers, each at least ``minimum`` (``example`` shows the form)."""

    def parse(value: str) -> tuple[int, ...]:
        try:
            found = tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sizes such as {example}, got {value!r}") from None
        if not found or min(found) < minimum:
            raise argparse.ArgumentTypeError(f"expected sizes of at least {minimum} such as {example}, got {value!r}")
        return found

    return parse
