"""The tables of the label store (SQLAlchemy 2 declarative models).

Schema version `SCHEMA_VERSION`, stamped in ``store_meta`` (key ``schema_version``).

Units and conventions are those of `serverless.detections.Detections`: boxes in pixels,
``x1, y1`` inclusive and ``x2, y2`` exclusive; scores in 0..1; masks full frame of their
sample as COCO compressed RLE (``{"size": [height, width], "counts": str}``, column-major);
polygons as a list of rings, each a flat ``[x0, y0, x1, y1, ...]`` list.
Frame numbers are CVAT task-relative. Times are timezone-aware UTC.

Tables (``→`` is a foreign key):

- ``datasets``: a named collection of samples.
- ``samples`` → datasets: one image (URI, content hash, width, height); unique per
  (dataset, uri).
- ``runs`` → datasets: one set of annotations with its provenance. ``kind`` is ``prelabel``
  (model output: model id/revision, ontology YAML and hash, thresholds, parameters),
  ``human`` (a revision pulled from a CVAT job: server URL without credentials, task, job,
  assignee, stage, state and the job's ``updated_date``) or ``import`` (labels from a file).
  ``parent_run_id`` is the run a revision started from (the pre-label run pushed to CVAT).
  A run is open until ``finished_at`` is set; after that nothing is added to it, and nothing
  in it is ever updated.
- ``run_samples`` → runs, samples: the samples a run covers (a covered sample with no
  annotation is a sample the model or the annotator left empty, which matters to evaluation).
- ``annotations`` → run_samples: one labeled shape: label, box, ``shape_type``
  (``rectangle``, ``polygon`` or ``mask``), optional polygon, mask RLE, score, attributes,
  ``source`` (``auto``, ``manual``, ``semi-auto``, ``file`` …), CVAT shape id, and for human
  revisions the pre-label annotation it came from (``pre_annotation_id``).
- ``cvat_tasks`` → datasets, runs: a CVAT task a dataset was pushed to (server, task id,
  the pre-label run pushed, the task's labels by CVAT id as they were at push time);
  unique per (server, task_id).
- ``cvat_jobs`` → cvat_tasks: a job's frame range and the last seen assignee, stage, state
  and ``updated_date``, plus what was last pulled. These link records are the only rows that
  are updated in place; the revisions they produce are not.
- ``cvat_frames`` → cvat_tasks, samples: which sample is which task frame.
- ``pushed_shapes`` → cvat_tasks, annotations: the CVAT shape id each pushed pre-label
  annotation received (the local↔server id map), and the shape as it was sent (CVAT type and
  ``points``), which is what the annotator saw. A pre-label of shape type ``tag`` became a
  CVAT tag: ``kind`` ``tag``, its CVAT tag id (CVAT numbers tags apart from shapes).
- ``training_runs`` → datasets: a detector trained on the dataset's labels (schema version 4):
  which labels (``human``, ``prelabel:RUN`` or ``mixed``) at which pre-label score threshold,
  the split (validation fraction and seed), the base model and hyper-parameters, library
  versions, the output folder, the final metrics and the trained weights' sha256 (the key from
  a later pre-label run's ``model_revision`` back to what the model was trained on). Open until
  ``finished_at`` is set (an interrupted training resumes into the same row).
- ``training_samples`` → training_runs, samples, runs: each sample a training run used, its
  split (``train`` or ``val``) and the run whose labels it was given.
- ``embeddings`` → datasets, samples, annotations, runs: one L2-normalised vector (schema version
  5) of a whole image (``kind`` ``image``) or of one annotation's crop (``kind`` ``object``,
  ``annotation_id`` set), by ``model`` (the canonical spec text, e.g.
  ``clip:openai/clip-vit-base-patch32``) and ``model_revision``; ``source_run_id`` is the run
  the cropped annotation came from. ``vector`` holds ``dim`` float32 little-endian values.
  ``item`` is the annotation id, or 0 for an image: unique per (model, kind, sample, item), a
  key both backends enforce (a NULL annotation id would be distinct from every other NULL in a
  PostgreSQL unique constraint).
- ``store_meta``: key/value pairs, among them ``schema_version``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    LargeBinary,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "PUSHED_KINDS",
    "RUN_KINDS",
    "SCHEMA_VERSION",
    "SHAPE_TYPES",
    "Annotation",
    "Base",
    "CvatFrame",
    "CvatJob",
    "CvatTask",
    "Dataset",
    "EMBEDDING_KINDS",
    "Embedding",
    "PushedShape",
    "Run",
    "RunSample",
    "Sample",
    "StoreMeta",
    "TRAINING_SPLITS",
    "TrainingRun",
    "TrainingSample",
    "utc_now",
]

SCHEMA_VERSION = 5
"""The schema version this code reads and writes."""

RUN_KINDS = ("prelabel", "human", "import")
"""Values of ``runs.kind``."""

SHAPE_TYPES = ("rectangle", "polygon", "mask", "tag")
"""Values of ``annotations.shape_type``. A ``tag`` is an image-level label (a CVAT tag): its
box is the whole frame and it has no polygon or mask."""

PUSHED_KINDS = ("shape", "tag")
"""Values of ``pushed_shapes.kind``: the CVAT collection a pushed pre-label went into. CVAT
numbers shapes and tags in separate sequences (one per table), so a shape and a tag of one task
may have the same id; the kind is part of the key."""

TRAINING_SPLITS = ("train", "val")
"""Values of ``training_samples.split``."""

EMBEDDING_KINDS = ("image", "object")
"""Values of ``embeddings.kind``: a whole image, or one annotation's crop."""

