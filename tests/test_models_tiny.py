"""The real model code path end to end, on tiny random-init models written to disk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serverless.images import read_image
from serverless.models import registry
from serverless.ontology import Ontology, parse_ontology
from tests.conftest import ROOT, SAMPLES


@pytest.fixture(scope="module")
def gdino(tiny_settings):
    from serverless.models.grounding_dino import GroundingDino

    return GroundingDino.load(tiny_settings.gdino_model, device="cpu")


@pytest.fixture(scope="module")
def segmenter(tiny_settings):
    from serverless.models.sam import SamSegmenter

    return SamSegmenter.load(tiny_settings.sam_model_type, tiny_settings.sam_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def photos():
    return [read_image(p) for p in sorted(SAMPLES.glob("*.jpg"))]


def _check(det, image, ontology: Ontology):
    height, width = image.shape[:2]
    assert det.xyxy.dtype == np.float32
    assert np.all(det.xyxy[:, [0, 2]] >= 0) and np.all(det.xyxy[:, [0, 2]] <= width)
    assert np.all(det.xyxy[:, [1, 3]] >= 0) and np.all(det.xyxy[:, [1, 3]] <= height)
    assert np.all((det.scores >= 0) & (det.scores <= 1))
    assert set(det.labels.tolist()) <= set(ontology.label_names)
    for cid, name in zip(det.class_ids, det.labels):
        assert ontology.label_names[cid] == name
    for cid, score in zip(det.class_ids, det.scores):
        assert score >= ontology.threshold_for(int(cid)) - 1e-6


def test_registry_loads_each_model_once(gdino, segmenter, tiny_settings):
    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.sam import SamSegmenter

    assert GroundingDino.load(tiny_settings.gdino_model, device="cpu") is gdino
    assert SamSegmenter.load(tiny_settings.sam_model_type, tiny_settings.sam_checkpoint, device="cpu") is segmenter
    assert ("grounding-dino", tiny_settings.gdino_model, "cpu") in registry.loaded_keys()


def test_grounding_dino_on_sample_photos(gdino, photos, sample_ontology):
    results = gdino.detect(photos, sample_ontology)
    assert len(results) == len(photos)
    assert sum(len(d) for d in results) > 0, "tiny random model should produce some boxes at 0.3"
    for det, image in zip(results, photos):
        _check(det, image, sample_ontology)


def test_threshold_override_and_bounds(gdino, photos, sample_ontology):
    strict = gdino.detect(photos[:1], sample_ontology, threshold=0.99)[0]
    loose = gdino.detect(photos[:1], sample_ontology, threshold=0.05)[0]
    assert np.all(strict.scores >= 0.99)
    assert len(loose) >= len(strict)
    with pytest.raises(ValueError, match="threshold must lie in 0..1"):
        gdino.detect(photos[:1], sample_ontology, threshold=1.5)


def test_results_do_not_depend_on_batching(gdino, photos, sample_ontology):
    same_size = [photos[0], photos[0][::-1].copy()]  # two frames of one size share a forward pass
    batch = gdino.detect(same_size + photos[1:3], sample_ontology)
    single = [gdino.detect([p], sample_ontology)[0] for p in same_size + photos[1:3]]
    for a, b in zip(batch, single):
        assert a.labels.tolist() == b.labels.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.5)


def test_300_label_ontology_is_chunked_not_truncated(gdino, photos):
    names = (ROOT / "tests" / "data" / "lvis_300.txt").read_text().split("\n")
    names = [n for n in names if n.strip()]
    assert len(names) == 300
    text = "labels:\n" + "".join(f"  - name: {n}\n" for n in names)
    ontology = parse_ontology(text, "lvis.yaml")
    chunks = gdino.encode_ontology(ontology)
    assert len(chunks) > 1
    assert all(c.input_ids.shape[1] <= 256 for c in chunks)
    covered = [label for c in chunks for label in c.chunk.label_ids]
    assert sorted(covered) == list(range(300))
    # every phrase has tokens mapped to it (nothing cut off)
    for c in chunks:
        assert set(c.token_phrase[c.token_phrase >= 0].tolist()) == set(range(len(c.chunk.phrases)))
    det = gdino.detect(photos[:1], ontology, threshold=0.2)[0]
    _check(det, photos[0], ontology)


def test_sam_embedding_shape_and_cache(segmenter, photos):
    first = segmenter.embed(photos[0])
    assert tuple(first.features.shape) == (1, 256, 64, 64)
    assert first.to_numpy().dtype == np.float32
    assert first.original_size == photos[0].shape[:2]
    assert segmenter.cached(photos[0])
    assert segmenter.embed(photos[0].copy()) is first  # same content → cache hit
    other = photos[0].copy()
    other[0, 0, 0] ^= 1
    assert not segmenter.cached(other)


def test_sam_decodes_all_boxes_in_one_call(segmenter, photos, monkeypatch):
    image = photos[1]
    embedding = segmenter.embed(image)
    calls = []
    original = segmenter._predictor.predict_torch

    def counting(*args, **kwargs):
        calls.append(kwargs["boxes"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(segmenter._predictor, "predict_torch", counting)
    boxes = np.array([[10, 10, 100, 100], [50, 60, 200, 220], [0, 0, 30, 40]], np.float32)
    masks = segmenter.segment_boxes(embedding, boxes)
    assert calls == [3]
    assert masks.shape == (3, *image.shape[:2]) and masks.dtype == bool
    assert segmenter.segment_boxes(embedding, np.zeros((0, 4))).shape == (0, *image.shape[:2])


def test_sam_points(segmenter, photos):
    embedding = segmenter.embed(photos[2])
    mask = segmenter.segment_points(embedding, [[50, 60]], [[10, 10]], box_xyxy=[0, 0, 120, 120])
    assert mask.shape == photos[2].shape[:2] and mask.dtype == bool
    with pytest.raises(ValueError, match="at least one point or a box"):
        segmenter.segment_points(embedding, np.zeros((0, 2)))


def test_grounded_sam_masks_align_with_boxes(gdino, segmenter, photos, sample_ontology):
    from serverless.models.grounded_sam import GroundedSam

    results = GroundedSam(gdino.bind(sample_ontology), segmenter).detect(photos[:2], threshold=0.6)
    for det, image in zip(results, photos[:2]):
        _check(det, image, sample_ontology)
        assert det.masks is not None and det.masks.shape == (len(det), *image.shape[:2])


def test_bad_checkpoint_and_model_errors(tmp_path, tiny_settings):
    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.registry import ModelLoadError
    from serverless.models.sam import build_sam_model

    with pytest.raises(ModelLoadError, match="SAM checkpoint not found"):
        build_sam_model("vit_b", tmp_path / "missing.pth")
    with pytest.raises(ModelLoadError, match="does not load as vit_b"):
        build_sam_model("vit_b", tiny_settings.sam_checkpoint)
    with pytest.raises(ModelLoadError, match="neither one of"):
        build_sam_model("vit_q", None)
    with pytest.raises(ModelLoadError, match="cannot load Grounding DINO"):
        GroundingDino.load(str(tmp_path / "nowhere"), device="cpu")


def test_sams_public_checkpoint_downloads_once_into_the_cache_md5_checked(tmp_path, monkeypatch):
    import hashlib

    from huggingface_hub import constants

    from serverless.models import sam
    from serverless.models.registry import ModelLoadError

    source = tmp_path / "served" / "sam_vit_b_test.pth"
    source.parent.mkdir()
    source.write_bytes(b"sam weights")
    md5 = hashlib.md5(b"sam weights").hexdigest()
    monkeypatch.setenv("AUTOLABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AUTOLABEL_OFFLINE", raising=False)
    monkeypatch.setitem(sam.SAM_CHECKPOINTS, "vit_b", (source.as_uri(), "0" * 32))
    target = tmp_path / "cache" / "sam" / "sam_vit_b_test.pth"
    assert sam.sam_cache_path("vit_b") == target
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = r"^SAM vit_b weights are not cached at .*sam_vit_b_test.pth and downloads are off \(offline mode\); set AUTO"
    with pytest.raises(ModelLoadError, match=offline):
        sam.resolve_sam_checkpoint("vit_b", None)
    with pytest.raises(ModelLoadError, match=offline):
        sam.locate_weights("vit_b")
    with pytest.raises(ModelLoadError, match="not cached at .* and downloads are off; set AUTOLABEL_SAM_CHECKPOINT"):
        sam.locate_weights("vit_b", download=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelLoadError, match=f"^SAM vit_b download from file:.* has MD5 {md5}, expected 0{{32}}$"):
        sam.resolve_sam_checkpoint("vit_b", None)
    assert list(target.parent.iterdir()) == [], "nothing is kept of a download with the wrong MD5"
    monkeypatch.setitem(sam.SAM_CHECKPOINTS, "vit_b", (source.as_uri(), md5))
    assert sam.resolve_sam_checkpoint("vit_b", None) == str(target) and target.read_bytes() == b"sam weights"
    source.unlink()  # cached now: found there, never fetched again
    assert sam.resolve_sam_checkpoint("vit_b", None) == str(target)
    assert sam.locate_weights("vit_b").load_from == str(target)
    assert sam.resolve_sam_checkpoint("vit_b", "/given.pth") == "/given.pth"


@pytest.mark.parametrize("shape", [(3, 2, 3), (1, 1, 3), (3, 40, 3)])
def test_tiny_frames_are_read_channels_last(gdino, sample_ontology, shape):
    image = np.full(shape, 128, np.uint8)
    (det,) = gdino.detect([image], sample_ontology, threshold=0.0)
    assert np.all(det.xyxy[:, [0, 2]] <= shape[1]) and np.all(det.xyxy[:, [1, 3]] <= shape[0])


# --------------------------------------------------------------------------- bounds (issue 9)

LOW = "defaults: {{threshold: 0.0, text_threshold: 0.0, max_detections: {}}}\nlabels: [{{name: person}}, {{name: cat}}]\n"


def test_max_detections_keeps_the_best_scored_before_sam(gdino, segmenter, photos, monkeypatch):
    from serverless.models.grounded_sam import GroundedSam

    image = photos[0]
    (everything,) = gdino.detect([image], parse_ontology(LOW.format(10000)))
    assert len(everything) > 5  # random weights at threshold 0 find plenty
    (capped,) = gdino.detect([image], parse_ontology(LOW.format(5)))
    assert len(capped) == 5
    np.testing.assert_array_equal(capped.scores, np.sort(everything.scores)[::-1][:5])
    decoded: list[int] = []
    original = segmenter.segment_boxes
    monkeypatch.setattr(segmenter, "segment_boxes", lambda e, b: decoded.append(len(b)) or original(e, b))
    (masked,) = GroundedSam(gdino.bind(parse_ontology(LOW.format(3))), segmenter).detect([image])
    assert len(masked) == 3 and decoded == [3]


@given(text=st.lists(st.sampled_from(list("ab -,'&é") + ["hat", "Hard", "cat", "x1", "\u0301"]), max_size=30).map("".join))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_load_time_token_bound_never_exceeds_the_tokenizer(gdino, text):
    from serverless.ontology import normalize_phrase, prompt_tokens_at_least

    phrase = normalize_phrase(text)
    if phrase and "." not in phrase:
        assert prompt_tokens_at_least(phrase) <= gdino.count_tokens(phrase + " .")


# --------------------------------------------------------------------------- tiny tokenizers


def test_the_tiny_clip_tokenizer_makes_each_word_one_token_and_ends_at_the_highest_id():
    from serverless.models.tiny_tokenizers import CLIP_END, CLIP_START, tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(["cat", "coffee", "hard", "hat"], model_max_length=16, pad_token="!")
    start, end = tokenizer.convert_tokens_to_ids([CLIP_START, CLIP_END])
    assert (start, end) == (len(tokenizer) - 2, len(tokenizer) - 1)  # OWL pools at argmax(input_ids)
    assert tokenizer.bos_token_id == start and tokenizer.eos_token_id == end
    assert tokenizer.pad_token_id == 0 and tokenizer.model_max_length == 16
    ids = tokenizer("cat hard hat coffee")["input_ids"]
    assert len(ids) == 6 and ids[0] == start and ids[-1] == end
    assert tokenizer.decode(ids, skip_special_tokens=True) == "cat hard hat coffee"
    spelled = tokenizer("zq ünï")["input_ids"]  # unknown words: one token per byte, never [UNK]
    assert len(spelled) == 2 + 2 + len("ünï".encode())
    assert tokenizer.decode(spelled, skip_special_tokens=True) == "zq ünï"
    clip = tiny_clip_tokenizer(["cat"], model_max_length=77)
    padded = clip(["cat"], padding="max_length", max_length=5)["input_ids"][0]
    assert padded[-2:] == [clip.eos_token_id] * 2 == [len(clip) - 1] * 2  # CLIP pads with its end token


def test_the_tiny_siglip_tokenizer_makes_each_word_one_token():
    from serverless.models.tiny_tokenizers import tiny_siglip_tokenizer

    tokenizer = tiny_siglip_tokenizer(["person", "sky"], model_max_length=64)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a person under the sky")["input_ids"])
    assert "▁person" in tokens and "▁sky" in tokens and "<unk>" not in tokens
    assert tokenizer.model_max_length == 64
