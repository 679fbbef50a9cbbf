"""The threshold experiment's table, plot and HTML section (`sync.train.experiment`)."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from sync.train.experiment import ThresholdExperiment

__all__ = ["experiment_section", "experiment_table", "plot_png"]

_COLUMNS = ("labels", "training run", "train boxes", "mAP50", "mAP", "mAP50 vs human")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rows(experiment: ThresholdExperiment) -> list[list[str]]:
    reference = experiment.reference.metrics.get("map50")
    rows = []
    for row in experiment.rows:
        label = "human (reference)" if row.threshold is None else f"pre-labels >= {row.label}"
        value = row.metrics.get("map50")
        delta = "-" if value is None or reference is None or row.threshold is None else f"{value - reference:+.3f}"
        rows.append([label, row.training, str(row.train_boxes), _fmt(value), _fmt(row.metrics.get("map")), delta])
    return rows


def experiment_table(experiment: ThresholdExperiment) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"Downstream quality by pre-label threshold: {experiment.dataset}, measured on "
                             f"{experiment.samples} human-corrected validation samples (pre-labels "
                             f"{experiment.prelabels})"))
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column in ("labels", "training run") else "right")
    for row in _rows(experiment):
        table.add_row(*(Text(cell) for cell in row))
    return table


def plot_png(experiment: ThresholdExperiment) -> bytes:
    """mAP50 and mAP against the threshold, the human-label model as dashed lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [row for row in experiment.rows if row.threshold is not None]
    xs = [row.threshold for row in points]
    for key, name, colour in (("map50", "mAP50", "tab:blue"), ("map", "mAP50-95", "tab:orange")):
        ys = [row.metrics.get(key) for row in points]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", color=colour,
                label=f"{name}, trained on pre-labels")
        reference = experiment.reference.metrics.get(key)
        if reference is not None:
            ax.axhline(reference, linestyle="--", color=colour, label=f"{name}, trained on human labels")
    ax.set_xlabel("pre-label score threshold (training labels)")
    ax.set_ylabel("on human-corrected validation samples")
    ax.set_title(f"Which threshold to pre-label with: {experiment.dataset}".replace("$", r"\$"))
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def experiment_section(experiment: ThresholdExperiment, png: bytes) -> str:
    """The experiment as an HTML section (table and plot) for the evaluation report."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in _rows(experiment))
    data = base64.b64encode(png).decode("ascii")
    return (
        '<section id="threshold-experiment"><h2>Threshold experiment</h2>'
        f"<p>One model trained per pre-label threshold on the pre-labels of run {html.escape(experiment.prelabels)}, "
        f"and one on the human labels, each measured on the {experiment.samples} human-corrected validation samples "
        "(never trained on). The runs below are those models' predictions.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f'<figure><img id="threshold-plot" alt="mAP against the pre-label threshold" src="data:image/png;base64,{data}">'
        "<figcaption>Downstream mAP against the pre-label threshold; dashed: trained on human labels.</figcaption>"
        "</figure></section>"
    )