BigId = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit ids on PostgreSQL; SQLite's INTEGER PRIMARY KEY is already 64-bit (and only that
spelling autoincrements)."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """Aware datetimes stored as UTC; read back aware (UTC) on every backend.

    Naive datetimes are refused (they are ambiguous); SQLite keeps no time zone, so values
    are written as naive UTC and get ``UTC`` back when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> JSON:
    # Python None is SQL NULL, not the JSON text 'null'.
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class StoreMeta(Base):
    """Key/value facts about the store itself (``schema_version``)."""

    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Dataset(Base):
    """A named collection of samples."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class Sample(Base):
    """One image of a dataset."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "uri", name="uq_samples_dataset_uri"),
        CheckConstraint("width > 0 AND height > 0", name="ck_samples_size"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    """Where the image is: a path or URL, as given by the caller (no credentials)."""
    content_hash: Mapped[str | None] = mapped_column(String(128))
    """A digest of the image bytes (e.g. ``sha256:<hex>``), or None when unknown."""
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)


class Run(Base):
    """A set of annotations with provenance: a pre-label run, a human revision or an import."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("dataset_id", "name", name="uq_runs_dataset_name"),
        CheckConstraint("kind IN ('prelabel', 'human', 'import')", name="ck_runs_kind"),
        Index("ix_runs_dataset_kind", "dataset_id", "kind"),
        Index("ix_runs_cvat_job", "cvat_server", "cvat_task_id", "cvat_job_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    parent_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    # pre-label provenance
    model_id: Mapped[str | None] = mapped_column(Text)
    model_revision: Mapped[str | None] = mapped_column(String(255))
    ontology_yaml: Mapped[str | None] = mapped_column(Text)
    ontology_hash: Mapped[str | None] = mapped_column(String(128))
    thresholds: Mapped[dict | None] = mapped_column(_json())
    params: Mapped[dict | None] = mapped_column(_json())
    # human revision provenance (a snapshot of the CVAT job when it was pulled)
    cvat_server: Mapped[str | None] = mapped_column(Text)
    cvat_task_id: Mapped[int | None] = mapped_column(BigInteger)
    cvat_job_id: Mapped[int | None] = mapped_column(BigInteger)
    assignee: Mapped[str | None] = mapped_column(String(255))
    stage: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(64))
    cvat_updated_date: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RunSample(Base):
    """A sample covered by a run (possibly with no annotation)."""

    __tablename__ = "run_samples"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True, index=True)


class Annotation(Base):
    """One labeled shape of one sample in one run."""

    __tablename__ = "annotations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "sample_id"],
            ["run_samples.run_id", "run_samples.sample_id"],
            name="fk_annotations_run_sample",
        ),
        CheckConstraint(
            "shape_type IN (" + ", ".join(f"'{t}'" for t in SHAPE_TYPES) + ")", name="ck_annotations_shape_type"
        ),
        CheckConstraint("x2 >= x1 AND y2 >= y1", name="ck_annotations_box"),
        CheckConstraint("score IS NULL OR (score >= 0 AND score <= 1)", name="ck_annotations_score"),
        Index("ix_annotations_run_sample", "run_id", "sample_id"),
        Index("ix_annotations_cvat_shape", "cvat_shape_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    sample_id: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str] = mapped_column(String(255))
    x1: Mapped[float] = mapped_column(Double)
    y1: Mapped[float] = mapped_column(Double)
    x2: Mapped[float] = mapped_column(Double)
    y2: Mapped[float] = mapped_column(Double)
    shape_type: Mapped[str] = mapped_column(String(16), default="rectangle")
    score: Mapped[float | None] = mapped_column(Double)
    polygon: Mapped[list | None] = mapped_column(_json())
    mask_rle: Mapped[dict | None] = mapped_column(_json())
    attributes: Mapped[dict | None] = mapped_column(_json())
    source: Mapped[str] = mapped_column(String(32), default="")
    cvat_shape_id: Mapped[int | None] = mapped_column(BigInteger)
    pre_annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"))


class CvatTask(Base):
    """A CVAT task that (part of) a dataset was pushed to."""

    __tablename__ = "cvat_tasks"
    __table_args__ = (UniqueConstraint("server", "task_id", name="uq_cvat_tasks_server_task"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    server: Mapped[str] = mapped_column(Text)
    """The server URL without credentials (`sync.store.credentials.strip_credentials`)."""
    task_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(Text, default="")
    project_id: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    """The pre-label run pushed into the task, if any."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    labels: Mapped[dict | None] = mapped_column(_json())
    """``{"<CVAT label id>": {"name": ..., "type": ...}}`` as the task had them when it was
    pushed (schema version 2; None for older links): a later pull tells renamed, deleted and
    added labels apart by their stable ids."""


