"""COCO crowd regions as the store keeps them: the shape attribute ``iscrowd``.

`sync.coco_import` writes ``{"iscrowd": True}``; shapes pulled back from CVAT carry their
attribute values as text (`sync.pull` stores ``str(value)``, so a checkbox reads ``"true"`` or
``"false"``). Both spellings are read here, once, for the evaluator and the exporters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["crowd_column", "is_crowd"]

_TRUE_TEXT = frozenset({"true", "1", "yes", "on"})


def is_crowd(attributes: Any) -> bool:
    """Whether one shape's attributes mark it a crowd region: ``iscrowd`` true, 1 or the text
    ``"true"``/``"1"``/``"yes"``/``"on"`` (any case); anything else (``"false"``, 0, absent) is not."""
    if not isinstance(attributes, Mapping):
        return False
    value = attributes.get("iscrowd")
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_TEXT
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    return False


def crowd_column(attributes: Sequence[Any] | None, count: int) -> np.ndarray:
    """`is_crowd` of each row of a ``data["attributes"]`` column (all false when absent)."""
    if attributes is None:
        return np.zeros(count, dtype=bool)
    return np.fromiter((is_crowd(a) for a in attributes), dtype=bool, count=count)
