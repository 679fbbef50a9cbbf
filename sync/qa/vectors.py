"""Vector search for QA: the one module behind which the vector library sits.

The library is FAISS (``faiss-cpu``, the ``qa`` extra), imported inside the functions that use
it, so ``import sync.qa.vectors`` imports neither faiss nor torch. Why FAISS:

- exact search: ``IndexFlatIP`` on L2-normalised rows is exact cosine similarity, computed
  with BLAS, and fits in memory up to about 1-2M 512-d vectors (2 GB per 1M);
- range search (every pair above a similarity), which near-duplicate finding needs, not only k-NN;
- approximate indexes (IVF, HNSW) behind the same calls when a dataset outgrows exact search;
- maintained by Meta, CPU wheels on PyPI for every platform we run on, no server.

Every function takes NumPy arrays: ``(N, D)`` rows, which are converted to C-contiguous
float32 and L2-normalised by `unit_rows` (so cosine similarity is the inner product).
Similarities are float32 in [-1, 1] (up to rounding: identical rows may score 0.99999994).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sync.qa.errors import QaError

__all__ = ["INDEX_KINDS", "RANGE_BLOCK", "VectorIndex", "build_index", "knn", "range_pairs", "unit_rows"]

INDEX_KINDS = ("flat", "ivf", "hnsw")
"""``flat``: exact (IndexFlatIP). ``ivf``: IndexIVFFlat with ``sqrt(N)`` lists (at most N / 39;
at least 39 vectors), ``nprobe`` 16, trained on at most 64 points per list. ``hnsw``:
IndexHNSWFlat, M 32, efSearch 64. Both approximate: they trade recall for speed."""

RANGE_BLOCK = 16384
"""Query rows per FAISS range search in `range_pairs`."""


def _faiss() -> Any:
    try:
        import faiss
    except ModuleNotFoundError as error:
        raise QaError(
            "vector search needs faiss-cpu, which is not installed: pip install 'autolabel-cvat[qa]'"
        ) from error
    return faiss


def unit_rows(vectors: Any, *, name: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(N, D)`` array of L2-normalised rows.

    Raises `QaError` (naming ``name``) unless it is 2-D with D >= 1, finite and without an
    all-zero row. N may be 0. An array that already is all that (norms within 1e-5 of 1) is
    returned as is, not copied: 1M 512-d vectors are 2 GB.
    """
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] < 1:
        raise QaError(f"{name} must be a 2-D array (N, D) with D >= 1, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise QaError(f"{name} must hold numbers, got dtype {array.dtype}")
    squares = np.einsum("ij,ij->i", array, array, dtype=np.float64)  # no (N, D) temporary
    if not np.isfinite(squares).all():
        raise QaError(f"{name} row {int(np.flatnonzero(~np.isfinite(squares))[0])} is not finite")
    if (squares == 0).any():
        raise QaError(f"{name} row {int(np.flatnonzero(squares == 0)[0])} is all zeros: it has no direction")
    if array.dtype == np.float32 and array.flags.c_contiguous and np.abs(squares - 1.0).max(initial=0.0) <= 1e-5:
        return array
    norms = np.sqrt(squares)[:, None]
    if array.dtype != np.float32:
        return np.ascontiguousarray(array / norms, dtype=np.float32)
    units = np.array(array, dtype=np.float32, order="C", copy=True)
    units /= norms.astype(np.float32)
    return units


@dataclass(frozen=True, eq=False)
class VectorIndex:
    """A built index over ``size`` unit vectors of dimension ``dim`` (see `build_index`)."""

    kind: str
    size: int
    dim: int
    index: Any

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed rows per query, most similar first: similarities
        ``(Q, k)`` float32 and indices ``(Q, k)`` int64. ``k`` is capped at ``size``; an
        approximate index may find fewer, padded with index -1 and similarity -inf."""
        return self._search(unit_rows(queries, name="queries"), k)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if queries.shape[1] != self.dim:
            raise QaError(f"queries have dimension {queries.shape[1]}, the index {self.dim}")
        k = min(_check_k(k), self.size)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
        sims, idx = self.index.search(queries, k)
        sims = np.where(idx < 0, -np.inf, sims).astype(np.float32)
        return sims, idx.astype(np.int64)


def build_index(vectors: Any, *, kind: str = "flat") -> VectorIndex:
    """An inner-product index over `unit_rows` (``vectors``) of ``kind`` (`INDEX_KINDS`)."""
    if kind not in INDEX_KINDS:
        raise QaError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    return _build(unit_rows(vectors), kind)


def _build(units: np.ndarray, kind: str) -> VectorIndex:
    faiss = _faiss()
    n, dim = units.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    else:
        if n < 39:
            raise QaError(f"an ivf index needs at least 39 vectors to train on, got {n}: use kind 'flat'")
        nlist = max(1, min(n // 39, int(math.sqrt(n))))  # FAISS wants >= 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).permutation(n)[: 64 * nlist] if n > 64 * nlist else slice(None)
        index.train(units[sample])
        index.nprobe = min(16, nlist)
    if n:
        index.add(units)
    return VectorIndex(kind=kind, size=n, dim=dim, index=index)


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QaError(f"k must be a whole number >= 1, got {k!r}")
    return int(k)


def knn(vectors: Any, k: int, *, queries: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine similarity, most similar first.

    Without ``queries``: for every row of ``vectors`` its ``min(k, N - 1)`` most similar
    *other* rows (a row is never its own neighbour, even when an identical row ties with it).
    With ``queries`` ``(Q, D)``: their ``min(k, N)`` most similar rows of ``vectors``.
    Returns similarities ``(rows, k')`` float32 and indices ``(rows, k')`` int64. Among rows
    tied at the k-th similarity, which ones are kept is FAISS's choice.
    """
    k = _check_k(k)
    units = unit_rows(vectors)
    index = _build(units, "flat")
    if queries is not None:
        return index.search(queries, k)
    n, k = len(units), min(k, len(units) - 1)
    if k <= 0:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    sims, idx = index._search(units, k + 1)
    drop = idx == np.arange(n)[:, None]
    drop[~drop.any(axis=1), -1] = True  # self not among the k + 1 (ties): drop the least similar
    keep = ~drop
    return sims[keep].reshape(n, k), idx[keep].reshape(n, k)


def range_pairs(vectors: Any, min_similarity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows with cosine similarity >= ``min_similarity`` (exact, FAISS range search).

    Returns ``(i, j, similarity)``: int64, int64, float32 arrays with ``i < j``, sorted by
    ``(i, j)``. ``min_similarity`` must be in (-1, 1]. The rows are searched `RANGE_BLOCK` at a
    time (FAISS's per-query bookkeeping would otherwise take about 5 KB per row at once); memory
    still grows with the number of pairs found, so this is for high thresholds (near
    duplicates), not for "everything similar".
    """
    if isinstance(min_similarity, bool) or not isinstance(min_similarity, (int, float, np.integer, np.floating)):
        raise QaError(f"min_similarity must be a number in (-1, 1], got {min_similarity!r}")
    threshold = float(min_similarity)
    if not -1.0 < threshold <= 1.0:
        raise QaError(f"min_similarity must be a number in (-1, 1], got {min_similarity!r}")
    units = unit_rows(vectors)
    if len(units) < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy(), np.zeros(0, np.float32)
    index = _build(units, "flat")
    # FAISS keeps inner products strictly above the radius: step just below the threshold, filter exactly.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-2.0)))
    found = [_range_block(index, units, start, radius, np.float32(threshold))
             for start in range(0, len(units), RANGE_BLOCK)]
    rows, cols, sims = (np.concatenate(parts) for parts in zip(*found, strict=True))
    order = np.lexsort((cols, rows))
    return rows[order], cols[order], sims[order]


def _range_block(
    index: VectorIndex, units: np.ndarray, start: int, radius: float, threshold: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs ``(i, j, similarity)``, ``i < j``, of the query rows ``start`` to ``start + RANGE_BLOCK``."""
    lims, sims, cols = index.index.range_search(units[start:start + RANGE_BLOCK], radius)
    rows = np.repeat(np.arange(start, start + len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64))
    cols = cols.astype(np.int64)
    keep = (rows < cols) & (sims >= threshold)
    return rows[keep], cols[keep], sims[keep].astype(np.float32)
