"""bench/qa.py: its --quick run builds the three FAISS index kinds, finds every planted duplicate
and scores mistakenness, and prints tables whose rates follow from the seconds they print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "qa.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-qa")
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out / "report.json"),
                           "--markdown", str(out / "tables.md")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "report.json").read_text()), (out / "tables.md").read_text(), done.stdout


def _tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``, each as rows of cells (header first, rule dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_quick_run_measures_every_index_kind(quick_run):
    report, _, _ = quick_run
    assert report["quick"] is True
    assert [(row["index"], row["n"], row["dim"]) for row in report["index"]] == [
        ("flat", 2000, 512), ("ivf", 2000, 512), ("hnsw", 2000, 512)]
    for row in report["index"]:
        assert row["queries_per_s"] == pytest.approx(row["queries"] / row["query_s"])
        assert 0.0 <= row["recall_at_10"] <= 1.0 and row["peak_rss_gb"] > 0
    assert report["index"][0]["recall_at_10"] == 1.0  # flat is the reference
    assert report["index"][0]["copy_top1"] == 1.0  # exact search finds every noisy copy's source
    assert all(0.0 <= row["copy_top1"] <= 1.0 and row["copies"] == 1000 for row in report["index"])
    assert report["machine"]["faiss"] and report["machine"]["faiss_threads"] >= 1


def test_quick_run_finds_the_planted_duplicates_and_scores_every_annotation(quick_run):
    report, _, _ = quick_run
    duplicates, *knn_rows = report["qa"]
    assert duplicates["ok"] is True
    assert duplicates["result"] == "30 groups (10 exact) of 30 planted (10 exact): all found, no false group"
    assert [row["step"].split(" ")[0] for row in knn_rows] == [
        "knn", "knn_mistakenness", "uniqueness", "knn_reasons", "combine"]
    assert knn_rows[0]["result"] == "2000 x 10 neighbours"
    for row in report["qa"]:
        assert row["per_s"] == pytest.approx(row["n"] / row["s"])


def test_markdown_has_both_tables_with_their_rows(quick_run):
    report, text, stdout = quick_run
    index, qa = _tables(text)
    assert index[0][:2] == ["index", "N"] and [row[0] for row in index[1:]] == ["flat", "ivf", "hnsw"]
    assert qa[0][0] == "step" and len(qa) == 1 + len(report["qa"])
    assert "QUICK run" in text and "FAISS index build and k-NN queries" in stdout


def test_bad_sizes_are_refused():
    done = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "10"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--sizes" in done.stderr
