"""Embeddings of a dataset for QA (``autolabel embed``): computed in batches, resumable, stored
with their provenance in the label store.

**What is embedded.** Every sample of the dataset that is a usable local file (the rule of
`sync.export.yolo.local_file`: an absolute path of an existing image whose sha256 is still the
stored one) as a whole image (kind ``image``); with ``objects=True`` also each annotation's crop
(kind ``object``): the shapes (not the tags, `sync.store.convert.split_tags`) of a chosen run,
or by default of the latest human revision per sample, else the latest imported revision (as
evaluation's truth). A crop is the annotation's box widened by `CROP_MARGIN` of its width and
height on each side (a little context helps CLIP tell a thing from its surroundings), clipped
to the image and at least one pixel wide and high (`crop_box`); masks and polygons are cropped
by their box. The CLIP processor resizes every image and crop to the model's input.

**The model.** The image tower of a ``clip[:WEIGHTS]`` model (CLIP, SigLIP, SigLIP 2) through
the ``clip`` backend (`serverless.models.clip.load_image_encoder`): loaded once per process, the
same weights the classifier of that spec uses; each vector is L2-normalised. The stored model
name is the canonical spec text (``clip`` alone reads as ``clip:openai/clip-vit-base-patch32``,
or ``AUTOLABEL_CLIP_MODEL``); ``model_revision`` is the hub snapshot's commit when known.

**Resumable, never recomputed.** Only what is not stored yet for that model is computed, in
batches of ``batch_size``, each batch stored in one transaction (`Store.add_embeddings`): an
interrupted run keeps every finished batch, and running it again carries on; a second run over
an embedded dataset computes nothing (and loads no model). An unreadable image is skipped and
counted with its reason (`Skipped`); so are the crops of an image whose size is not the stored
one (its boxes would not fit).

**Where vectors live.** In the store (`sync.store.embeddings`: one transactional home with the
provenance, on SQLite and PostgreSQL; pgvector is not installed on this project's PostgreSQL,
so the search runs over vectors read back, in `sync.qa.vectors`). `require_embeddings` reads
them for the QA commands, or says in one line which ``autolabel embed`` makes them.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sync.qa.errors import QaError

if TYPE_CHECKING:
    from serverless.models.clip import ClipModel
    from serverless.models.registry import ModelSpec
    from sync.store import EmbeddingSet, RunInfo, SampleInfo, Store

__all__ = [
    "CROP_MARGIN",
    "DEFAULT_BATCH",
    "EmbedSummary",
    "KindSummary",
    "Progress",
    "Skipped",
    "crop_box",
    "crop_runs",
    "embed_dataset",
    "embedding_model",
    "read_sample",
    "require_embeddings",
]

CROP_MARGIN = 0.1
"""A crop is the annotation's box widened by this fraction of its width (height) on each side."""

DEFAULT_BATCH = 32
"""Images or crops per model pass and per stored batch."""

Progress = Callable[[str, int, int], None]
"""``(kind, done, total)``: after each batch, how many of the kind's pending items are done
(embedded or skipped) of how many; called once with ``done = 0`` before the first batch."""

@dataclass(frozen=True)
class Skipped:
    """An image that could not be used, and why."""

    uri: str
    reason: str
    items: int = 1
    """How many vectors were not computed because of it: 1 for an image, its pending crops."""


@dataclass(frozen=True)
class KindSummary:
    """What one kind (``image`` or ``object``) of an embedding run did."""

    kind: str
    added: int
    """Vectors computed and stored now."""
    stored: int
    """Vectors stored already (by an earlier run with the same model): not computed."""
    skipped: tuple[Skipped, ...] = ()

    @property
    def skipped_items(self) -> int:
        return sum(s.items for s in self.skipped)


@dataclass(frozen=True)
class EmbedSummary:
    """The outcome of `embed_dataset`."""

    dataset: str
    model: str
    """The canonical model spec text the vectors are stored under."""
    images: KindSummary
    objects: KindSummary | None = None
    """None unless object crops were asked for."""
    source: str | None = None
    """Where the cropped annotations came from, in words (``objects`` only)."""


# --------------------------------------------------------------------------- the model