class CvatJob(Base):
    """A job of a linked CVAT task, as last seen on the server and last pulled."""

    __tablename__ = "cvat_jobs"
    __table_args__ = (UniqueConstraint("task_link_id", "job_id", name="uq_cvat_jobs_task_job"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_link_id: Mapped[int] = mapped_column(ForeignKey("cvat_tasks.id"))
    job_id: Mapped[int] = mapped_column(BigInteger)
    start_frame: Mapped[int] = mapped_column(Integer)
    stop_frame: Mapped[int] = mapped_column(Integer)
    """Inclusive, as CVAT reports it."""
    assignee: Mapped[str | None] = mapped_column(String(255))
    stage: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(64))
    updated_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_pulled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_pulled_updated_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_revision_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


class CvatFrame(Base):
    """Sample ↔ (CVAT task, task-relative frame)."""

    __tablename__ = "cvat_frames"
    __table_args__ = (UniqueConstraint("task_link_id", "sample_id", name="uq_cvat_frames_task_sample"),)
    task_link_id: Mapped[int] = mapped_column(ForeignKey("cvat_tasks.id"), primary_key=True)
    frame: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), index=True)


class PushedShape(Base):
    """A pre-label annotation ↔ the CVAT shape (or tag) id it became when pushed.

    The key is (task, ``kind``, CVAT id): CVAT's shape and tag ids are separate sequences
    (schema version 3 added ``kind``; older rows are shapes)."""

    __tablename__ = "pushed_shapes"
    __table_args__ = (
        PrimaryKeyConstraint("task_link_id", "kind", "cvat_shape_id"),
        UniqueConstraint("task_link_id", "annotation_id", name="uq_pushed_shapes_task_annotation"),
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in PUSHED_KINDS) + ")", name="ck_pushed_shapes_kind"
        ),
    )
    task_link_id: Mapped[int] = mapped_column(ForeignKey("cvat_tasks.id"))
    cvat_shape_id: Mapped[int] = mapped_column(BigInteger)
    """The CVAT id: a shape id, or a tag id for ``kind`` ``tag``."""
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    shape_type: Mapped[str | None] = mapped_column(String(16))
    """The CVAT shape type sent (schema version 2; None for shapes pushed before)."""
    points: Mapped[list | None] = mapped_column(_json())
    """The CVAT ``points`` sent (a mask's are CVAT RLE plus its inclusive box; a tag's are empty)."""
    kind: Mapped[str] = mapped_column(String(8), server_default="shape")
    """``shape`` or ``tag`` (`PUSHED_KINDS`): which of CVAT's id sequences ``cvat_shape_id`` is in."""


