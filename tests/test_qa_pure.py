"""The pure QA functions on given embeddings: FAISS search against NumPy brute force, duplicate
groups and leak-free splits, k-NN mistakenness (planted label flips), uniqueness, classifier
disagreement, evaluation suspects and their combination."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sync.qa.vectors
from sync.evaluate.metrics import MatchTable
from sync.qa.duplicates import DuplicateGroup, duplicate_groups, groups_spanning, split_without_leaks
from sync.qa.errors import QaError
from sync.qa.mistakes import (
    classifier_disagreement,
    classifier_reasons,
    combine,
    evaluation_suspects,
    knn_mistakenness,
    knn_reasons,
    uniqueness,
)
from sync.qa.vectors import build_index, knn, range_pairs, unit_rows

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-5


def _unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def _orthonormal(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """``count`` orthonormal directions in ``dim`` dimensions (rows)."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, count)))
    return q.T


def _jitter(rng: np.random.Generator, centre: np.ndarray, count: int, noise: float) -> np.ndarray:
    """``count`` unit vectors around ``centre``: cosine to it about 1 - noise**2 / 2."""
    return _unit(centre + noise * _unit(rng.normal(size=(count, len(centre)))))


@st.composite
def point_sets(draw, max_n: int = 40):
    """Random vectors, some rows repeated exactly or nearly (ties and near ties)."""
    seed = draw(st.integers(0, 2**32 - 1))
    n, dim = draw(st.integers(1, max_n)), draw(st.integers(2, 16))
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(max(1, n // 2), dim))
    rows = base[rng.integers(0, len(base), n)] + draw(st.sampled_from([0.0, 1e-3, 0.1])) * rng.normal(size=(n, dim))
    rows[np.linalg.norm(rows, axis=1) == 0] = 1.0
    return rows.astype(np.float32), rng


def _brute_top(sims: np.ndarray, k: int) -> np.ndarray:
    return -np.sort(-sims, axis=1)[:, :k]


# --------------------------------------------------------------------------- vectors


@SETTINGS
@given(point_sets(), st.integers(1, 12))
def test_knn_matches_brute_force_and_never_returns_self(data, k):
    vectors, _ = data
    units = _unit(vectors.astype(np.float64))
    sims, idx = knn(vectors, k)
    n = len(vectors)
    assert sims.shape == idx.shape == (n, min(k, n - 1))
    assert not (idx == np.arange(n)[:, None]).any()
    assert all(len(set(row)) == len(row) for row in idx.tolist())
    exact = units @ units.T
    assert np.allclose(sims, exact[np.arange(n)[:, None], idx], atol=TOL)  # the similarity of the returned row
    np.fill_diagonal(exact, -np.inf)
    assert np.allclose(sims, _brute_top(exact, sims.shape[1]), atol=TOL)  # the top similarities, in order


@SETTINGS
@given(point_sets(), st.integers(1, 12), st.integers(0, 5))
def test_knn_with_queries_matches_brute_force(data, k, q):
    vectors, rng = data
    queries = rng.normal(size=(q, vectors.shape[1]))
    sims, idx = knn(vectors, k, queries=queries)
    exact = _unit(queries) @ _unit(vectors.astype(np.float64)).T
    assert sims.shape == idx.shape == (q, min(k, len(vectors)))
    assert np.allclose(sims, _brute_top(exact, sims.shape[1]), atol=TOL)
    assert np.allclose(sims, exact[np.arange(q)[:, None], idx], atol=TOL)


@SETTINGS
@given(point_sets(), st.sampled_from([0.5, 0.9, 0.99, 0.9999]))
def test_range_pairs_matches_brute_force(data, threshold):
    vectors, _ = data
    i, j, sims = range_pairs(vectors, threshold)
    units = _unit(vectors.astype(np.float64))
    exact = units @ units.T
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert (i < j).all() and len(found) == len(i)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == sorted(found)
    assert (sims >= np.float32(threshold)).all() and np.allclose(sims, exact[i, j], atol=TOL)
    a, b = np.triu_indices(len(vectors), 1)
    clearly_in = {(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True) if exact[x, y] >= threshold + TOL}
    assert clearly_in <= found


def test_range_pairs_are_the_same_searched_in_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    base = _unit(rng.normal(size=(10, 8)))
    vectors = np.vstack([base, _unit(base + 0.01 * rng.normal(size=base.shape)), base[:3]])
    whole = range_pairs(vectors, 0.99)
    monkeypatch.setattr(sync.qa.vectors, "RANGE_BLOCK", 7)  # blocks end mid-way through the copies
    blocked = range_pairs(vectors, 0.99)
    assert len(whole[0]) == 7 + 3 * 3 and all(np.array_equal(a, b) for a, b in zip(whole, blocked, strict=True))


def test_vectors_refuse_what_has_no_direction():
    with pytest.raises(QaError, match="row 1 is all zeros"):
        unit_rows(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(QaError, match="row 0 is not finite"):
        knn(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(QaError, match="2-D"):
        knn(np.ones(3), 1)
    with pytest.raises(QaError, match="k must be"):
        knn(np.ones((3, 2)), 0)
    with pytest.raises(QaError, match="min_similarity"):
        range_pairs(np.ones((3, 2)), 1.5)
    with pytest.raises(QaError, match="index kind"):
        build_index(np.ones((3, 2)), kind="annoy")


def test_approximate_indexes_find_planted_neighbours():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(400, 32)))
    twins = _unit(base + 0.01 * rng.normal(size=base.shape))
    for kind in ("flat", "ivf", "hnsw"):
        index = build_index(base, kind=kind)
        sims, idx = index.search(twins, 1)
        assert (idx[:, 0] == np.arange(400)).mean() > 0.9, kind  # approximate: most, for ivf/hnsw
        assert index.size == 400 and index.dim == 32


def test_importing_the_qa_modules_imports_neither_faiss_nor_torch():
    code = ("import sys, sync.qa.vectors, sync.qa.duplicates, sync.qa.mistakes; "
            "print(sorted(m for m in ('faiss', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- duplicates


@st.composite
def planted_duplicates(draw):
    """Distinct images (orthonormal embeddings) with 0-3 near copies each (noise far below the
    threshold), some copies sharing the original's content hash; keys shuffled."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    originals, dim = draw(st.integers(1, 12)), draw(st.integers(16, 48))
    copies = draw(st.lists(st.integers(0, 3), min_size=originals, max_size=originals))
    noise = draw(st.sampled_from([0.0, 0.01, 0.05]))
    exact = draw(st.booleans())
    centres = _orthonormal(rng, originals, dim)
    vectors, keys, hashes, truth = [], [], [], []
    for o, count in enumerate(copies):
        rows = np.vstack([centres[o], _jitter(rng, centres[o], count, noise)]) if count else centres[o][None]
        group = [f"img-{o:02d}-{c}" for c in range(count + 1)]
        vectors.append(rows)
        keys += group
        hashes += [f"sha-{o}" if exact else f"sha-{o}-{c}" for c in range(count + 1)]
        if count:
            truth.append(tuple(group))
    order = rng.permutation(len(keys))
    return np.vstack(vectors)[order], [keys[i] for i in order], [hashes[i] for i in order], sorted(truth), exact


@SETTINGS
@given(planted_duplicates())
def test_planted_duplicates_are_found_with_no_false_group(data):
    vectors, keys, hashes, truth, exact = data
    groups = duplicate_groups(vectors, keys, threshold=0.95, content_hashes=hashes)
    assert [g.members for g in groups] == truth
    assert all(g.kind == ("exact" if exact else "near") for g in groups)
    assert all(0.95 <= g.min_similarity <= 1.0 for g in groups)
    assert [g.members for g in duplicate_groups(vectors, keys)] == truth  # embeddings alone find them too
    order = np.random.default_rng(1).permutation(len(keys))  # the input order does not matter
    shuffled = duplicate_groups(vectors[order], [keys[i] for i in order], content_hashes=[hashes[i] for i in order])
    assert shuffled == groups


def test_equal_content_hashes_group_whatever_the_embeddings():
    vectors = np.eye(4)
    groups = duplicate_groups(vectors, ["d", "c", "b", "a"], content_hashes=["h1", None, "h1", "h2"])
    assert groups == [DuplicateGroup(("b", "d"), "exact", 0.0)]
    mixed = duplicate_groups(np.array([[1, 0], [1, 0.01], [0, 1]]), [1, 2, 3], content_hashes=["x", "y", "x"])
    assert [(g.members, g.kind) for g in mixed] == [((1, 2, 3), "near")]
    assert mixed[0].min_similarity == pytest.approx(0.0, abs=0.02)  # 3 is linked by hash only


def test_duplicate_groups_refuse_bad_input():
    with pytest.raises(QaError, match="key 'a' appears more than once"):
        duplicate_groups(np.eye(2), ["a", "a"])
    with pytest.raises(QaError, match="one entry per vector"):
        duplicate_groups(np.eye(2), ["a"])
    with pytest.raises(QaError, match="threshold"):
        duplicate_groups(np.eye(2), ["a", "b"], threshold=0)
    with pytest.raises(QaError, match=r"content_hashes\[1\]"):
        duplicate_groups(np.eye(2), ["a", "b"], content_hashes=["x", ""])


@st.composite
def grouped_splits(draw):
    keys = list(range(draw(st.integers(0, 30))))
    labels = draw(st.lists(st.integers(0, 6), min_size=len(keys), max_size=len(keys)))
    groups = [DuplicateGroup(tuple(k for k, g in zip(keys, labels, strict=True) if g == label), "near", 0.99)
              for label in sorted(set(labels))]
    groups = [g for g in groups if len(g.members) > 1]
    sides = draw(st.lists(st.sampled_from(["train", "val", "test", None]), min_size=len(keys), max_size=len(keys)))
    split = {k: side for k, side in zip(keys, sides, strict=True) if side is not None}
    return groups, split


@SETTINGS
@given(grouped_splits())
def test_split_without_leaks_moves_only_spanning_groups_to_their_majority_side(data):
    groups, split = data
    spanning = groups_spanning(groups, split)
    fixed = split_without_leaks(groups, split)
    assert list(fixed) == list(split)  # same keys, same order: nothing added or dropped
    assert groups_spanning(groups, fixed) == []
    in_spanning = {k for g in spanning for k in g.members}
    assert all(fixed[k] == split[k] for k in split if k not in in_spanning)
    for group in spanning:
        sides = [split[k] for k in group.members if k in split]
        assert sides.count(fixed[next(k for k in group.members if k in split)]) == max(map(sides.count, sides))


def test_split_without_leaks_breaks_ties_by_the_smallest_key():
    group = DuplicateGroup(("a", "b", "c", "d"), "near", 0.97)
    assert split_without_leaks([group], {"d": "train", "b": "val", "c": "train", "a": "val", "z": "val"}) == {
        "d": "val", "b": "val", "c": "val", "a": "val", "z": "val"}
    with pytest.raises(QaError, match="overlap"):
        split_without_leaks([group, DuplicateGroup(("d", "e"), "near", 0.97)], {})


# --------------------------------------------------------------------------- mistakenness


@st.composite
def flipped_clusters(draw):
    """Tight clusters (orthonormal centres, small noise), one label per cluster, one member of
    one cluster flipped to another label; shuffled."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(3, 12), min_size=2, max_size=5))
    dim = draw(st.integers(len(sizes) + 1, 48))
    noise = draw(st.sampled_from([0.001, 0.01, 0.05]))
    centres = _orthonormal(rng, len(sizes), dim)
    vectors = np.vstack([_jitter(rng, centres[c], size, noise) for c, size in enumerate(sizes)])
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.array([f"class-{c}" for c in cluster], dtype=object)
    flipped = draw(st.integers(0, len(vectors) - 1))
    labels[flipped] = draw(st.sampled_from([f"class-{c}" for c in range(len(sizes)) if c != cluster[flipped]]
                                           + ["class-new"]))
    order = rng.permutation(len(vectors))
    return vectors[order], labels[order], cluster[order], int(np.flatnonzero(order == flipped)[0])


@SETTINGS
@given(flipped_clusters(), st.integers(2, 15))
def test_a_flipped_label_in_a_tight_cluster_scores_above_every_unflipped_member(data, k):
    vectors, labels, cluster, flipped = data
    scores = knn_mistakenness(vectors, labels, k=k)
    assert scores.shape == (len(vectors),) and ((scores >= 0) & (scores <= 1)).all()
    mates = np.flatnonzero((cluster == cluster[flipped]) & (np.arange(len(vectors)) != flipped))
    assert scores[flipped] > scores[mates].max()
    assert np.array_equal(knn_mistakenness(vectors, labels, k=k, neighbours=knn(vectors, k)), scores)


def test_knn_mistakenness_formula_on_a_small_example():
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    labels = ["a", "a", "b", "b"]
    scores = knn_mistakenness(vectors, labels, k=2)
    # row 0: neighbours 1 (0.8, same) and 2 (0.6, differs) -> 0.6 / 1.4
    assert scores[0] == pytest.approx(0.6 / 1.4, abs=1e-6)
    # row 1: neighbours 2 (0.96, differs) and 0 (0.8, same) -> 0.96 / 1.76
    assert scores[1] == pytest.approx(0.96 / 1.76, abs=1e-6)
    shared = knn(vectors, 3)  # one search shared between scores: its first k columns
    assert np.allclose(knn_mistakenness(vectors, labels, k=2, neighbours=shared), scores)
    assert np.allclose(uniqueness(vectors, k=2, neighbours=shared), uniqueness(vectors, k=2))
    with pytest.raises(QaError, match=r"neighbours have 1 columns, k=2 needs 2"):
        knn_mistakenness(vectors, labels, k=2, neighbours=knn(vectors, 1))
    assert knn_mistakenness(vectors[:1], ["a"], k=3).tolist() == [0.0]  # no neighbour
    assert np.allclose(knn_mistakenness(vectors[:2], ["a", "b"], k=10), [1.0, 1.0])  # N <= k: all the others
    assert knn_mistakenness(np.array([[1.0, 0], [-1.0, 0]]), ["a", "b"], k=1).tolist() == [1.0, 1.0]  # weight 0
    reasons = knn_reasons(labels, knn(vectors, 2), k=2)
    assert reasons[0] == "label 'a' but 1 of 2 nearest are 'b'"
    assert knn_reasons(["x", "y", "z"], knn(np.array([[1.0, 0], [1, 0.1], [1, 0.2]]), 2), k=2)[1] == (
        "label 'y' but 2 of 2 nearest differ, most often 'x' (1)")
    assert knn_reasons(["a", "a"], knn(vectors[:2], 1), k=1)[0] == "label 'a' agrees with all 1 nearest"


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(2, 8), min_size=1, max_size=4), st.integers(1, 5))
def test_uniqueness_ranks_an_outlier_highest(seed, sizes, k):
    rng = np.random.default_rng(seed)
    directions = _orthonormal(rng, len(sizes) + 1, 32)
    vectors = np.vstack([_jitter(rng, directions[c], size, 0.01) for c, size in enumerate(sizes)] + [directions[-1:]])
    scores = uniqueness(vectors, k=k)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores.argmax() == len(vectors) - 1 and scores[-1] > scores[:-1].max()


def test_uniqueness_formula():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert np.allclose(uniqueness(vectors, k=1), [0.5, 0.5, 0.5])
    assert np.allclose(uniqueness(vectors, k=2), [0.75, 0.5, 0.75])  # row 0: mean of 0 and -1
    assert uniqueness(vectors[:1]).tolist() == [1.0]


# --------------------------------------------------------------------------- classifier, evaluation, combine


def test_classifier_disagreement_is_one_minus_the_labels_probability():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    assert np.allclose(classifier_disagreement(probabilities, np.array([0, 0])), [0.3, 0.95])
    assert classifier_reasons(probabilities, np.array([0, 0]), ["cat", "dog", "cow"]) == [
        "classifier agrees: 'cat' (0.70)", "classifier says 'dog' (0.90), label 'cat' (0.05)"]
    with pytest.raises(QaError, match="probabilities"):
        classifier_disagreement(np.array([[2.0]]), np.array([0]))
    with pytest.raises(QaError, match=r"0\.\.2"):
        classifier_disagreement(probabilities, np.array([0, 3]))


def _matches() -> MatchTable:
    """Predictions: a TP cat, a confident FP dog, a shy FP dog, one ignored on a crowd region.
    Truth: two cats (one matched), a matched and an unmatched dog, a crowd region."""
    return MatchTable(
        iou_threshold=0.5, sample_index=[0, 0, 1, 1], det_index=[0, 1, 0, 1], class_id=[0, 1, 1, 0],
        score=[0.9, 0.8, 0.3, 0.7], tp=[True, False, False, False], ignored=[False, False, False, True],
        truth_index=[0, -1, -1, 2], iou=[0.8, -1, -1, 0.6],
        truth_sample_index=[0, 0, 1, 1, 1], truth_det_index=[0, 1, 0, 1, 2], truth_class_id=[0, 0, 1, 1, 0],
        truth_crowd=[False, False, False, False, True], truth_matched=[True, False, True, False, True],
    )


def test_evaluation_suspects_flag_confident_unmatched_predictions_and_unmatched_truth():
    suspects = evaluation_suspects(_matches(), min_score=0.5, names=["cat", "dog"])
    assert suspects.missed.tolist() == [0.0, 0.8, 0.0, 0.0]
    assert suspects.spurious.tolist() == [0.0, 0.5, 0.0, 0.5, 0.0]  # the model finds 1 of 2 cats, 1 of 2 dogs
    assert suspects.missed_reasons[1] == (
        "prediction 'dog' at 0.80 matches no human box: possibly missed by the annotator")
    assert suspects.spurious_reasons[1] == "no prediction matches this 'cat' box (the model finds 50% of 'cat')"
    assert suspects.missed_reasons[0] == suspects.spurious_reasons[0] == ""
    assert evaluation_suspects(_matches(), min_score=0.2).missed.tolist() == [0.0, 0.8, 0.3, 0.0]


def test_combine_takes_the_strongest_signal_and_its_reason():
    knn_scores, classifier = np.array([0.8, 0.1, 0.0, np.nan]), np.array([0.2, 0.6, 0.0, np.nan])
    score, reason = combine({"knn": knn_scores, "classifier": classifier}, reasons={"knn": ["w", "x", "y", "z"]})
    assert score.tolist() == [0.8, 0.6, 0.0, 0.0]
    assert reason.tolist() == ["w", "classifier 0.60", "", ""]
    score, reason = combine({"knn": knn_scores, "classifier": classifier}, {"knn": 3.0, "classifier": 1.0})
    assert np.allclose(score, [0.65, 0.225, 0.0, 0.0])
    assert reason.tolist() == ["knn 0.80", "classifier 0.60", "", ""]
    partial = np.array([np.nan, 0.6, 0.0, 0.5])
    score, _ = combine({"knn": knn_scores, "classifier": partial}, {"knn": 1, "classifier": 1})
    assert np.allclose(score, [0.8, 0.35, 0.0, 0.5])  # the mean over the available signals
    with pytest.raises(QaError, match="no weight for score 'classifier'"):
        combine({"knn": knn_scores, "classifier": classifier}, {"knn": 1.0})
    with pytest.raises(QaError, match=r"score 'knn' must be in \[0, 1\]"):
        combine({"knn": np.array([1.5])})


@SETTINGS
@given(st.lists(st.lists(st.floats(0, 1), min_size=3, max_size=3), min_size=1, max_size=20))
def test_combine_without_weights_is_the_maximum(rows):
    matrix = np.array(rows)
    score, reason = combine({"a": matrix[:, 0], "b": matrix[:, 1], "c": matrix[:, 2]})
    assert np.array_equal(score, matrix.max(axis=1))
    for row, text in zip(matrix, reason.tolist(), strict=True):
        assert text == ("" if row.max() == 0 else f"{'abc'[int(row.argmax())]} {row.max():.2f}")


def test_unit_rows_copies_only_what_is_not_unit_float32():
    units = _unit(np.random.default_rng(0).normal(size=(5, 8))).astype(np.float32)
    assert unit_rows(units) is units  # 2 GB per 1M 512-d vectors: not copied again
    scaled = 3 * units
    assert np.allclose(unit_rows(scaled), units, atol=1e-6) and np.allclose(scaled, 3 * units)  # input untouched
    assert unit_rows(np.array([[3, 4]])).tolist() == [[0.6000000238418579, 0.800000011920929]]
    with pytest.raises(QaError, match="an ivf index needs at least 39 vectors"):
        build_index(units, kind="ivf")
