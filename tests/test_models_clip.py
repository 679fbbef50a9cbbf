"""The ``clip`` classifier backend (`serverless.models.clip`): prompt templates, label
embeddings, softmax vs sigmoid scoring and tag selection on seeded synthetic embeddings; text
embeddings once per ontology; too-long prompts refused; tiny CLIP and SigLIP end to end through
the registry; missing weights in one line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serverless.models import registry
from serverless.models.base import Classifier, Tags
from serverless.models.clip import (
    DEFAULT_CLIP_MODEL,
    TEMPLATES,
    ClipModel,
    PromptText,
    label_embeddings,
    label_scores,
    prompt_texts,
    select_tags,
)
from serverless.models.registry import ModelLoadError
from serverless.models.tiny_clip import make_tiny_clip
from serverless.ontology import Ontology, OntologyError, parse_ontology

TAGS = """\
defaults: {threshold: 0.0, max_detections: 10}
labels:
  - {name: person, type: rectangle}
  - {name: sunny, prompts: [a sunny day, 'a photo taken on a {} day'], type: tag}
  - {name: indoor, prompts: [indoors, inside a room], type: tag}
  - {name: night, type: tag}
"""


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-clip")
    return {family: make_tiny_clip(root, family=family) for family in ("clip", "siglip")}


@pytest.fixture(scope="module")
def ontology() -> Ontology:
    return parse_ontology(TAGS, "tags.yaml")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((48, 64, 3), (31, 17, 3), (64, 48, 3))]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --------------------------------------------------------------------------- prompts → label embeddings


def test_prompts_are_put_in_every_template_unless_they_hold_a_template_of_their_own(ontology):
    tags = ontology.part("tags")
    texts = prompt_texts(tags)
    sunny = [t for t in texts if t.label_id == 0]
    assert [t.text for t in sunny if t.prompt == 0] == [template.format("a sunny day") for template in TEMPLATES]
    assert [t.text for t in sunny if t.prompt == 1] == ["a photo taken on a sunny day"]
    assert {(t.label_id, t.prompt) for t in texts} == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)}
    assert [t.text for t in texts if t.label_id == 2] == [template.format("night") for template in TEMPLATES]


def test_label_embedding_averages_templates_then_prompts_and_renormalises():
    rng = np.random.default_rng(1)
    texts = [PromptText("a", 0, 0), PromptText("b", 0, 0), PromptText("c", 0, 0), PromptText("d", 0, 1),
             PromptText("e", 1, 0)]
    embeds = rng.normal(size=(5, 8)).astype(np.float32)
    scaled = embeds * np.array([[3.0], [0.1], [7.0], [0.5], [2.0]], np.float32)  # lengths do not matter
    got = label_embeddings(scaled, texts, 2)
    first = unit(embeds[:3]).mean(axis=0)  # prompt 0: three templates
    expected0 = unit((first + unit(embeds[3])) / 2)  # each prompt weighs the same
    np.testing.assert_allclose(got[0], expected0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], unit(embeds[4]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="labels \\[2\\] have no text embedding"):
        label_embeddings(embeds, texts, 3)


# --------------------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def embeds():
    rng = np.random.default_rng(2)
    return rng.normal(size=(4, 16)).astype(np.float32), rng.normal(size=(3, 16)).astype(np.float32)


def test_clip_scores_are_a_softmax_over_the_labels(embeds):
    images, labels = embeds
    scores = label_scores(images * 5, labels * 0.2, scoring="softmax", logit_scale=100.0)
    logits = 100.0 * unit(images) @ unit(labels).T
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(scores, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert scores.dtype == np.float32
    # single-label: a label added to the ontology takes probability from the others
    more = label_scores(images, np.vstack([labels, images[:1]]), scoring="softmax", logit_scale=100.0)
    assert np.all(more[:, :3] <= scores + 1e-6) and more[0, 3] > scores[0].max() - 1e-6


def test_siglip_scores_are_a_sigmoid_per_label_with_the_bias(embeds):
    images, labels = embeds
    scores = label_scores(images, labels, scoring="sigmoid", logit_scale=10.0, logit_bias=-2.0)
    logits = 10.0 * unit(images) @ unit(labels).T - 2.0
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-7)
    assert not np.allclose(scores.sum(axis=1), 1.0)
    # multi-label: each label is scored on its own
    more = label_scores(images, np.vstack([labels, images[:1]]), scoring="sigmoid", logit_scale=10.0, logit_bias=-2.0)
    np.testing.assert_allclose(more[:, :3], scores, rtol=1e-6)
    extreme = label_scores(images, labels, scoring="sigmoid", logit_scale=1e4, logit_bias=-1e4)
    assert np.all(np.isfinite(extreme)) and np.all((extreme >= 0) & (extreme <= 1))
    with pytest.raises(ValueError, match="scoring"):
        label_scores(images, labels, scoring="max", logit_scale=1.0)  # type: ignore[arg-type]


def test_tags_keep_scores_at_or_over_each_labels_threshold_then_the_top_k_in_descending_order():
    names = ("a", "b", "c", "d", "e")
    scores = np.array([0.10, 0.70, 0.40, 0.70, 0.05], np.float32)
    thresholds = np.array([0.10, 0.80, 0.30, 0.20, 0.0], np.float32)
    tags = select_tags(scores, thresholds, names, 10)
    assert isinstance(tags, Tags)
    assert tags.class_ids.tolist() == [3, 2, 0, 4]  # b is under its 0.8; a is kept at exactly 0.10
    assert tags.labels.tolist() == ["d", "c", "a", "e"]
    np.testing.assert_array_equal(tags.scores, scores[[3, 2, 0, 4]])
    assert select_tags(scores, thresholds, names, 2).class_ids.tolist() == [3, 2]
    everyone = np.zeros(5, np.float32)
    assert select_tags(scores, everyone, names, 3).class_ids.tolist() == [1, 3, 2]  # a tie: lower id first
    assert len(select_tags(scores, np.ones(5, np.float32), names, 10)) == 0


# --------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def clip_model(tiny_dirs) -> ClipModel:
    """A fresh (not process-cached) tiny CLIP, so call counts are this module's own."""
    return ClipModel._from_pretrained(str(tiny_dirs["clip"]), "cpu")


