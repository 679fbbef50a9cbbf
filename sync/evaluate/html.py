"""The evaluation report as one self-contained HTML page.

`render_html` reads the JSON-ready report dict of `sync.evaluate.report.build_report` (what
``autolabel eval --json`` writes) and returns a page that needs nothing else: inline CSS, no
scripts, no fonts, no links; every plot is a PNG embedded as a ``data:image/png;base64`` URI,
drawn with matplotlib's object-oriented API on the Agg canvas (never a display), imported
only when a page is rendered. Every string taken from the report is HTML-escaped (label and
run names come from users); ``$`` is escaped for matplotlib so labels never turn into math.

Layout: a summary (dataset, truth, runs, samples, IoU), the ranking table when there are
several runs, the seconds per action assumed, the notes, then one section per run, best
first (runs after the first inside a collapsed ``<details>``): box metrics per class (and
mask metrics when present), precision-recall curves, the F1-vs-threshold sweep with the
current, best-F1 and least-time thresholds marked, the confusion matrix, the edit breakdown
with the time estimate and a stacked bar chart, and the adjusted-IoU bands; then, for a run
with tags (image-level labels), their table (per tag, micro, macro), accuracy and top-1
accuracy, and their F1-vs-threshold plot. A run of tags only has only that part.

Plot ids: the best run's plots are ``pr-curves``, ``f1-threshold``, ``confusion`` and
``edits``; the run at position ``k`` (1-based, ``k > 1``) appends ``-run{k}``
(``pr-curves-run2``); the tags' plot is ``tag-f1-threshold`` (`TAG_PLOT_ID`), suffixed the
same way. A plot with nothing to show (no class with truth, no sweep, no edit data) is
replaced by a sentence saying so.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from sync.evaluate.table import (
    ACTIONS,
    fmt_count,
    fmt_duration,
    fmt_fraction,
    fmt_metric,
    fmt_seconds_used,
    fmt_threshold,
    report_runs,
    tag_summary,
    threshold_curve,
)

__all__ = [
    "CSS", "PLOT_IDS", "TAG_PLOT_ID", "Plotter", "escape_html", "figure_html", "html_table", "mpl_text",
    "page_head", "render_html", "summary_html", "write_html",
]

PLOT_IDS = ("pr-curves", "f1-threshold", "confusion", "edits")
"""The ids of the best run's plots, in page order."""

TAG_PLOT_ID = "tag-f1-threshold"
"""The id of the best run's tag F1-vs-threshold plot (runs with tags)."""

