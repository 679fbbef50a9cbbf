"""YOLO-World (`serverless.models.yolo_world`): post-processing on seeded synthetic head outputs,
text embeddings once per ontology, ontologies bound from one loaded model kept apart, the tiny
model end to end through the registry, and one-line errors for bad specs and missing weights."""

from __future__ import annotations

import os
import threading
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "ultralytics"))

import numpy as np
import pytest

from serverless.images import read_image
from serverless.models import registry, yolo_world
from serverless.models.downloads import PublicCheckpoint, download_once
from serverless.models.registry import ModelLoadError, ModelSpecError
from serverless.models.yolo_world import (
    BACKEND,
    DEFAULT_CLIP,
    ClipText,
    YoloWorld,
    decode_world,
    load_world_checkpoint,
    locate_weights,
    world_detections,
)
from serverless.ontology import OntologyError, parse_ontology
from tests.conftest import SAMPLES

ONTOLOGY = parse_ontology(
    """\
defaults: {threshold: 0.2, nms_iou: 0.5, max_detections: 3}
labels:
  - {name: person, prompts: [person, worker], threshold: 0.5}
  - {name: cat}
  - {name: cup, prompts: [cup, coffee mug]}
"""
)
PROMPT_LABEL = np.array([0, 0, 1, 2, 2])  # person, worker | cat | cup, coffee mug
SQUARE = (640, 640)


def head_output(boxes_xywh, label_scores) -> np.ndarray:
    """A head output (4 + L, A), as `YoloWorld.forward` gives it, from A boxes (cx, cy, w, h
    in input pixels) and (A, L) label scores."""
    return np.concatenate([np.asarray(boxes_xywh, np.float32).T, np.asarray(label_scores, np.float32).T])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """Canonical weights ``CHECKPOINT:CLIP`` of the tiny YOLO-World."""
    return BACKEND.tiny(tmp_path_factory.mktemp("tiny-yolo-world"), 0)


@pytest.fixture(scope="module")
def world(tiny) -> YoloWorld:
    checkpoint, clip = yolo_world.split_weights(tiny)
    return YoloWorld.load(checkpoint, clip, device="cpu")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    photo = read_image(SAMPLES / "coffee.jpg")
    return [photo, read_image(SAMPLES / "astronaut.jpg"), np.ascontiguousarray(photo[::-1, :300])]


# --------------------------------------------------------------------------- post-processing


def test_decode_keeps_each_box_at_its_best_labels_threshold():
    boxes = [[100, 100, 20, 20]] * 5
    scores = [  # person (threshold 0.5), cat, cup (default 0.2)
        [0.6, 0.0, 0.0],  # person
        [0.45, 0.3, 0.0],  # person 0.45 beats cat 0.3 but misses person's 0.5: dropped
        [0.0, 0.25, 0.2],  # cat 0.25 >= default 0.2
        [0.0, 0.15, 0.35],  # cup
        [0.0, 0.19, 0.0],  # cat under 0.2
    ]
    pred = head_output(boxes, scores)
    xyxy, got, ids = decode_world(pred, ONTOLOGY.thresholds, input_shape=SQUARE, image_shape=SQUARE)
    assert ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(got, [0.6, 0.25, 0.35])
    np.testing.assert_allclose(xyxy, [[90, 90, 110, 110]] * 3)
    everyone = np.full(3, 0.1, np.float32)  # the threshold argument replaces every label's own
    _, got, ids = decode_world(pred, everyone, input_shape=SQUARE, image_shape=SQUARE)
    assert ids.tolist() == [0, 0, 1, 2, 1] and got[1] == pytest.approx(0.45)
    with pytest.raises(ValueError, match=r"4 \+ 2 rows .* got 7"):
        decode_world(pred, everyone[:2], input_shape=SQUARE, image_shape=SQUARE)


