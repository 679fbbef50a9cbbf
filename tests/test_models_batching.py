"""Batching: every registered detector and classifier gives a batch of frames of mixed sizes
what it gives each frame alone, and runs frames that can share a forward pass in one; the SAM
segmenters encode several frames in one encoder pass (`BatchEmbedder.embed_many`) with the
embedding cache honoured, and Grounded-SAM embeds a batch's frames together. Forward passes
are counted with hooks on the real torch modules."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from serverless.images import read_image
from serverless.models import registry, sam, sam2
from serverless.models.base import BatchEmbedder, Embedding, Segmenter, embed_all
from serverless.models.grounded_sam import GroundedSam, add_masks
from serverless.ontology import Ontology, parse_ontology
from tests.conftest import SAMPLES
from tests.test_models_protocols import ONTOLOGY, build

BATCHED = registry.backends("detector") + registry.backends("classifier")

# The module that runs once per forward pass of each backend (its image encoder or its head).
FORWARD_MODULE: dict[str, Callable[[Any], Any]] = {
    "grounding-dino": lambda d: d.model.model,
    "mm-grounding-dino": lambda d: d.model.model,
    "owlv2": lambda d: d.model.model.owlv2.vision_model,
    "yolo-world": lambda d: d._network.model[-1],
    "yolo": lambda d: d.model.model.model[-1],
    "sam3": lambda d: d.model.model.vision_encoder,
    "clip": lambda c: c.model.model.vision_model,
}
SIZE_BUCKETS = {"grounding-dino", "mm-grounding-dino"}
"""Backends whose preprocessing keeps each frame's size (padding a batch would change the
features): one forward pass per distinct frame size. The others resize every frame to one
input size: one forward pass for any batch."""


@pytest.fixture(autouse=True)
def gpu_sized_passes_on_the_cpu(monkeypatch):
    """The SAM-family encoders take one frame per pass on a CPU (`frames_per_pass`); these tests
    give the CPU the GPU's frames per pass, so the batched path runs here."""
    from serverless.models import sam3

    monkeypatch.setattr(sam, "CPU_ENCODER_BATCH", sam.ENCODER_BATCH)
    monkeypatch.setattr(sam2, "CPU_ENCODER_BATCH", sam2.ENCODER_BATCH)
    monkeypatch.setattr(sam3, "CPU_VISION_BATCH", sam3.VISION_BATCH)


@pytest.fixture(scope="module")
def tiny_root(tiny_models):
    return tiny_models.gdino_dir.parent


