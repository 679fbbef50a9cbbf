"""What every command shares: the consoles, the one-line error type, error translation."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NoReturn

from rich.console import Console
from rich.markup import escape
from rich.text import Text

__all__ = [
    "TINY_NOTICE",
    "CliError",
    "domain_errors",
    "err",
    "fail",
    "literal",
    "out",
    "print_error",
    "quiet_libraries",
    "text",
]

err = Console(stderr=True)
out = Console()


class CliError(Exception):
    """Ends the command with a one-line message and exit code 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def literal(value: object) -> str:
    """``value`` as text for a rich markup string, printed as written: whatever a user typed or
    named (paths, prompts, label and run names, error messages that quote them) goes through
    this, or through `text`, so that ``bad [v2].jpg`` is not read as a style tag."""
    return escape(str(value))


def text(value: object, style: str = "") -> Text:
    """``value`` as a rich `Text` (never parsed as markup): for table cells and titles."""
    return Text(str(value), style=style)


def print_error(message: object) -> None:
    """The one-line ``error: ...`` of a `CliError`, its message printed literally."""
    err.print(Text.assemble(("error:", "bold red"), " ", str(message)), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """Turn the packages' domain exceptions into one-line CLI errors."""
    from cvat_bridge.client import CvatError
    from serverless.ontology import OntologyError
    from sync.evaluate.data import EvalError
    from sync.store.errors import StoreError

    try:
        yield
    except (CvatError, StoreError, OntologyError, EvalError) as error:
        raise CliError(str(error)) from None


TINY_NOTICE = (
    "[bold red]TINY RANDOM MODELS IN USE: every box, mask and score below is meaningless.[/]\n"
    "[red]They exercise the real code path only. Point AUTOLABEL_GDINO_MODEL / AUTOLABEL_SAM_CHECKPOINT "
    "at real weights (or let the hub download them) for real labels.[/]"
)


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
