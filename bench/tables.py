"""How the benchmarks write their results: Markdown tables for docs/benchmarks.md and the
``--json`` / ``--markdown`` files."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "rich_table", "write_outputs"]


def rich_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str, text_columns: Sequence[str] = ()
) -> Any:
    """The same table for the terminal (rich): aligned as `markdown_table`, long cells folded."""
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for k, column in enumerate(columns):
        table.add_column(column, justify="left" if k == 0 or column in text_columns else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]], text_columns: Sequence[str] = ()) -> str:
    """A Markdown table: the first column and ``text_columns`` left-aligned, the others (numbers)
    right-aligned; a ``|`` inside a cell becomes ``/``."""
    rule = "|".join("---" if k == 0 or c in text_columns else "---:" for k, c in enumerate(columns))
    lines = ["| " + " | ".join(columns) + " |", f"|{rule}|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(
    report: dict[str, Any], json_file: Path | None, markdown_file: Path | None, markdown: Callable[[dict], str]
) -> None:
    """The report as JSON to ``json_file`` and ``markdown(report)`` to ``markdown_file`` (each
    when given; parent folders created)."""
    if json_file:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if markdown_file:
        markdown_file.parent.mkdir(parents=True, exist_ok=True)
        markdown_file.write_text(markdown(report), encoding="utf-8")