def embedding_model(text: str | None = None) -> ModelSpec:
    """The parsed spec of ``--model`` (None: ``clip``, its default weights); `QaError` in one
    line unless it names a ``clip`` model (the only image-text backend)."""
    from serverless.models.clip import DEFAULT_CLIP_MODEL
    from serverless.models.registry import ModelSpecError, backend, parse_spec

    text = "clip" if text is None else text
    example = f"clip:{DEFAULT_CLIP_MODEL}"
    name = str(text).strip().partition(":")[0]
    if name != "clip":
        try:
            kind = f"{name} is a {backend(name).kind}"
        except ModelSpecError:
            kind = f"{name!r} is not a model backend (autolabel models list)"
        raise QaError(f"--model {text!r}: embeddings need an image-text model such as {example}; {kind}")
    try:
        return parse_spec(text, "classifier")
    except ModelSpecError as error:
        raise QaError(f"--model {text!r}: {error}") from None


def _model_revision(spec: ModelSpec) -> str | None:
    """The hub snapshot's commit of a hub id once it is cached; None for a directory."""
    from serverless.models.hub import cached_snapshot, looks_like_path

    if looks_like_path(spec.weights):
        return None
    snapshot = cached_snapshot(spec.weights)
    return Path(snapshot).name if snapshot else None


def _check_device(device: str | None) -> None:
    """`QaError` for a device torch does not know (``cuda`` without CUDA is the registry's
    `ModelLoadError`, when the model loads)."""
    if device is None:
        return
    import torch

    try:
        torch.device(device)
    except RuntimeError as error:
        reason = str(error).split(":")[0]
        raise QaError(f"--device {device!r}: {reason} (cpu, cuda or cuda:N)") from None


class _Encoder:
    """The image encoder of ``spec``, loaded on the first batch (never when nothing is pending)."""

    def __init__(self, spec: ModelSpec, device: str | None) -> None:
        self.spec, self.device = spec, device
        self._model: ClipModel | None = None
        self.revision: str | None = None

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if self._model is None:
            from serverless.models.clip import load_image_encoder

            self._model = load_image_encoder(self.spec, device=self.device)
            self.revision = _model_revision(self.spec)
        return self._model.image_embeddings(images)


# --------------------------------------------------------------------------- images and crops


