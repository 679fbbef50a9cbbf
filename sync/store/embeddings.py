"""The embedding methods of `sync.store.api.Store`: vectors of images and of annotation crops,
with their provenance (schema version 5, table ``embeddings``).

Why in the store and not in a vector database: one transactional home for the vectors and
what they were made from (model, model revision, the run an annotation came from), on SQLite
and PostgreSQL alike; a batch is written in one transaction, so an interrupted
``autolabel embed`` keeps every finished batch and carries on from there. Nearest-neighbour
search is not done here: the QA modules (`sync.qa`) read the vectors back
(`Embeddings.embeddings`) and search them in memory (FAISS). pgvector is not used: it is not
installed on the PostgreSQL this project runs (no Debian package for it), and SQLite has no
counterpart, so vectors are plain bytes: ``dim`` float32 values, little-endian, L2 norm 1.

The rules:

- a vector is identified by (model, kind, sample, annotation): `Embeddings.add_embeddings`
  skips what is already stored under that key (idempotent; nothing is ever overwritten), so
  re-running an embedding computes and writes only what is missing;
- every vector of one model has the same dimension, in the whole store (`StoreError`
  otherwise: two different models under one name);
- an ``image`` vector has no annotation; an ``object`` vector names an annotation of its
  sample, and its ``source_run_id`` is that annotation's run (filled in when not given).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sync.store.base import StoreBase
from sync.store.bulk import insert_ignore
from sync.store.checks import as_int, chunks, optional_text
from sync.store.errors import StoreError
from sync.store.records import DatasetInfo, EmbeddingSet
from sync.store.schema import EMBEDDING_KINDS, Annotation, Embedding, Run, utc_now

__all__ = ["UNIT_TOLERANCE", "EmbeddingItem", "Embeddings", "decode_vectors", "encode_vector"]

log = logging.getLogger(__name__)

UNIT_TOLERANCE = 1e-3
"""How far from 1 a stored vector's L2 norm may be."""

EmbeddingItem = tuple[int, "int | None", "int | None", Any]
"""``(sample_id, annotation_id or None, source_run_id or None, vector)``: one vector to add."""

_KEY = ("model", "kind", "sample_id", "item")