@pytest.fixture(scope="module")
def ontology() -> Ontology:
    return parse_ontology(ONTOLOGY, "batching.yaml")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Three frames of two sizes, two of them 160x200 (with different pixels)."""
    photo = read_image(SAMPLES / "coffee.jpg")
    noise = np.random.default_rng(0).integers(0, 255, (30, 41, 3), dtype=np.uint8)
    return [np.ascontiguousarray(crop) for crop in (photo[:160, :200], noise, photo[40:200, 60:260])]


@pytest.fixture(scope="module")
def same_size(frames) -> list[np.ndarray]:
    """Three different 160x200 frames."""
    other = read_image(SAMPLES / "astronaut.jpg")
    return [frames[0], frames[2], np.ascontiguousarray(other[100:260, 50:250])]


@contextlib.contextmanager
def batch_sizes(module: Any) -> Iterator[list[int]]:
    """The batch size (the first dimension of its first input, or of ``pixel_values``) of each
    forward pass of ``module`` inside the block."""
    seen: list[int] = []

    def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        first = args[0] if args else kwargs.get("pixel_values", next(iter(kwargs.values())))
        if isinstance(first, (list, tuple)):  # a detection head reads a list of feature maps
            first = first[0]
        seen.append(int(first.shape[0]))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_every_batched_backend_has_its_forward_module():
    assert {b.name for b in BATCHED} == set(FORWARD_MODULE)


@pytest.mark.parametrize("backend", BATCHED, ids=[b.name for b in BATCHED])
def test_a_batch_gives_each_frame_what_it_gets_alone(backend, tiny_root, ontology, frames):
    model = build(backend, tiny_root, ontology)
    run = model.detect if backend.kind == "detector" else model.classify
    with batch_sizes(FORWARD_MODULE[backend.name](model)) as passes:
        batch = run(frames, threshold=0.05)
    assert passes == ([2, 1] if backend.name in SIZE_BUCKETS else [len(frames)])
    assert sum(len(found) for found in batch) > 0, "the comparison below must not be vacuous"
    for found, frame in zip(batch, frames, strict=True):
        (alone,) = run([frame], threshold=0.05)
        assert alone.labels.tolist() == found.labels.tolist()
        np.testing.assert_allclose(alone.scores, found.scores, atol=1e-4)
        if backend.kind == "detector":
            np.testing.assert_allclose(alone.xyxy, found.xyxy, atol=1e-2)
            if found.masks is not None:
                assert np.mean(alone.masks != found.masks) < 1e-3


@pytest.mark.parametrize("name", sorted(SIZE_BUCKETS))
def test_three_frames_of_one_size_cost_one_forward_pass(name, tiny_root, ontology, same_size):
    detector = build(registry.backend(name), tiny_root, ontology)
    with batch_sizes(FORWARD_MODULE[name](detector)) as passes:
        detector.detect(same_size)
    assert passes == [3]  # the other backends ran mixed sizes in one pass above


# --------------------------------------------------------------------------- segmenters

SEGMENTERS = registry.backends("segmenter")


def fresh(segmenter: Segmenter) -> Segmenter:
    """A segmenter sharing ``segmenter``'s loaded weights with an empty embedding cache of its own."""
    if isinstance(segmenter, sam.SamSegmenter):
        return sam.SamSegmenter(segmenter.model, device="cpu", model_id=segmenter.model_id)
    if isinstance(segmenter, sam2.Sam2Segmenter):
        return sam2.Sam2Segmenter(segmenter.model, segmenter.processor, device="cpu", model_id=segmenter.model_id)
    raise AssertionError(f"no fresh() for {type(segmenter).__name__}: add the new segmenter here")


def encoder(segmenter: Segmenter) -> Any:
    return segmenter.model.image_encoder if isinstance(segmenter, sam.SamSegmenter) else segmenter.model.vision_encoder


def maps(embedding: Embedding) -> list[np.ndarray]:
    features = embedding.features
    return [f.float().numpy() for f in (features if isinstance(features, tuple) else (features,))]


