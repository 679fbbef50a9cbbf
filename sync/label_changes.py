"""Labels renamed, deleted or added in CVAT after a push, told apart by their stable ids.

A push records the task's labels (`sync.store.api.Store.record_task_labels`); a pull compares
them with the task's labels now. A renamed label keeps its id, so its shapes are stored under
the name they were pushed with (evaluation then sees no relabelling and no new class); a deleted
label took its shapes with it in CVAT, which evaluation must not count as annotators' deletions;
an added label is the annotators' own. Each human revision records what its pull noticed
(``params["label_changes"]``), and the pull reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LabelChanges", "label_changes"]


@dataclass(frozen=True)
class LabelChanges:
    """What changed in a task's labels since its push, and the name to store for each label id."""

    names: dict[int, str]
    """``{CVAT label id: name to store}``: the name at push time, else the name now."""
    renamed: dict[str, str] = field(default_factory=dict)
    """``{name at push: name now}``."""
    deleted: tuple[str, ...] = ()
    """Names (at push) of labels gone from the task."""
    added: tuple[str, ...] = ()
    """Names of labels the task did not have at push time."""

    def __bool__(self) -> bool:
        return bool(self.renamed or self.deleted or self.added)

    def to_params(self) -> dict[str, object]:
        """The ``label_changes`` entry of a revision's ``params`` (empty parts left out)."""
        params: dict[str, object] = {}
        if self.renamed:
            params["renamed"] = dict(self.renamed)
        if self.deleted:
            params["deleted"] = list(self.deleted)
        if self.added:
            params["added"] = list(self.added)
        return params

    def messages(self, task: str) -> list[str]:
        """One line per change, for the pull's report."""
        lines = [
            f"{task}: label {old!r} was renamed {new!r} in CVAT; its shapes are stored as {old!r}, the name "
            "it was pushed with (rename it in the ontology to adopt the new name)"
            for old, new in self.renamed.items()
        ]
        lines += [
            f"{task}: label {name!r} was deleted in CVAT, with its shapes; evaluation leaves its pre-labels out "
            "instead of counting them as deleted by annotators"
            for name in self.deleted
        ]
        lines += [f"{task}: label {name!r} was added in CVAT after the push" for name in self.added]
        return lines


def label_changes(at_push: Mapping[int, tuple[str, str]] | None, now: Mapping[int, str]) -> LabelChanges:
    """Compare the labels recorded at push (``{id: (name, type)}``, None when the push recorded
    none) with the task's labels now (``{id: name}``)."""
    if at_push is None:
        return LabelChanges(names=dict(now))
    names = {label_id: at_push[label_id][0] if label_id in at_push else name for label_id, name in now.items()}
    renamed = {
        at_push[label_id][0]: name
        for label_id, name in sorted(now.items())
        if label_id in at_push and at_push[label_id][0] != name
    }
    deleted = tuple(name for label_id, (name, _) in sorted(at_push.items()) if label_id not in now)
    added = tuple(name for label_id, name in sorted(now.items()) if label_id not in at_push)
    return LabelChanges(names=names, renamed=renamed, deleted=deleted, added=added)