def test_text_is_embedded_once_per_ontology_and_images_once_per_call(clip_model, ontology, images, monkeypatch):
    calls = {"text": 0, "image": 0, "image_rows": 0}
    text_features = clip_model.model.get_text_features
    image_features = clip_model.model.get_image_features

    def count_text(**kwargs):
        calls["text"] += 1
        return text_features(**kwargs)

    def count_images(**kwargs):
        calls["image"] += 1
        calls["image_rows"] += kwargs["pixel_values"].shape[0]
        return image_features(**kwargs)

    monkeypatch.setattr(clip_model.model, "get_text_features", count_text)
    monkeypatch.setattr(clip_model.model, "get_image_features", count_images)
    classifier = clip_model.bind(ontology)
    assert isinstance(classifier, Classifier) and classifier.labels == ("sunny", "indoor", "night")
    assert calls["text"] == 1  # 2 + 1 + 7 + 7 + 7 + 7 texts, one pass
    for _ in range(3):
        classifier.classify(images)
    clip_model.bind(ontology).classify(images[:1])
    assert calls == {"text": 1, "image": 4, "image_rows": 10}
    clip_model.bind(ontology.with_thresholds({"night": 0.5}))  # another ontology: its own embeddings
    assert calls["text"] == 2


def test_scores_thresholds_override_and_top_k_through_the_model(clip_model, ontology, images):
    classifier = clip_model.bind(ontology)
    everything = classifier.classify(images)  # threshold 0: every label, descending
    for tags in everything:
        assert sorted(tags.class_ids.tolist()) == [0, 1, 2]
        assert np.all(np.diff(tags.scores) <= 0)
        assert tags.labels.tolist() == [classifier.labels[i] for i in tags.class_ids]
        assert math.isclose(float(tags.scores.sum()), 1.0, rel_tol=1e-5)  # CLIP: one softmax
    full = np.zeros((len(images), 3), np.float32)
    for row, tags in zip(full, everything, strict=True):
        row[tags.class_ids] = tags.scores
    # per-label thresholds: night's just over its score on image 0, indoor's just under
    tuned = ontology.with_thresholds({"night": float(full[0, 2]) + 1e-4, "indoor": float(full[0, 1]) - 1e-4})
    (first,) = clip_model.bind(tuned).classify(images[:1])
    assert 2 not in first.class_ids.tolist() and 1 in first.class_ids.tolist()
    # the override replaces every label's threshold
    cut = float(np.median(full))
    for tags, row in zip(classifier.classify(images, threshold=cut), full, strict=True):
        assert sorted(tags.class_ids.tolist()) == sorted(np.flatnonzero(row >= cut).tolist())
    top1 = parse_ontology(TAGS.replace("max_detections: 10", "max_detections: 1"))
    for tags, row in zip(clip_model.bind(top1).classify(images), full, strict=True):
        assert tags.class_ids.tolist() == [int(row.argmax())]


