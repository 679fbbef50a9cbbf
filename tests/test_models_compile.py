"""``--compile``: every backend names the networks its hot path really runs
(`Compilable.compiled_networks`, checked with forward hooks on the real modules), loading with
``ModelSettings(compile=True)`` compiles them in place once per process, the compiled models
give the eager results, and bad settings are one line.

The compiling test uses torch.compile's ``eager`` backend (``AUTOLABEL_COMPILE_BACKEND``):
Dynamo captures the graphs as with ``inductor`` but skips code generation, which takes minutes
on this CPU (``bench/scale.py --compile`` measures the real backend)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

from serverless.images import read_image
from serverless.models import registry
from serverless.models.base import Compilable, compiled_networks, embed_all
from serverless.models.grounded_sam import GroundedSam
from serverless.ontology import parse_ontology
from serverless.pipeline import ModelSettings, ModelSpecError, load_models, load_pipeline
from tests.conftest import SAMPLES
from tests.test_models_protocols import ONTOLOGY, build

NOT_COMPILED = {"yolo", "yolo-world"}
"""Ultralytics networks: their hot path goes through ultralytics' own predictor wrappers, which
the product does not compile."""


@pytest.fixture(scope="module")
def ontology():
    return parse_ontology(ONTOLOGY, "compile.yaml")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    photo = read_image(SAMPLES / "coffee.jpg")
    return [np.ascontiguousarray(photo[:120, :160]), np.ascontiguousarray(photo[40:160, 60:220])]


@contextlib.contextmanager
def calls(modules: dict) -> Iterator[dict[str, int]]:
    """How often each named module's forward ran inside the block."""
    seen = dict.fromkeys(modules, 0)
    handles = []
    for name, module in modules.items():
        def hook(*_args, name=name) -> None:
            seen[name] += 1

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("backend", registry.backends(), ids=lambda b: b.name)
def test_every_named_network_is_what_the_model_runs(backend, tiny_models, ontology, frames):
    model = build(backend, tiny_models.gdino_dir.parent, ontology)
    networks = compiled_networks(model)
    if backend.name in NOT_COMPILED:
        assert networks == {}
        return
    assert isinstance(model, Compilable) and networks
    with calls(networks) as seen:
        if backend.kind == "detector":
            model.detect(frames)
        elif backend.kind == "segmenter":
            embed_all(model, [frame + 1 for frame in frames])  # frames the cache has not seen
        else:
            model.classify(frames)
    assert all(count >= 1 for count in seen.values()), seen


def test_grounded_sam_names_both_models_networks(tiny_models, ontology):
    settings = ModelSettings(gdino_model=str(tiny_models.gdino_dir), sam_checkpoint=str(tiny_models.sam_checkpoint),
                             sam_model_type=str(tiny_models.sam_model_type), device="cpu")
    detector, segmenter = load_models(settings, ontology.part("objects"), masks=True)
    both = GroundedSam(detector, segmenter).compiled_networks()
    assert set(both) == set(compiled_networks(detector)) | set(compiled_networks(segmenter))
    assert len(both) == 2


def test_compiled_models_give_the_eager_results(tmp_path_factory, ontology, frames, monkeypatch):
    """Own tiny weights (other tests' cached models stay uncompiled): the eager results first,
    then the same cached models compiled in place, once however often they are loaded."""
    import torch
    from torch._dynamo.utils import counters

    monkeypatch.setenv(registry.COMPILE_BACKEND_VARIABLE, "eager")
    root = tmp_path_factory.mktemp("compile-tiny")
    specs = {"detector": f"grounding-dino:{registry.backend('grounding-dino').tiny(root, 5)}",
             "segmenter": f"sam:{registry.backend('sam').tiny(root, 5)}",
             "classifier": f"clip:{registry.backend('clip').tiny(root, 5)}", "device": "cpu"}
    detector, classifier = load_pipeline(ModelSettings(**specs), ontology, masks=True)
    expected = detector.detect(frames, threshold=0.0), classifier.classify(frames, threshold=0.0)
    networks = compiled_networks(detector, classifier)
    assert len(networks) == 3
    assert not any(getattr(module, "_compiled_call_impl", None) for module in networks.values())

    torch._dynamo.reset()
    counters.clear()
    compiled, compiled_classifier = load_pipeline(ModelSettings(**specs, compile=True), ontology, masks=True)
    load_pipeline(ModelSettings(**specs, compile=True), ontology, masks=True)  # a second door compiles nothing again
    assert compiled.detector is detector.detector and compiled.segmenter is detector.segmenter
    assert compiled_classifier is classifier
    assert all(getattr(module, "_compiled_call_impl", None) for module in networks.values())
    detector.segmenter._cache.clear()  # SAM's encoder runs again, compiled
    results = compiled.detect(frames, threshold=0.0), compiled_classifier.classify(frames, threshold=0.0)

    assert counters["stats"]["unique_graphs"] >= 3  # Dynamo captured graphs of the three networks
    assert sum(len(d) for d in results[0]) > 0
    for got, want in zip(results[0], expected[0], strict=True):
        assert got.labels.tolist() == want.labels.tolist()
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        assert np.mean(got.masks != want.masks) < 1e-3
    for got, want in zip(results[1], expected[1], strict=True):
        assert got.labels.tolist() == want.labels.tolist()
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_bad_compile_settings_are_one_line(monkeypatch, tiny_models):
    with pytest.raises(ModelSpecError, match=r"AUTOLABEL_COMPILE must be 1, true, yes, 0, false or no, got 'maybe'"):
        ModelSettings.from_env(environ={"AUTOLABEL_COMPILE": "maybe"})
    assert ModelSettings.from_env(environ={"AUTOLABEL_COMPILE": "yes"}).compile
    assert not ModelSettings.from_env(environ={}).compile
    assert not ModelSettings.from_env(compile=False, environ={"AUTOLABEL_COMPILE": "1"}).compile
    monkeypatch.setenv(registry.COMPILE_BACKEND_VARIABLE, "turbo")
    with pytest.raises(registry.ModelLoadError, match=r"torch.compile backend 'turbo' \(from AUTOLABEL_COMPILE_BACKEND\)"
                       r" is not one of .*inductor"):
        registry.compile_models()
