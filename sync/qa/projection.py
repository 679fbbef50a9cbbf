"""A 2-D map of embeddings for the QA report (`sync.qa.report`): t-SNE from scikit-learn.

**Why t-SNE, not UMAP.** umap-learn pulls numba and llvmlite and JIT-compiles its kernels on
the first call (tens of seconds before the first point); scikit-learn's Barnes-Hut t-SNE is a
plain wheel and fast enough for the few thousand points a report shows (measured on two shared
CPU cores with 512-d vectors: about 30 s for 2,000 points, 70 s for 5,000). The map
is a picture for a person, not a metric: both keep local neighbourhoods, which is what a map
coloured by label and by mistakenness is read for.

**The settings.** Euclidean t-SNE of the (L2-normalised) vectors, ``init="pca"`` and a fixed
``random_state`` (the same input gives the same map), perplexity ``min(30, (n - 1) / 3)`` (t-SNE
needs a perplexity below the number of points). More than ``max_points`` vectors are
subsampled uniformly at random with the same seed (`DEFAULT_MAX_POINTS`; the page says so);
one point is placed at the origin, two or three are laid out on a line (t-SNE needs more).

scikit-learn (the ``qa`` extra) is imported only when a map is made.
"""

from __future__ import annotations

import numpy as np

from sync.qa.errors import QaError

__all__ = ["DEFAULT_MAX_POINTS", "DEFAULT_SEED", "project_2d"]

DEFAULT_MAX_POINTS = 5000
"""Points drawn on a map at most; more are subsampled (t-SNE's cost grows as n log n)."""

DEFAULT_SEED = 0

_MIN_TSNE = 4
"""Fewer points than this are laid out without t-SNE."""


def _tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise QaError("the embedding map needs scikit-learn: pip install 'autolabel[qa]'") from None

    n = len(vectors)
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
    return np.asarray(tsne.fit_transform(vectors), dtype=np.float64)


def project_2d(
    vectors: np.ndarray, *, max_points: int = DEFAULT_MAX_POINTS, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """``(xy, chosen)``: the 2-D t-SNE positions ``(M, 2)`` of the rows ``chosen`` (ascending
    indices into ``vectors``, ``M = min(len(vectors), max_points)``); the same input and seed
    give the same output (module docstring). `QaError` for vectors that are not a 2-D array or a
    ``max_points`` below 1."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise QaError(f"project_2d needs a 2-D array of vectors, got shape {array.shape}")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise QaError(f"max_points must be a whole number >= 1, got {max_points!r}")
    n = len(array)
    chosen = np.arange(n, dtype=np.int64)
    if n > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False)).astype(np.int64)
    array = array[chosen]
    if len(array) < _MIN_TSNE:
        xy = np.zeros((len(array), 2), dtype=np.float64)
        xy[:, 0] = np.arange(len(array), dtype=np.float64)
        return xy, chosen
    return _tsne(array, seed), chosen