class OneByOne:
    """A real segmenter seen through the `Segmenter` protocol alone (no ``embed_many``)."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.embed = segmenter.embed
        self.segment_boxes = segmenter.segment_boxes
        self.segment_points = segmenter.segment_points


@pytest.fixture(scope="module", params=SEGMENTERS, ids=[s.name for s in SEGMENTERS])
def segmenter(request, tiny_root, ontology) -> Segmenter:
    return build(request.param, tiny_root, ontology)


def test_embed_many_equals_embed_with_one_encoder_pass(segmenter, frames):
    batched, single = fresh(segmenter), fresh(segmenter)
    assert isinstance(batched, BatchEmbedder)
    with batch_sizes(encoder(segmenter)) as passes:
        many = batched.embed_many(frames)
    assert passes == [len(frames)]
    for embedding, frame in zip(many, frames, strict=True):
        alone = single.embed(frame)
        assert tuple(embedding.original_size) == frame.shape[:2]
        for field in dataclasses.fields(alone):  # sizes, hash: what prompts are mapped with
            if field.name != "features":
                assert getattr(embedding, field.name) == getattr(alone, field.name), field.name
        for got, want in zip(maps(embedding), maps(alone), strict=True):
            assert got.shape == want.shape and got.shape[0] == 1
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert batched.embed_many([]) == []


def test_embed_many_honours_the_embedding_cache(segmenter, frames, same_size):
    one = fresh(segmenter)
    first = one.embed(frames[0])
    many = one.embed_many(frames[:2])
    with batch_sizes(encoder(segmenter)) as passes:
        again = one.embed_many([frames[1], same_size[2], frames[0].copy(), same_size[2].copy()])
        assert one.embed(same_size[2]) is again[1]
    assert passes == [1], "only the new frame is encoded, once though it comes twice"
    assert many[0] is first and again[0] is many[1] and again[2] is first and again[3] is again[1]
    assert all(one.cached(frame) for frame in (*frames[:2], same_size[2]))


def test_embed_many_runs_the_encoder_in_chunks(segmenter, frames, monkeypatch):
    module = sam if isinstance(segmenter, sam.SamSegmenter) else sam2
    monkeypatch.setattr(module, "CPU_ENCODER_BATCH", 2)
    with batch_sizes(encoder(segmenter)) as passes:
        fresh(segmenter).embed_many(frames)
    assert passes == [2, 1]


def test_a_cpu_encodes_one_frame_per_pass_and_a_gpu_several(segmenter, frames, monkeypatch):
    from serverless.models.base import frames_per_pass

    module = sam if isinstance(segmenter, sam.SamSegmenter) else sam2
    monkeypatch.undo()  # the module's own CPU setting
    with batch_sizes(encoder(segmenter)) as passes:
        fresh(segmenter).embed_many(frames)
    assert passes == [1] * len(frames)
    assert frames_per_pass("cuda:1", module.ENCODER_BATCH, module.CPU_ENCODER_BATCH) == module.ENCODER_BATCH > 1
    assert frames_per_pass("cpu", 4, 0) == 1


def test_embed_all_batches_when_it_can_and_loops_otherwise(segmenter, frames):
    plain = OneByOne(fresh(segmenter))
    assert isinstance(plain, Segmenter) and not isinstance(plain, BatchEmbedder)
    with batch_sizes(encoder(segmenter)) as passes:
        assert embed_all(fresh(segmenter), []) == []
        batched = embed_all(fresh(segmenter), frames[:2])
        assert passes == [2]
        looped = embed_all(plain, frames[:2])
    assert passes == [2, 1, 1]
    for a, b in zip(batched, looped, strict=True):
        assert a.original_size == b.original_size


@pytest.fixture(scope="module")
def gdino(tiny_root, ontology):
    return build(registry.backend("grounding-dino"), tiny_root, ontology)


def test_grounded_sam_embeds_a_batch_in_one_pass_and_matches_frame_by_frame(segmenter, gdino, frames):
    found = gdino.detect(frames, threshold=0.2)
    boxed = sum(1 for det in found if len(det))
    assert 0 < boxed, "the comparison below must not be vacuous"
    grounded = GroundedSam(gdino, fresh(segmenter))
    with batch_sizes(encoder(segmenter)) as passes:
        batch = grounded.detect(frames, threshold=0.2)
    assert passes == [boxed], "one encoder pass over the frames that have a box, and only those"
    single = fresh(segmenter)  # frame by frame through the single-frame door, `embed` each
    for det, frame, boxes in zip(batch, frames, found, strict=True):
        one = add_masks(single, frame, boxes)
        np.testing.assert_array_equal(det.xyxy, boxes.xyxy)
        assert det.masks.shape == one.masks.shape == (len(det), *frame.shape[:2])
        assert np.mean(det.masks != one.masks) < 1e-3


def test_grounded_sam_runs_no_encoder_without_boxes(segmenter, gdino, frames):
    with batch_sizes(encoder(segmenter)) as passes:
        batch = GroundedSam(gdino, fresh(segmenter)).detect(frames[:2], threshold=1.0)
    assert passes == []
    assert [det.masks.shape for det in batch] == [(0, *frame.shape[:2]) for frame in frames[:2]]


def test_the_cache_computes_only_the_missing_frames_in_one_call_and_keeps_the_newest():
    from serverless.models.embedding_cache import EmbeddingCache

    a, b, c = (np.full((2, 3, 3), v, np.uint8) for v in (1, 2, 3))
    calls: list[int] = []

    def compute(frames: list[np.ndarray], keys: list[str]) -> list[int]:
        calls.append(len(frames))
        return [int(frame[0, 0, 0]) for frame in frames]

    cache: EmbeddingCache[int] = EmbeddingCache(2)
    assert cache.get(a, lambda _key: 1) == 1
    assert cache.get_many([b, a, b.copy(), c], compute) == [2, 1, 2, 3]
    assert calls == [2]  # b and c, b once
    assert c in cache and b in cache and a not in cache  # a was the least recently used
    assert cache.get_many([c, b], compute) == [3, 2] and calls == [2]
    nothing: EmbeddingCache[int] = EmbeddingCache(0)
    assert nothing.get_many([a, a], compute) == [1, 1] and calls == [2, 1] and len(nothing) == 0