def test_decode_undoes_the_letterbox_of_a_non_square_image():
    # 300x600 (h, w) into 640x640: scale 640/600, resized to 320x640, 160 rows of padding on top
    gain = 640 / 600
    boxes = [
        [320, 320, 64, 32],  # input (288, 304, 352, 336)
        [620, 200, 60, 40],  # runs past the right edge: clipped
        [320, 60, 100, 40],  # all in the top padding: no area left, dropped
    ]
    pred = head_output(boxes, np.full((3, 3), 0.9))
    xyxy, scores, _ = decode_world(pred, ONTOLOGY.thresholds, input_shape=SQUARE, image_shape=(300, 600))
    expected = [
        [288 / gain, (304 - 160) / gain, 352 / gain, (336 - 160) / gain],
        [590 / gain, (180 - 160) / gain, 600, (220 - 160) / gain],
    ]
    np.testing.assert_allclose(xyxy, expected, rtol=1e-5)
    assert xyxy.dtype == np.float32 and len(scores) == 2


def test_detections_are_nms_merged_on_labels_cut_and_in_descending_order():
    rng = np.random.default_rng(0)
    boxes = [[100, 100, 40, 40], [102, 101, 40, 40], [104, 100, 40, 40], [300, 300, 30, 30], [500, 500, 20, 20]]
    scores = np.zeros((5, 3), np.float32)
    scores[0, 0], scores[1, 0] = 0.9, 0.8  # two persons on one spot: one survives NMS
    scores[2, 1] = 0.7  # a cat on the same spot: another label, kept by class-wise NMS
    scores[3, 2], scores[4, 2] = 0.6, 0.95  # two cups apart
    noise = rng.uniform(0, 0.05, (20, 3))  # seeded clutter under every threshold
    pred = head_output(boxes + [[50, 50, 10, 10]] * 20, np.concatenate([scores, noise]))
    det = world_detections(pred, ONTOLOGY, ONTOLOGY.thresholds, input_shape=SQUARE, image_shape=SQUARE)
    assert det.labels.tolist() == ["cup", "person", "cat"]  # the 0.6 cup is cut: max_detections 3
    np.testing.assert_allclose(det.scores, [0.95, 0.9, 0.7])
    agnostic = parse_ontology(ONTOLOGY.source.replace("max_detections: 3", "class_agnostic_nms: true"))
    det = world_detections(pred, agnostic, agnostic.thresholds, input_shape=SQUARE, image_shape=SQUARE)
    assert det.labels.tolist() == ["cup", "person", "cup"]


# --------------------------------------------------------------------------- the tiny model