_ACTION_COLORS = {
    "accepted": "#2ca02c",
    "adjusted": "#1f77b4",
    "relabeled": "#ff7f0e",
    "deleted": "#d62728",
    "added": "#9467bd",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #888; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.muted { color: #666; font-size: 0.9em; } dl.summary { display: grid; grid-template-columns: max-content auto;
gap: 0.2em 1em; } dl.summary dt { font-weight: bold; } dl.summary dd { margin: 0; }
details > summary { cursor: pointer; font-size: 1.2em; font-weight: bold; margin-top: 1.4em; }
"""


# --------------------------------------------------------------------------- HTML pieces


def escape_html(value: Any) -> str:
    """``value`` as text for HTML (quotes escaped too)."""
    return escape(str(value), quote=True)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, caption: str | None = None,
           total: Sequence[str] | None = None, numeric_from: int = 1) -> str:
    """An HTML table; every header and cell is escaped here. Columns from ``numeric_from``
    on are right-aligned; ``total`` is a bold last row."""
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{escape_html(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{escape_html(h)}</th>" for h in headers) + "</tr></thead><tbody>")

    def row(cells: Sequence[str], cls: str = "") -> str:
        tds = "".join(
            f'<td class="num">{escape_html(c)}</td>' if i >= numeric_from else f"<td>{escape_html(c)}</td>"
            for i, c in enumerate(cells)
        )
        return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"

    parts.extend(row(r) for r in rows)
    if total is not None:
        parts.append(row(total, "total"))
    parts.append("</tbody></table>")
    return "".join(parts)


def _metric_cells(m: Mapping[str, Any]) -> list[str]:
    return [
        fmt_count(m.get("truth")), fmt_count(m.get("predictions")), fmt_count(m.get("tp")), fmt_count(m.get("fp")),
        fmt_count(m.get("fn")), fmt_metric(m.get("precision")), fmt_metric(m.get("recall")), fmt_metric(m.get("f1")),
        fmt_metric(m.get("map50")), fmt_metric(m.get("map")),
    ]


_METRIC_HEADERS = ("label", "truth", "preds", "TP", "FP", "FN", "P", "R", "F1", "AP50", "AP")


def _metrics_table(caption: str, overall: Mapping[str, Any], per_class: Mapping[str, Any]) -> str:
    rows = [[str(label), *_metric_cells(m or {})] for label, m in per_class.items()]
    return html_table(_METRIC_HEADERS, rows, caption=caption, total=["all", *_metric_cells(overall)])


def _saved(time: Mapping[str, Any]) -> str:
    text = fmt_duration(time.get("saved_seconds"))
    if _finite(time.get("saved_fraction")) is not None:
        text += f" ({fmt_fraction(time.get('saved_fraction'))})"
    return text


def _ranking(runs: Sequence[Mapping[str, Any]], rank_by: Any) -> str:
    rows = []
    with_boxes = any(isinstance(run.get("overall"), Mapping) for run in runs)
    with_tags = any(isinstance(run.get("tags"), Mapping) for run in runs)
    for i, run in enumerate(runs, start=1):
        m = run.get("overall") or {}
        time = (run.get("edits") or {}).get("time") or {}
        tags = run.get("tags") or {}
        boxes = [
            fmt_metric(m.get("map")), fmt_metric(m.get("map50")), fmt_metric(m.get("precision")),
            fmt_metric(m.get("recall")), fmt_metric(m.get("f1")), _saved(time),
        ]
        rows.append([
            fmt_count(run.get("rank", i)), str(run.get("name", "?")), *(boxes if with_boxes else ()),
            *((fmt_metric((tags.get("micro") or {}).get("f1")), fmt_metric(tags.get("accuracy"))) if with_tags else ()),
        ])
    caption = "Pre-label runs, best first" + (f" (by {rank_by})" if rank_by else "")
    headers = ("rank", "run", *(("mAP", "mAP50", "P", "R", "F1", "est. time saved") if with_boxes else ()),
               *(("tags F1", "tags acc.") if with_tags else ()))
    return html_table(headers, rows, caption=caption, numeric_from=2)


def _threshold_table(thresholds: Mapping[str, Any]) -> str:
    rows = []
    for label, entry in thresholds.items():
        entry = entry or {}
        best = entry.get("best_f1") or {}
        fastest = entry.get("min_time") or {}
        rows.append([
            str(label), fmt_threshold(entry.get("floor")), fmt_threshold(entry.get("current")),
            fmt_threshold(best), fmt_metric(best.get("f1")), fmt_metric(best.get("precision")),
            fmt_metric(best.get("recall")), fmt_threshold(fastest), fmt_duration(fastest.get("seconds")),
        ])
    return html_table(
        ("label", "floor", "current", "best-F1 thr", "F1", "P", "R", "min-time thr", "est. time"),
        rows, caption="Score thresholds per class",
    )


def _tags_table(tags: Mapping[str, Any]) -> str:
    thresholds = tags.get("thresholds") or {}

    def cells(m: Mapping[str, Any]) -> list[str]:
        return [
            *(fmt_count(m.get(key)) for key in ("support", "predictions", "tp", "fp", "fn")),
            *(fmt_metric(m.get(key)) for key in ("precision", "recall", "f1")),
        ]

    rows = []
    for label, m in (tags.get("per_label") or {}).items():
        sweep = thresholds.get(label) or {}
        best = sweep.get("best_f1") or {}
        rows.append([str(label), *cells(m or {}), fmt_threshold(sweep.get("current")), fmt_threshold(best),
                     fmt_metric(best.get("f1"))])
    rows.append(["micro", *cells(tags.get("micro") or {}), "", "", ""])
    macro = tags.get("macro") or {}
    rows.append(["macro", "", "", "", "", "", *(fmt_metric(macro.get(k)) for k in ("precision", "recall", "f1")),
                 "", "", ""])
    return html_table(
        ("tag", "support", "preds", "TP", "FP", "FN", "P", "R", "F1", "current", "best-F1 thr", "F1 there"),
        rows, caption="Tags (image-level labels) per label, micro and macro averages",
    )


def _tags_part(run: Mapping[str, Any], suffix: str, plotter: Plotter) -> str:
    """The tags section of a run: table, accuracy sentences and the F1-vs-threshold plot."""
    tags = run.get("tags")
    if not isinstance(tags, Mapping):
        return ""
    name = str(run.get("name", "?"))
    parts = ["<h3>Tags</h3>", _tags_table(tags)]
    parts.extend(f'<p class="tag-accuracy">{escape_html(line)}</p>' for line in tag_summary(tags))
    parts.append(figure_html(
        plotter.f1_threshold({"thresholds": tags.get("thresholds") or {}}), f"{TAG_PLOT_ID}{suffix}",
        f"F1 against score threshold per tag of run {name}",
        "F1 (black), precision and recall against the tag score threshold; star: best F1, dashed: the run's "
        "current threshold, grey: below the run's threshold (never kept, not judged).",
        "No tag threshold sweep in this report (the run carries no scores).",
    ))
    return "".join(parts)


def _edits_table(edits: Mapping[str, Any]) -> str:
    per_time = edits.get("time_per_class") or {}

    def cells(counts: Mapping[str, Any], time: Mapping[str, Any]) -> list[str]:
        return [
            *(fmt_count(counts.get(a)) for a in ACTIONS), fmt_duration(time.get("manual_seconds")),
            fmt_duration(time.get("with_prelabels_seconds")), _saved(time),
        ]

    per_class = edits.get("per_class") or {}
    rows = [[str(label), *cells(c or {}, per_time.get(label) or {})] for label, c in per_class.items()]
    return html_table(
        ("label", *ACTIONS, "by hand", "with pre-labels", "saved"), rows,
        caption="Edits per class and estimated annotator time",
        total=["all", *cells(edits.get("overall") or {}, edits.get("time") or {})],
    )


def figure_html(png: bytes | None, plot_id: str, alt: str, caption: str, empty: str) -> str:
    """A ``<figure>`` with ``png`` embedded as a data URI under ``id=plot_id``, or, for None,
    a muted sentence ``empty`` with that id; every text escaped."""
    if png is None:
        return f'<p class="muted" id="{escape_html(plot_id)}">{escape_html(empty)}</p>'
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img id="{escape_html(plot_id)}" alt="{escape_html(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape_html(caption)}</figcaption></figure>"
    )


# --------------------------------------------------------------------------- plots


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def threshold_marks(entry: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    """The thresholds marked on a class's F1-vs-threshold plot, ``{"current" | "best_f1" |
    "min_time": (value, legend text)}``: the same values, written the same way, as the tables."""
    marks = {}
    current = _finite(entry.get("current"))
    if current is not None:
        marks["current"] = (current, f"current {fmt_threshold(current)}")
    best = entry.get("best_f1") or {}
    if _finite(best.get("threshold")) is not None and _finite(best.get("f1")) is not None:
        marks["best_f1"] = (float(best["threshold"]), f"best F1 {fmt_threshold(best)}")
    fastest = entry.get("min_time") or {}
    if _finite(fastest.get("threshold")) is not None:
        marks["min_time"] = (float(fastest["threshold"]), f"min time {fmt_threshold(fastest)}")
    return marks


def mpl_text(text: Any) -> str:
    """Text for matplotlib: ``$`` would start mathtext."""
    return str(text).replace("$", r"\$")


class Plotter:
    """Draws the report's plots as PNG bytes (matplotlib imported on creation). Other pages
    draw their own plots with `new` inside `style` and turn them into bytes with `png`."""

    def __init__(self) -> None:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._rc = {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7, "figure.dpi": 100}
        self._matplotlib = matplotlib
        self._figure = Figure
        self._canvas = FigureCanvasAgg

    def style(self) -> Any:
        """The context manager of the report's matplotlib settings (font sizes, dpi)."""
        return self._matplotlib.rc_context(self._rc)

    def png(self, fig: Any) -> bytes:
        """``fig`` as PNG bytes at 100 dpi."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def new(self, width: float, height: float) -> Any:
        """A constrained-layout figure of ``width`` x ``height`` inches on the Agg canvas."""
        fig = self._figure(figsize=(width, height), layout="constrained")
        self._canvas(fig)
        return fig

    @staticmethod
    def _values(values: Sequence[Any]) -> list[float]:
        out = []
        for v in values:
            number = _finite(v)
            out.append(math.nan if number is None else number)
        return out

    def pr_curves(self, run: Mapping[str, Any]) -> bytes | None:
        curves = run.get("pr_curves") or {}
        per_class = run.get("per_class") or {}
        if not curves:
            return None
        with self.style():
            fig = self.new(7.0, 4.6)
            ax = fig.add_subplot()
            for label, curve in curves.items():
                recall = self._values(curve.get("recall") or [])
                precision = [v if v >= 0 else math.nan for v in self._values(curve.get("precision") or [])]
                ap50 = fmt_metric((per_class.get(label) or {}).get("map50"))
                ax.plot(recall, precision, linewidth=1.4, label=mpl_text(f"{label} (AP50 {ap50})"))
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision (interpolated)")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower left", fontsize=7)
            return self.png(fig)

    def f1_threshold(self, run: Mapping[str, Any]) -> bytes | None:
        thresholds = {label: entry or {} for label, entry in (run.get("thresholds") or {}).items()}
        if not thresholds:
            return None
        n = len(thresholds)
        cols = min(3, n)
        rows = math.ceil(n / cols)
        with self.style():
            fig = self.new(3.4 * cols, 2.7 * rows)
            axes = fig.subplots(rows, cols, squeeze=False)
            for ax in axes.flat[n:]:
                ax.set_visible(False)
            for ax, (label, entry) in zip(axes.flat, thresholds.items()):
                self._f1_panel(ax, str(label), entry)
            return self.png(fig)

    def _f1_panel(self, ax: Any, label: str, entry: Mapping[str, Any]) -> None:
        curve = threshold_curve(entry)
        t = self._values(curve["threshold"])
        ax.set_title(mpl_text(label))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("score threshold")
        ax.grid(alpha=0.3)
        floor = _finite(entry.get("floor"))
        if floor:
            ax.axvspan(0, floor, color="0.85", label="below the run's threshold")
        if t:
            thin = {"linewidth": 0.8, "alpha": 0.7}
            for key, style in (("precision", thin), ("recall", thin), ("f1", {"linewidth": 1.8, "color": "black"})):
                values = self._values(curve[key])
                if len(values) == len(t):
                    ax.plot(t, values, label=key.upper() if key == "f1" else key, **style)
        else:
            ax.text(0.5, 0.5, "no sweep (no pre-labels)", ha="center", va="center", transform=ax.transAxes)
        marks = threshold_marks(entry)
        if "current" in marks:
            value, text = marks["current"]
            ax.axvline(value, linestyle="--", color="0.4", linewidth=1, label=text)
        if "best_f1" in marks:
            value, text = marks["best_f1"]
            ax.plot([value], [entry["best_f1"]["f1"]], marker="*", markersize=11, color="#d62728", linestyle="none",
                    label=text)
        if "min_time" in marks:
            value, text = marks["min_time"]
            ax.axvline(min(value, 1.0), linestyle=":", color="#2ca02c", linewidth=1.6, label=text)
        ax.legend(loc="lower left", fontsize=6)

    def confusion(self, run: Mapping[str, Any]) -> bytes | None:
        confusion = (run.get("edits") or {}).get("confusion") or {}
        labels = [str(label) for label in confusion.get("labels") or []]
        matrix = confusion.get("matrix") or []
        if not labels or len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
            return None
        n = len(labels)
        size = min(28.0, max(4.5, 0.45 * n + 2.5))
        with self.style():
            fig = self.new(size + 1.0, size)
            ax = fig.add_subplot()
            counts = [[int(v) for v in row] for row in matrix]
            image = ax.imshow(counts, cmap="Blues", aspect="auto")
            fig.colorbar(image, ax=ax, shrink=0.8, label="annotations")
            ax.set_xticks(range(n), [mpl_text(label) for label in labels], rotation=45, ha="right")
            ax.set_yticks(range(n), [mpl_text(label) for label in labels])
            ax.set_xlabel("truth class (after correction)")
            ax.set_ylabel("pre-label class")
            top = max((max(row) for row in counts), default=0)
            if n <= 30:
                for i, row in enumerate(counts):
                    for j, value in enumerate(row):
                        color = "white" if top and value > top / 2 else "black"
                        ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
            return self.png(fig)

    def edits(self, run: Mapping[str, Any]) -> bytes | None:
        per_class = (run.get("edits") or {}).get("per_class") or {}
        if not per_class:
            return None
        labels = list(per_class)
        with self.style():
            fig = self.new(7.5, max(2.2, 0.38 * len(labels) + 1.3))
            ax = fig.add_subplot()
            left = [0.0] * len(labels)
            positions = list(range(len(labels)))
            for action in ACTIONS:
                widths = [float(_finite((per_class[label] or {}).get(action)) or 0.0) for label in labels]
                ax.barh(positions, widths, left=left, color=_ACTION_COLORS[action], label=action)
                left = [a + b for a, b in zip(left, widths)]
            ax.set_yticks(positions, [mpl_text(label) for label in labels])
            ax.invert_yaxis()
            ax.set_xlabel("annotations")
            ax.grid(axis="x", alpha=0.3)
            ax.legend(loc="lower right", ncols=len(ACTIONS), fontsize=7, bbox_to_anchor=(1.0, 1.0))
            return self.png(fig)


# --------------------------------------------------------------------------- page


def _run_section(run: Mapping[str, Any], position: int, plotter: Plotter) -> str:
    suffix = "" if position == 1 else f"-run{position}"
    rank = fmt_count(run.get("rank", position))
    heading = f"Run {escape_html(run.get('name', '?'))} (rank {escape_html(rank)})"
    body = (_box_parts(run, suffix, plotter) if isinstance(run.get("overall"), Mapping) else "") + _tags_part(
        run, suffix, plotter
    )
    if position == 1:
        return f'<section id="run-{position}"><h2>{heading}</h2>{body}</section>'
    return f'<section id="run-{position}"><details><summary>{heading}</summary>{body}</details></section>'


def _box_parts(run: Mapping[str, Any], suffix: str, plotter: Plotter) -> str:
    """A run's shapes: metrics, PR curves, threshold sweep, confusion matrix, edits and time."""
    name = str(run.get("name", "?"))
    parts: list[str] = []
    parts.append(_metrics_table(f"Box metrics of {name}", run["overall"], run.get("per_class") or {}))
    masks = run.get("masks")
    if isinstance(masks, Mapping) and isinstance(masks.get("overall"), Mapping):
        parts.append(_metrics_table(f"Mask metrics of {name}", masks["overall"], masks.get("per_class") or {}))

    parts.append("<h3>Precision-recall curves</h3>")
    parts.append(figure_html(
        plotter.pr_curves(run), f"pr-curves{suffix}", f"Precision-recall curves per class of run {name}",
        "COCO-interpolated precision at 101 recall points, per class with truth.",
        "No precision-recall curve: no class has truth annotations.",
    ))

    thresholds = run.get("thresholds") or {}
    parts.append("<h3>Score thresholds</h3>")
    if thresholds:
        parts.append(_threshold_table(thresholds))
    parts.append(figure_html(
        plotter.f1_threshold(run), f"f1-threshold{suffix}", f"F1 against score threshold per class of run {name}",
        "F1 (black), precision and recall against the score threshold; star: best F1, dotted: least annotator "
        "time, dashed: the run's current threshold, grey: below the run's threshold (never kept, not judged).",
        "No threshold sweep in this report.",
    ))

    edits = run.get("edits")
    parts.append("<h3>Confusion matrix</h3>")
    parts.append(figure_html(
        plotter.confusion(run), f"confusion{suffix}", f"Confusion matrix of pre-label against truth class, run {name}",
        "Rows: the pre-label's class (background: shapes the annotators added); columns: the class after "
        "correction (background: pre-labels they deleted). Cells count annotations.",
        "No confusion matrix in this report.",
    ))
    parts.append("<h3>Edits and time</h3>")
    if isinstance(edits, Mapping):
        parts.append(_edits_table(edits))
    parts.append(figure_html(
        plotter.edits(run), f"edits{suffix}", f"Edit breakdown per class of run {name}",
        "What happened to each class's annotations: accepted as is, adjusted, relabeled, deleted, or added by hand.",
        "No edit breakdown in this report.",
    ))
    if isinstance(edits, Mapping):
        bands = edits.get("adjusted_iou") or {}
        if bands:
            parts.append(html_table([f"IoU {band}" for band in bands], [[fmt_count(v) for v in bands.values()]],
                                caption="Adjusted pre-labels by IoU with their correction", numeric_from=0))
        matched = edits.get("matched_by") or {}
        if matched:
            text = ", ".join(f"by {k}: {fmt_count(v)}" for k, v in matched.items())
            parts.append(f'<p class="muted">Pre-label/correction pairs matched {escape_html(text)}.</p>')
        seconds = edits.get("seconds")
        if isinstance(seconds, Mapping) and seconds:
            parts.append(f'<p class="muted">{escape_html(fmt_seconds_used(seconds))}</p>')
    return "".join(parts)


