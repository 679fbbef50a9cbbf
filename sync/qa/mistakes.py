"""Mistakenness and uniqueness scores from embeddings, classifier scores and evaluation matches.

Pure functions over NumPy arrays (no store): each score is in [0, 1], higher = more worth a
reviewer's look, one per annotation (or per sample for `uniqueness`).

- `knn_mistakenness`: how much an annotation's label disagrees with the labels of its k
  nearest neighbours in embedding space (a flipped label in a tight cluster scores high);
- `uniqueness`: how unlike its k nearest neighbours a sample is (for ``select --by uniqueness``);
- `classifier_disagreement`: 1 - the probability a zero-shot classifier gives the label on the crop;
- `evaluation_suspects`: from an evaluation's `sync.evaluate.metrics.MatchTable`, confident
  predictions no human box matched (possibly missed by the annotator) and human boxes no
  prediction matched (possibly spurious);
- `combine`: one score per annotation from several, with the strongest one's reason as text.

`knn_reasons`, `classifier_reasons` and `EvaluationSuspects` give the reviewers' texts, e.g.
"label 'cat' but 8 of 10 nearest are 'dog'".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sync.qa.errors import QaError
from sync.qa.vectors import knn

if TYPE_CHECKING:
    from sync.evaluate.metrics import MatchTable

__all__ = [
    "DEFAULT_K",
    "EvaluationSuspects",
    "classifier_disagreement",
    "classifier_reasons",
    "combine",
    "evaluation_suspects",
    "knn_mistakenness",
    "knn_reasons",
    "uniqueness",
]

DEFAULT_K = 10
"""Neighbours per annotation for `knn_mistakenness` and `uniqueness`."""

Neighbours = tuple[np.ndarray, np.ndarray]
"""``(similarities (N, k'), indices (N, k'))`` as `sync.qa.vectors.knn` returns them."""


def _neighbours(vectors: Any, k: int, neighbours: Neighbours | None) -> Neighbours:
    """The first ``k`` columns of ``neighbours``, or `knn` (``vectors``, ``k``) when None."""
    if neighbours is None:
        return knn(vectors, k)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QaError(f"k must be a whole number >= 1, got {k!r}")
    sims, idx = (np.asarray(a) for a in neighbours)
    n = len(vectors) if vectors is not None else len(idx)
    if sims.ndim != 2 or sims.shape != idx.shape or len(idx) != n:
        raise QaError(f"neighbours must be two ({n}, k) arrays as knn() returns, got {sims.shape} and {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise QaError("neighbours hold indices outside 0..N-1 (an approximate search that found fewer than k?)")
    if idx.shape[1] < min(k, n - 1):
        raise QaError(f"neighbours have {idx.shape[1]} columns, k={k} needs {min(k, n - 1)}: knn(vectors, {k})")
    return sims[:, :k].astype(np.float64), idx[:, :k].astype(np.int64)


def _codes(labels: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as integer codes and the distinct labels they index."""
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != n:
        raise QaError(f"labels must have one entry per vector ({n}), got shape {array.shape}")
    distinct, codes = np.unique(array, return_inverse=True)
    return codes.reshape(-1), distinct


def knn_mistakenness(
    vectors: Any, labels: Any, *, k: int = DEFAULT_K, neighbours: Neighbours | None = None
) -> np.ndarray:
    """Per annotation, the similarity-weighted share of its k nearest neighbours whose label differs.

    ``score_i = sum_j w_ij [label_j != label_i] / sum_j w_ij`` over the ``min(k, N - 1)``
    nearest other annotations j (cosine similarity, `sync.qa.vectors.knn`), with
    ``w_ij = max(similarity_ij, 0)``: a close neighbour counts more, an unrelated one (cosine
    <= 0) not at all. When every weight is 0 the plain share is used. With no neighbour
    (N <= 1) the score is 0. Float64 in [0, 1]. Among neighbours tied at the k-th similarity,
    which count is FAISS's choice. ``labels``: N labels (names or ids).
    ``neighbours``: a precomputed ``knn(vectors, k')`` with ``k' >= k`` to share one search
    between scores (its first k columns are used).
    """
    codes, _ = _codes(labels, len(vectors) if neighbours is None else len(neighbours[1]))
    sims, idx = _neighbours(vectors, k, neighbours)
    if idx.shape[1] == 0:
        return np.zeros(len(codes), np.float64)
    weights = np.clip(sims.astype(np.float64), 0.0, None)
    differ = codes[idx] != codes[:, None]
    total = weights.sum(axis=1)
    weighted = (weights * differ).sum(axis=1) / np.where(total > 0, total, 1.0)
    return np.clip(np.where(total > 0, weighted, differ.mean(axis=1)), 0.0, 1.0)


