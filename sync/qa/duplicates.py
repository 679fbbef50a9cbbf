"""Duplicate images from their embeddings and content hashes, and splits without leaks.

`duplicate_groups` partitions the duplicated samples into groups:

- two samples are linked when their content hashes are equal (exact duplicates: the same
  bytes) or their embeddings' cosine similarity is >= ``threshold`` (near duplicates: a
  re-encode, a resize, a light crop, found by `sync.qa.vectors.range_pairs`);
- a group is a connected component of those links with at least two members (so a sample is
  in at most one group, and a chain a~b~c is one group even when a and c are less similar);
- ``kind`` is ``"exact"`` when every member has the same content hash, else ``"near"``.

The result depends only on the samples, not on their order: members are sorted by key and
groups by their first member. Keys are the samples' identities (sample ids or URIs), unique,
and all of one sortable type.

`groups_spanning` and `split_without_leaks` keep every group on one side of a train/val (or
any) split, so that a model is never validated on a copy of a training image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sync.qa.errors import QaError
from sync.qa.vectors import range_pairs, unit_rows

__all__ = ["DEFAULT_THRESHOLD", "DuplicateGroup", "duplicate_groups", "groups_spanning", "split_without_leaks"]

DEFAULT_THRESHOLD = 0.95
"""Cosine similarity from which two embeddings count as near duplicates."""

_BLOCK = 2048


@dataclass(frozen=True)
class DuplicateGroup:
    """Samples that are copies of one another.

    ``members``: their keys, sorted (at least two). ``kind``: ``"exact"`` when they all share
    one content hash, else ``"near"``. ``min_similarity``: the lowest cosine similarity of
    their embeddings over every pair of members (it can be below the threshold in a chain).
    """

    members: tuple[Hashable, ...]
    kind: Literal["exact", "near"]
    min_similarity: float


class _UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def components(self) -> list[list[int]]:
        """Sets of two or more, each as ascending indices."""
        roots: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            roots.setdefault(self.find(i), []).append(i)
        return [members for members in roots.values() if len(members) > 1]


def _check_keys(keys: Sequence[Hashable], n: int) -> list[Hashable]:
    keys = list(keys)
    if len(keys) != n:
        raise QaError(f"keys must have one entry per vector ({n}), got {len(keys)}")
    seen: set[Hashable] = set()
    for key in keys:
        if key in seen:
            raise QaError(f"key {key!r} appears more than once")
        seen.add(key)
    try:
        sorted(keys)
    except TypeError:
        raise QaError("keys must be of one sortable type (sample ids or URIs)") from None
    return keys


def _min_similarity(units: np.ndarray, members: Sequence[int]) -> float:
    """The lowest cosine similarity over every pair of ``members``, a block of rows at a time."""
    rows = units[np.asarray(members)]
    lowest = 1.0
    for start in range(0, len(rows), _BLOCK):
        lowest = min(lowest, float((rows[start:start + _BLOCK] @ rows.T).min()))
    return max(-1.0, min(1.0, lowest))


def duplicate_groups(
    vectors: Any,
    keys: Sequence[Hashable],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    content_hashes: Sequence[str | None] | None = None,
) -> list[DuplicateGroup]:
    """The groups of exact and near-duplicate samples (see the module docstring).

    ``vectors``: ``(N, D)`` embeddings (normalised here); ``keys``: N unique sample keys;
    ``threshold``: cosine similarity in (0, 1] from which two samples are near duplicates;
    ``content_hashes``: N hashes of the files' bytes, or None where unknown (None: no exact
    linking). Groups are sorted by their first member; members by key.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) or not (
        0.0 < float(threshold) <= 1.0
    ):
        raise QaError(f"threshold must be a cosine similarity in (0, 1], got {threshold!r}")
    units = unit_rows(vectors)
    keys = _check_keys(keys, len(units))
    sets = _UnionFind(len(units))
    hashes = _link_hashes(sets, content_hashes, len(units))
    rows, cols, _ = range_pairs(units, float(threshold))
    for a, b in zip(rows.tolist(), cols.tolist(), strict=True):
        sets.union(a, b)
    groups = []
    for members in sets.components():
        member_hashes = {hashes[i] for i in members}
        kind: Literal["exact", "near"] = "exact" if len(member_hashes) == 1 and None not in member_hashes else "near"
        groups.append(DuplicateGroup(tuple(sorted(keys[i] for i in members)), kind, _min_similarity(units, members)))
    return sorted(groups, key=lambda group: group.members[0])


def _link_hashes(sets: _UnionFind, content_hashes: Sequence[str | None] | None, n: int) -> list[str | None]:
    """Link the samples of equal content hash in ``sets``; the hashes, one per sample."""
    if content_hashes is None:
        return [None] * n
    hashes = list(content_hashes)
    if len(hashes) != n:
        raise QaError(f"content_hashes must have one entry per vector ({n}), got {len(hashes)}")
    first: dict[str, int] = {}
    for i, value in enumerate(hashes):
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise QaError(f"content_hashes[{i}] must be a non-empty string or None, got {value!r}")
        sets.union(first.setdefault(value, i), i)
    return hashes


def _sides(group: DuplicateGroup, split: Mapping[Hashable, str]) -> list[str]:
    return [split[key] for key in group.members if key in split]


def groups_spanning(groups: Sequence[DuplicateGroup], split: Mapping[Hashable, str]) -> list[DuplicateGroup]:
    """The groups whose members are on more than one side of ``split`` (key -> side, e.g.
    ``"train"``/``"val"``); members absent from ``split`` are ignored. Order kept."""
    return [group for group in groups if len(set(_sides(group, split))) > 1]


def split_without_leaks(groups: Sequence[DuplicateGroup], split: Mapping[Hashable, str]) -> dict[Hashable, str]:
    """A copy of ``split`` in which no group spans two sides.

    Each spanning group moves whole to the side most of its members (those in ``split``) are
    on, which moves the fewest samples; a tie goes to the side of its smallest key that is in
    ``split``. Only members of spanning groups change side; keys absent from ``split`` stay
    absent; the key order of ``split`` is kept. Groups must not share members (as from
    `duplicate_groups`).
    """
    seen: set[Hashable] = set()
    result = dict(split)
    for group in groups:
        if seen.intersection(group.members):
            raise QaError(f"duplicate groups overlap at {sorted(seen.intersection(group.members))[0]!r}")
        seen.update(group.members)
        sides = _sides(group, split)
        if len(set(sides)) < 2:
            continue
        counts = Counter(sides)
        best = max(counts.values())
        side = next(s for s in sides if counts[s] == best)  # sides follow the sorted members
        for key in group.members:
            if key in result:
                result[key] = side
    return result
