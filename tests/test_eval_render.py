"""The evaluation report renderers: rich tables (`sync.evaluate.table`) and the
self-contained HTML page (`sync.evaluate.html`), fed hand-made report dicts."""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import sys
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from sync.evaluate.data import EvalError
from sync.evaluate.html import render_html, write_html
from sync.evaluate.table import print_report

ROOT = Path(__file__).resolve().parent.parent

CUP = '<b>&"cup"'  # a user-made label that must be escaped in HTML
LADDER = "ladder [v2]"  # no truth at all; brackets must survive rich markup
SECONDS = {"verify": 6.5, "adjust": 8.0, "relabel": 7.0, "delete": 1.5, "draw": 31.0}
SECONDS_LINE = (
    "assumed seconds per action: verify 6.5, adjust 8, relabel 7, delete 1.5, draw 31 — change with --seconds-*"
)


# --------------------------------------------------------------------------- the report


def metrics(tp: int, fp: int, fn: int, map_: float | None, map50: float | None) -> dict:
    """A metrics dict whose P/R/F1 follow from the counts (None when undefined)."""
    predictions, truth = tp + fp, tp + fn
    precision = tp / predictions if predictions else None
    recall = tp / truth if truth else None
    f1 = 2 * tp / (2 * tp + fp + fn) if truth and predictions else None
    return {"map": map_, "map50": map50, "precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "fn": fn, "truth": truth, "predictions": predictions}


def edit_counts(accepted: int, adjusted: int, relabeled: int, deleted: int, added: int) -> dict:
    return {"accepted": accepted, "adjusted": adjusted, "relabeled": relabeled, "deleted": deleted, "added": added}


def time_of(counts: dict, truth: int) -> dict:
    """The estimate as the schema defines it: truth * draw by hand, priced actions with pre-labels."""
    manual = truth * SECONDS["draw"]
    with_pre = (counts["accepted"] * SECONDS["verify"] + counts["adjusted"] * SECONDS["adjust"]
                + counts["relabeled"] * SECONDS["relabel"] + counts["deleted"] * SECONDS["delete"]
                + counts["added"] * SECONDS["draw"])
    return {"manual_seconds": manual, "with_prelabels_seconds": with_pre, "saved_seconds": manual - with_pre,
            "saved_fraction": (manual - with_pre) / manual if manual else None}


def pr_curve(max_recall: float, start: float) -> dict:
    recall = np.linspace(0, 1, 101)
    precision = np.where(recall <= max_recall + 1e-9, start - 0.3 * recall, -1.0)
    return {"recall": recall.round(6).tolist(), "precision": precision.round(6).tolist()}


def sweep(floor: float, peak: float, truth: int, *, flat: bool = False) -> dict:
    """A threshold entry; ``flat`` lays the curve out as `ClassSweep.to_dict` does (lists at the top)."""
    t = np.round(np.concatenate([[floor], np.arange(np.ceil(floor * 100 + 1e-9) / 100, 1.0001, 0.01)]), 6)
    t = np.unique(t)
    if truth:
        precision = np.clip(0.3 + 0.7 * t, 0, 1)
        recall = np.clip(1.2 - t, 0, 1)
        f1 = 2 * precision * recall / (precision + recall)
        best = int(np.argmax(f1))
        best_f1 = {"threshold": float(t[best]), "precision": float(precision[best]), "recall": float(recall[best]),
                   "f1": float(f1[best]), "seconds": 100.0}
        min_time = {"threshold": peak, "precision": 0.7, "recall": 0.6, "f1": 0.65, "seconds": 88.0}
        lists = {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                 "seconds": (200 - 100 * t).tolist()}
    else:
        best_f1 = None
        min_time = {"threshold": peak, "precision": None, "recall": None, "f1": None, "seconds": 0.0}
        lists = {"precision": [0.0] * len(t), "recall": [None] * len(t), "f1": [None] * len(t),
                 "seconds": (3 * (1 - t)).tolist()}
    entry = {"floor": floor, "current": floor, "best_f1": best_f1, "min_time": min_time}
    if flat:
        entry.update({"label": "?", "thresholds": t.tolist(), **lists})
    else:
        entry["curve"] = {"threshold": t.tolist(), **lists}
    return entry


def run(name: str, rank: int, per_class_counts: dict, scale: float, *, masks: bool, flat: bool,
        person_edits: tuple[int, ...] = (6, 2, 0, 1, 2)) -> dict:
    per_class = {
        "person": metrics(*per_class_counts["person"], map_=0.52 * scale, map50=0.75 * scale),
        CUP: metrics(*per_class_counts[CUP], map_=0.41 * scale, map50=0.6 * scale),
        LADDER: metrics(0, 3, 0, None, None),
    }
    tp = sum(m["tp"] for m in per_class.values())
    fp = sum(m["fp"] for m in per_class.values())
    fn = sum(m["fn"] for m in per_class.values())
    overall = metrics(tp, fp, fn, 0.465 * scale, 0.675 * scale)
    edits_per_class = {
        "person": edit_counts(*person_edits),
        CUP: edit_counts(2, 1, 1, 0, 1),
        LADDER: edit_counts(0, 0, 0, 3, 0),
    }
    truth = {"person": 10, CUP: 5, LADDER: 0}
    overall_edits = {k: sum(c[k] for c in edits_per_class.values()) for k in edits_per_class["person"]}
    return {
        "name": name,
        "rank": rank,
        "overall": overall,
        "per_class": per_class,
        "masks": None if not masks else {
            "overall": metrics(tp - 1, fp + 1, fn + 1, 0.398, 0.61),
            "per_class": {label: metrics(m["tp"], m["fp"], m["fn"], None if m["map"] is None else m["map"] - 0.05,
                                         m["map50"]) for label, m in per_class.items()},
        },
        "thresholds": {"person": sweep(0.3, 0.4, 10, flat=flat), CUP: sweep(0.25, 0.35, 5, flat=flat),
                       LADDER: sweep(0.3, 0.92, 0, flat=flat)},
        "pr_curves": {"person": pr_curve(0.8, 1.0), CUP: pr_curve(0.6, 0.9)},
        "edits": {
            "overall": overall_edits,
            "per_class": edits_per_class,
            "adjusted_iou": {"0.95-1.0": 0, "0.9-0.95": 1, "0.75-0.9": 1, "0.5-0.75": 1, "<0.5": 0},
            "matched_by": {"shape_id": 9, "iou": 3},
            "confusion": {"labels": ["person", CUP, LADDER, "background"],
                          "matrix": [[8, 0, 0, 1], [0, 3, 0, 0], [0, 1, 0, 3], [2, 1, 0, 0]]},
            "time": time_of(overall_edits, 15),
            "time_per_class": {label: time_of(c, truth[label]) for label, c in edits_per_class.items()},
            "seconds": dict(SECONDS),
        },
    }


def make_report() -> dict:
    best = run("prelabel-3", 1, {"person": (8, 2, 2), CUP: (3, 1, 2)}, 1.0, masks=True, flat=False)
    worse = run("prelabel-1", 2, {"person": (6, 5, 4), CUP: (2, 2, 3)}, 0.6, masks=False, flat=True,
                person_edits=(3, 3, 0, 5, 4))
    return {
        "dataset": "site-a",
        "truth": "job7-rev2 (+2 more runs: latest human revision per sample)",
        "iou": 0.5,
        "iou_type": "bbox",
        "samples": 120,
        "seconds": dict(SECONDS),
        "notes": ["thresholds below a run's own cannot be judged <careful>"],
        "overall": best["overall"],
        "per_class": best["per_class"],
        "runs": [best, worse],
    }


# --------------------------------------------------------------------------- HTML


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_cell = tag == "td"

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells.append(data)


@pytest.fixture(scope="module")
def page() -> tuple[str, _Page]:
    html = render_html(make_report())
    parser = _Page()
    parser.feed(html)
    parser.close()
    return html, parser


def _images(parser: _Page) -> dict[str, Image.Image]:
    out = {}
    for tag, attrs in parser.tags:
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix)
            image = Image.open(BytesIO(base64.b64decode(attrs["src"][len(prefix):], validate=True)))
            image.load()
            out[attrs["id"]] = image
            assert attrs.get("alt")
    return out