def test_text_embeddings_are_clips_normalised_text_features(world):
    import torch
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(world.clip.model_id).eval()
    tokenizer = AutoTokenizer.from_pretrained(world.clip.model_id)
    tokens = tokenizer(["person", "coffee mug"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference = clip.get_text_features(**tokens).pooler_output
    reference = reference / reference.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(world.clip.encode(["person", "coffee mug"]), reference)


def test_the_forward_pass_scores_each_label_by_its_best_prompt(world, frames):
    import torch

    detector = world.bind(ONTOLOGY)
    assert detector.prompt_label.tolist() == PROMPT_LABEL.tolist()
    pixels = world.preprocess(frames[:2])
    got = world.forward(pixels, detector._network, detector.text, detector.prompt_label, 3)
    with torch.inference_mode():
        raw = detector._network.predict(pixels, txt_feats=detector.text)
    raw = (raw[0] if isinstance(raw, tuple) else raw).float().numpy()  # (B, 4 + 5 prompts, A)
    assert got.shape == (2, 4 + 3, raw.shape[2])
    np.testing.assert_array_equal(got[:, :4], raw[:, :4])
    for label in range(3):
        best = raw[:, 4 + np.flatnonzero(PROMPT_LABEL == label)].max(axis=1)
        np.testing.assert_array_equal(got[:, 4 + label], best)


def test_prompts_are_embedded_once_per_ontology_not_per_frame(world, frames, monkeypatch):
    calls: list[list[str]] = []
    encode = world.clip.encode
    monkeypatch.setattr(world.clip, "encode", lambda texts: calls.append(list(texts)) or encode(texts))
    detector = world.bind(ONTOLOGY)
    assert calls == [["person", "worker", "cat", "cup", "coffee mug"]]
    assert tuple(detector.text.shape) == (1, 5, world.clip.dim)
    detector.detect(frames[:2])
    detector.detect(frames[2:], threshold=0.4)
    assert len(calls) == 1


def test_two_ontologies_bound_from_one_model_do_not_interfere(world, frames):
    other = parse_ontology(
        "defaults: {threshold: 0.3}\nlabels: [{name: dog}, {name: helmet, prompts: [helmet, hard hat]}]\n"
    )
    first, second = world.bind(ONTOLOGY), world.bind(other)
    images = frames[:2]
    before = first.detect(images)
    results: dict[str, list] = {}
    threads = [
        threading.Thread(target=lambda n=name, d=detector: results.__setitem__(n, d.detect(images)))
        for name, detector in (("first", first), ("second", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for after in (results["first"], first.detect(images)):
        for a, b in zip(before, after, strict=True):
            assert a.labels.tolist() == b.labels.tolist()
            np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    assert any(len(det) for det in results["second"])
    assert all(set(det.labels) <= {"dog", "helmet"} for det in results["second"])
    head = world.model.model[-1]
    assert head.nc == 4 and head.shape is None, "the loaded model itself is never written"
    assert first._network.model[-1].nc == 5 and second._network.model[-1].nc == 3


def test_tiny_model_end_to_end_through_the_registry(tiny, frames):
    from serverless.models.tiny import is_tiny
    from ultralytics import YOLOWorld
    from ultralytics.nn.tasks import WorldModel

    checkpoint, clip = yolo_world.split_weights(tiny)
    assert isinstance(YOLOWorld(checkpoint).model, WorldModel), "ultralytics' own loader reads the tiny checkpoint"
    assert is_tiny(checkpoint) and is_tiny(clip)
    spec = registry.parse_spec(f"yolo-world:{tiny}", "detector", {})
    assert spec.weights == tiny and BACKEND.on_disk(spec.weights) == tiny
    detector = registry.load_detector(spec, ONTOLOGY, device="cpu", source=registry.locate(spec, download=False))
    assert detector.labels == ("person", "cat", "cup")
    results = detector.detect(frames)
    assert sum(len(det) for det in results) > 0
    for det, image in zip(results, frames, strict=True):
        height, width = image.shape[:2]
        assert len(det) <= 3 and np.all(np.diff(det.scores) <= 0)
        assert np.all(det.xyxy[:, [0, 2]] <= width) and np.all(det.xyxy[:, [1, 3]] <= height) and np.all(det.xyxy >= 0)
        assert np.all(det.scores >= ONTOLOGY.thresholds[det.class_ids] - 1e-6)
    assert registry.load_detector(spec, ONTOLOGY, device="cpu") is detector


def test_a_prompt_longer_than_clips_context_is_refused_when_bound(world):
    long = parse_ontology("labels: [{name: cat, prompts: ['%s']}]\n" % " ".join(["cat"] * 80))
    with pytest.raises(OntologyError, match="'cat': prompt .* 82 tokens, more than the 77"):
        world.bind(long)


# --------------------------------------------------------------------------- specs and weights


@pytest.mark.parametrize(
    ("written", "environ", "weights"),
    [
        ("", {}, f"yolov8s-worldv2:{DEFAULT_CLIP}"),
        ("", {"AUTOLABEL_YOLO_WORLD_MODEL": "/w/world.pt:/w/clip"}, "/w/world.pt:/w/clip"),
        ("yolov8m-worldv2", {"AUTOLABEL_YOLO_WORLD_MODEL": "/w/world.pt"}, f"yolov8m-worldv2:{DEFAULT_CLIP}"),
        ("/w/my:model.pt", {}, f"/w/my:model.pt:{DEFAULT_CLIP}"),
        ("yolov8x-worldv2:openai/clip-vit-base-patch32", {}, "yolov8x-worldv2:openai/clip-vit-base-patch32"),
        ("/w/world.pt:C:/models/clip", {}, "/w/world.pt:C:/models/clip"),
    ],
)
def test_spec_parsing_fills_the_defaults(written, environ, weights):
    assert BACKEND.parse(written, environ) == weights


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("yolo-world:/w/world.onnx", "a path ending in .pt"),
        ("yolo-world:yolov8s-world", "a path ending in .pt"),
        ("yolo-world:yolov8s-worldv2:", "CLIP text encoder after the checkpoint is empty"),
        ("yolo-world:/w/world.pt: ", "CLIP text encoder after the checkpoint is empty"),
        ("yolo-world:.pt", "checkpoint path is empty"),
    ],
)
def test_a_malformed_spec_is_a_spec_error_quoting_it(spec, message):
    with pytest.raises(ValueError, match=message):
        BACKEND.parse(spec.removeprefix("yolo-world:"), {})
    with pytest.raises(ModelSpecError, match=message) as caught:
        registry.parse_spec(spec, "detector", {})
    assert repr(spec) in str(caught.value)


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_missing_weights_are_one_line_load_errors(tiny, tmp_path, monkeypatch):
    checkpoint, clip = yolo_world.split_weights(tiny)
    with pytest.raises(ModelLoadError) as caught:
        locate_weights(f"{tmp_path}/world.pt:{clip}")
    assert f"{tmp_path}/world.pt" in one_line(caught) and "AUTOLABEL_YOLO_WORLD_MODEL" in one_line(caught)
    with pytest.raises(ModelLoadError) as caught:
        locate_weights("yolov8s-worldv2.pt:" + clip)
    assert "yolo-world:yolov8s-worldv2" in one_line(caught), "a bare file name is a path, never a download"
    with pytest.raises(ModelLoadError) as caught:
        locate_weights(f"{checkpoint}:{tmp_path}/clip")
    assert "CLIP text encoder" in one_line(caught) and "does not exist" in one_line(caught)
    with pytest.raises(ModelLoadError) as caught:
        locate_weights(f"{checkpoint}:openai/clip-vit-large-patch14")  # HF_HUB_OFFLINE (conftest)
    assert "HF_HUB_OFFLINE" in one_line(caught)
    monkeypatch.setenv("AUTOLABEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError) as caught:
        locate_weights(f"yolov8s-worldv2:{clip}")
    assert str(tmp_path / "cache" / "yolo-world" / "yolov8s-worldv2.pt") in one_line(caught)
    assert "offline" in one_line(caught) and "AUTOLABEL_YOLO_WORLD_MODEL" in one_line(caught)
    assert BACKEND.on_disk(f"yolov8s-worldv2:{clip}") is None


def test_unloadable_weights_are_one_line_load_errors(tiny, tmp_path):
    import torch
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection

    checkpoint, clip = yolo_world.split_weights(tiny)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError) as caught:
        load_world_checkpoint(str(garbage))
    assert str(garbage) in one_line(caught)
    plain = tmp_path / "plain.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, plain)
    with pytest.raises(ModelLoadError) as caught:
        load_world_checkpoint(str(plain))
    assert "not a YOLO-World model" in one_line(caught) or "cannot load" in one_line(caught)
    narrow = tmp_path / "narrow-clip"
    tokenizer = AutoTokenizer.from_pretrained(clip)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                            num_attention_heads=2, projection_dim=16, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    CLIPTextModelWithProjection(config).save_pretrained(narrow)
    tokenizer.save_pretrained(narrow)
    with pytest.raises(ModelLoadError) as caught:
        YoloWorld.load(checkpoint, str(narrow), device="cpu")
    assert "16-wide" in one_line(caught) and "512-wide" in one_line(caught)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError) as caught:
        ClipText.load(str(tmp_path / "bert"), device="cpu")
    assert "not a CLIP" in one_line(caught)


def test_public_checkpoints_download_once_and_a_wrong_digest_is_refused(tmp_path, monkeypatch):
    import hashlib

    from huggingface_hub import constants

    source = tmp_path / "served.pt"
    source.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    target = tmp_path / "cache" / "served.pt"
    with pytest.raises(ModelLoadError, match="downloads are off"):
        download_once(PublicCheckpoint(source.as_uri(), digest), target, display="X", hint="set Y")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelLoadError) as caught:
        download_once(PublicCheckpoint(source.as_uri(), "0" * 64), target, display="X", hint="set Y")
    assert "expected " + "0" * 64 in one_line(caught)
    assert list(target.parent.iterdir()) == [], "nothing is kept of a download with the wrong digest"
    fetched = download_once(PublicCheckpoint(source.as_uri(), digest), target, display="X", hint="")
    assert fetched == target and target.read_bytes() == b"weights"
    source.unlink()  # cached now: never fetched again
    assert download_once(PublicCheckpoint(source.as_uri(), digest), target, display="X", hint="") == target
