"""The evaluation report as rich tables in the terminal.

`print_report` reads the JSON-ready report dict of `sync.evaluate.report.build_report` (what
``autolabel eval --json`` writes): a ranking of the runs when there are several, then for the
best run (``runs[0]``) the per-class metrics (boxes, and masks when present), the threshold
choices, the edit breakdown and the time estimate with the seconds per action it assumed, and
the tags (image-level labels) when the run has them: a run of tags only shows only those.
Missing or undefined numbers (None, NaN) print as ``-``. Laid out to stay readable at 100
columns. The small formatters here are shared with `sync.evaluate.html`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sync.evaluate.data import EvalError

__all__ = [
    "ACTIONS",
    "fmt_count",
    "fmt_duration",
    "fmt_fraction",
    "fmt_metric",
    "fmt_seconds_used",
    "fmt_threshold",
    "print_report",
    "report_runs",
    "tag_summary",
    "threshold_curve",
]

ACTIONS = ("accepted", "adjusted", "relabeled", "deleted", "added")
"""The edit actions, in the order the tables and charts show them."""

_SECONDS_ORDER = ("verify", "adjust", "relabel", "delete", "draw")


# --------------------------------------------------------------------------- formatting


def _number(value: Any) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt_metric(value: Any, digits: int = 3) -> str:
    """A score or threshold with ``digits`` decimals; ``-`` when undefined."""
    number = _number(value)
    return "-" if number is None else f"{number:.{digits}f}"


def fmt_threshold(choice: Mapping[str, Any] | float | None) -> str:
    """A threshold as every report shows it: a sweep choice's ``threshold``
    (``ThresholdChoice.to_dict()``, the value `autolabel tune --write` writes) or a plain
    number, with 3 decimals unless it needs more; ``-`` when undefined."""
    from sync.evaluate.tune import floor_threshold

    value = _number(choice.get("threshold") if isinstance(choice, Mapping) else choice)
    if value is None:
        return "-"
    text = floor_threshold(value, 9)[1]
    return f"{value:.3f}" if len(text.partition(".")[2]) <= 3 else text  # 0.400 lines up with the metrics


def fmt_count(value: Any) -> str:
    """An integer count; ``-`` when missing."""
    number = _number(value)
    return "-" if number is None else str(int(number))


def fmt_fraction(value: Any) -> str:
    """A fraction as a whole percentage (0.413 → ``41%``); ``-`` when undefined."""
    number = _number(value)
    return "-" if number is None else f"{number:.0%}"


def fmt_duration(seconds: Any) -> str:
    """Seconds as ``45 s``, ``12.5 min`` or ``3.2 h`` (sign kept); ``-`` when undefined."""
    number = _number(seconds)
    if number is None:
        return "-"
    size = abs(number)
    if size < 120:
        return f"{number:.0f} s"
    if size < 7200:
        return f"{number / 60:.1f} min"
    return f"{number / 3600:.1f} h"


def fmt_seconds_used(seconds: Mapping[str, Any]) -> str:
    """``assumed seconds per action: verify 7, adjust 7, ... — change with --seconds-*``."""
    names = [name for name in _SECONDS_ORDER if name in seconds] + [n for n in seconds if n not in _SECONDS_ORDER]
    parts = ", ".join(f"{name} {_number(seconds[name]):g}" if _number(seconds[name]) is not None else f"{name} -"
                      for name in names)
    return f"assumed seconds per action: {parts} — change with --seconds-*"


# --------------------------------------------------------------------------- report access


def report_runs(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The runs of a report, best first; raises `EvalError` when it has none."""
    if not isinstance(report, Mapping):
        raise EvalError(f"an evaluation report must be a dict, got {type(report).__name__}")
    runs = report.get("runs")
    if not isinstance(runs, Sequence) or isinstance(runs, str) or not runs:
        raise EvalError("the evaluation report has no runs (expected a non-empty 'runs' list)")
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping) or not (
            isinstance(run.get("overall"), Mapping) or isinstance(run.get("tags"), Mapping)
        ):
            raise EvalError(f"runs[{i}] of the evaluation report lacks its 'overall' metrics")
    return list(runs)


def tag_summary(tags: Mapping[str, Any]) -> list[str]:
    """The sentences under a run's tag table: exact-match accuracy, and top-1 accuracy when
    some sample has exactly one true tag."""
    samples = fmt_count(tags.get("samples"))
    lines = [
        f"tag sets exactly right (accuracy): {fmt_metric(tags.get('accuracy'))} "
        f"({fmt_count(tags.get('exact'))} of {samples} samples)"
    ]
    if _number(tags.get("top1_samples")):
        lines.append(
            f"top-1 accuracy: {fmt_metric(tags.get('top1_accuracy'))} (the run's highest-scored tag is the one true "
            f"tag on {fmt_count(tags.get('top1_correct'))} of {fmt_count(tags.get('top1_samples'))} samples "
            "with exactly one)"
        )
    return lines


