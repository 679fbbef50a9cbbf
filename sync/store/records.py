"""The plain frozen values that go into and come out of the store.

Nothing here touches a database: `Store` methods take these (``*In`` inputs, `Provenance`)
and return these (``*Info`` snapshots, `RunComparison`), so callers never handle ORM objects
or sessions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from serverless.detections import Detections
    from serverless.ontology import Ontology

__all__ = [
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
    "TrainingRunInfo",
    "TrainingSampleIn",
]


@dataclass(frozen=True, slots=True)
class SampleIn:
    """An image to register in a dataset."""

    uri: str
    """Path or URL of the image; the sample's identity within its dataset."""
    width: int
    """Width in pixels (> 0)."""
    height: int
    """Height in pixels (> 0)."""
    content_hash: str | None = None
    """A digest of the image bytes, e.g. ``"sha256:<hex>"``; None when unknown."""


@dataclass(frozen=True, slots=True)
class SampleInfo:
    """A stored sample."""

    id: int
    dataset_id: int
    uri: str
    content_hash: str | None
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """A stored dataset."""

    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Provenance:
    """Where the annotations of a pre-label or import run come from. Every field is optional.

    Credentials are refused: URL userinfo is stripped from ``model_id`` and from string values
    in ``params``; a ``params`` key that names a secret (``password``, ``token``, ``api_key``…)
    raises `StoreError`.
    """

    model_id: str | None = None
    """Hub id, local path or URL of the model (e.g. ``IDEA-Research/grounding-dino-tiny``)."""
    model_revision: str | None = None
    """Model revision / commit / checkpoint digest."""
    ontology_yaml: str | None = None
    """The ontology text the run used."""
    ontology_hash: str | None = None
    """`serverless.ontology.Ontology.content_hash` of that ontology."""
    thresholds: Mapping[str, float] | None = None
    """Score threshold per label name."""
    params: Mapping[str, Any] | None = None
    """Any other JSON-serializable settings (device, NMS IoU, SAM model type, …)."""

    @classmethod
    def from_ontology(
        cls,
        ontology: Ontology,
        *,
        model_id: str | None = None,
        model_revision: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Provenance:
        """Provenance of a run made with ``ontology``: its YAML (the parsed text, else its
        canonical form dumped as YAML), content hash and per-label thresholds."""
        text = ontology.source
        if text is None:
            import io

            from ruamel.yaml import YAML

            buffer = io.StringIO()
            YAML(typ="safe", pure=True).dump(ontology.to_dict(), buffer)
            text = buffer.getvalue()
        thresholds = {name: float(ontology.threshold_for(i)) for i, name in enumerate(ontology.label_names)}
        return cls(
            model_id=model_id,
            model_revision=model_revision,
            ontology_yaml=text,
            ontology_hash=ontology.content_hash,
            thresholds=thresholds,
            params=params,
        )


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A stored run (pre-label run, human revision or import) with its provenance."""

    id: int
    dataset_id: int
    name: str
    kind: str
    """``"prelabel"``, ``"human"`` or ``"import"``."""
    created_at: datetime
    finished_at: datetime | None
    """None while the run is open (annotations may still be added); set once, by
    `Store.finish_run` or when a human revision is recorded."""
    parent_run_id: int | None
    model_id: str | None
    model_revision: str | None
    ontology_yaml: str | None
    ontology_hash: str | None
    thresholds: Mapping[str, float] | None
    params: Mapping[str, Any] | None
    cvat_server: str | None
    """CVAT server URL without credentials (human revisions)."""
    cvat_task_id: int | None
    cvat_job_id: int | None
    assignee: str | None
    stage: str | None
    state: str | None
    cvat_updated_date: datetime | None
    """The job's ``updated_date`` on the server when this revision was pulled."""

    @property
    def finished(self) -> bool:
        """True when the run is sealed."""
        return self.finished_at is not None


@dataclass(frozen=True, slots=True)
class AnnotationIn:
    """One annotation row to store (see `sync.store.convert.detections_to_rows`).

    Boxes are pixels with exclusive ``x2, y2``. ``polygon`` is a tuple of rings, each a
    tuple of flat ``x0, y0, x1, y1, …`` floats (>= 3 vertices); ``mask_rle`` a COCO
    compressed RLE ``{"size": [height, width], "counts": str}`` of the full frame.
    """

    sample_id: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    shape_type: str = "rectangle"
    """``"rectangle"``, ``"polygon"`` or ``"mask"``: what the shape is in CVAT."""
    score: float | None = None
    """0..1, or None for annotations without a score (human work)."""
    polygon: tuple[tuple[float, ...], ...] | None = None
    mask_rle: Mapping[str, Any] | None = None
    attributes: Mapping[str, Any] | None = None
    """CVAT attribute values by attribute name (JSON-serializable)."""
    source: str = ""
    """``"auto"``, ``"manual"``, ``"semi-auto"``, ``"file"``, … (CVAT's shape source)."""
    cvat_shape_id: int | None = None
    pre_annotation_id: int | None = None
    """The id of the pre-label annotation this one came from, when known."""



ANNOTATION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AnnotationIn))
"""The `AnnotationIn` field names, in order (the annotation columns written and read in bulk)."""