def encode_vector(vector: Any, where: str) -> bytes:
    """The stored bytes of a 1-D finite unit vector (float32 little-endian); `StoreError` naming
    ``where`` otherwise."""
    array = np.asarray(vector)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.floating):
        raise StoreError(f"{where}: a vector must be a non-empty 1-D float array, got shape {array.shape} {array.dtype}")
    array = array.astype("<f4")
    if not np.isfinite(array).all():
        raise StoreError(f"{where}: the vector holds NaN or infinity")
    norm = float(np.linalg.norm(array.astype(np.float64)))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        raise StoreError(f"{where}: vectors are stored L2-normalised, this one has norm {norm:.6g}")
    return array.tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """(N, dim) float32 from stored bytes (`encode_vector`)."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


def _check_kind(kind: str) -> str:
    if kind not in EMBEDDING_KINDS:
        raise StoreError(f"embedding kind must be one of {list(EMBEDDING_KINDS)}, got {kind!r}")
    return kind


def _check_model(model: str) -> str:
    text = optional_text(model, "embedding model", 1000)
    if not text or not text.strip():
        raise StoreError("an embedding model must be a non-empty spec text such as clip:openai/clip-vit-base-patch32")
    return text


class Embeddings(StoreBase):
    """Image and object-crop embeddings (see the module docstring)."""

    def add_embeddings(
        self,
        dataset: DatasetInfo | str,
        model: str,
        kind: str,
        items: Iterable[EmbeddingItem],
        *,
        model_revision: str | None = None,
    ) -> int:
        """Store vectors of ``dataset``'s samples made by ``model`` (its canonical spec text), in
        one transaction; returns how many were added.

        Idempotent: an item whose (model, kind, sample, annotation) is stored already is skipped.
        `StoreError` (nothing written) for a malformed item, a vector that is not a finite unit
        vector, dimensions that differ from each other or from the model's stored vectors, a
        sample of another dataset, an annotation of another sample, or a source run that is
        not the annotation's.
        """
        model, kind = _check_model(model), _check_kind(kind)
        revision = optional_text(model_revision, "model_revision")
        rows = self._embedding_rows(kind, items)
        if not rows:
            return 0
        with self.session() as s:
            ds = self._dataset(s, dataset)
            self._check_samples_in(s, ds.id, [r["sample_id"] for r in rows], f"{kind} embeddings")
            self._check_dim(s, model, rows)
            if kind == "object":
                self._check_annotations(s, rows)
            else:
                self._check_runs(s, ds.id, {r["source_run_id"] for r in rows} - {None})
            stored = self._stored_keys(s, ds.id, model, kind, sorted({r["sample_id"] for r in rows}))
            new = [r for r in rows if (r["sample_id"], r["item"]) not in stored]
            now = utc_now()
            extra = {"dataset_id": ds.id, "model": model, "kind": kind, "model_revision": revision, "created_at": now}
            insert_ignore(s, Embedding.__table__, [{**r, **extra} for r in new], _KEY)
            log.info("dataset %r: %d %s embeddings of %s added, %d stored already", ds.name, len(new), kind, model,
                     len(rows) - len(new))
            return len(new)

    def embedded_keys(self, dataset: DatasetInfo | str, model: str, kind: str) -> set[tuple[int, int | None]]:
        """``{(sample_id, annotation_id or None)}`` of the vectors stored for ``dataset``,
        ``model`` and ``kind`` (what an embedding run need not compute again)."""
        model, kind = _check_model(model), _check_kind(kind)
        with self.session() as s:
            ds = self._dataset(s, dataset)
            return {(sample, item or None) for sample, item in self._stored_keys(s, ds.id, model, kind, None)}

    def embeddings(
        self, dataset: DatasetInfo | str, model: str, kind: str, *, sample_ids: Iterable[int] | None = None
    ) -> EmbeddingSet:
        """The vectors stored for ``dataset``, ``model`` and ``kind`` (of ``sample_ids`` only,
        if given) as one `EmbeddingSet`, by ascending (sample id, annotation id); empty when
        there are none."""
        model, kind = _check_model(model), _check_kind(kind)
        columns = (Embedding.sample_id, Embedding.item, Embedding.source_run_id, Embedding.dim, Embedding.vector)
        with self.session() as s:
            ds = self._dataset(s, dataset)
            query = (
                select(*columns)
                .where(Embedding.dataset_id == ds.id, Embedding.model == model, Embedding.kind == kind)
                .order_by(Embedding.sample_id, Embedding.item)
            )
            if sample_ids is None:
                rows = s.execute(query).all()
            else:
                rows = []
                for chunk in chunks(sorted({as_int(i, "sample id") for i in sample_ids})):
                    rows.extend(s.execute(query.where(Embedding.sample_id.in_(chunk))).all())
        dims = {r.dim for r in rows}
        if len(dims) > 1:
            raise StoreError(f"the {kind} embeddings of {model} in dataset {ds.name!r} have several dimensions {sorted(dims)}")
        return EmbeddingSet(
            model=model,
            kind=kind,
            sample_ids=np.array([r.sample_id for r in rows], dtype=np.int64),
            annotation_ids=np.array([r.item or -1 for r in rows], dtype=np.int64),
            source_run_ids=np.array([-1 if r.source_run_id is None else r.source_run_id for r in rows], dtype=np.int64),
            vectors=decode_vectors([r.vector for r in rows], dims.pop() if dims else 0),
        )

    def embedding_models(self, dataset: DatasetInfo | str) -> dict[str, dict[str, int]]:
        """``{model: {kind: count}}`` of the vectors stored for ``dataset``, models by name
        (to say which model a dataset was embedded with)."""
        with self.session() as s:
            ds = self._dataset(s, dataset)
            query = (
                select(Embedding.model, Embedding.kind, func.count())
                .where(Embedding.dataset_id == ds.id)
                .group_by(Embedding.model, Embedding.kind)
                .order_by(Embedding.model, Embedding.kind)
            )
            found: dict[str, dict[str, int]] = {}
            for model, kind, count in s.execute(query):
                found.setdefault(model, {})[kind] = int(count)
            return found

    # ---------------------------------------------------------------------- checks
    @staticmethod
    def _embedding_rows(kind: str, items: Iterable[EmbeddingItem]) -> list[dict[str, Any]]:
        """Insert-ready rows (without the columns every row shares), checked; one per key."""
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        for i, item in enumerate(items):
            where = f"{kind} embeddings[{i}]"
            try:
                sample, annotation, source, vector = item
            except (TypeError, ValueError):
                raise StoreError(f"{where} must be (sample_id, annotation_id, source_run_id, vector)") from None
            sample = as_int(sample, f"{where}.sample_id")
            if (kind == "image") != (annotation is None):
                raise StoreError(f"{where}: an image embedding has no annotation id, an object embedding has one")
            annotation = None if annotation is None else as_int(annotation, f"{where}.annotation_id", minimum=1)
            source = None if source is None else as_int(source, f"{where}.source_run_id")
            blob = encode_vector(vector, where)
            key = (sample, annotation or 0)
            if key in rows:
                raise StoreError(f"{where}: sample {sample}" + (f" annotation {annotation}" if annotation else "")
                                 + " is given twice")
            rows[key] = {"sample_id": sample, "annotation_id": annotation, "item": annotation or 0,
                         "source_run_id": source, "dim": len(blob) // 4, "vector": blob}
        return list(rows.values())

    def _check_dim(self, session: Session, model: str, rows: list[dict[str, Any]]) -> None:
        dims = sorted({r["dim"] for r in rows})
        if len(dims) > 1:
            raise StoreError(f"embeddings of {model}: vectors of several dimensions {dims} in one call")
        stored = session.execute(select(Embedding.dim).where(Embedding.model == model).limit(1)).scalar()
        if stored is not None and stored != dims[0]:
            raise StoreError(
                f"embeddings of {model}: these vectors have {dims[0]} dimensions, the stored ones {stored} "
                "(two different models under one name?)"
            )

    @staticmethod
    def _check_annotations(session: Session, rows: list[dict[str, Any]]) -> None:
        """Each annotation belongs to its row's sample; the source run is the annotation's
        (filled in when None)."""
        wanted = sorted({r["annotation_id"] for r in rows})
        found: dict[int, tuple[int, int]] = {}
        for chunk in chunks(wanted):
            query = select(Annotation.id, Annotation.sample_id, Annotation.run_id).where(Annotation.id.in_(chunk))
            found.update({a: (sample, run) for a, sample, run in session.execute(query)})
        for row in rows:
            annotation = row["annotation_id"]
            if annotation not in found:
                raise StoreError(f"object embeddings: there is no annotation {annotation}")
            sample, run = found[annotation]
            if sample != row["sample_id"]:
                raise StoreError(f"object embeddings: annotation {annotation} is of sample {sample}, "
                                 f"not {row['sample_id']}")
            if row["source_run_id"] is None:
                row["source_run_id"] = run
            elif row["source_run_id"] != run:
                raise StoreError(f"object embeddings: annotation {annotation} is of run id {run}, "
                                 f"not {row['source_run_id']}")

    @staticmethod
    def _check_runs(session: Session, dataset_id: int, run_ids: set[int]) -> None:
        for chunk in chunks(sorted(run_ids)):
            found = set(session.execute(select(Run.id).where(Run.dataset_id == dataset_id, Run.id.in_(chunk))).scalars())
            missing = sorted(set(chunk) - found)
            if missing:
                raise StoreError(f"image embeddings: run ids {missing[:10]} are not runs of dataset id {dataset_id}")

    @staticmethod
    def _stored_keys(
        session: Session, dataset_id: int, model: str, kind: str, sample_ids: Sequence[int] | None
    ) -> set[tuple[int, int]]:
        """``{(sample_id, item)}`` stored for the dataset, model and kind (of ``sample_ids`` only)."""
        query = select(Embedding.sample_id, Embedding.item).where(
            Embedding.dataset_id == dataset_id, Embedding.model == model, Embedding.kind == kind
        )
        if sample_ids is None:
            return {(sample, item) for sample, item in session.execute(query)}
        found: set[tuple[int, int]] = set()
        for chunk in chunks(sample_ids):
            found.update((sample, item) for sample, item in session.execute(query.where(Embedding.sample_id.in_(chunk))))
        return found
