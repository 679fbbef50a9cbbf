"""Write tuned score thresholds back into an ontology YAML file, keeping everything else.

`write_thresholds` parses the file with ruamel.yaml's round-trip composer, which reports
where every scalar starts and ends in the text, and edits the text only there: an existing
per-label ``threshold:`` number is replaced in place, and a label without one gets a
``threshold:`` key right after its ``name:``/``prompts`` (whichever comes later; a new line
with the same indent in a block mapping, ``, threshold: X`` in a flow mapping). Comments, key
order, flow style, quoting, blank lines, indentation and line endings stay byte-identical,
which a re-dump of the document would not guarantee (it re-indents and moves the blank lines
ruamel keeps as comments of the preceding key).

Thresholds are floored (not rounded) to ``decimals`` places: a detection is kept when its
score is >= the threshold, so a prediction with exactly the chosen score still passes.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from serverless.files import write_text_atomic
from serverless.ontology import Ontology, OntologyError, load_ontology

__all__ = ["floor_threshold", "pick_threshold", "write_thresholds"]


def floor_threshold(value: float, decimals: int = 3) -> tuple[float, str]:
    """``value`` (0..1) rounded down to ``decimals`` places, as ``(number, YAML text)``.

    Works on the shortest decimal form of the float (``repr``), so 0.57 stays 0.57 where
    ``math.floor(0.57 * 100) / 100`` would give 0.56. The number is never above ``value``.
    The text always has a decimal point (``"1.0"``, ``"0.0"``, ``"0.456"``).
    """
    quantum = Decimal(1).scaleb(-decimals)
    floored = Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_FLOOR)
    text = format(floored.normalize(), "f")
    if "." not in text:
        text += ".0"
    return float(floored), text


def pick_threshold(lowest: float, highest: float) -> float:
    """The shortest decimal ``t`` with ``lowest <= t <= highest`` (compared as float32, as the
    detectors compare scores), capped at 1.0: the number to write for a sweep's
    `sync.evaluate.sweep.ThresholdChoice` range (``0.45``, not ``0.4499999881``; ``1.0`` for
    "keep nothing" below a top score of 1). When nothing in 0..1 lies in the range (the range
    starts above 1.0), 1.0, the nearest."""
    import numpy as np

    top = min(float(highest), 1.0)
    if np.float32(top) < np.float32(lowest):
        return 1.0
    for places in range(10):
        candidate, _ = floor_threshold(top, places)
        if np.float32(candidate) >= np.float32(lowest):
            return candidate
    return top


def _check_thresholds(thresholds: Mapping[str, float], ontology: Ontology, source: str) -> None:
    names = [label.name for label in ontology.labels]
    for label, value in thresholds.items():
        if label not in names:
            close = difflib.get_close_matches(str(label), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OntologyError(
                f"{source}: label {label!r} is not in the ontology{hint}; its labels are {', '.join(map(repr, names))}"
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise OntologyError(f"threshold for label {label!r} must be a number in 0..1, got {value!r}")
        if not 0.0 <= float(value) <= 1.0:
            raise OntologyError(f"threshold for label {label!r} must be a number in 0..1, got {value!r}")


def _last_leaf(node: Any) -> Any:
    """The last scalar inside a node (a block collection's own end mark runs into the next key)."""
    while getattr(node, "flow_style", None) is False and isinstance(node.value, list) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    return node


def _label_nodes(text: str, source: str) -> list[Any]:
    """The composed mapping node of every label, in file order."""
    from ruamel.yaml import YAML

    root = YAML(typ="rt").compose(text)
    for key, value in root.value:
        if key.value == "labels":
            return list(value.value)
    raise OntologyError(f"{source}: no 'labels' list found")


def _edit_for(text: str, node: Any, index: int, new_text: str, newline: str, source: str) -> tuple[int, int, str]:
    """``(start, end, replacement)`` in ``text`` that sets the threshold of label node ``node``."""
    keys = {key.value: (key, value) for key, value in node.value}
    if "threshold" in keys:
        _, value = keys["threshold"]
        if getattr(value, "anchor", None):
            raise OntologyError(
                f"{source}: labels[{index}].threshold uses a YAML anchor or alias (&/*); "
                "tune cannot rewrite it without changing the other uses: edit it by hand"
            )
        return value.start_mark.index, value.end_mark.index, new_text
    anchors = [keys[k] for k in ("name", "prompts") if k in keys]
    if not anchors:  # e.g. a name taken from a YAML merge key (<<)
        raise OntologyError(
            f"{source}: labels[{index}] has no 'name:' key of its own to put a threshold after: edit it by hand"
        )
    after = max(anchors, key=lambda kv: kv[0].start_mark.index)
    if node.flow_style:
        position = after[1].end_mark.index
        return position, position, f", threshold: {new_text}"
    leaf = _last_leaf(after[1])
    position = leaf.end_mark.index
    if not (leaf.end_mark.column == 0 and position > 0 and text[position - 1] == "\n"):  # block scalars end past it
        line_end = text.find("\n", position)
        if line_end < 0:
            return len(text), len(text), f"{newline}{' ' * after[0].start_mark.column}threshold: {new_text}"
        position = line_end + 1
    indent = " " * after[0].start_mark.column
    return position, position, f"{indent}threshold: {new_text}{newline}"


def write_thresholds(
    path: Path, thresholds: Mapping[str, float], *, decimals: int = 3
) -> list[tuple[str, float | None, float]]:
    """Set the ``threshold`` of each label in ``thresholds`` (label name → score 0..1) in the
    ontology file ``path``, floored to ``decimals`` places (see `floor_threshold`).

    Returns ``(label, its own threshold before or None, the threshold written)`` per label of
    ``thresholds``, in ontology order. Only those labels' ``threshold:`` values change (see
    the module docstring); a value equal to the label's threshold now (its own, or the
    default it inherits) writes nothing.
    Raises `OntologyError` (nothing written) when the file is not a valid ontology, a label is
    not in it, a threshold is not a number in 0..1 or a threshold is a YAML anchor/alias.
    The file is replaced atomically and re-loaded with `load_ontology`; if that fails or the
    thresholds do not read back, the original text is restored and `OntologyError` raised.
    OSError (cannot read or write) passes through.
    """
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 12:
        raise OntologyError(f"decimals must be an integer in 0..12, got {decimals!r}")
    target = Path(os.path.realpath(path))
    ontology = load_ontology(path)
    source = str(path)
    _check_thresholds(thresholds, ontology, source)
    with open(target, encoding="utf-8", newline="") as handle:
        original = handle.read()
    newline = "\r\n" if "\r\n" in original else "\n"

    nodes = _label_nodes(original, source)
    changes: list[tuple[str, float | None, float]] = []
    edits: list[tuple[int, int, str]] = []
    expected: dict[int, float] = {}
    for i, label in enumerate(ontology.labels):
        if label.name not in thresholds:
            expected[i] = ontology.threshold_for(i)
            continue
        new, new_text = floor_threshold(float(thresholds[label.name]), decimals)
        changes.append((label.name, label.threshold, new))
        expected[i] = new
        if new == ontology.threshold_for(i):  # no change: its own value or the default stays as written
            continue
        edits.append(_edit_for(original, nodes[i], i, new_text, newline, source))

    text = original
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    if text == original:
        return changes

    write_text_atomic(target, text, newline="")
    try:
        written = load_ontology(target)
        got = {i: written.threshold_for(i) for i in range(len(written.labels))}
        if [lab.name for lab in written.labels] != [lab.name for lab in ontology.labels] or got != expected:
            raise OntologyError(f"{source}: the rewritten file reads back thresholds {got}, expected {expected}")
    except OntologyError as error:
        write_text_atomic(target, original, newline="")
        raise OntologyError(
            f"{source}: writing thresholds would break the ontology, left unchanged: {error}"
        ) from error
    return changes
