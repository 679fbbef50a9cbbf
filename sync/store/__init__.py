"""The label store: datasets, samples, runs with provenance, annotations and CVAT links.

SQLAlchemy 2 on SQLite (default: ``./autolabel.db``, or a path/URL in ``AUTOLABEL_DB``) or
PostgreSQL (a ``postgresql+psycopg2://`` URL). Importing it does not import torch, OpenCV or
the COCO mask codec.

Quick tour::

    from sync.store import open_store, SampleIn, Provenance

    store = open_store()                                   # or open_store("postgresql+psycopg2://…")
    ds = store.get_or_create_dataset("site-a")
    ids = store.add_samples(ds, [SampleIn("img/0001.jpg", 640, 480, "sha256:…")])
    run = store.create_run(ds, "prelabel", provenance=Provenance.from_ontology(
        ontology, model_id="IDEA-Research/grounding-dino-tiny", params={"device": "cpu"}))
    store.add_detections(run, {ids[0]: detections})       # bulk; resumable per sample
    store.finish_run(run)

    task = store.link_cvat_task(ds, "https://cvat.example.com", 12, name="site-a", run=run)
    store.link_frames(task, {0: ids[0]})
    store.record_pushed_shapes(task, {annotation_id: cvat_shape_id})
    job = store.upsert_cvat_job(task, 34, start_frame=0, stop_frame=0, stage="annotation",
                                state="new", updated_date="2026-01-02T03:04:05Z")
    revision = store.record_human_revision(job, {ids[0]: pulled}, updated_date=...,
                                           assignee="alice", stage="validation", state="completed")
    for pair in store.compare(run, revision).pairs:   # pre-label vs human, per sample
        ...

Modules:
- `sync.store.engine`: `open_store`, `upgrade_store`, URL resolution, SQLite pragmas, schema
  version check, creation and upgrade under a lock (safe when processes open a store at once).
- `sync.store.api`: `Store`, every operation (one transaction per method).
- `sync.store.training`: training runs (trained detectors and what they were trained on).
- `sync.store.embeddings`: image and annotation-crop embeddings with their provenance.
- `sync.store.records`: the frozen input/output values.
- `sync.store.convert`: `Detections` ↔ annotation rows (pure).
- `sync.store.schema`: the tables (SQLAlchemy declarative models), `SCHEMA_VERSION`.
- `sync.store.migrations`: schema upgrades.
- `sync.store.info`: `describe_store`, what a store holds in a few numbers.
- `sync.store.credentials`: URL credential stripping, secret-key refusal.
- `sync.store.errors`: `StoreError`, the one exception of the store.
"""

from sync.store.api import Store
from sync.store.convert import detections_to_rows, rows_to_detections
from sync.store.credentials import strip_credentials
from sync.store.engine import ENV_VAR, open_store, resolve_url, upgrade_store
from sync.store.errors import StoreError
from sync.store.records import (
    AnnotationIn,
    CvatJobInfo,
    CvatTaskInfo,
    DatasetInfo,
    EmbeddingSet,
    Provenance,
    RunComparison,
    RunInfo,
    SampleIn,
    SampleInfo,
    SamplePair,
    TrainingRunInfo,
    TrainingSampleIn,
)
from sync.store.schema import RUN_KINDS, SCHEMA_VERSION, SHAPE_TYPES

__all__ = [
    "ENV_VAR",
    "RUN_KINDS",
    "SCHEMA_VERSION",
    "SHAPE_TYPES",
    "AnnotationIn",
    "CvatJobInfo",
    "CvatTaskInfo",
    "DatasetInfo",
    "EmbeddingSet",
    "Provenance",
    "RunComparison",
    "RunInfo",
    "SampleIn",
    "SampleInfo",
    "SamplePair",
    "Store",
    "StoreError",
    "TrainingRunInfo",
    "TrainingSampleIn",
    "detections_to_rows",
    "open_store",
    "resolve_url",
    "rows_to_detections",
    "strip_credentials",
    "upgrade_store",
]
