"""The QA checks wired to the label store: duplicate groups of a dataset, per-annotation
mistakenness and per-sample uniqueness, from the stored embeddings (`sync.qa.embed`).

One owner of each computation for every command that shows it: ``autolabel qa duplicates``,
``autolabel qa mistakes``, ``autolabel select --by mistakenness|uniqueness`` and the
duplicate-aware split of ``autolabel train``/``export --duplicates-together`` (`sync.qa.splits`).

- `dataset_duplicates`: `sync.qa.duplicates.duplicate_groups` over the dataset's stored image
  embeddings, keyed by sample id, linked also by the samples' stored ``content_hash``. Only
  samples with an image embedding take part (a URL or a missing file has none).
- `annotation_mistakes`: per annotation of the truth (the latest human revision per sample,
  else the imported revision: `sync.views.latest_truth_per_sample`) or of a named run, the k-NN
  mistakenness of its stored crop embedding (kind ``object``) among all the others'
  (`sync.qa.mistakes.knn_mistakenness`) and, when asked, the zero-shot classifier's
  disagreement: the crop embeddings (CLIP image embeddings) scored against the CLIP text
  embeddings of the label names with the model's own scoring (softmax for CLIP,
  `serverless.models.clip.label_scores`); combined by `sync.qa.mistakes.combine` (the maximum,
  with the strongest signal's reason). When the truth is scored (no run named) and asked for,
  also the evaluation's suspects: the latest pre-label run is evaluated against the truth at
  IoU 0.5 (`sync.evaluate.load.choose_runs`, `load_eval`, `report.evaluate_run`) and a human
  box no prediction matched scores the model's recall on its class
  (`sync.qa.mistakes.evaluation_suspects`, ``spurious``); no pre-label run, or nothing to
  compare, means no such signal. Confident predictions (score >= 0.5) no human box matches
  belong to no annotation: they are listed apart (`Mistakes.missed`, `MissedObject`: the
  pre-label's score, box and reason) and count in their sample's mistakenness. Only annotations
  with a stored crop embedding are scored.
- `sample_uniqueness`: `sync.qa.mistakes.uniqueness` over the stored image embeddings.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sync.qa.duplicates import DEFAULT_THRESHOLD, DuplicateGroup, duplicate_groups
from sync.qa.embed import crop_runs, embedding_model, require_embeddings
from sync.qa.errors import QaError
from sync.qa.mistakes import (
    DEFAULT_K,
    classifier_disagreement,
    classifier_reasons,
    combine,
    evaluation_suspects,
    knn_mistakenness,
    knn_reasons,
)
from sync.qa.vectors import knn

if TYPE_CHECKING:
    from sync.store import EmbeddingSet, RunInfo, SampleInfo, Store

__all__ = [
    "AnnotationScore",
    "DatasetDuplicates",
    "Mistakes",
    "MissedObject",
    "annotation_mistakes",
    "dataset_duplicates",
    "sample_uniqueness",
]


@dataclass(frozen=True)
class DatasetDuplicates:
    """The duplicate groups of a dataset (members: sample ids) and its embedded samples."""

    dataset: str
    model: str
    threshold: float
    groups: tuple[DuplicateGroup, ...]
    samples: Mapping[int, SampleInfo]
    """Every sample with an image embedding, by id."""


def dataset_duplicates(
    store: Store, dataset: str, *, model: str | None = None, threshold: float = DEFAULT_THRESHOLD
) -> DatasetDuplicates:
    """Exact (same ``content_hash``) and near-duplicate (cosine >= ``threshold``) groups of the
    dataset's samples with image embeddings of ``model`` (default ``clip``). `QaError` (from
    `require_embeddings`) when there are none, or for a bad threshold."""
    found = require_embeddings(store, dataset, model, "image")
    ids = found.sample_ids.tolist()
    samples = {s.id: s for s in store.samples(dataset, ids=ids)}
    groups = duplicate_groups(found.vectors, ids, threshold=threshold,
                              content_hashes=[samples[i].content_hash for i in ids])
    return DatasetDuplicates(dataset, found.model, float(threshold), tuple(groups), samples)


def sample_uniqueness(
    store: Store, dataset: str, *, model: str | None = None, k: int = DEFAULT_K
) -> tuple[list[int], np.ndarray]:
    """``(sample ids, uniqueness)`` of every sample with an image embedding (ascending id);
    `QaError` when there are none."""
    from sync.qa.mistakes import uniqueness

    found = require_embeddings(store, dataset, model, "image")
    return found.sample_ids.tolist(), uniqueness(found.vectors, k=k)


@dataclass(frozen=True)
class AnnotationScore:
    """How suspect one annotation's label is, and why (the strongest signal's text)."""

    sample_id: int
    annotation_id: int
    label: str
    score: float
    reason: str


@dataclass(frozen=True)
class MissedObject:
    """A confident pre-label no human box matches: an object the annotator may have missed."""

    sample_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]
    """``x1, y1, x2, y2`` in pixels."""
    reason: str


@dataclass(frozen=True)
class Mistakes:
    """Every scored annotation of a dataset's truth (or a run), by (sample id, annotation id)."""

    dataset: str
    model: str
    source: str
    """Whose annotations, in words (``run NAME (kind)`` or the truth's description)."""
    k: int
    classifier: bool
    signals: tuple[str, ...]
    """The signals combined (``knn``, ``classifier``, ``evaluation``)."""
    annotations: tuple[AnnotationScore, ...]
    missed: tuple[MissedObject, ...] = ()
    """Confident pre-labels of the latest pre-label run that match no human box (the
    evaluation's signal, truth only), most confident first."""

    def per_sample(self) -> dict[int, list[AnnotationScore]]:
        """``{sample_id: its annotations, most suspect first}`` by ascending sample id."""
        found: dict[int, list[AnnotationScore]] = {}
        for item in self.annotations:
            found.setdefault(item.sample_id, []).append(item)
        return {sid: sorted(items, key=lambda a: (-a.score, a.annotation_id)) for sid, items in sorted(found.items())}

    def _missed_per_sample(self) -> dict[int, list[MissedObject]]:
        found: dict[int, list[MissedObject]] = {}
        for item in sorted(self.missed, key=lambda m: (-m.score, m.box)):
            found.setdefault(item.sample_id, []).append(item)
        return found

    def sample_json(self) -> dict[int, dict[str, object]]:
        """``{sample_id: {"mistakenness": max score, "annotations": [{"annotation_id", "label",
        "score", "reason"}, most suspect first], "missed": [{"label", "score", "box", "reason"}]}}``
        (``missed`` only where some are): what a selection file holds per sample."""
        scores = dict(zip(*self.sample_scores(), strict=True))
        annotations, missed = self.per_sample(), self._missed_per_sample()
        parts: dict[int, dict[str, object]] = {}
        for sid in sorted(scores):
            parts[sid] = {"mistakenness": float(scores[sid]),
                          "annotations": [{"annotation_id": a.annotation_id, "label": a.label, "score": a.score,
                                           "reason": a.reason} for a in annotations.get(sid, ())]}
            if sid in missed:
                parts[sid]["missed"] = [{"label": m.label, "score": m.score, "box": list(m.box), "reason": m.reason}
                                        for m in missed[sid]]
        return parts

    def sample_scores(self) -> tuple[list[int], np.ndarray]:
        """``(sample ids, mistakenness)``: per sample the highest score of its annotations and
        of the objects it may miss, by ascending sample id."""
        best = {sid: items[0].score for sid, items in self.per_sample().items()}
        for sid, items in self._missed_per_sample().items():
            best[sid] = max(best.get(sid, 0.0), items[0].score)
        ids = sorted(best)
        return ids, np.array([best[sid] for sid in ids], dtype=np.float64)