def test_a_prompt_longer_than_the_text_context_is_refused_when_bound(clip_model, tiny_dirs):
    # "cat" and "dog" are one token each in the tiny vocabulary: <start> + 74 + dog + <end> = 77 tokens
    fits = parse_ontology("labels: [{name: dog, type: tag, prompts: ['%s {}']}]" % ("cat " * 74).strip())
    assert clip_model.bind(fits).labels == ("dog",)
    long = parse_ontology("labels: [{name: dog, type: tag, prompts: ['%s {}']}]" % ("cat " * 75).strip())
    with pytest.raises(OntologyError, match=r"tag label 'dog': prompt 'cat cat .*\{\}' is 78 tokens .* more than the 77") as err:
        clip_model.bind(long)
    assert "\n" not in str(err.value)
    siglip = ClipModel._from_pretrained(str(tiny_dirs["siglip"]), "cpu")
    words = parse_ontology("labels: [{name: night, type: tag, prompts: ['%s']}]" % " ".join(["sky"] * 70))
    with pytest.raises(OntologyError, match="tag label 'night': prompt 'sky sky .* more than the 64"):
        siglip.bind(words)


# --------------------------------------------------------------------------- end to end


def load(tiny_dirs, family: str, ontology: Ontology):
    spec = registry.parse_spec(f"clip:{tiny_dirs[family]}", "classifier", {})
    return registry.load_classifier(spec, ontology, device="cpu", source=registry.locate(spec, download=False))


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_tiny_models_classify_through_the_registry(family, tiny_dirs, ontology, images):
    classifier = load(tiny_dirs, family, ontology)
    assert isinstance(classifier, Classifier)
    assert classifier.labels == ("sunny", "indoor", "night")  # the tag labels only, in order
    assert classifier.classify([]) == []
    batch = classifier.classify(images)
    assert len(batch) == len(images)
    for tags, image in zip(batch, images, strict=True):  # batching changes nothing
        (alone,) = classifier.classify([image])
        assert alone.class_ids.tolist() == tags.class_ids.tolist()
        np.testing.assert_allclose(alone.scores, tags.scores, atol=1e-5)
    sums = np.array([tags.scores.sum() for tags in batch])
    one = load(tiny_dirs, family, parse_ontology("labels: [{name: night, type: tag}]"))
    (single,) = one.classify(images[:1], threshold=0.0)
    model = classifier.model
    if family == "clip":
        assert model.scoring == "softmax" and model.family == "clip"
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
        assert single.scores.tolist() == [1.0]  # a softmax over one label
    else:
        assert model.scoring == "sigmoid" and model.family == "siglip"
        assert (model.logit_scale, model.logit_bias) == pytest.approx((math.exp(2.0), -1.0))
        assert not np.allclose(sums, 1.0)
        assert 0.0 < single.scores[0] < 0.999  # a sigmoid of its own
        expected = label_scores(
            model.encode_images(images[:1]),
            model.label_embeddings(one.ontology),
            scoring="sigmoid",
            logit_scale=model.logit_scale,
            logit_bias=model.logit_bias,
        )
        np.testing.assert_allclose(single.scores, expected[0], rtol=1e-5)
    with pytest.raises(ValueError, match="threshold"):
        classifier.classify(images[:1], threshold=1.5)


def test_the_classifier_spec_defaults_and_environment():
    assert registry.parse_spec("clip", "classifier", {}).weights == DEFAULT_CLIP_MODEL
    assert registry.parse_spec("clip", "classifier", {"AUTOLABEL_CLIP_MODEL": "/m/siglip"}).weights == "/m/siglip"
    assert registry.parse_spec("clip:google/siglip-base-patch16-224", "classifier", {}).text == (
        "clip:google/siglip-base-patch16-224"
    )
    with pytest.raises(registry.ModelSpecError, match="clip is a classifier, not a detector"):
        registry.parse_spec("clip", "detector", {})


def test_missing_or_wrong_weights_are_one_line_model_load_errors(tmp_path):
    def one_line(err: pytest.ExceptionInfo) -> str:
        assert "\n" not in str(err.value)
        return str(err.value)

    with pytest.raises(ModelLoadError, match="cannot load CLIP from .*gone.*the directory does not exist") as err:
        registry.locate(registry.parse_spec(f"clip:{tmp_path}/gone", "classifier", {}))
    one_line(err)
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache") as err:
        registry.locate(registry.parse_spec("clip:acme/never-cached", "classifier", {}), download=False)
    assert "AUTOLABEL_CLIP_MODEL" in one_line(err)
    with pytest.raises(ModelLoadError, match=f"cannot load CLIP from '{tmp_path}'") as err:
        ClipModel._from_pretrained(str(tmp_path), "cpu")  # an empty directory
    one_line(err)
    from transformers import BertConfig

    BertConfig(num_hidden_layers=1).save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(ModelLoadError, match="model_type 'bert' is not one of clip, siglip, siglip2") as err:
        ClipModel._from_pretrained(str(tmp_path / "bert"), "cpu")
    one_line(err)