@dataclass(frozen=True, slots=True)
class CvatTaskInfo:
    """A CVAT task linked to a dataset."""

    id: int
    """The store's id of the link (not CVAT's task id)."""
    dataset_id: int
    server: str
    """Server URL without credentials."""
    task_id: int
    """CVAT's task id."""
    name: str
    project_id: int | None
    run_id: int | None
    """The pre-label run pushed into the task, if any."""
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CvatJobInfo:
    """A job of a linked CVAT task: last seen state on the server and last pull."""

    id: int
    """The store's id of the link (not CVAT's job id)."""
    task_link_id: int
    """`CvatTaskInfo.id` of its task."""
    job_id: int
    """CVAT's job id."""
    start_frame: int
    stop_frame: int
    """Inclusive, task-relative."""
    assignee: str | None
    stage: str | None
    state: str | None
    updated_date: datetime | None
    """The job's ``updated_date`` as last seen on the server."""
    last_pulled_at: datetime | None
    last_pulled_updated_date: datetime | None
    """The job's ``updated_date`` when it was last pulled."""
    last_revision_id: int | None
    """The run id of the last human revision pulled from the job."""

    @property
    def needs_pull(self) -> bool:
        """True when the job was never pulled or changed on the server since its last pull."""
        if self.last_pulled_updated_date is None:
            return True
        return self.updated_date is not None and self.updated_date > self.last_pulled_updated_date


@dataclass(frozen=True, slots=True)
class SamplePair:
    """The annotations of one sample in two runs."""

    sample_id: int
    a: Detections
    b: Detections


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side (for evaluation): pairs for the samples both cover."""

    run_a: RunInfo
    run_b: RunInfo
    pairs: tuple[SamplePair, ...]
    """One pair per sample covered by both runs, by ascending sample id."""
    only_a: tuple[int, ...] = field(default=())
    """Sample ids covered by ``run_a`` only."""
    only_b: tuple[int, ...] = field(default=())
    """Sample ids covered by ``run_b`` only."""


@dataclass(frozen=True, slots=True)
class TrainingSampleIn:
    """One sample a training run uses: its split and the run whose labels it gets."""

    sample_id: int
    split: str
    """``"train"`` or ``"val"``."""
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class TrainingRunInfo:
    """A stored training run: a detector trained on a dataset's labels, with its lineage."""

    id: int
    dataset_id: int
    name: str
    created_at: datetime
    finished_at: datetime | None
    """None while training (an interrupted training resumes into this run)."""
    labels: str
    """``"human"``, ``"prelabel:RUN"`` or ``"mixed"``."""
    threshold: float | None
    val_fraction: float
    seed: int
    base_model: str
    params: Mapping[str, Any] | None
    versions: Mapping[str, Any] | None
    classes: tuple[str, ...] | list[str] | None
    export: Mapping[str, Any] | None
    out_dir: str | None
    weights_path: str | None
    weights_sha256: str | None
    """``sha256:<hex>`` of the trained weights; pre-label runs made with them record it as
    their ``model_revision``."""
    metrics: Mapping[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True, eq=False)
class EmbeddingSet:
    """Stored embeddings of one dataset, one model and one kind, row ``i`` of each array
    describing vector ``i``; rows by ascending (sample id, annotation id)."""

    model: str
    """The canonical model spec text they were made with."""
    kind: str
    """``"image"`` or ``"object"``."""
    sample_ids: np.ndarray
    """(N,) int64."""
    annotation_ids: np.ndarray
    """(N,) int64: the cropped annotation's id, -1 for an image."""
    source_run_ids: np.ndarray
    """(N,) int64: the run the cropped annotation came from, -1 when none (images)."""
    vectors: np.ndarray
    """(N, D) float32, each row of L2 norm 1; (0, 0) when there are none."""

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def dim(self) -> int:
        """The vectors' dimension D (0 when there are none)."""
        return int(self.vectors.shape[1])