def _labels_of(store: Store, chosen: Mapping[int, RunInfo]) -> dict[tuple[int, int], str]:
    """``{(sample_id, annotation_id): label}`` of the shapes (not tags) of the chosen runs."""
    from sync.store.checks import chunks
    from sync.store.convert import split_tags
    from sync.views import group_by_run

    labels: dict[tuple[int, int], str] = {}
    for run, sample_ids in group_by_run(dict(chosen)):
        for chunk in chunks(sample_ids):
            for sample_id, det in store.annotations_of(run, sample_ids=chunk).items():
                shapes = split_tags(det)[0]
                if len(shapes):
                    for annotation_id, label in zip(shapes.data["annotation_id"].tolist(), shapes.labels.tolist(),
                                                    strict=True):
                        labels[(sample_id, int(annotation_id))] = str(label)
    return labels


def _classifier_scores(vectors: np.ndarray, codes: np.ndarray, names: list[str], model: str | None,
                       device: str | None) -> tuple[np.ndarray, list[str]]:
    """Zero-shot ``1 - p(label)`` of each crop embedding and the texts, from the CLIP text
    embeddings of the label names (module docstring)."""
    from serverless.models.clip import label_scores, load_image_encoder
    from serverless.ontology import Label, Ontology, normalize_phrase

    encoder = load_image_encoder(embedding_model(model), device=device)
    ontology = Ontology(labels=[Label(name=n, prompts=(normalize_phrase(n),)) for n in names])
    probabilities = label_scores(vectors, encoder.label_embeddings(ontology), scoring=encoder.scoring,
                                 logit_scale=encoder.logit_scale, logit_bias=encoder.logit_bias)
    return classifier_disagreement(probabilities, codes), classifier_reasons(probabilities, codes, names)


