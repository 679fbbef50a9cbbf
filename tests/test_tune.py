"""`sync.evaluate.tune.write_thresholds`: only the thresholds change, floored, atomically, checked."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serverless.ontology import OntologyError, load_ontology
from sync.evaluate import tune
from sync.evaluate.tune import floor_threshold, pick_threshold, write_thresholds

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

LAYOUT = """\
# Site ontology: hand-written, keep my comments.
name: site-a
defaults: {threshold: 0.3, text_threshold: 0.25, nms_iou: 0.5}   # shared

labels:
  # people first
  - name: person
    prompts: [person, worker]
    threshold: 0.30   # tuned last week

  - name: "hard hat"
    prompts:
      - hard hat
      - 'helmet'
    type: rectangle

  - name: ladder

  - {name: cup, prompts: [cup, mug]}
  - name: cone
    threshold: 0.5
"""


def _write(tmp_path: Path, text: str, name: str = "ontology.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_only_the_numbers_change_and_new_keys_follow_name_or_prompts(tmp_path):
    path = _write(tmp_path, LAYOUT)
    changes = write_thresholds(
        path, {"cone": 0.4567, "hard hat": 0.25, "ladder": 0.6, "cup": 0.45, "person": 0.3}
    )
    expected = (
        LAYOUT.replace("      - 'helmet'\n", "      - 'helmet'\n    threshold: 0.25\n")
        .replace("  - name: ladder\n", "  - name: ladder\n    threshold: 0.6\n")
        .replace("{name: cup, prompts: [cup, mug]}", "{name: cup, prompts: [cup, mug], threshold: 0.45}")
        .replace("    threshold: 0.5\n", "    threshold: 0.456\n")
    )
    # person's 0.30 equals the new 0.3: its text (and comment) is left exactly as written
    assert path.read_text(encoding="utf-8") == expected
    assert changes == [
        ("person", 0.3, 0.3),
        ("hard hat", None, 0.25),
        ("ladder", None, 0.6),
        ("cup", None, 0.45),
        ("cone", 0.5, 0.456),
    ]
    loaded = load_ontology(path)
    assert [loaded.threshold_for(i) for i in range(5)] == [0.3, 0.25, 0.6, 0.45, 0.456]
    assert [label.prompts for label in loaded.labels][1] == ("hard hat", "helmet")


def test_sample_ontology_keeps_its_layout(tmp_path):
    original = (SAMPLES / "ontology.yaml").read_text(encoding="utf-8")
    path = _write(tmp_path, original)
    write_thresholds(path, {"cup": 0.41, "rocket": 0.2})
    new = path.read_text(encoding="utf-8")
    assert new == original.replace(
        "    prompts: [cup, coffee cup]\n", "    prompts: [cup, coffee cup]\n    threshold: 0.41\n"
    ).replace("    threshold: 0.35\n", "    threshold: 0.2\n")


def test_block_mapping_without_trailing_newline_and_crlf(tmp_path):
    text = "labels:\r\n  - name: a\r\n    prompts: [a]\r\n  - name: b"
    path = _write(tmp_path, text)
    write_thresholds(path, {"a": 0.5, "b": 0.125})
    assert path.read_bytes() == (
        b"labels:\r\n  - name: a\r\n    prompts: [a]\r\n    threshold: 0.5\r\n  - name: b\r\n    threshold: 0.125"
    )


def test_flooring_never_rounds_up():
    assert floor_threshold(0.57, 2) == (0.57, "0.57")  # naive floor(0.57 * 100) / 100 gives 0.56
    assert floor_threshold(0.4567, 3) == (0.456, "0.456")
    assert floor_threshold(0.9999, 3) == (0.999, "0.999")
    assert floor_threshold(1.0, 3) == (1.0, "1.0")
    assert floor_threshold(0.0, 3) == (0.0, "0.0")
    assert floor_threshold(0.29, 1) == (0.2, "0.2")


def test_pick_threshold_takes_the_shortest_decimal_in_the_range():
    assert pick_threshold(0.4000001, 0.4567) == 0.45  # not 0.4567, not 0.4 (below the range)
    assert pick_threshold(0.30000001, 0.5) == 0.5
    assert pick_threshold(0.31, 0.3999) == 0.39
    assert pick_threshold(0.9, 0.9) == 0.9
    assert pick_threshold(0.90000004, 1.0) == 1.0  # keep nothing below a top score under 1
    assert pick_threshold(0.123456, 0.1234567) == 0.123456  # a narrow range needs more places
    assert pick_threshold(1.0000001, 1.0000001) == 1.0  # nothing in 0..1 drops a top score of 1: the nearest


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 1, width=32), st.floats(0, 1, width=32))
def test_pick_threshold_is_in_the_range_and_nothing_shorter_is(a, b):
    lowest, highest = sorted((float(str(np.float32(a))), float(str(np.float32(b)))))
    picked = pick_threshold(lowest, highest)
    assert np.float32(lowest) <= np.float32(picked) <= np.float32(highest)
    places = 0 if picked in (0.0, 1.0) else len(floor_threshold(picked, 12)[1].partition(".")[2])
    for fewer in range(min(places, 5)):  # every decimal with fewer places (up to 4, by enumeration) misses it
        grid = np.arange(0, 10**fewer + 1, dtype=np.float64) / 10**fewer
        inside = (np.float32(lowest) <= grid.astype(np.float32)) & (grid.astype(np.float32) <= np.float32(highest))
        assert not inside.any(), (lowest, highest, picked, fewer)


def test_unknown_label_is_named_and_nothing_is_written(tmp_path):
    path = _write(tmp_path, LAYOUT)
    with pytest.raises(OntologyError, match=r"'hardhat' is not in the ontology \(did you mean 'hard hat'\?\)"):
        write_thresholds(path, {"cone": 0.2, "hardhat": 0.4})
    assert path.read_text(encoding="utf-8") == LAYOUT


@pytest.mark.parametrize("value", [1.5, -0.01, float("nan"), True, "0.4"])
def test_threshold_outside_unit_range_is_refused(tmp_path, value):
    path = _write(tmp_path, LAYOUT)
    with pytest.raises(OntologyError, match="threshold for label 'cone' must be a number in 0..1"):
        write_thresholds(path, {"cone": value})
    assert path.read_text(encoding="utf-8") == LAYOUT


def test_invalid_ontology_file_is_reported_before_any_edit(tmp_path):
    text = "labels:\n  - name: a\n    threshold: 2\n"
    path = _write(tmp_path, text)
    with pytest.raises(OntologyError, match=r"ontology.yaml:3: labels\[0\].threshold"):
        write_thresholds(path, {"a": 0.5})
    assert path.read_text(encoding="utf-8") == text


def test_anchored_threshold_is_refused(tmp_path):
    text = "labels:\n  - name: a\n    threshold: &t 0.4\n  - name: b\n    threshold: *t\n"
    path = _write(tmp_path, text)
    with pytest.raises(OntologyError, match=r"labels\[1\].threshold uses a YAML anchor or alias"):
        write_thresholds(path, {"b": 0.5})
    assert path.read_text(encoding="utf-8") == text


def test_a_rewrite_that_breaks_the_file_is_rolled_back(tmp_path, monkeypatch):
    path = _write(tmp_path, LAYOUT)
    monkeypatch.setattr(tune, "floor_threshold", lambda value, decimals: (value, "1.5"))
    with pytest.raises(OntologyError, match="left unchanged.*labels\\[4\\].threshold"):
        write_thresholds(path, {"cone": 0.4})
    assert path.read_text(encoding="utf-8") == LAYOUT
    assert [p.name for p in tmp_path.iterdir()] == ["ontology.yaml"]  # no temp file left behind


def test_symlinked_file_is_written_through(tmp_path):
    real = _write(tmp_path, LAYOUT, "real.yaml")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    write_thresholds(link, {"cone": 0.25})
    assert link.is_symlink()
    assert load_ontology(real).labels[4].threshold == 0.25


def test_nothing_to_change_writes_nothing(tmp_path):
    path = _write(tmp_path, LAYOUT)
    before = path.stat().st_mtime_ns
    assert write_thresholds(path, {}) == []
    assert write_thresholds(path, {"cone": 0.5}) == [("cone", 0.5, 0.5)]
    assert path.stat().st_mtime_ns == before


_BLOCK_THRESHOLD = re.compile(r"^ +threshold: ")
_LABELS = ("person", "hard hat", "ladder", "cup", "cone")


@settings(max_examples=60, deadline=None)
@given(
    chosen=st.dictionaries(st.sampled_from(_LABELS), st.floats(0.0, 1.0, allow_nan=False)),
    decimals=st.integers(1, 5),
)
def test_random_thresholds_read_back_floored(chosen, decimals):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(Path(directory), LAYOUT)
        before = load_ontology(path)
        changes = write_thresholds(path, chosen, decimals=decimals)
        after = load_ontology(path)
        new_text = path.read_text(encoding="utf-8")

    assert [label for label, _, _ in changes] == [label for label in _LABELS if label in chosen]
    step = 10.0**-decimals
    for i, label in enumerate(_LABELS):
        if label in chosen:
            value = after.threshold_for(i)
            assert value <= chosen[label]  # a score equal to the chosen threshold still passes
            assert chosen[label] - value < step * (1 + 1e-9)
            assert math.isclose(value * 10**decimals, round(value * 10**decimals), abs_tol=1e-6)
            assert dict((lab, new) for lab, _, new in changes)[label] == value
            assert dict((lab, old) for lab, old, _ in changes)[label] == before.labels[i].threshold
        else:
            assert after.labels[i].threshold == before.labels[i].threshold
            assert after.threshold_for(i) == before.threshold_for(i)
        assert after.labels[i].prompts == before.labels[i].prompts
        assert after.labels[i].type == before.labels[i].type
    # every line but the block-style threshold lines is untouched (cup's flow mapping aside)
    kept = [line for line in LAYOUT.splitlines() if not _BLOCK_THRESHOLD.match(line) and "name: cup" not in line]
    new_kept = [line for line in new_text.splitlines() if not _BLOCK_THRESHOLD.match(line) and "name: cup" not in line]
    assert new_kept == kept
    cup_line = next(line for line in new_text.splitlines() if "name: cup" in line)
    cup = _LABELS.index("cup")
    if "cup" in chosen and after.threshold_for(cup) != before.threshold_for(cup):
        assert re.fullmatch(r"  - \{name: cup, prompts: \[cup, mug\], threshold: [0-9.]+\}", cup_line)
    else:  # not chosen, or chosen equal to the default it inherits: nothing is written
        assert cup_line == "  - {name: cup, prompts: [cup, mug]}"
