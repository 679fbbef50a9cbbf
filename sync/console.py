"""What every command shares: the consoles, the one-line error type, error translation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console

__all__ = ["CliError", "err", "out", "fail", "domain_errors"]

err = Console(stderr=True)
out = Console()


class CliError(Exception):
    """Ends the command with a one-line message and exit code 2."""


def fail(message: str) -> None:
    raise CliError(message)


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """Turn the packages' domain exceptions into one-line CLI errors."""
    from cvat_bridge.client import CvatError
    from serverless.ontology import OntologyError
    from sync.store.errors import StoreError

    try:
        yield
    except (CvatError, StoreError, OntologyError) as error:
        raise CliError(str(error)) from None