def summary_html(items: Sequence[tuple[str, str]]) -> str:
    """The page's summary: a ``<dl class="summary">`` of ``(term, value)`` pairs, escaped."""
    pairs = "".join(f"<dt>{escape_html(k)}</dt><dd>{escape_html(v)}</dd>" for k, v in items)
    return '<dl class="summary">' + pairs + "</dl>"


def page_head(title: str, css: str = "") -> str:
    """The page's start up to ``<body>``: doctype, charset, the escaped ``title``, `CSS` and
    the page's own ``css`` after it."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape_html(title)}</title>"
        f"<style>{CSS}{css}</style></head><body>"
    )


def render_html(report: dict, *, sections: Sequence[str] = ()) -> str:
    """The report (the dict of `sync.evaluate.report.build_report`) as one self-contained
    HTML page (see the module docstring for its content and plot ids); ``sections`` (HTML,
    e.g. the threshold experiment's) go after the summary, before the ranking.
    Raises `EvalError` when the report has no runs."""
    runs = report_runs(report)
    plotter = Plotter()
    dataset = str(report.get("dataset", "?"))
    truth = str(report.get("truth", "?"))
    names = [str(run.get("name", "?")) for run in runs]
    seconds = report.get("seconds") or (runs[0].get("edits") or {}).get("seconds") or {}
    best_time = (runs[0].get("edits") or {}).get("time") or {}

    title = f"Pre-label evaluation: {dataset} ({', '.join(names)} against {truth})"
    parts = [page_head(title), f"<h1>Pre-label evaluation of {escape_html(dataset)}</h1>"]
    summary = [
        ("dataset", dataset),
        ("truth", truth),
        ("runs" if len(runs) > 1 else "run", ", ".join(names)),
        ("samples", fmt_count(report.get("samples"))),
    ]
    with_boxes = isinstance(runs[0].get("edits"), Mapping)
    if report.get("iou") is not None:
        summary.append(("IoU", f"{fmt_metric(report.get('iou'), 2)} ({report.get('iou_type', 'bbox')})"))
    if with_boxes:
        summary.append(("time (best run)", f"{fmt_duration(best_time.get('manual_seconds'))} by hand, "
                                           f"{fmt_duration(best_time.get('with_prelabels_seconds'))} with pre-labels, "
                                           f"saved {_saved(best_time)}"))
    parts.append(summary_html(summary))
    if seconds and with_boxes:
        parts.append(f'<p id="seconds-used">{escape_html(fmt_seconds_used(seconds))}</p>')
    parts.extend(sections)
    if len(runs) > 1:
        parts.append("<h2>Ranking</h2>")
        parts.append(_ranking(runs, report.get("rank_by")))
    notes = [str(note) for note in report.get("notes") or ()]
    if notes:
        parts.append('<h2>Notes</h2><ul id="notes">' + "".join(f"<li>{escape_html(n)}</li>" for n in notes) + "</ul>")
    for position, run in enumerate(runs, start=1):
        parts.append(_run_section(run, position, plotter))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html(report: dict, path: str | Path) -> None:
    """Write `render_html` of ``report`` to ``path`` (UTF-8; parent folders created).
    OSError passes through."""
    page = render_html(report)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
