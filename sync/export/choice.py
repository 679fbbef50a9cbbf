"""Which run's labels each sample gets in an export, and what an export returns.

The default choice, per sample (newest = the run recorded last):

1. the latest human revision covering it (``kind="human"``, a CVAT job pull);
2. else the latest import with ``params["role"] == "revision"`` (human truth from a file);
3. else the latest pre-label run covering it (``kind="prelabel"``);
4. else the sample is left out (imports with role ``"prediction"`` are never chosen by default).

With ``revision=NAME`` one finished run speaks for exactly the samples it covers.

Only finished runs are read. The choice is part of every export's metadata: per sample the run
name and kind, and the number of samples per *source* — ``"human"``, ``"import-revision"``,
``"import-prediction"`` or ``"prelabel"`` (`source_of`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from serverless.detections import Detections
from sync.store import RunInfo, SampleInfo, Store
from sync.views import group_by_run, latest_runs_per_sample, latest_truth_per_sample

__all__ = [
    "DEFAULT_RULE",
    "ExportChoice",
    "ExportError",
    "ExportSummary",
    "SampleChoice",
    "choose_runs",
    "iter_labels",
    "source_of",
]

DEFAULT_RULE = "latest human revision, else latest import with role 'revision', else latest pre-label run"

CHUNK = 256
"""Samples loaded from the store at a time (full-frame masks of one chunk are in memory)."""


class ExportError(ValueError):
    """An export cannot go ahead: the message names the dataset, run, option or path at fault."""


@dataclass(frozen=True)
class SampleChoice:
    """One exported sample and the run its labels come from."""

    sample: SampleInfo
    run: RunInfo
    source: str
    """`source_of` the run."""


@dataclass(frozen=True)
class ExportChoice:
    """The samples of an export (ascending sample id) and what was left out."""

    dataset: str
    rule: str
    """`DEFAULT_RULE` or ``"--revision NAME"``."""
    chosen: tuple[SampleChoice, ...]
    left_out: tuple[SampleInfo, ...]
    """Samples no eligible run covers (no labels to export)."""

    def counts(self) -> dict[str, int]:
        """Exported samples per source (sources in sorted order)."""
        counts: dict[str, int] = {}
        for c in self.chosen:
            counts[c.source] = counts.get(c.source, 0) + 1
        return dict(sorted(counts.items()))

    def require_samples(self) -> None:
        """`ExportError` when no sample was chosen (nothing to export)."""
        if self.chosen:
            return
        if self.rule.startswith("--revision "):
            name = self.rule.removeprefix("--revision ")
            raise ExportError(f"dataset {self.dataset!r}: run {name!r} covers no sample; nothing to export")
        raise ExportError(
            f"dataset {self.dataset!r} has no labelled sample to export ({len(self.left_out)} samples; no finished "
            "human revision, import with role 'revision' or pre-label run covers them)"
        )

    def metadata(self, exported_at: datetime) -> dict[str, Any]:
        """The choice as JSON-ready metadata (without the per-sample list)."""
        return {
            "dataset": self.dataset,
            "exported_at": exported_at.isoformat(timespec="seconds"),
            "choice": {
                "rule": self.rule,
                "counts": self.counts(),
                "runs": sorted({c.run.name for c in self.chosen}),
                "left_out": [s.uri for s in self.left_out],
            },
        }


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    format: str
    """``"coco"`` or ``"yolo"``."""
    out: Path
    """The COCO file, or the YOLO folder."""
    images: int
    """Images exported."""
    annotations: int
    """Annotations written (YOLO: label lines)."""
    categories: tuple[str, ...]
    """Label names in class order (COCO category id ``i + 1``, YOLO class ``i``): sorted."""
    counts: Mapping[str, int]
    """Exported samples per source (`source_of`)."""
    left_out: int
    """Samples without an eligible run."""
    skipped: tuple[tuple[str, str], ...] = ()
    """``(uri, reason)`` of chosen samples that could not be exported (YOLO: not a local file…)."""
    dropped: Mapping[str, int] = field(default_factory=dict)
    """Annotations not written, per reason (YOLO: crowd regions, boxes empty inside the image)."""
    train: int = 0
    val: int = 0
    metadata_file: Path | None = None
    """The metadata file (YOLO ``autolabel_export.json``; COCO keeps it in ``info``)."""


def source_of(run: RunInfo) -> str:
    """``"human"``, ``"prelabel"``, or ``"import-<role>"`` (``import-unknown`` without a role)."""
    if run.kind == "import":
        return f"import-{(run.params or {}).get('role') or 'unknown'}"
    return run.kind


def choose_runs(store: Store, dataset: str, *, revision: str | None = None) -> ExportChoice:
    """The run each sample of ``dataset`` is exported from (see the module docstring).

    `ExportError` when ``revision`` names a run that is not finished; `sync.store.StoreError`
    when the dataset or run does not exist.
    """
    ds = store.get_dataset(dataset)
    if revision is not None:
        run = store.get_run(ds, revision)
        if not run.finished:
            raise ExportError(f"run {revision!r} of dataset {dataset!r} is not finished; only finished runs export")
        chosen = {sid: run for sid in store.covered_samples(run)}
        rule = f"--revision {revision}"
    else:
        chosen = latest_runs_per_sample(store, ds, ("prelabel",))
        chosen.update(latest_truth_per_sample(store, ds)[0])
        rule = DEFAULT_RULE
    samples = store.samples(ds)
    return ExportChoice(
        dataset=ds.name,
        rule=rule,
        chosen=tuple(SampleChoice(s, chosen[s.id], source_of(chosen[s.id])) for s in samples if s.id in chosen),
        left_out=tuple(s for s in samples if s.id not in chosen),
    )


def iter_labels(
    store: Store, choice: ExportChoice, *, masks: bool = False
) -> Iterator[tuple[SampleChoice, Detections]]:
    """``(sample choice, Detections)`` for every chosen sample, run by run, `CHUNK` samples at a
    time. With ``masks=True``, samples with a ``mask`` row get full-frame masks on every row
    (`sync.store.Store.annotations_of` with ``masks=True``); others never have masks."""
    by_id = {c.sample.id: c for c in choice.chosen}
    for run, sample_ids in group_by_run({c.sample.id: c.run for c in choice.chosen}):
        for start in range(0, len(sample_ids), CHUNK):
            chunk = sample_ids[start : start + CHUNK]
            dets = store.annotations_of(run, sample_ids=chunk)
            if masks:
                with_masks = [sid for sid, det in dets.items() if "mask" in det.data["shape_type"].tolist()]
                if with_masks:
                    dets.update(store.annotations_of(run, sample_ids=with_masks, masks=True))
            for sid in chunk:
                yield by_id[sid], dets[sid]
