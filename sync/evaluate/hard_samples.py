"""Hard samples: where the model did worst or was least sure, for a human review pass.

Three orders, hardest first:

- ``f1``: per-sample F1 of the pre-labels against the truth at the evaluation IoU
  (``2·TP / (2·TP + FP + FN)``; a sample with nothing on either side scores 1.0). Needs a truth.
- ``edits``: the number of corrections annotators made on the sample (adjusted + relabeled +
  deleted + added). Needs a truth.
- ``confidence``: the mean score of the sample's pre-labels (a sample without any scores 0.0).
  Needs no truth, so it also ranks samples nobody has looked at yet.

Ties keep ascending sample id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sync.evaluate.data import EvalError

__all__ = ["BY", "Pick", "parse_budget", "pick_hardest", "sample_confidence", "sample_edits", "sample_f1"]

BY = ("f1", "confidence", "edits", "mistakenness", "uniqueness")
"""``mistakenness`` and ``uniqueness`` (highest first) come from the stored embeddings (`sync.qa.scores`)."""


@dataclass(frozen=True)
class Pick:
    """One selected sample and the value it was ranked by."""

    sample_id: int
    uri: str
    value: float


def parse_budget(text: str, total: int) -> int:
    """How many of ``total`` samples a budget allows: ``"10%"`` (rounded up, at least 1 when
    ``total`` > 0) or a count such as ``"25"`` (capped at ``total``)."""
    text = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if match:
        percent = float(match.group(1))
        if not 0 < percent <= 100:
            raise EvalError(f"--budget must be a percentage in (0, 100], got {text!r}")
        return min(total, max(1 if total else 0, math.ceil(total * percent / 100 - 1e-9)))
    if re.fullmatch(r"\d+", text) and int(text) > 0:
        return min(total, int(text))
    raise EvalError(f"--budget must be a percentage such as 10% or a sample count such as 25, got {text!r}")


def sample_confidence(pred_scores: Sequence[np.ndarray]) -> np.ndarray:
    """Mean pre-label score per sample (0.0 for a sample without pre-labels)."""
    return np.array([float(np.mean(s)) if len(s) else 0.0 for s in pred_scores], dtype=np.float64)


def sample_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-sample F1 from per-sample counts (1.0 where there is nothing to find and nothing found)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 1.0)


def sample_edits(per_sample: np.ndarray) -> np.ndarray:
    """Corrections per sample from the edit breakdown's ``(n, 5)`` counts (accepted, adjusted,
    relabeled, deleted, added): everything but accepted."""
    per_sample = np.asarray(per_sample)
    return per_sample[:, 1:].sum(axis=1).astype(np.float64) if per_sample.size else np.zeros(len(per_sample))


def pick_hardest(
    sample_ids: Sequence[int], uris: Sequence[str], values: np.ndarray, count: int, *, ascending: bool
) -> list[Pick]:
    """The ``count`` hardest samples: the lowest ``values`` when ``ascending`` (F1, confidence),
    else the highest (edits); ties by ascending sample id."""
    ids = np.asarray(sample_ids, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    key = values if ascending else -values
    order = np.lexsort((ids, key))[:count]
    return [Pick(int(ids[i]), uris[i], float(values[i])) for i in order]
