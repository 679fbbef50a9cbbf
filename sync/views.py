"""Which stored run speaks for each sample: "the latest human revision", run by run.

CVAT revisions are per job, so the newest truth of a dataset is spread over several human
runs (one per job pull). Evaluation and export both need, per sample, the newest run of
some kinds that covers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sync.store import RunInfo

__all__ = ["group_by_run", "latest_runs_per_sample", "latest_truth_per_sample"]


def latest_runs_per_sample(
    store: Any, dataset: Any, kinds: Iterable[str] = ("human",), *, roles: Iterable[str] | None = None
) -> dict[int, RunInfo]:
    """``{sample_id: run}``: for each sample, the newest finished run of one of ``kinds``
    that covers it (newest = highest run id, i.e. the last one recorded).

    ``roles`` (optional) keeps only ``import`` runs whose ``params["role"]`` is one of them
    (``"prediction"`` or ``"revision"``, set by ``autolabel import``); other kinds ignore it.
    """
    kinds = tuple(kinds)
    roles = None if roles is None else set(roles)
    chosen: dict[int, RunInfo] = {}
    runs = [
        r
        for kind in kinds
        for r in store.list_runs(dataset, kind=kind)
        if r.finished and (roles is None or r.kind != "import" or (r.params or {}).get("role") in roles)
    ]
    for run in sorted(runs, key=lambda r: r.id):
        for sample_id in store.covered_samples(run):
            chosen[sample_id] = run
    return chosen


def latest_truth_per_sample(store: Any, dataset: Any) -> tuple[dict[int, RunInfo], str]:
    """``({sample_id: run}, description)``: the human truth of each sample — its latest human
    revision (a CVAT job pull), else its latest import with role ``revision``
    (``autolabel import --as-revision``). The one rule of what counts as corrected for
    evaluation, training, the threshold experiment and QA crops; the description says which
    kinds were found (``"latest human revision else imported revision per sample"``), empty
    when none."""
    human = latest_runs_per_sample(store, dataset, ("human",))
    imported = latest_runs_per_sample(store, dataset, ("import",), roles=("revision",))
    kinds = [words for words, part in (("human revision", human), ("imported revision", imported)) if part]
    return {**imported, **human}, ("latest " + " else ".join(kinds) + " per sample" if kinds else "")


def group_by_run(chosen: dict[int, RunInfo]) -> list[tuple[RunInfo, list[int]]]:
    """The ``{sample_id: run}`` map as ``[(run, sample_ids ascending)]``, oldest run first."""
    groups: dict[int, tuple[RunInfo, list[int]]] = {}
    for sample_id in sorted(chosen):
        run = chosen[sample_id]
        groups.setdefault(run.id, (run, []))[1].append(sample_id)
    return [groups[k] for k in sorted(groups)]
