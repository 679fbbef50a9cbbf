"""Recording a pre-label run in the store as it goes, so an interrupted run resumes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sync.store import Provenance, SampleIn, StoreError

__all__ = ["RunRecorder", "file_sha256", "sample_uri"]


def sample_uri(path: Path) -> str:
    """Samples of local files are identified by their absolute path."""
    return str(path.resolve())


def file_sha256(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes: the content hash a sample records (pre-label runs,
    imports and exports all use this one, so the same file is the same sample)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


class RunRecorder:
    """Creates (or resumes) a ``prelabel`` run and stores each image's detections as they come.

    A run that exists and is not finished is resumed: the images it already covers are
    skipped. A finished run of that name is an error (runs are never overwritten).
    """

    def __init__(self, store: Any, dataset: str, run_name: str | None, ontology: Any, settings: Any, params: dict) -> None:
        self.store = store
        self.dataset = store.get_or_create_dataset(dataset)
        self.run = None
        if run_name is not None:
            existing = {r.name: r for r in store.list_runs(self.dataset)}
            run = existing.get(run_name)
            if run is not None:
                if run.finished_at is not None:
                    raise StoreError(f"run {run_name!r} of dataset {dataset!r} is finished; choose another --run name")
                if run.ontology_hash != ontology.content_hash:
                    raise StoreError(f"run {run_name!r} was started with another ontology; choose another --run name")
                self.run = run
        if self.run is None:
            provenance = Provenance.from_ontology(
                ontology, model_id=settings.gdino_model, model_revision=None, params=params
            )
            if params.get("threshold") is not None:  # --threshold replaced every label's own
                provenance = replace(provenance, thresholds=dict.fromkeys(ontology.label_names, params["threshold"]))
            self.run = store.create_run(self.dataset, "prelabel", name=run_name, provenance=provenance)
        covered = set(store.covered_samples(self.run))
        self.done_uris = {s.uri for s in store.samples(self.dataset, ids=sorted(covered))} if covered else set()

    @property
    def name(self) -> str:
        return self.run.name

    def pending(self, files: Sequence[Path]) -> list[Path]:
        return [f for f in files if sample_uri(f) not in self.done_uris]

    def record(self, path: Path, width: int, height: int, detections: Any) -> None:
        sample = SampleIn(sample_uri(path), width, height, file_sha256(path))
        (sample_id,) = self.store.add_samples(self.dataset, [sample])
        self.store.add_detections(self.run, {sample_id: detections})

    def finish(self) -> Any:
        self.run = self.store.finish_run(self.run)
        return self.run