def _evaluation_scores(
    store: Store, dataset: str, keys: list[tuple[int, int]]
) -> tuple[np.ndarray, list[str], tuple[MissedObject, ...]] | None:
    """``spurious`` and its text per ``(sample_id, annotation_id)`` of the truth from evaluating
    the latest pre-label run (NaN and "" for an annotation outside that evaluation), and the
    confident pre-labels no human box matches (``missed``); None when there is no pre-label run
    or nothing to compare (module docstring)."""
    from sync.evaluate.data import EvalError
    from sync.evaluate.load import choose_runs, load_eval
    from sync.evaluate.report import evaluate_run

    try:
        (data,) = load_eval(store, choose_runs(store, dataset))
        boxes = evaluate_run(data, iou=0.5, masks=False).boxes
    except EvalError:
        return None
    if boxes is None:
        return None
    matches = boxes.matches
    suspects = evaluation_suspects(matches, names=data.labels)
    found: dict[tuple[int, int], tuple[float, str]] = {}
    rows = zip(matches.truth_sample_index.tolist(), matches.truth_det_index.tolist(), strict=True)
    for row, (i, j) in enumerate(rows):
        key = (int(data.sample_ids[i]), int(data.truth[i].data["annotation_id"][j]))
        found[key] = (float(suspects.spurious[row]), suspects.spurious_reasons[row])
    values = [found.get(key, (np.nan, "")) for key in keys]
    missed = tuple(
        MissedObject(int(data.sample_ids[i]), str(data.labels[c]), float(suspects.missed[row]),
                     tuple(float(v) for v in data.pred[i].xyxy[j]), suspects.missed_reasons[row])
        for row, (i, j, c) in enumerate(zip(matches.sample_index.tolist(), matches.det_index.tolist(),
                                            matches.class_id.tolist(), strict=True))
        if suspects.missed[row] > 0
    )
    return np.array([v for v, _ in values], dtype=np.float64), [text for _, text in values], missed


def _scored_rows(store: Store, dataset: str, found: EmbeddingSet, run: str | None) -> tuple[np.ndarray, list[str], str]:
    """The rows of ``found`` that embed an annotation of the chosen runs, their labels and the
    source's description; `QaError` naming the embed command when none does."""
    chosen, source = crop_runs(store, dataset, run)
    labels = _labels_of(store, chosen)
    keys = zip(found.sample_ids.tolist(), found.annotation_ids.tolist(), strict=True)
    rows = [i for i, key in enumerate(keys) if key in labels]
    if not rows:
        command = ["autolabel", "embed", "--dataset", dataset, "--model", found.model, "--objects"]
        command += ["--run", run] if run is not None else []
        raise QaError(f"no annotation of {source} of dataset {dataset!r} has an object embedding of {found.model}: "
                      f"run `{shlex.join(command)}`")
    row_labels = [labels[(int(found.sample_ids[i]), int(found.annotation_ids[i]))] for i in rows]
    return np.asarray(rows, dtype=np.int64), row_labels, source


def annotation_mistakes(
    store: Store,
    dataset: str,
    *,
    model: str | None = None,
    run: str | None = None,
    k: int = DEFAULT_K,
    classifier: bool = False,
    evaluation: bool = True,
    device: str | None = None,
) -> Mistakes:
    """Score every annotation of ``run`` (default: the truth) that has a stored crop
    embedding of ``model`` (module docstring); ``evaluation``: add the evaluation's suspects
    when the truth is scored and a pre-label run exists. `QaError` for no object embeddings (naming
    ``autolabel embed ... --objects``), embeddings of another model, no truth, a bad ``k``;
    the store's `StoreError` for an unknown dataset or run; with ``classifier`` the
    registry's `ModelLoadError` when the weights cannot be loaded."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise QaError(f"--k must be a whole number >= 1, got {k!r}")
    found = require_embeddings(store, dataset, model, "object")
    rows, labels, source = _scored_rows(store, dataset, found, run)
    vectors = found.vectors[rows]
    neighbours = knn(vectors, k)
    scores = {"knn": knn_mistakenness(vectors, labels, k=k, neighbours=neighbours)}
    reasons = {"knn": knn_reasons(labels, neighbours, k=k)}
    if classifier:
        names = sorted(set(labels))
        codes = np.array([names.index(label) for label in labels], dtype=np.int64)
        scores["classifier"], reasons["classifier"] = _classifier_scores(vectors, codes, names, model, device)
    missed: tuple[MissedObject, ...] = ()
    if evaluation and run is None:
        keys = [(int(found.sample_ids[r]), int(found.annotation_ids[r])) for r in rows.tolist()]
        evaluated = _evaluation_scores(store, dataset, keys)
        if evaluated is not None:
            scores["evaluation"], reasons["evaluation"], missed = evaluated
    score, reason = combine(scores, reasons=reasons)
    items = tuple(
        AnnotationScore(int(found.sample_ids[r]), int(found.annotation_ids[r]), label, float(s), str(text))
        for r, label, s, text in zip(rows.tolist(), labels, score.tolist(), reason.tolist(), strict=True)
    )
    return Mistakes(dataset, found.model, source, k, classifier, tuple(scores), items, missed)