def knn_reasons(labels: Any, neighbours: Neighbours, *, k: int = DEFAULT_K) -> list[str]:
    """Per annotation, what its k nearest neighbours' labels say, e.g. "label 'cat' but 8 of
    10 nearest are 'dog'" or "label 'cat' but 6 of 10 nearest differ, most often 'dog' (4)"."""
    codes, distinct = _codes(labels, len(neighbours[1]))
    _, idx = _neighbours(None, k, neighbours)
    codes, texts = codes.tolist(), []
    for i, row in enumerate(idx.tolist()):
        own = distinct[codes[i]]
        others = Counter(codes[j] for j in row if codes[j] != codes[i])
        count = sum(others.values())
        if not row:
            texts.append(f"label '{own}' has no neighbours")
        elif not others:
            texts.append(f"label '{own}' agrees with all {len(row)} nearest")
        elif len(others) == 1:
            texts.append(f"label '{own}' but {count} of {len(row)} nearest are '{distinct[next(iter(others))]}'")
        else:
            code, most = max(sorted(others.items()), key=lambda item: item[1])
            texts.append(
                f"label '{own}' but {count} of {len(row)} nearest differ, most often '{distinct[code]}' ({most})"
            )
    return texts


def uniqueness(vectors: Any, *, k: int = DEFAULT_K, neighbours: Neighbours | None = None) -> np.ndarray:
    """Per sample, how unlike its k nearest neighbours it is: ``(1 - mean similarity) / 2``.

    The mean cosine similarity to the ``min(k, N - 1)`` nearest other samples, mapped from
    [-1, 1] to [1, 0] (float64): 0 = identical to all its neighbours, 0.5 = unrelated to them.
    An absolute value, not normalised by the dataset's maximum, so a sample's score does not
    change when an unrelated one is added; ranking is what ``select --by uniqueness`` uses. A
    sample with no neighbour (N = 1) scores 1.
    """
    sims, idx = _neighbours(vectors, k, neighbours)
    if idx.shape[1] == 0:
        return np.ones(len(idx), np.float64)
    return np.clip((1.0 - sims.astype(np.float64).mean(axis=1)) / 2.0, 0.0, 1.0)