class TrainingRun(Base):
    """A detector trained on a dataset's labels, with its lineage (schema version 4)."""

    __tablename__ = "training_runs"
    __table_args__ = (
        UniqueConstraint("dataset_id", "name", name="uq_training_runs_dataset_name"),
        CheckConstraint("val_fraction > 0 AND val_fraction < 1", name="ck_training_runs_val"),
        Index("ix_training_runs_weights", "weights_sha256"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    labels: Mapped[str] = mapped_column(String(300))
    """``human``, ``prelabel:RUN`` or ``mixed``: where the training labels came from."""
    threshold: Mapped[float | None] = mapped_column(Double)
    """The score a pre-label needed to be trained on (None: every stored pre-label)."""
    val_fraction: Mapped[float] = mapped_column(Double)
    seed: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str] = mapped_column(Text)
    """The checkpoint or yaml training started from, as given."""
    params: Mapped[dict | None] = mapped_column(_json())
    """Hyper-parameters (epochs, imgsz, batch, device, ...)."""
    versions: Mapped[dict | None] = mapped_column(_json())
    """Library versions (ultralytics, torch, autolabel)."""
    classes: Mapped[list | None] = mapped_column(_json())
    """The class names, in class-id order."""
    export: Mapped[dict | None] = mapped_column(_json())
    """What the training export wrote: counts per source, dropped annotations, skipped files."""
    out_dir: Mapped[str | None] = mapped_column(Text)
    weights_path: Mapped[str | None] = mapped_column(Text)
    weights_sha256: Mapped[str | None] = mapped_column(String(80))
    """``sha256:<hex>`` of the trained weights (what pre-label runs record as ``model_revision``)."""
    metrics: Mapped[dict | None] = mapped_column(_json())


class TrainingSample(Base):
    """A sample a training run used: its split and the run whose labels it got."""

    __tablename__ = "training_samples"
    __table_args__ = (
        CheckConstraint(
            "split IN (" + ", ".join(f"'{s}'" for s in TRAINING_SPLITS) + ")", name="ck_training_samples_split"
        ),
    )
    training_run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True, index=True)
    split: Mapped[str] = mapped_column(String(8))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    """The run (human revision, import or pre-label run) whose labels the sample was given."""


class Embedding(Base):
    """One L2-normalised vector of an image or of an annotation's crop (schema version 5).

    ``item`` is ``annotation_id`` for an object crop and 0 for an image: the unique key
    (model, kind, sample, item) then holds on PostgreSQL too, where NULLs never collide."""

    __tablename__ = "embeddings"
    __table_args__ = (
        UniqueConstraint("model", "kind", "sample_id", "item", name="uq_embeddings_model_kind_sample_item"),
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in EMBEDDING_KINDS) + ")", name="ck_embeddings_kind"
        ),
        CheckConstraint(
            "(kind = 'image' AND annotation_id IS NULL AND item = 0) OR "
            "(kind = 'object' AND annotation_id IS NOT NULL AND item = annotation_id)",
            name="ck_embeddings_item",
        ),
        CheckConstraint("dim > 0", name="ck_embeddings_dim"),
        Index("ix_embeddings_dataset_model_kind", "dataset_id", "model", "kind"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"))
    """The annotation whose crop this is (``kind`` ``object``); None for an image."""
    item: Mapped[int] = mapped_column(BigInteger)
    """``annotation_id``, or 0 for an image (the key column, see the class docstring)."""
    kind: Mapped[str] = mapped_column(String(8))
    model: Mapped[str] = mapped_column(String(1000))
    """The canonical model spec text, e.g. ``clip:openai/clip-vit-base-patch32``."""
    model_revision: Mapped[str | None] = mapped_column(String(255))
    """The weights' revision when known (a hub snapshot's commit), else None."""
    source_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    """For an object crop, the run its annotation belongs to; None for an image."""
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    """``dim`` float32 values, little-endian, L2 norm 1."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
