"""A dataset's train/val split in which no duplicate group spans two sides, for
``autolabel train --duplicates-together`` and ``autolabel export --format yolo
--duplicates-together`` (one rule for both).

The split starts as the dataset's usual one (`sync.export.yolo.split_of` over every sample's
URI with the fraction and seed: the split ``autolabel train`` records), then each duplicate
group of `sync.qa.scores.dataset_duplicates` (exact and near duplicates from the stored image
embeddings) that spans train and val moves whole to the side most of its members are on
(`sync.qa.duplicates.split_without_leaks`). Samples without an image embedding keep their side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sync.qa.duplicates import DEFAULT_THRESHOLD, groups_spanning, split_without_leaks
from sync.qa.scores import dataset_duplicates

if TYPE_CHECKING:
    from sync.store import Store

__all__ = ["LeakFreeSplit", "leak_free_split"]


@dataclass(frozen=True)
class LeakFreeSplit:
    """``splits``: ``{uri: "train" | "val"}`` for every sample; what was done to get there."""

    splits: Mapping[str, str]
    model: str
    threshold: float
    groups: int
    """Duplicate groups found."""
    spanning: int
    """Of them, those that spanned train and val before."""
    moved: int
    """Samples whose side changed."""

    def summary(self) -> dict[str, Any]:
        """What the export metadata and the training run record."""
        return {"model": self.model, "threshold": self.threshold, "groups": self.groups,
                "spanning": self.spanning, "moved": self.moved}


def leak_free_split(
    store: Store, dataset: str, val: float, seed: int, *, model: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> LeakFreeSplit:
    """The dataset's split at ``val`` and ``seed`` with every duplicate group on one side
    (module docstring). ``model`` None: the one model the dataset's image embeddings were made
    with (the default ``clip`` when there are none, or several). `QaError` when the dataset
    has no image embeddings of ``model`` (naming ``autolabel embed``); `sync.export.ExportError`
    for a fraction out of range."""
    from sync.export.yolo import split_of

    if model is None:
        made = [name for name, counts in store.embedding_models(dataset).items() if counts.get("image")]
        model = made[0] if len(made) == 1 else None
    samples = store.samples(dataset)
    base = split_of([s.uri for s in samples], val, seed)
    found = dataset_duplicates(store, dataset, model=model, threshold=threshold)
    uri_of = {s.id: s.uri for s in samples}
    by_id = {s.id: base[s.uri] for s in samples}
    fixed = split_without_leaks(found.groups, by_id)
    moved = sum(1 for sid, side in fixed.items() if by_id[sid] != side)
    return LeakFreeSplit(
        splits={uri_of[sid]: side for sid, side in fixed.items()}, model=found.model, threshold=found.threshold,
        groups=len(found.groups), spanning=len(groups_spanning(found.groups, by_id)), moved=moved,
    )