def _class_scores(label_scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(label_scores, dtype=np.float64)
    ids = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise QaError(f"label_scores must be a 2-D array (N, L) of class probabilities, got shape {scores.shape}")
    if not np.isfinite(scores).all() or scores.min(initial=0.0) < 0 or scores.max(initial=0.0) > 1:
        raise QaError("label_scores must be probabilities in [0, 1] (a classifier's softmax or sigmoid)")
    if ids.shape != (len(scores),) or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise QaError(
            f"labels must be {len(scores)} class indices into label_scores' columns, got {ids.dtype} {ids.shape}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= scores.shape[1]):
        raise QaError(f"labels must be class indices in 0..{scores.shape[1] - 1}")
    return scores, ids.astype(np.int64)


def classifier_disagreement(label_scores: Any, labels: Any) -> np.ndarray:
    """Per annotation, ``1 - p(label)``: how little a (zero-shot) classifier run on the
    annotation's crop believes its label. ``label_scores``: ``(N, L)`` probabilities in [0, 1]
    (softmax over the ontology, or per-class sigmoids); ``labels``: N column indices."""
    scores, ids = _class_scores(label_scores, labels)
    return 1.0 - scores[np.arange(len(ids)), ids]


def classifier_reasons(label_scores: Any, labels: Any, names: Sequence[str]) -> list[str]:
    """Per annotation, e.g. "classifier says 'dog' (0.91), label 'cat' (0.03)" (``names``: the
    L class names of ``label_scores``' columns)."""
    scores, ids = _class_scores(label_scores, labels)
    if len(names) != scores.shape[1]:
        raise QaError(f"names must name the {scores.shape[1]} columns of label_scores, got {len(names)}")
    best = scores.argmax(axis=1) if len(scores) else np.zeros(0, np.int64)
    return [
        f"classifier agrees: '{names[label]}' ({scores[i, label]:.2f})" if top == label
        else f"classifier says '{names[top]}' ({scores[i, top]:.2f}), label '{names[label]}' ({scores[i, label]:.2f})"
        for i, (top, label) in enumerate(zip(best.tolist(), ids.tolist(), strict=True))
    ]


@dataclass(frozen=True, eq=False)
class EvaluationSuspects:
    """What an evaluation's matching says may be wrong in the human annotations.

    Per prediction row of the `MatchTable`: ``missed`` = its score when it is a false positive
    with score >= ``min_score`` (a confident box no human drew: possibly an object the annotator
    missed), else 0. Per truth row: ``spurious`` = the model's recall on that class (the share
    of its non-crowd truth boxes a prediction matched) when no prediction matched this non-crowd
    box, else 0: a box the model missed is more suspect where the model finds that class
    reliably. ``missed_reasons`` / ``spurious_reasons``: the text per row ("" where 0).
    """

    missed: np.ndarray
    spurious: np.ndarray
    missed_reasons: tuple[str, ...]
    spurious_reasons: tuple[str, ...]


def evaluation_suspects(
    matches: MatchTable, *, min_score: float = 0.5, names: Sequence[str] | None = None
) -> EvaluationSuspects:
    """`EvaluationSuspects` from ``matches`` (its ``score``, ``fp``, ``class_id`` per prediction
    and ``fn``, ``truth_class_id``, ``truth_crowd`` per truth). ``names``: label names by class
    id for the texts (default: the ids)."""
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0.0 <= min_score <= 1.0:
        raise QaError(f"min_score must be a score in [0, 1], got {min_score!r}")

    def name(class_id: int) -> str:
        return str(names[class_id]) if names is not None and 0 <= class_id < len(names) else str(class_id)

    flagged = matches.fp & (matches.score >= min_score)
    missed = np.where(flagged, matches.score, 0.0)
    counted = ~matches.truth_crowd
    classes = matches.truth_class_id
    truth = np.bincount(classes[counted], minlength=classes.max(initial=-1) + 1)
    found = np.bincount(classes[counted & matches.truth_matched], minlength=len(truth))
    recall = found / np.maximum(truth, 1)
    unmatched = matches.fn
    spurious = np.where(unmatched, recall[classes] if len(classes) else 0.0, 0.0)
    missed_reasons = tuple(
        f"prediction '{name(c)}' at {s:.2f} matches no human box: possibly missed by the annotator" if f else ""
        for f, c, s in zip(flagged.tolist(), matches.class_id.tolist(), matches.score.tolist(), strict=True)
    )
    spurious_reasons = tuple(
        f"no prediction matches this '{name(c)}' box (the model finds {recall[c]:.0%} of '{name(c)}')" if u else ""
        for u, c in zip(unmatched.tolist(), classes.tolist(), strict=True)
    )
    return EvaluationSuspects(missed.astype(np.float64), spurious.astype(np.float64), missed_reasons, spurious_reasons)


def _stack(scores: Mapping[str, Any]) -> np.ndarray:
    """The scores as columns of an ``(N, m)`` float64 array, checked to be in [0, 1] or NaN."""
    if not scores:
        raise QaError("combine needs at least one score")
    columns = []
    for name, values in scores.items():
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or (columns and len(array) != len(columns[0])):
            raise QaError(f"score {name!r} must be one value per annotation, got shape {array.shape}")
        known = array[~np.isnan(array)]
        if known.size and (known.min() < 0 or known.max() > 1):
            raise QaError(f"score {name!r} must be in [0, 1] (NaN where not available)")
        columns.append(array)
    return np.stack(columns, axis=1)


def _weights(names: list[str], weights: Mapping[str, float] | None) -> np.ndarray:
    if weights is None:
        return np.ones(len(names))
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise QaError(f"weight for unknown score {unknown[0]!r} (scores: {', '.join(names)})")
    missing = [name for name in names if name not in weights]
    if missing:
        raise QaError(f"no weight for score {missing[0]!r}")
    array = np.array([weights[name] for name in names], dtype=np.float64)
    if not np.isfinite(array).all() or array.min() < 0 or array.sum() <= 0:
        raise QaError("weights must be finite, >= 0 and not all 0")
    return array


def combine(
    scores: Mapping[str, Any],
    weights: Mapping[str, float] | None = None,
    *,
    reasons: Mapping[str, Sequence[str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One mistakenness score per annotation from several, and the reason for it.

    ``scores``: name -> N values in [0, 1], NaN where that signal is not available for an
    annotation (e.g. no classifier ran). Without ``weights`` the score is the maximum over the
    available signals; with them (name -> weight >= 0, one per score) the weighted mean over
    the available signals. An annotation with no available signal scores 0. The reason is
    that of the strongest signal (the largest weight x score; a tie goes to the first in
    ``scores``' order): ``reasons[name][i]`` when given, else "<name> <score>"; "" where the
    score is 0. Returns ``(score (N,) float64, reason (N,) str)``.
    """
    names = list(scores)
    matrix, factors = _stack(scores), _weights(names, weights)
    for name, given in (reasons or {}).items():
        if name not in scores or len(given) != len(matrix):
            raise QaError(f"reasons {name!r} must be one text per annotation of a score of that name")
    available = ~np.isnan(matrix)
    filled = np.where(available, matrix, 0.0)
    if weights is None:
        score = filled.max(axis=1) if len(filled) else np.zeros(0)
    else:
        weight_sum = (available * factors).sum(axis=1)
        score = (filled * factors).sum(axis=1) / np.where(weight_sum > 0, weight_sum, 1.0)
    strongest = (np.where(available, filled * factors, -1.0)).argmax(axis=1) if len(filled) else np.zeros(0, int)
    texts = []
    for i, column in enumerate(strongest.tolist()):
        name, value = names[column], filled[i, column]
        if value <= 0 or score[i] <= 0:
            texts.append("")
        elif reasons is not None and name in reasons:
            texts.append(str(reasons[name][i]))
        else:
            texts.append(f"{name} {value:.2f}")
    return score.astype(np.float64), np.array(texts, dtype=str)
