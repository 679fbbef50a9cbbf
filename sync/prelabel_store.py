"""Recording a pre-label run in the store as it goes, so an interrupted run resumes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serverless.weights import file_sha256  # the one content hash; sync's importers reach it here
from sync.store import DatasetInfo, Provenance, RunInfo, SampleIn, StoreError
from sync.store.credentials import strip_credentials

if TYPE_CHECKING:
    from serverless.detections import Detections
    from serverless.models.base import Tags
    from serverless.ontology import Ontology
    from serverless.pipeline import ModelSettings
    from sync.store import Store

__all__ = ["RunRecorder", "file_sha256", "prelabel_provenance", "record_batch", "run_differences", "sample_uri"]


def sample_uri(path: Path) -> str:
    """Samples of local files are identified by their absolute path."""
    return str(path.resolve())


def prelabel_provenance(
    ontology: Ontology, model_id: str | None, params: Mapping[str, Any], *, model_revision: str | None = None
) -> Provenance:
    """The provenance of a ``prelabel`` run: ontology, model (``model_revision``: the checkpoint's
    digest, `ModelSettings.model_revision`) and settings (``params``)."""
    provenance = Provenance.from_ontology(ontology, model_id=model_id, model_revision=model_revision, params=params)
    if params.get("threshold") is not None:  # --threshold replaced every label's own
        provenance = replace(provenance, thresholds=dict.fromkeys(ontology.label_names, params["threshold"]))
    return provenance


def _shown(value: object) -> str:
    return "unset" if value is None else str(value)


def run_differences(run: RunInfo, provenance: Provenance) -> list[str]:
    """What differs between an existing run and a new one's ``provenance``: the ontology, the
    model and each parameter (``"threshold 0.3 (now 0.5)"``, ``"classifier clip:a (now
    clip:b)"``); empty when the run can be resumed. The one rule of ``autolabel prelabel``'s
    resume (``autolabel cvat prelabel`` has its own: `sync.cvat_prelabel`)."""
    found = []
    if run.ontology_hash != provenance.ontology_hash:
        found.append("another ontology")
    model = None if provenance.model_id is None else strip_credentials(provenance.model_id)
    if run.model_id != model:
        found.append(f"model {_shown(run.model_id)} (now {_shown(model)})")
    if run.model_revision != provenance.model_revision:  # the same path, another checkpoint
        found.append(f"model revision {_shown(run.model_revision)} (now {_shown(provenance.model_revision)})")
    old = dict(run.params or {})
    new = json.loads(json.dumps(dict(provenance.params or {})))
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            found.append(f"{key} {_shown(old.get(key))} (now {_shown(new.get(key))})")
    return found


class RunRecorder:
    """Creates (or resumes) a ``prelabel`` run and stores each image's detections and tags as
    they come.

    With ``run_name``: a run of that name that exists and is not finished is resumed (its
    ontology, model and parameters must match); a finished one is an error (runs are never
    overwritten). Without: the newest unfinished ``prelabel`` run of the dataset that matches
    (same ontology, model and parameters, and every image it covers among ``files``) is resumed,
    so the same command after an interruption carries on; otherwise a new run is made and
    `note` says why an unfinished run was left alone. Either way the images a resumed run
    already covers are skipped (`pending`).
    """

    def __init__(
        self,
        store: Store,
        dataset: str,
        run_name: str | None,
        ontology: Ontology,
        settings: ModelSettings,
        params: dict[str, Any],
        *,
        files: Sequence[Path] | None = None,
    ) -> None:
        self.store = store
        self.dataset = store.get_or_create_dataset(dataset)
        # ModelSettings.model_id: the detector's, or an ontology of tags alone its classifier's
        model_id = settings.gdino_model if ontology.has_objects else settings.model_id(ontology)
        provenance = prelabel_provenance(ontology, model_id, params, model_revision=settings.model_revision(ontology))
        self.note: str | None = None
        if run_name is not None:
            run = self._named(run_name, provenance)
        else:
            run, self.note = self._unfinished(provenance, None if files is None else {sample_uri(f) for f in files})
        self.resumed = run is not None
        if run is None:
            run = store.create_run(self.dataset, "prelabel", name=run_name, provenance=provenance)
        self.run = run
        self.done_uris = self._covered_uris(run)

    def _covered_uris(self, run: RunInfo) -> set[str]:
        covered = self.store.covered_samples(run)
        return {s.uri for s in self.store.samples(self.dataset, ids=covered)} if covered else set()

    def _named(self, name: str, provenance: Provenance) -> RunInfo | None:
        run = {r.name: r for r in self.store.list_runs(self.dataset)}.get(name)
        if run is None:
            return None
        where = f"run {name!r} of dataset {self.dataset.name!r}"
        if run.finished:
            raise StoreError(f"{where} is finished; choose another --run name")
        differences = run_differences(run, provenance)
        if differences:
            raise StoreError(f"{where} was started with {'; '.join(differences)}; choose another --run name")
        return run

    def _unfinished(self, provenance: Provenance, uris: set[str] | None) -> tuple[RunInfo | None, str | None]:
        """The newest resumable unfinished run, else None and why the newest one is not."""
        why_not: str | None = None
        for run in reversed(self.store.list_runs(self.dataset, kind="prelabel")):
            if run.finished:
                continue
            differences = run_differences(run, provenance)
            if differences:
                reason = f"it was started with {'; '.join(differences)}"
            elif uris is not None and not self._covered_uris(run) <= uris:
                reason = "it covers images that are not among these inputs"
            else:
                return run, None
            why_not = why_not or f"unfinished run {run.name!r} not resumed: {reason}"
        return None, why_not

    @property
    def name(self) -> str:
        return self.run.name

    def pending(self, files: Sequence[Path]) -> list[Path]:
        return [f for f in files if sample_uri(f) not in self.done_uris]

    def reload(self) -> set[str]:
        """The URIs the run covers, read again from the store (other processes, such as the
        Ray engine's workers, write to it too)."""
        self.done_uris = self._covered_uris(self.run)
        return self.done_uris

    def record(self, path: Path, width: int, height: int, detections: Detections, tags: Tags | None = None) -> None:
        """Store one image's detections and tags (the classifier's, when one ran) together."""
        self.record_many([(path, width, height, detections, tags)])

    def record_many(
        self, rows: Sequence[tuple[Path, int, int, Detections, Tags | None]], *, skip_covered: bool = False
    ) -> None:
        """Store a batch of images, ``(path, width, height, detections, tags)`` each, with one
        `Store.add_samples` and one `Store.add_detections` (`record_batch`): the batch is
        covered whole or not at all (a bad row fails the call, and the run covers none of the
        batch's images, so a resumed run starts again at the first of them). ``skip_covered``:
        images the run covers already are left out instead of refused."""
        record_batch(self.store, self.dataset, self.run, rows, skip_covered=skip_covered)
        self.done_uris.update(sample_uri(row[0]) for row in rows)

    def finish(self) -> RunInfo:
        self.run = self.store.finish_run(self.run)
        return self.run


def record_batch(
    store: Store,
    dataset: DatasetInfo,
    run: RunInfo,
    rows: Sequence[tuple[Path, int, int, Detections, Tags | None]],
    *,
    skip_covered: bool = False,
) -> int:
    """Store a batch of a pre-label run's images, ``(path, width, height, detections, tags)``
    each, with one `Store.add_samples` and one `Store.add_detections`; returns the number of
    annotations written. The one writer of `RunRecorder.record_many` and of the Ray engine's
    workers (`sync.ray_prelabel`), which write with ``skip_covered``: a batch retried after a
    crash, or written twice at once, covers each image once (`Store.add_detections`)."""
    if not rows:
        return 0
    samples = [SampleIn(sample_uri(path), width, height, file_sha256(path)) for path, width, height, _, _ in rows]
    ids = store.add_samples(dataset, samples)
    detections = {sample_id: row[3] for sample_id, row in zip(ids, rows, strict=True)}
    tags = {sample_id: row[4] for sample_id, row in zip(ids, rows, strict=True) if row[4] is not None}
    return store.add_detections(run, detections, tags=tags or None, skip_covered=skip_covered)