def test_page_needs_nothing_outside_itself(page):
    html, parser = page
    for tag, attrs in parser.tags:
        assert tag not in ("link", "script", "iframe", "object", "embed")
        for name in ("src", "href", "srcset", "poster", "data"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith("data:image/png;base64,") or value.startswith("#"), (tag, name, value[:40])
    assert "url(" not in html and "@import" not in html and "@font-face" not in html


def test_every_plot_is_an_embedded_png(page):
    _, parser = page
    images = _images(parser)
    expected = {"pr-curves", "f1-threshold", "confusion", "edits"}
    assert set(images) == expected | {f"{name}-run2" for name in expected}
    for plot_id, image in images.items():
        assert image.format == "PNG"
        assert image.width >= 300 and image.height >= 150, plot_id
        assert len(np.unique(np.asarray(image.convert("L")))) > 10, f"{plot_id} looks blank"


def test_user_strings_are_escaped(page):
    html, parser = page
    assert "&lt;b&gt;&amp;&quot;cup&quot;" in html
    assert CUP not in html
    assert "b" not in {tag for tag, _ in parser.tags}  # the label never became markup
    assert CUP in parser.cells and LADDER in parser.cells  # and reads back as typed
    assert "thresholds below a run's own cannot be judged <careful>" in "".join(parser.text)


def test_page_states_what_it_shows(page):
    html, parser = page
    text = " ".join("".join(parser.text).split())
    title = html[html.index("<title>") + 7: html.index("</title>")]
    for part in ("site-a", "prelabel-3", "prelabel-1", "job7-rev2"):
        assert part in title
    assert SECONDS_LINE in text
    assert "Ranking" in text and "Mask metrics of prelabel-3" in text
    assert "Mask metrics of prelabel-1" not in text  # that run has no masks
    # per-class numbers derived from the constructed counts: person P = R = 8/10, cup F1 = 6/9, all F1 = 22/32
    assert {"0.800", "0.667", "0.688"} <= set(parser.cells)
    # the ladder row (no truth): precision 0 of 3 predictions, everything truth-based undefined
    cells = parser.cells
    i = cells.index(LADDER)
    assert cells[i + 1: i + 11] == ["0", "3", "0", "3", "0", "0.000", "-", "-", "-", "-"]
    # total time of the best run: 15 truth * 31 s = 7.8 min by hand, 182 s = 3.0 min with pre-labels
    assert "7.8 min by hand, 3.0 min with pre-labels, saved 4.7 min (61%)" in text


def test_missing_plot_data_is_said_not_drawn():
    report = make_report()
    report["runs"] = report["runs"][:1]
    only = report["runs"][0]
    only["pr_curves"] = {}
    only["thresholds"] = {}
    html = render_html(report)
    parser = _Page()
    parser.feed(html)
    assert set(_images(parser)) == {"confusion", "edits"}
    ids = {attrs.get("id") for _, attrs in parser.tags}
    assert {"pr-curves", "f1-threshold"} <= ids
    assert "No precision-recall curve: no class has truth annotations." in html
    assert "Ranking" not in html


def test_write_html_creates_folders(tmp_path):
    target = tmp_path / "out" / "report.html"
    write_html(make_report(), target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_report_without_runs_is_refused():
    report = make_report()
    report["runs"] = []
    with pytest.raises(EvalError, match="no runs"):
        render_html(report)
    with pytest.raises(EvalError, match="no runs"):
        print_report(report, Console(record=True, width=100))


def test_importing_the_renderer_does_not_import_matplotlib():
    code = "import sys, sync.evaluate.html; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --------------------------------------------------------------------------- console tables


def _render(report: dict) -> str:
    console = Console(record=True, width=100)
    print_report(report, console)
    return console.export_text()


def _row(text: str, label: str) -> list[str]:
    """The cells of the first table row whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row for {label!r} in:\n{text}")


def test_tables_show_ranking_metrics_thresholds_and_edits():
    text = _render(make_report())
    assert all(len(line) <= 100 for line in text.splitlines())
    flat = " ".join(text.split())
    assert SECONDS_LINE in flat
    assert "Pre-label runs, best first" in flat and "Mask metrics of prelabel-3" in flat
    assert "note: thresholds below a run's own cannot be judged <careful>" in flat

    # ranking: rank, run, mAP, mAP50, P, R, F1, time saved
    assert _row(text, "1")[:7] == ["1", "prelabel-3", "0.465", "0.675", "0.647", "0.733", "0.688"]
    # run 2: person 3*6.5 + 3*8 + 5*1.5 + 4*31 = 175 s, all 238.5 s with pre-labels: 226.5 s = 3.8 min saved (49%)
    assert _row(text, "2") == ["2", "prelabel-1", "0.279", "0.405", "0.444", "0.533", "0.485", "3.8 min (49%)"]
    # per-class box metrics of the best run: label, truth, preds, P, R, F1, AP50, AP
    assert _row(text, "person") == ["person", "10", "10", "0.800", "0.800", "0.800", "0.750", "0.520"]
    assert _row(text, CUP) == [CUP, "5", "4", "0.750", "0.600", "0.667", "0.600", "0.410"]
    assert _row(text, LADDER) == [LADDER, "0", "3", "0.000", "-", "-", "-", "-"]
    assert _row(text, "all")[:3] == ["all", "15", "17"]


def test_threshold_and_edit_tables():
    report = make_report()
    text = _render(report)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Score thresholds per class" in line)
    thresholds = "\n".join(lines[start:])
    # label, floor, current, best-F1 thr, F1 there, min-time thr, est. time there
    best = report["runs"][0]["thresholds"]["person"]["best_f1"]
    assert _row(thresholds, "person")[:6] == ["person", "0.300", "0.300", f"{best['threshold']:.3f}",
                                              f"{best['f1']:.3f}", "0.400"]
    assert _row(thresholds, LADDER)[:6] == [LADDER, "0.300", "0.300", "-", "-", "0.920"]

    start = next(i for i, line in enumerate(lines) if "What annotators did" in line)
    edits = "\n".join(lines[start:])
    assert _row(edits, "person") == ["person", "6", "2", "0", "1", "2"]
    assert _row(edits, LADDER) == [LADDER, "0", "0", "0", "3", "0"]
    assert _row(edits, "all") == ["all", "8", "3", "1", "4", "3"]
    start = next(i for i, line in enumerate(lines) if "Estimated annotator time" in line)
    times = "\n".join(lines[start:])
    # person: 10 truth * 31 s = 310 s by hand; 6*6.5 + 2*8 + 1*1.5 + 2*31 = 118.5 s with pre-labels
    assert _row(times, "person") == ["person", "5.2 min", "118 s", "3.2 min", "62%"]
    # the ladder had no truth: nothing to draw by hand, so no fraction saved
    assert _row(times, LADDER) == [LADDER, "0 s", "4 s", "-4 s", "-"]
    # all: 465 s by hand, 182 s with pre-labels, 283 s = 4.7 min saved (61%)
    assert _row(times, "all") == ["all", "7.8 min", "3.0 min", "4.7 min", "61%"]
    assert "IoU 0.9-0.95" in text and "by shape_id: 9, by iou: 3" in text


def test_single_run_has_no_ranking_and_none_prints_as_dash():
    report = copy.deepcopy(make_report())
    report["runs"] = report["runs"][1:]
    report["runs"][0]["rank"] = 1
    report["runs"][0]["edits"]["time"]["saved_fraction"] = None
    text = _render(report)
    assert "Pre-label runs, best first" not in text
    assert "Mask metrics" not in text
    assert "prelabel-1" in text
    assert _row(text, "all")[0:3] == ["all", "15", "18"]  # 11 + 4 + 3 predictions
    # the flat threshold layout (as sync.evaluate.sweep writes it) reads the same
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Score thresholds per class" in line)
    best = report["runs"][0]["thresholds"][CUP]["best_f1"]
    assert _row("\n".join(lines[start:]), CUP)[:6] == [
        CUP, "0.250", "0.250", f"{best['threshold']:.3f}", f"{best['f1']:.3f}", "0.350"
    ]
