"""The training-run methods of `sync.store.api.Store`: detectors trained on a dataset's labels
and their lineage (schema version 4).

A training run is written in two steps, each one transaction: `TrainingRuns.create_training_run`
records everything decided before training starts (labels, threshold, split and the samples
of each side with the run their labels came from, base model, hyper-parameters, versions);
`TrainingRuns.finish_training_run` adds what training produced (weights path and sha256,
metrics) and seals it. An interrupted training leaves an open run, which a resumed training
finishes; nothing else of a training run is ever changed.

Lineage: a pre-label run made with trained weights records ``sha256:<hex>`` of them as its
``model_revision``; `TrainingRuns.training_runs_for_weights` answers "trained on what?".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync.store.base import StoreBase, snapshot
from sync.store.bulk import bulk_insert
from sync.store.checks import as_int, json_value, optional_text
from sync.store.credentials import check_no_secrets
from sync.store.errors import StoreError
from sync.store.records import DatasetInfo, TrainingRunInfo, TrainingSampleIn
from sync.store.schema import TRAINING_SPLITS, Run, TrainingRun, TrainingSample, utc_now

__all__ = ["TrainingRuns", "training_run_info"]

log = logging.getLogger(__name__)


def training_run_info(row: TrainingRun) -> TrainingRunInfo:
    info = snapshot(TrainingRunInfo, row)
    return info if info.classes is None else replace(info, classes=tuple(info.classes))


def _json_field(value: Mapping[str, Any] | None, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise StoreError(f"{where} must be a mapping, got {type(value).__name__}")
    return json_value(check_no_secrets(dict(value), where), where)


def _sample_rows(samples: Iterable[TrainingSampleIn]) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(samples):
        if not isinstance(item, TrainingSampleIn):
            raise StoreError(f"samples[{i}] must be a TrainingSampleIn, got {type(item).__name__}")
        sample_id = as_int(item.sample_id, f"samples[{i}].sample_id")
        if item.split not in TRAINING_SPLITS:
            raise StoreError(f"samples[{i}].split must be one of {list(TRAINING_SPLITS)}, got {item.split!r}")
        if sample_id in rows:
            raise StoreError(f"samples[{i}]: sample {sample_id} is given twice")
        run_id = None if item.run_id is None else as_int(item.run_id, f"samples[{i}].run_id")
        rows[sample_id] = {"sample_id": sample_id, "split": item.split, "run_id": run_id}
    if not rows:
        raise StoreError("a training run needs at least one sample")
    if not any(r["split"] == "train" for r in rows.values()):
        raise StoreError("a training run needs at least one sample in the train split")
    return list(rows.values())


class TrainingRuns(StoreBase):
    """Training runs and their samples (see the module docstring)."""

    def create_training_run(
        self,
        dataset: DatasetInfo | str,
        *,
        labels: str,
        base_model: str,
        val_fraction: float,
        seed: int,
        samples: Iterable[TrainingSampleIn],
        name: str | None = None,
        threshold: float | None = None,
        params: Mapping[str, Any] | None = None,
        versions: Mapping[str, Any] | None = None,
        classes: Sequence[str] = (),
        export: Mapping[str, Any] | None = None,
        out_dir: str | None = None,
    ) -> TrainingRunInfo:
        """A new open training run with its samples, in one transaction (all or nothing).

        ``name`` must be unique among the dataset's training runs (default ``train-<n>``).
        Every sample must belong to the dataset and every ``run_id`` be a run of it.
        """
        rows = _sample_rows(samples)
        if threshold is not None and (isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0):
            raise StoreError(f"threshold must be a number in 0..1, got {threshold!r}")
        if not 0.0 < float(val_fraction) < 1.0:
            raise StoreError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
        with self.session() as s:
            ds = self._dataset(s, dataset)
            self._check_samples_in(s, ds.id, [r["sample_id"] for r in rows], "training samples")
            self._check_runs_in(s, ds.id, {r["run_id"] for r in rows if r["run_id"] is not None})
            row = TrainingRun(
                dataset_id=ds.id,
                name=self._training_name(s, ds.id, name),
                created_at=utc_now(),
                labels=optional_text(labels, "labels", 300) or "",
                threshold=None if threshold is None else float(threshold),
                val_fraction=float(val_fraction),
                seed=as_int(seed, "seed"),
                base_model=optional_text(base_model, "base_model", 10_000) or "",
                params=_json_field(params, "params"),
                versions=_json_field(versions, "versions"),
                classes=[str(c) for c in classes],
                export=_json_field(export, "export"),
                out_dir=optional_text(out_dir, "out_dir", 10_000),
            )
            s.add(row)
            s.flush()
            bulk_insert(s, TrainingSample.__table__, [{"training_run_id": row.id, **r} for r in rows])
            log.info("training run %r of dataset %r: %d samples", row.name, ds.name, len(rows))
            return training_run_info(row)

    def finish_training_run(
        self,
        run: TrainingRunInfo | int,
        *,
        weights_path: str,
        weights_sha256: str,
        metrics: Mapping[str, Any] | None = None,
    ) -> TrainingRunInfo:
        """Seal an open training run with its trained weights and final metrics."""
        if not isinstance(weights_sha256, str) or not weights_sha256.startswith("sha256:"):
            raise StoreError(f"weights_sha256 must be 'sha256:<hex>', got {weights_sha256!r}")
        with self.session() as s:
            row = self._training(s, run)
            if row.finished_at is not None:
                raise StoreError(f"training run {row.name!r} is finished already; it is never changed")
            row.weights_path = optional_text(weights_path, "weights_path", 10_000)
            row.weights_sha256 = optional_text(weights_sha256, "weights_sha256", 80)
            row.metrics = _json_field(metrics, "metrics")
            row.finished_at = utc_now()
            s.flush()
            return training_run_info(row)

    def get_training_run(self, dataset: DatasetInfo | str, name: str) -> TrainingRunInfo:
        """The training run called ``name``; `StoreError` listing the dataset's ones if missing."""
        with self.session() as s:
            ds = self._dataset(s, dataset)
            row = s.execute(
                select(TrainingRun).where(TrainingRun.dataset_id == ds.id, TrainingRun.name == name)
            ).scalar()
            if row is None:
                known = s.execute(
                    select(TrainingRun.name).where(TrainingRun.dataset_id == ds.id).order_by(TrainingRun.id)
                ).scalars().all()
                listing = ", ".join(map(repr, known[-10:])) if known else "none yet"
                raise StoreError(f"dataset {ds.name!r} has no training run {name!r} (training runs: {listing})")
            return training_run_info(row)

    def list_training_runs(self, dataset: DatasetInfo | str) -> list[TrainingRunInfo]:
        """The dataset's training runs, oldest first."""
        with self.session() as s:
            ds = self._dataset(s, dataset)
            query = select(TrainingRun).where(TrainingRun.dataset_id == ds.id).order_by(TrainingRun.id)
            return [training_run_info(r) for r in s.execute(query).scalars()]

    def training_samples(self, run: TrainingRunInfo | int) -> dict[int, TrainingSampleIn]:
        """``{sample id: TrainingSampleIn}`` of a training run (its split and label source)."""
        with self.session() as s:
            row = self._training(s, run)
            query = select(TrainingSample).where(TrainingSample.training_run_id == row.id)
            return {
                r.sample_id: TrainingSampleIn(r.sample_id, r.split, r.run_id)
                for r in s.execute(query.order_by(TrainingSample.sample_id)).scalars()
            }

    def training_runs_for_weights(self, weights_sha256: str) -> list[TrainingRunInfo]:
        """The finished training runs that produced weights with this ``sha256:<hex>``."""
        with self.session() as s:
            query = select(TrainingRun).where(
                TrainingRun.weights_sha256 == weights_sha256, TrainingRun.finished_at.is_not(None)
            )
            return [training_run_info(r) for r in s.execute(query.order_by(TrainingRun.id)).scalars()]

    # ---------------------------------------------------------------------- lookups
    def _training(self, session: Session, run: TrainingRunInfo | int) -> TrainingRun:
        run_id = run.id if isinstance(run, TrainingRunInfo) else as_int(run, "training run id")
        row = session.get(TrainingRun, run_id)
        if row is None:
            raise StoreError(f"no training run with id {run_id} in the store at {self._url}")
        return row

    def next_training_run_name(self, dataset: DatasetInfo | str) -> str:
        """The name a training run of ``dataset`` gets by default: ``train-<n>``, the first free
        ``n`` from the number of its training runs plus one."""
        with self.session() as s:
            return self._free_name(s, self._dataset(s, dataset).id)

    @staticmethod
    def _free_name(session: Session, dataset_id: int) -> str:
        taken = set(session.execute(select(TrainingRun.name).where(TrainingRun.dataset_id == dataset_id)).scalars())
        n = len(taken) + 1
        while f"train-{n}" in taken:
            n += 1
        return f"train-{n}"

    def _training_name(self, session: Session, dataset_id: int, name: str | None) -> str:
        if name is None:
            return self._free_name(session, dataset_id)
        name = optional_text(name, "training run name") or ""
        if not name.strip():
            raise StoreError("a training run name must not be empty")
        found = session.execute(
            select(TrainingRun.id).where(TrainingRun.dataset_id == dataset_id, TrainingRun.name == name)
        ).first()
        if found:
            raise StoreError(f"the dataset already has a training run named {name!r}; training runs are never overwritten")
        return name

    @staticmethod
    def _check_runs_in(session: Session, dataset_id: int, run_ids: set[int]) -> None:
        if not run_ids:
            return
        found = set(session.execute(select(Run.id).where(Run.dataset_id == dataset_id, Run.id.in_(sorted(run_ids)))).scalars())
        missing = sorted(run_ids - found)
        if missing:
            raise StoreError(f"training samples: run ids {missing[:10]} are not runs of dataset id {dataset_id}")