def threshold_curve(entry: Mapping[str, Any]) -> dict[str, list[float | None]]:
    """The sweep of one class as ``{"threshold", "precision", "recall", "f1", "seconds"}``
    lists, from either ``entry["curve"]`` or the same lists at the top of ``entry`` (with the
    thresholds under ``"thresholds"``). Missing lists are empty."""
    curve = entry.get("curve")
    if isinstance(curve, Mapping):
        source, threshold_key = curve, "threshold"
    else:
        source, threshold_key = entry, "thresholds"
    out: dict[str, list[float | None]] = {"threshold": list(source.get(threshold_key) or [])}
    for key in ("precision", "recall", "f1", "seconds"):
        out[key] = list(source.get(key) or [])
    return out


# --------------------------------------------------------------------------- tables


def _metrics_table(title: str, overall: Mapping[str, Any], per_class: Mapping[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("label", overflow="fold")
    for column in ("truth", "preds", "P", "R", "F1", "AP50", "AP"):
        table.add_column(column, justify="right")

    def row(name: Text, m: Mapping[str, Any]) -> list[Any]:
        return [
            name, fmt_count(m.get("truth")), fmt_count(m.get("predictions")), fmt_metric(m.get("precision")),
            fmt_metric(m.get("recall")), fmt_metric(m.get("f1")), fmt_metric(m.get("map50")), fmt_metric(m.get("map")),
        ]

    for label, metrics in per_class.items():
        table.add_row(*row(Text(str(label)), metrics or {}))
    table.add_section()
    table.add_row(*row(Text("all", style="bold"), overall))
    return table


def _ranking_table(runs: Sequence[Mapping[str, Any]], rank_by: Any) -> Table:
    by = f" (by {escape(str(rank_by))})" if rank_by else ""
    table = Table(title=f"Pre-label runs, best first{by}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("run", overflow="fold")
    with_boxes = any(isinstance(run.get("overall"), Mapping) for run in runs)
    with_tags = any(isinstance(run.get("tags"), Mapping) for run in runs)
    box_columns = ("mAP", "mAP50", "P", "R", "F1", "est. time saved") if with_boxes else ()
    for column in (*box_columns, *(("tags F1", "tags acc.") if with_tags else ())):
        table.add_column(column, justify="right")
    for i, run in enumerate(runs, start=1):
        m = run.get("overall") or {}
        time = ((run.get("edits") or {}).get("time")) or {}
        saved = fmt_duration(time.get("saved_seconds"))
        if _number(time.get("saved_fraction")) is not None:
            saved += f" ({fmt_fraction(time.get('saved_fraction'))})"
        tags = run.get("tags") or {}
        boxes = (
            fmt_metric(m.get("map")), fmt_metric(m.get("map50")), fmt_metric(m.get("precision")),
            fmt_metric(m.get("recall")), fmt_metric(m.get("f1")), saved,
        )
        table.add_row(
            fmt_count(run.get("rank", i)), Text(str(run.get("name", "?"))), *(boxes if with_boxes else ()),
            *((fmt_metric((tags.get("micro") or {}).get("f1")), fmt_metric(tags.get("accuracy"))) if with_tags else ()),
        )
    return table


def _tags_table(title: str, tags: Mapping[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("tag", overflow="fold")
    for column in ("support", "preds", "TP", "FP", "FN", "P", "R", "F1", "current", "best-F1 thr", "F1 there"):
        table.add_column(column, justify="right")
    thresholds = tags.get("thresholds") or {}

    def counts(m: Mapping[str, Any]) -> list[str]:
        return [fmt_count(m.get(key)) for key in ("support", "predictions", "tp", "fp", "fn")]

    def rates(m: Mapping[str, Any]) -> list[str]:
        return [fmt_metric(m.get(key)) for key in ("precision", "recall", "f1")]

    for label, m in (tags.get("per_label") or {}).items():
        sweep = thresholds.get(label) or {}
        best = sweep.get("best_f1") or {}
        table.add_row(
            Text(str(label)), *counts(m or {}), *rates(m or {}), fmt_threshold(sweep.get("current")),
            fmt_threshold(best), fmt_metric(best.get("f1")),
        )
    table.add_section()
    table.add_row(Text("micro", style="bold"), *counts(tags.get("micro") or {}), *rates(tags.get("micro") or {}),
                  "", "", "")
    table.add_row(Text("macro", style="bold"), "", "", "", "", "", *rates(tags.get("macro") or {}), "", "", "")
    return table


def _threshold_table(thresholds: Mapping[str, Any]) -> Table:
    table = Table(title="Score thresholds per class (from the sweep)", title_justify="left")
    table.add_column("label", overflow="fold")
    for column in ("floor", "current", "best-F1 thr", "F1 there", "min-time thr", "est. time there"):
        table.add_column(column, justify="right")
    for label, entry in thresholds.items():
        entry = entry or {}
        best = entry.get("best_f1") or {}
        fastest = entry.get("min_time") or {}
        table.add_row(
            Text(str(label)), fmt_threshold(entry.get("floor")), fmt_threshold(entry.get("current")),
            fmt_threshold(best), fmt_metric(best.get("f1")),
            fmt_threshold(fastest), fmt_duration(fastest.get("seconds")),
        )
    return table


def _edits_table(edits: Mapping[str, Any]) -> Table:
    table = Table(title="What annotators did with the pre-labels (annotations per action)", title_justify="left")
    table.add_column("label", overflow="fold")
    for column in ACTIONS:
        table.add_column(column, justify="right")
    for label, counts in (edits.get("per_class") or {}).items():
        table.add_row(Text(str(label)), *(fmt_count((counts or {}).get(action)) for action in ACTIONS))
    table.add_section()
    overall = edits.get("overall") or {}
    table.add_row(Text("all", style="bold"), *(fmt_count(overall.get(action)) for action in ACTIONS))
    return table


def _time_table(edits: Mapping[str, Any]) -> Table:
    table = Table(title="Estimated annotator time", title_justify="left")
    table.add_column("label", overflow="fold")
    for column in ("by hand", "with pre-labels", "saved", "saved %"):
        table.add_column(column, justify="right")

    def row(name: Text, time: Mapping[str, Any]) -> list[Any]:
        return [
            name, fmt_duration(time.get("manual_seconds")), fmt_duration(time.get("with_prelabels_seconds")),
            fmt_duration(time.get("saved_seconds")), fmt_fraction(time.get("saved_fraction")),
        ]

    for label, time in (edits.get("time_per_class") or {}).items():
        table.add_row(*row(Text(str(label)), time or {}))
    table.add_section()
    table.add_row(*row(Text("all", style="bold"), edits.get("time") or {}))
    return table


def _bands_table(edits: Mapping[str, Any]) -> Table | None:
    bands = edits.get("adjusted_iou") or {}
    if not bands:
        return None
    table = Table(title="Adjusted pre-labels by IoU with their correction", title_justify="left")
    for band in bands:
        table.add_column(f"IoU {escape(str(band))}", justify="right")
    table.add_row(*(fmt_count(count) for count in bands.values()))
    return table


def print_report(report: dict, console: Console) -> None:
    """Print ``report`` (the dict of `sync.evaluate.report.build_report`) as rich tables.

    Several runs: a ranking table first. Then, for ``runs[0]`` (the best): per-class box
    metrics with an ``all`` row (runs with boxes), the tags with their micro and macro rows,
    accuracy and best-F1 thresholds (runs with tags), mask metrics when the run has them, the
    thresholds per class
    (current, best F1 and least-time choices), the edit breakdown with the time estimate, the
    adjusted-IoU bands, the seconds per action assumed, and the report's notes.
    Raises `EvalError` when the report has no runs.
    """
    runs = report_runs(report)
    best = runs[0]
    truth = escape(str(report.get("truth", "?")))
    iou = "" if report.get("iou") is None else (
        f", IoU {fmt_metric(report.get('iou'), 2)} ({escape(str(report.get('iou_type', 'bbox')))})"
    )
    console.print(
        f"[bold]Evaluation of [cyan]{escape(str(report.get('dataset', '?')))}[/cyan][/bold]: "
        f"{fmt_count(report.get('samples'))} samples against {truth}{iou}"
    )
    if len(runs) > 1:
        console.print(_ranking_table(runs, report.get("rank_by")))
        console.print(f"Details below: run [bold]{escape(str(best.get('name', '?')))}[/bold] (rank 1).")

    name = escape(str(best.get("name", "?")))
    if isinstance(best.get("overall"), Mapping):
        console.print(_metrics_table(f"Box metrics of {name}", best["overall"], best.get("per_class") or {}))
    tags = best.get("tags")
    if isinstance(tags, Mapping):
        console.print(_tags_table(f"Tags (image-level labels) of {name}", tags))
        for line in tag_summary(tags):
            console.print(Text(line))
    masks = best.get("masks")
    if isinstance(masks, Mapping) and isinstance(masks.get("overall"), Mapping):
        console.print(_metrics_table(f"Mask metrics of {name}", masks["overall"], masks.get("per_class") or {}))

    thresholds = best.get("thresholds") or {}
    if thresholds:
        console.print(_threshold_table(thresholds))

    edits = best.get("edits")
    seconds = report.get("seconds") or (edits or {}).get("seconds") or {}
    if isinstance(edits, Mapping):
        console.print(_edits_table(edits))
        console.print(_time_table(edits))
        bands = _bands_table(edits)
        if bands is not None:
            console.print(bands)
        matched = edits.get("matched_by") or {}
        if matched:
            console.print(
                "pairs matched " + ", ".join(f"by {escape(str(k))}: {fmt_count(v)}" for k, v in matched.items())
            )
    if seconds and isinstance(edits, Mapping):
        console.print(Text(fmt_seconds_used(seconds)))
    for note in report.get("notes") or ():
        console.print(Text(f"note: {note}", style="dim"))