def crop_box(box: Sequence[float], width: int, height: int, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """Integer ``(x1, y1, x2, y2)`` (x2, y2 exclusive) of an annotation's crop in a ``width`` x
    ``height`` image: the box widened by ``margin`` of its size on each side, outward to whole
    pixels, clipped to the image, at least one pixel wide and high."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = margin * max(x2 - x1, 0.0), margin * max(y2 - y1, 0.0)

    def span(lo: float, hi: float, size: int) -> tuple[int, int]:
        start = min(max(math.floor(lo), 0), size - 1)
        return start, min(max(math.ceil(hi), start + 1), size)

    left, right = span(x1 - dx, x2 + dx, width)
    top, bottom = span(y1 - dy, y2 + dy, height)
    return left, top, right, bottom


def read_sample(sample: SampleInfo) -> tuple[np.ndarray | None, str | None]:
    """``(RGB image, None)`` of a stored sample's local image file, or ``(None, why not)``
    (not a local file, changed since stored, unreadable) — the one rule QA reads images by."""
    from serverless.images import IMAGE_SUFFIXES, ImageError, read_image
    from sync.export.yolo import local_file

    path, reason = local_file(sample, IMAGE_SUFFIXES, "autolabel")
    if path is None:
        return None, reason
    try:
        return read_image(path), None
    except ImageError as error:
        return None, str(error).removeprefix(f"{path}: ")


Unit = tuple[tuple[int, int | None, int | None], np.ndarray]
"""``((sample_id, annotation_id, source_run_id), RGB pixels)``: one image or crop to embed."""


def _image_units(samples: Sequence[SampleInfo]) -> Iterator[Unit | Skipped]:
    for sample in samples:
        image, reason = read_sample(sample)
        yield Skipped(sample.uri, reason or "") if image is None else ((sample.id, None, None), image)


@dataclass(frozen=True)
class _Pending:
    """A sample's annotations still to embed: their ids, boxes and run."""

    sample: SampleInfo
    run_id: int
    annotation_ids: tuple[int, ...]
    boxes: np.ndarray


def _object_units(pending: Sequence[_Pending]) -> Iterator[Unit | Skipped]:
    for item in pending:
        image, reason = read_sample(item.sample)
        if image is None:
            yield Skipped(item.sample.uri, reason or "", len(item.annotation_ids))
            continue
        height, width = image.shape[:2]
        if (width, height) != (item.sample.width, item.sample.height):
            yield Skipped(item.sample.uri, f"the image is {width}x{height}, stored as {item.sample.width}x"
                          f"{item.sample.height}: its boxes do not fit", len(item.annotation_ids))
            continue
        for annotation_id, box in zip(item.annotation_ids, item.boxes, strict=True):
            x1, y1, x2, y2 = crop_box(box, width, height)
            yield (item.sample.id, annotation_id, item.run_id), image[y1:y2, x1:x2]


# --------------------------------------------------------------------------- which annotations


def crop_runs(store: Store, dataset: str, run: str | None = None) -> tuple[dict[int, RunInfo], str]:
    """``({sample_id: run}, description)``: whose annotations are cropped. ``run`` (a name):
    that run on every sample it covers; None: the latest human revision per sample, else the
    latest imported revision (``autolabel import --as-revision``), as evaluation's truth.
    `QaError` when the dataset has neither; the store's `StoreError` for an unknown run."""
    from sync.views import latest_truth_per_sample

    if run is not None:
        found = store.get_run(dataset, run)
        return {sample: found for sample in store.covered_samples(found)}, f"run {found.name} ({found.kind})"
    chosen, description = latest_truth_per_sample(store, dataset)
    if not chosen:
        raise QaError(
            f"dataset {dataset!r} has no human revision to crop objects from: pull corrections with "
            "`autolabel cvat pull`, import them with `autolabel import --as-revision`, or name a run with --run"
        )
    return chosen, description


def _pending_objects(
    store: Store, chosen: Mapping[int, RunInfo], samples: Mapping[int, SampleInfo], done: set[tuple[int, int | None]]
) -> tuple[list[_Pending], int]:
    """The shapes of the chosen runs not embedded yet, per sample (ascending id), and how many
    are embedded already."""
    from sync.store.checks import chunks
    from sync.store.convert import split_tags
    from sync.views import group_by_run

    pending, stored = [], 0
    for run, sample_ids in group_by_run(dict(chosen)):
        for chunk in chunks(sample_ids):
            for sample_id, det in store.annotations_of(run, sample_ids=chunk).items():
                shapes = split_tags(det)[0]
                ids = shapes.data["annotation_id"].tolist() if len(shapes) else []
                todo = [k for k, a in enumerate(ids) if (sample_id, a) not in done]
                stored += len(ids) - len(todo)
                if todo:
                    pending.append(_Pending(samples[sample_id], run.id, tuple(ids[k] for k in todo),
                                            np.asarray(shapes.xyxy)[todo]))
    return sorted(pending, key=lambda p: p.sample.id), stored


# --------------------------------------------------------------------------- embedding


@dataclass(frozen=True)
class _Target:
    """Where and how one kind's vectors are computed and stored."""

    store: Store
    dataset: str
    model: str
    encoder: _Encoder
    batch_size: int
    progress: Progress | None


def _embed(target: _Target, kind: str, units: Iterator[Unit | Skipped], total: int) -> tuple[int, list[Skipped]]:
    """Embed ``units`` (``total`` items) in batches, each batch stored in one transaction;
    returns how many vectors were added and what was skipped."""
    added, done, skipped, batch = 0, 0, [], []
    report = target.progress or (lambda *_: None)
    report(kind, 0, total)

    def flush() -> None:
        nonlocal added, done
        vectors = target.encoder([pixels for _, pixels in batch])
        items = [(*key, vector) for (key, _), vector in zip(batch, vectors, strict=True)]
        added += target.store.add_embeddings(
            target.dataset, target.model, kind, items, model_revision=target.encoder.revision
        )
        done += len(batch)
        batch.clear()
        report(kind, done, total)

    for unit in units:
        if isinstance(unit, Skipped):
            skipped.append(unit)
            done += unit.items
            continue
        batch.append(unit)
        if len(batch) >= target.batch_size:
            flush()
    if batch:
        flush()
    report(kind, done, total)
    return added, skipped


def _dataset_samples(store: Store, dataset: str) -> list[SampleInfo]:
    samples = store.samples(dataset)
    if not samples:
        raise QaError(
            f"dataset {dataset!r} has no samples: add images with `autolabel prelabel IMAGES --dataset "
            f"{shlex.quote(dataset)}` or `autolabel import`"
        )
    return samples


def _embed_images(target: _Target, samples: Sequence[SampleInfo]) -> KindSummary:
    done = target.store.embedded_keys(target.dataset, target.model, "image")
    pending = [s for s in samples if (s.id, None) not in done]
    added, skipped = _embed(target, "image", _image_units(pending), len(pending))
    summary = KindSummary("image", added, len(samples) - len(pending), tuple(skipped))
    if summary.added + summary.stored == 0:
        first = skipped[0]
        raise QaError(
            f"no image of dataset {target.dataset!r} can be read ({len(skipped)} skipped, e.g. {first.uri}: "
            f"{first.reason}); embeddings need the samples as local image files"
        )
    return summary


def _embed_objects(target: _Target, samples: Sequence[SampleInfo], chosen: Mapping[int, RunInfo]) -> KindSummary:
    done = target.store.embedded_keys(target.dataset, target.model, "object")
    pending, stored = _pending_objects(target.store, chosen, {s.id: s for s in samples}, done)
    total = sum(len(p.annotation_ids) for p in pending)
    added, skipped = _embed(target, "object", _object_units(pending), total)
    return KindSummary("object", added, stored, tuple(skipped))


def embed_dataset(
    store: Store,
    dataset: str,
    *,
    model_spec: str | None = None,
    objects: bool = False,
    run: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    device: str | None = None,
    progress: Progress | None = None,
) -> EmbedSummary:
    """Embed ``dataset``'s images (and with ``objects=True`` its annotations' crops, from
    ``run`` or the latest revision per sample) with ``model_spec`` (default ``clip``), storing
    only what is not stored for that model yet (see the module docstring).

    `QaError` in one line for a model that is not ``clip``, an empty dataset, a dataset none of
    whose images can be read, ``run`` without ``objects``, crops asked of a dataset without a
    revision, an unknown ``device`` or a bad ``batch_size``; the store's `StoreError` for an unknown dataset or run;
    the registry's `ModelLoadError` for weights that cannot be found or loaded.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise QaError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if run is not None and not objects:
        raise QaError(f"--run {run} names the run whose annotations are cropped: add --objects")
    spec = embedding_model(model_spec)
    _check_device(device)
    samples = _dataset_samples(store, dataset)
    chosen, source = crop_runs(store, dataset, run) if objects else ({}, None)
    target = _Target(store, dataset, spec.text, _Encoder(spec, device), batch_size, progress)
    images = _embed_images(target, samples)
    crops = _embed_objects(target, samples, chosen) if objects else None
    return EmbedSummary(dataset=dataset, model=spec.text, images=images, objects=crops, source=source)


# --------------------------------------------------------------------------- for the QA commands


def _embed_command(dataset: str, spec: ModelSpec, kind: str) -> str:
    words = ["autolabel", "embed", "--dataset", dataset]
    if spec.text != embedding_model(None).text:
        words += ["--model", spec.text]
    return shlex.join(words + (["--objects"] if kind == "object" else []))


def require_embeddings(store: Store, dataset: str, model_spec: str | None = None, kind: str = "image") -> EmbeddingSet:
    """The ``kind`` (``image`` or ``object``) embeddings of ``dataset`` made with ``model_spec``
    (default ``clip``), for a QA command. `QaError` in one line when the dataset has no samples,
    when it has no such embeddings yet (naming the ``autolabel embed`` command that makes
    them), or when they were made with another model (naming both ways out)."""
    if kind not in ("image", "object"):
        raise QaError(f"embedding kind must be 'image' or 'object', got {kind!r}")
    spec = embedding_model(model_spec)
    _dataset_samples(store, dataset)
    found = store.embeddings(dataset, spec.text, kind)
    if len(found):
        return found
    command = _embed_command(dataset, spec, kind)
    others = [model for model, counts in store.embedding_models(dataset).items() if counts.get(kind)]
    if others:
        made = " and ".join(others)
        raise QaError(
            f"the {kind} embeddings of dataset {dataset!r} were made with {made}, not {spec.text}: "
            f"run `{command}` or pass --model {shlex.quote(others[0])}"
        )
    raise QaError(f"dataset {dataset!r} has no {kind} embeddings yet: run `{command}`")
