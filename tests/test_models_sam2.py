"""SAM 2.1 (transformers) as a `Segmenter`: a tiny random-init SAM 2 written by
``save_pretrained`` and loaded through the registry, prompted with boxes and clicks; the
embedding cache; the spec and weight errors; the decode of low-res mask logits to the frame;
and the server-side CVAT interactor serving it (``AUTOLABEL_SEGMENTER=sam2:DIR``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from nuclio_sdk.test import Platform

from serverless.models import registry
from serverless.models.base import Segmenter
from serverless.models.embedding_cache import EmbeddingCache, image_hash
from serverless.models.sam2 import (
    BACKEND,
    DEFAULT_SAM2_MODEL,
    SAM2_SIZES,
    Sam2Segmenter,
    best_mask,
    frame_masks,
    parse_weights,
)
from serverless.nuclio_adapter import sam_interactor_function
from tests.test_nuclio_functions import b64, call, check_interactor_reply, encode, interactor_body, make_frame

# The interactor door as a function's main.py exposes it: nuclio's test platform finds
# init_context in this module.
init_context, handler = sam_interactor_function(module=__name__)


@pytest.fixture(scope="module")
def sam2_dir(tmp_path_factory) -> str:
    return BACKEND.tiny(tmp_path_factory.mktemp("tiny-sam2"), 0)


@pytest.fixture(scope="module")
def segmenter(sam2_dir) -> Sam2Segmenter:
    spec = registry.parse_spec(f"sam2:{sam2_dir}", "segmenter", {})
    return registry.load_segmenter(spec, device="cpu")


@pytest.fixture
def calls(segmenter):
    """Counts of the encoder runs and the arguments of each mask-decoder / prompt-encoder call."""
    seen: dict[str, list] = {"encoder": [], "decoder": [], "prompts": []}
    model = segmenter.model
    hooks = [
        model.vision_encoder.register_forward_hook(lambda *_: seen["encoder"].append(1)),
        model.mask_decoder.register_forward_hook(
            lambda _m, _a, kwargs, out: seen["decoder"].append((kwargs, out)), with_kwargs=True
        ),
        model.prompt_encoder.register_forward_hook(
            lambda _m, _a, kwargs, _o: seen["prompts"].append(kwargs), with_kwargs=True
        ),
    ]
    yield seen
    for hook in hooks:
        hook.remove()


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- specs and weights


def test_sizes_name_the_public_checkpoints_and_the_default_is_large():
    assert parse_weights("tiny", {}) == "facebook/sam2.1-hiera-tiny"
    assert parse_weights("base-plus", {}) == "facebook/sam2.1-hiera-base-plus"
    assert parse_weights("", {}) == DEFAULT_SAM2_MODEL == SAM2_SIZES["large"]
    assert parse_weights("", {"AUTOLABEL_SAM2_MODEL": "small"}) == "facebook/sam2.1-hiera-small"
    assert parse_weights(" /models/sam2 ", {}) == "/models/sam2"
    assert parse_weights("someone/sam2-finetuned", {}) == "someone/sam2-finetuned"
    spec = registry.parse_spec("sam2", "segmenter", {"AUTOLABEL_SAM2_MODEL": "./local-sam2"})
    assert (spec.backend, spec.weights, spec.kind) == ("sam2", "./local-sam2", "segmenter")


def test_a_bad_size_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"'huge'.*tiny, small, base-plus, large"):
        parse_weights("huge", {})
    with pytest.raises(registry.ModelSpecError, match=r"sam2:huge.*tiny, small, base-plus, large"):
        registry.parse_spec("sam2:huge", "segmenter", {})


def test_missing_weights_fail_in_one_line_before_loading(tmp_path):
    gone = tmp_path / "no-such-sam2"
    with pytest.raises(registry.ModelLoadError) as err:
        registry.locate(registry.parse_spec(f"sam2:{gone}", "segmenter", {}))
    assert "\n" not in str(err.value) and str(gone) in str(err.value) and "SAM 2.1" in str(err.value)
    assert BACKEND.on_disk(str(gone)) is None
    with pytest.raises(registry.ModelLoadError, match="not in the Hugging Face cache.*AUTOLABEL_SAM2_MODEL") as err:
        registry.locate(registry.parse_spec("sam2:acme/never-cached-sam2", "segmenter", {}), download=False)
    assert "\n" not in str(err.value)


def test_a_directory_without_a_model_is_a_one_line_load_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(registry.ModelLoadError, match=r"cannot load SAM 2.1 from .*empty") as err:
        Sam2Segmenter.load(str(tmp_path / "empty"), device="cpu")
    assert "\n" not in str(err.value)


def initializer_ranges(config: object) -> list[float]:
    if isinstance(config, dict):
        own = [config["initializer_range"]] if "initializer_range" in config else []
        return own + [r for value in config.values() for r in initializer_ranges(value)]
    return []


def test_tiny_weights_are_on_disk_marked_and_free_of_denormals(sam2_dir, segmenter):
    from serverless.models.tiny import is_tiny

    assert BACKEND.on_disk(sam2_dir) == sam2_dir and is_tiny(sam2_dir)
    assert Path(sam2_dir).name == "sam2" and BACKEND.tiny(Path(sam2_dir).parent, 0) == sam2_dir
    config = json.loads((Path(sam2_dir) / "config.json").read_text(encoding="utf-8"))
    assert set(initializer_ranges(config)) == {0.02}
    smallest = np.finfo(np.float32).tiny  # denormals make a CPU forward pass crawl
    for name, weight in segmenter.model.named_parameters():
        values = np.abs(weight.detach().numpy())
        assert not np.any((values > 0) & (values < smallest)), name


# --------------------------------------------------------------------------- boxes


@pytest.mark.parametrize(("height", "width"), [(96, 128), (120, 50), (31, 203)])
def test_box_masks_are_bool_at_the_frame_size(segmenter, height, width):
    assert isinstance(segmenter, Segmenter)
    embedding = segmenter.embed(frame(height, width))
    assert embedding.original_size == (height, width)
    boxes = np.array([[2, 3, 40, 25], [0, 0, width, height]], np.float32)
    masks = segmenter.segment_boxes(embedding, boxes)
    assert masks.dtype == bool and masks.shape == (2, height, width)
    empty = segmenter.segment_boxes(embedding, np.zeros((0, 4), np.float32))
    assert empty.dtype == bool and empty.shape == (0, height, width)


def test_boxes_are_decoded_in_one_call_as_each_alone(segmenter, calls):
    embedding = segmenter.embed(frame(90, 160))
    boxes = np.array([[5, 5, 60, 40], [70, 10, 150, 85], [0, 0, 160, 90]], np.float32)
    together = segmenter.segment_boxes(embedding, boxes)
    assert len(calls["decoder"]) == 1, "all boxes of a frame go through the decoder together"
    kwargs, _ = calls["decoder"][0]
    assert kwargs["multimask_output"] is False
    alone = np.stack([segmenter.segment_boxes(embedding, box[None])[0] for box in boxes])
    assert np.mean(alone == together) > 0.999
    assert together.any(axis=(1, 2)).all() and not np.array_equal(together[0], together[1])


# --------------------------------------------------------------------------- clicks


def test_a_single_click_takes_the_best_of_three_candidates(segmenter, calls):
    embedding = segmenter.embed(frame(80, 120))
    mask = segmenter.segment_points(embedding, np.array([[30, 40]]))
    ((kwargs, (low_res, scores, *_)),) = calls["decoder"]
    assert kwargs["multimask_output"] is True and low_res.shape[2] == 3
    candidates = frame_masks(segmenter.processor.image_processor, low_res[0], (80, 120))[0]
    expected = candidates[int(np.argmax(scores[0, 0].float().numpy()))]
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == bool and mask.shape == (80, 120)


def test_clicks_carry_labels_1_and_0_and_a_box_joins_them(segmenter, calls):
    embedding = segmenter.embed(frame(80, 120))
    positive, negative = np.array([[30, 40], [50, 20]]), np.array([[5, 5]])
    mask = segmenter.segment_points(embedding, positive, negative, np.array([10, 10, 100, 70]))
    assert mask.dtype == bool and mask.shape == (80, 120)
    prompts = calls["prompts"][-1]
    assert prompts["input_labels"].reshape(-1).tolist() == [1, 1, 0]
    assert prompts["input_boxes"].shape == (1, 1, 4)
    assert calls["decoder"][-1][0]["multimask_output"] is False
    box_only = segmenter.segment_points(embedding, np.zeros((0, 2)), None, np.array([10, 10, 100, 70]))
    assert calls["prompts"][-1]["input_points"] is None and box_only.shape == (80, 120)
    negatives_only = segmenter.segment_points(embedding, np.zeros((0, 2)), np.array([[5, 5], [9, 9]]))
    assert calls["prompts"][-1]["input_labels"].reshape(-1).tolist() == [0, 0]
    assert negatives_only.shape == (80, 120)


def test_neither_points_nor_box_is_a_value_error(segmenter):
    embedding = segmenter.embed(frame(40, 60))
    with pytest.raises(ValueError, match="at least one point or a box"):
        segmenter.segment_points(embedding, np.zeros((0, 2)), np.zeros((0, 2)))


# --------------------------------------------------------------------------- embedding cache


def test_a_frame_is_embedded_once_by_content(segmenter, calls):
    image = frame(70, 90, seed=7)
    assert not segmenter.cached(image)
    first = segmenter.embed(image)
    assert segmenter.embed(image.copy()) is first and segmenter.cached(image)
    segmenter.segment_points(first, np.array([[10, 10]]))
    segmenter.segment_points(segmenter.embed(image), np.array([[10, 10]]), np.array([[60, 50]]))
    assert len(calls["encoder"]) == 1
    segmenter.embed(frame(70, 90, seed=8))
    assert len(calls["encoder"]) == 2


def test_the_cache_is_a_bounded_lru_keyed_by_content():
    cache: EmbeddingCache[str] = EmbeddingCache(2)
    computed: list[str] = []

    def compute(key: str) -> str:
        computed.append(key)
        return f"embedding {len(computed)}"

    a, b, c = (np.full((4, 5, 3), value, np.uint8) for value in (1, 2, 3))
    assert cache.get(a, compute) == "embedding 1" and cache.get(a.copy(), compute) == "embedding 1"
    cache.get(b, compute)
    cache.get(a, compute)  # a is now the most recent: c evicts b
    cache.get(c, compute)
    assert a in cache and c in cache and b not in cache and len(cache) == 2
    assert computed == [image_hash(a), image_hash(b), image_hash(c)]
    assert image_hash(a) != image_hash(a.reshape(5, 4, 3)), "the shape is part of the key"
    nothing: EmbeddingCache[str] = EmbeddingCache(0)
    nothing.get(a, compute)
    nothing.get(a, compute)
    assert len(nothing) == 0 and len(computed) == 5
    with pytest.raises(ValueError, match="cache size"):
        EmbeddingCache(-1)


# --------------------------------------------------------------------------- decode (synthetic logits)


def test_low_res_logits_decode_to_the_frame_size_by_scaling(segmenter):
    import torch

    rng = np.random.default_rng(3)
    logits = rng.normal(-8, 1, (2, 3, 64, 64)).astype(np.float32)  # clearly background
    logits[1, 2, 16:32, 8:40] = rng.normal(8, 1, (16, 32))  # one object, rows 1/4-1/2, cols 1/8-5/8
    masks = frame_masks(segmenter.processor.image_processor, torch.from_numpy(logits), (120, 200))
    assert masks.dtype == bool and masks.shape == (2, 3, 120, 200)
    assert masks.sum() == masks[1, 2].sum()
    expected = np.zeros((120, 200), bool)
    expected[30:60, 25:125] = True  # the square scaled by 120/64 and 200/64
    differs = masks[1, 2] != expected
    assert differs.sum() <= 2 * (30 + 100) * 2, "only the square's edges may move by a pixel or two"
    np.testing.assert_array_equal(best_mask(masks[1], np.array([0.1, 0.2, 0.9])), masks[1, 2])
    np.testing.assert_array_equal(best_mask(masks[1], np.array([0.8, 0.2, 0.3])), masks[1, 0])


# --------------------------------------------------------------------------- checkpoints on the hub


def test_a_sam2_video_checkpoint_as_the_hub_ships_loads(tmp_path, segmenter):
    """``facebook/sam2.1-hiera-*`` hold ``sam2_video`` checkpoints; the image model reads them."""
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    tiny = segmenter.model.config
    config = Sam2VideoConfig(
        vision_config=tiny.vision_config.to_dict(),
        prompt_encoder_config=tiny.prompt_encoder_config.to_dict(),
        mask_decoder_config=tiny.mask_decoder_config.to_dict(),
        image_size=tiny.prompt_encoder_config.image_size,
        memory_attention_hidden_size=32,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32,
        memory_attention_rope_feat_sizes=[16, 16],
        memory_encoder_hidden_size=32,
        memory_fuser_embed_dim=32,
        memory_fuser_intermediate_dim=32,
        mask_downsampler_embed_dim=32,
    )
    torch.manual_seed(1)
    Sam2VideoModel(config).save_pretrained(str(tmp_path))
    segmenter.processor.save_pretrained(str(tmp_path))
    loaded = Sam2Segmenter.load(str(tmp_path), device="cpu")
    image = frame(50, 70)
    masks = loaded.segment_boxes(loaded.embed(image), np.array([[5, 5, 40, 30]]))
    assert masks.shape == (1, 50, 70) and masks.dtype == bool


# --------------------------------------------------------------------------- the CVAT interactor


@pytest.fixture
def interactor_env(sam2_dir, monkeypatch):
    for name in ("AUTOLABEL_SAM_MODEL_TYPE", "AUTOLABEL_SAM_CHECKPOINT"):  # they would name SAM 1
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTOLABEL_SEGMENTER", f"sam2:{sam2_dir}")
    monkeypatch.setenv("AUTOLABEL_DEVICE", "cpu")


def test_the_cvat_interactor_serves_sam2_and_embeds_a_frame_once(interactor_env, segmenter, calls):
    image = make_frame(112, 84)
    body = b64(encode(image, "PNG"))
    platform, module = Platform(), sys.modules[__name__]
    first = call(platform, module, interactor_body(body, pos=((30, 30),), neg=()))
    second = call(platform, module, interactor_body(body, pos=((30, 30),), neg=((70, 60),)))
    boxed = call(platform, module, interactor_body(body, pos=(), neg=(), box=[[10, 12], [90, 70]]))
    for status, reply in (first, second, boxed):
        assert status == 200
        check_interactor_reply(reply, 112, 84)
    assert segmenter.cached(image), "init_context loaded the tiny SAM 2 (one per process)"
    assert len(calls["encoder"]) == 1, "clicks after the first on a frame must reuse its embedding"
    assert [kwargs["multimask_output"] for kwargs, _ in calls["decoder"]] == [True, False, False]
    status, reply = call(platform, module, interactor_body(body, pos=(), neg=()))
    assert status == 422 and "pos_points" in reply["error"]
