"""The ``yolo`` backend (a trained ultralytics detection checkpoint) on tiny random weights in the
real format: spec and errors, class mapping, post-processing, batching, the NMS-free layout,
baking the checkpoint into a rendered function, and the revision a pre-label run records.
(Its conformance, cvat-sdk module and served function: the backend-generic tests.)"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from serverless.images import read_image
from serverless.models import registry
from serverless.models.registry import ModelLoadError, ModelSpecError
from serverless.models.tiny import is_tiny
from serverless.models.tiny_yolo import IMGSZ, TINY_CLASSES, tiny_yaml, write_tiny_yolo
from serverless.models.yolo import BACKEND, ENV, Yolo, head_output, label_rows, load_yolo_checkpoint, locate_weights
from serverless.models.yolo_world import world_detections
from serverless.ontology import OntologyError, parse_ontology
from serverless.pipeline import ModelSettings
from serverless.weights import file_sha256
from tests.conftest import SAMPLES

ONTOLOGY = parse_ontology("""\
defaults: {threshold: 0.2, max_detections: 100}
labels:
  - {name: cup, threshold: 0.5}
  - {name: person}
  - {name: dog, threshold: 0.35}
""")
"""Three of the tiny checkpoint's eight classes, not in its order; the other five are ignored."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return BACKEND.tiny(tmp_path_factory.mktemp("tiny-yolo"), 0)


@pytest.fixture(scope="module")
def yolo(tiny) -> Yolo:
    return Yolo.load(tiny, device="cpu")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    photos = [read_image(path) for path in sorted(SAMPLES.glob("*.jpg"))]
    small = np.random.default_rng(0).integers(0, 255, (30, 41, 3), dtype=np.uint8)
    return [*photos, small, np.ascontiguousarray(photos[0][::-1])]


def one_line(caught: pytest.ExceptionInfo) -> str:
    text = str(caught.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- checkpoint and spec


def test_the_tiny_checkpoint_is_what_training_writes(tiny, yolo, tmp_path):
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    model = YOLO(tiny).model
    assert type(model) is DetectionModel and tuple(model.names.values()) == TINY_CLASSES
    assert is_tiny(tiny) and BACKEND.on_disk(tiny) == tiny
    assert BACKEND.tiny(Path(tiny).parent.parent, 0) == tiny, "idempotent: reused"
    assert yolo.names == TINY_CLASSES and yolo.imgsz == IMGSZ
    assert not any(module.training for module in yolo.model.modules())
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in yolo.model.parameters())
    assert yolo.model.is_fused()
    assert Yolo.load(tiny, device="cpu") is yolo, "loaded once per process"


def test_spec_is_a_pt_path_or_the_variable(tiny):
    assert registry.parse_spec(f"yolo:{tiny}", "detector", {}).weights == tiny
    assert registry.parse_spec("yolo", "detector", {ENV: tiny}).weights == tiny
    assert registry.parse_spec("yolo", "detector", {}).weights == ""
    with pytest.raises(ModelSpecError, match=r"path of an ultralytics \.pt file.*'runs/best'"):
        registry.parse_spec("yolo:runs/best", "detector", {})
    with pytest.raises(ModelSpecError, match=f"from {ENV}"):
        registry.parse_spec("yolo", "detector", {ENV: "best.onnx"})


def test_a_bare_spec_without_the_variable_says_to_give_a_path():
    spec = registry.parse_spec("yolo", "detector", {})
    with pytest.raises(ModelLoadError) as caught:
        registry.locate(spec)
    assert "no default weights" in one_line(caught) and "yolo:PATH" in one_line(caught) and ENV in one_line(caught)
    assert BACKEND.on_disk("") is None


def test_a_missing_file_is_one_line_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for missing in (str(tmp_path / "gone.pt"), "yolo11n.pt"):  # the second: an ultralytics asset name
        with pytest.raises(ModelLoadError) as caught:
            locate_weights(missing)
        assert missing in one_line(caught) and "does not exist" in one_line(caught) and "yolo:PATH" in one_line(caught)
        with pytest.raises(ModelLoadError, match="does not exist"):
            load_yolo_checkpoint(missing)
        assert BACKEND.on_disk(missing) is None
    assert list(tmp_path.iterdir()) == []


def write_other_task(directory: Path, head: str, task: str) -> Path:
    """A tiny checkpoint of another task, written as `write_tiny_yolo` writes a detection one."""
    from ultralytics import YOLO

    directory.mkdir(parents=True, exist_ok=True)
    text = tiny_yaml(3)
    if head == "Classify":
        text = text[: text.index("head:")] + "head:\n  - [-1, 1, Classify, [nc]]\n"
    else:
        text = text.replace("Detect, [nc]", head)
    config = directory / f"{task}.yaml"
    config.write_text(text, encoding="utf-8")
    model = YOLO(str(config), task=task, verbose=False)
    model.ckpt = {"train_args": {"imgsz": 64, "task": task}}
    model.save(directory / f"{task}.pt")
    return directory / f"{task}.pt"


@pytest.mark.parametrize(("head", "task", "held"), [("Segment, [nc, 8, 16]", "segment", "SegmentationModel"),
                                                    ("Classify", "classify", "ClassificationModel")])
def test_a_checkpoint_of_another_task_is_refused_naming_what_it_holds(head, task, held, tmp_path):
    checkpoint = write_other_task(tmp_path, head, task)
    with pytest.raises(ModelLoadError) as caught:
        load_yolo_checkpoint(str(checkpoint))
    assert str(checkpoint) in one_line(caught) and f"holds {held} (task '{task}')" in one_line(caught)
    assert "not a detection model" in one_line(caught)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot load YOLO checkpoint .*garbage.pt"):
        load_yolo_checkpoint(str(garbage))


# --------------------------------------------------------------------------- binding


def test_each_label_is_the_class_of_its_name_in_ontology_order(yolo):
    assert yolo.class_ids(ONTOLOGY) == [TINY_CLASSES.index(name) for name in ("cup", "person", "dog")]
    detector = yolo.bind(ONTOLOGY)
    assert detector.labels == ("cup", "person", "dog") and detector.rows.tolist() == [5, 0, 3]


def test_a_label_the_checkpoint_lacks_is_refused_when_bound_naming_labels_and_classes(tiny):
    ontology = parse_ontology("labels:\n  - {name: person}\n  - {name: helmet}\n  - {name: Cat}\n")
    spec = registry.parse_spec(f"yolo:{tiny}", "detector", {})
    with pytest.raises(OntologyError) as caught:
        registry.load_detector(spec, ontology, device="cpu")
    line = one_line(caught)
    assert "'helmet', 'Cat'" in line and "'person'," not in line.split("its classes")[0], "exact names only"
    assert tiny in line and "its classes are " + ", ".join(map(repr, TINY_CLASSES)) in line


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_label_rows_keep_the_boxes_and_the_mapped_classes_in_label_order(yolo, data):
    import torch

    labels = data.draw(st.lists(st.sampled_from(TINY_CLASSES), min_size=1, max_size=8, unique=True))
    ontology = parse_ontology(json.dumps({"labels": [{"name": name} for name in labels]}))
    rows = torch.tensor(yolo.class_ids(ontology))
    out = torch.rand(2, 4 + len(TINY_CLASSES), 7, generator=torch.Generator().manual_seed(len(labels)))
    got = label_rows(out, rows)
    assert got.shape == (2, 4 + len(labels), 7) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, :4], out[:, :4].numpy())
    for i, name in enumerate(labels):
        np.testing.assert_array_equal(got[:, 4 + i], out[:, 4 + TINY_CLASSES.index(name)].numpy())


def synthetic_head(scores: dict[int, dict[str, float]], anchors: int = 6) -> np.ndarray:
    """(1, 4 + 8, A) head output of the tiny checkpoint's classes: anchor ``a`` is a 16x16 box
    at (8 + 8a, 32) of the 64x64 input scoring ``scores[a][class]`` (0 elsewhere)."""
    out = np.zeros((1, 4 + len(TINY_CLASSES), anchors), np.float32)
    out[0, 0] = 8 + 8 * np.arange(anchors)
    out[0, 1], out[0, 2], out[0, 3] = 32, 16, 16
    for anchor, by_class in scores.items():
        for name, score in by_class.items():
            out[0, 4 + TINY_CLASSES.index(name), anchor] = score
    return out


def decoded(yolo, out: np.ndarray, threshold: float | None = None, image_shape=(64, 64)):
    import torch

    pred = label_rows(torch.from_numpy(out), yolo.bind(ONTOLOGY).rows)[0]
    return world_detections(pred, ONTOLOGY, ONTOLOGY.thresholds_or(threshold), input_shape=(IMGSZ, IMGSZ),
                            image_shape=image_shape)


def test_ignored_classes_never_appear_and_each_label_keeps_its_threshold(yolo):
    out = synthetic_head({
        0: {"truck": 0.99, "person": 0.3},  # the truck is ignored: the box is a person at 0.3
        1: {"bicycle": 0.9},  # nothing the ontology names
        2: {"cup": 0.45},  # under cup's own 0.5
        3: {"cup": 0.55, "dog": 0.4},  # a cup: its best label
        4: {"dog": 0.3},  # under dog's 0.35
        5: {"dog": 0.36},
    })
    det = decoded(yolo, out)
    assert sorted(zip(det.labels.tolist(), [round(float(score), 2) for score in det.scores])) == [
        ("cup", 0.55), ("dog", 0.36), ("person", 0.3)]
    assert det.labels.tolist() == [ONTOLOGY.label_names[i] for i in det.class_ids]
    override = decoded(yolo, out, threshold=0.4)
    assert sorted(override.labels.tolist()) == ["cup", "cup"], "0.4 for every label: both cups, no dog at 0.36"


def test_boxes_are_scaled_back_through_the_letterbox_the_images_went_through(yolo):
    image = np.full((32, 128, 3), 255, np.uint8)  # letterboxed to 64x64: scale 1/2, 24 rows of padding above
    pixels = yolo.preprocess([image])[0].numpy()
    content = np.flatnonzero(pixels[0].max(axis=1) > 0.9)
    assert (content.min(), content.max()) == (24, 39)
    det = decoded(yolo, synthetic_head({3: {"person": 0.9}}), image_shape=image.shape[:2])
    np.testing.assert_allclose(det.xyxy, [[48, 0, 80, 32]], atol=0.01)  # the input's 24..40 square, scaled back


# --------------------------------------------------------------------------- the network


def test_results_do_not_depend_on_batching_across_chunks(yolo, frames):
    detector = yolo.bind(ONTOLOGY)
    many = (frames * 3)[:10]  # more than one chunk (BATCH 8)
    together = detector.detect(many)
    assert sum(len(det) for det in together) > 0
    for det, image in zip(together, many, strict=True):
        (alone,) = detector.detect([image])
        assert alone.labels.tolist() == det.labels.tolist()
        np.testing.assert_allclose(alone.xyxy, det.xyxy, atol=0.01)  # pixels of a 512 px image, input 64 px
        np.testing.assert_allclose(alone.scores, det.scores, atol=1e-5)


def test_ontology_order_changes_the_ids_only(yolo, frames):
    other = parse_ontology("""\
defaults: {threshold: 0.2, max_detections: 100}
labels:
  - {name: dog, threshold: 0.35}
  - {name: cup, threshold: 0.5}
  - {name: person}
""")
    for a, b in zip(yolo.bind(ONTOLOGY).detect(frames), yolo.bind(other).detect(frames), strict=True):
        key = lambda det: sorted(zip(det.labels.tolist(), np.round(det.scores, 5).tolist()))  # noqa: E731
        assert key(a) == key(b)


def test_an_end_to_end_checkpoint_is_read_from_its_one_to_one_branch(tmp_path, frames):
    import torch

    checkpoint = write_tiny_yolo(tmp_path / "e2e", 0, end2end=True)
    model = Yolo.load(str(checkpoint), device="cpu")
    head = model.model.model[-1]
    assert head.end2end, "saved and loaded in end-to-end mode"
    with torch.inference_mode():
        raw = model.model.predict(model.preprocess(frames[:2]))
        out = head_output(head, raw)
    top = raw[0]  # ultralytics' own end-to-end output: top-k (x1, y1, x2, y2, score, class)
    assert out.shape == (2, 4 + len(TINY_CLASSES), top.shape[1]) != top.shape
    for b in range(2):
        anchor = int(out[b, 4:].max(dim=0).values.argmax())
        cx, cy, w, h = out[b, :4, anchor].tolist()
        np.testing.assert_allclose([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], top[b, 0, :4], atol=1e-3)
        assert float(out[b, 4:, anchor].max()) == pytest.approx(float(top[b, 0, 4]))
    results = model.bind(ONTOLOGY).detect(frames)
    assert sum(len(det) for det in results) > 0


# --------------------------------------------------------------------------- rendering


def rendered_config(function, name: str = "function.yaml") -> dict:
    return yaml.safe_load(function.files[name])


def fetch_command(config: dict) -> str:
    post = config["spec"]["build"]["directives"]["postCopy"]
    return next(d["value"] for d in post if "serverless.weights fetch" in d["value"])


def test_render_bakes_a_local_checkpoint_and_the_build_fetches_it(tiny, tmp_path):
    from serverless import weights
    from serverless.render import RenderOptions, render, write_functions

    ontology = parse_ontology("name: site\nlabels:\n  - {name: person}\n  - {name: cup, type: mask}\n")
    functions = {f.kind: f for f in render(ontology, options=RenderOptions(detector=f"yolo:{tiny}"))}
    assert list(functions) == ["yolo", "yolo-sam", "sam", "sam-interactor"]
    digest = file_sha256(tiny).removeprefix("sha256:")
    for kind in ("yolo", "yolo-sam"):
        function = functions[kind]
        assert function.copies == {"weights/yolo-tiny.pt": Path(tiny).resolve()}
        for name in ("function.yaml", "function-gpu.yaml"):
            config = rendered_config(function, name)
            env = {item["name"]: item["value"] for item in config["spec"]["env"]}
            assert env["AUTOLABEL_DETECTOR"] == "yolo:/opt/weights/yolo/yolo-tiny.pt"
            assert f"--file yolo=file:///opt/nuclio/weights/yolo-tiny.pt#sha256={digest}" in fetch_command(config)
            assert any("[models,yolo]" in d["value"] for d in config["spec"]["build"]["directives"]["postCopy"])
            assert f"sha256 {digest}" in function.files[name].split("metadata:")[0]
    assert functions["sam"].copies == {} and functions["sam-interactor"].copies == {}
    assert render(ontology, options=RenderOptions(detector=f"yolo:{tiny}")) == list(functions.values()), "deterministic"
    (directory, *_) = write_functions([functions["yolo"]], tmp_path / "out")
    assert file_sha256(directory / "weights" / "yolo-tiny.pt") == file_sha256(tiny)
    # the build: the directory copied to /opt/nuclio, then the rendered fetch command
    args = shlex.split(fetch_command(rendered_config(functions["yolo"])))[3:]
    args = [arg.replace("file:///opt/nuclio", directory.resolve().as_uri()) for arg in args]
    args[args.index("--dest") + 1] = str(tmp_path / "opt-weights")
    assert weights.main(args) == 0
    fetched = tmp_path / "opt-weights" / "yolo" / "yolo-tiny.pt"
    assert file_sha256(fetched) == file_sha256(tiny)
    spec = registry.parse_spec(f"yolo:{fetched}", "detector", {})
    assert registry.load_detector(spec, ontology, device="cpu").labels == ("person", "cup")


def test_render_fetches_a_pinned_url_instead_and_refuses_what_it_cannot_build(tiny, tmp_path):
    from serverless.render import RenderError, RenderOptions, render

    ontology = parse_ontology("labels:\n  - {name: person}\n")
    url = f"https://example.org/w/best.pt#sha256={'ef' * 32}"
    pinned = RenderOptions(detector=f"yolo:{tiny}", weights=(("yolo", url),))
    (function, *_) = render(ontology, "detector", pinned)
    config = rendered_config(function)
    assert function.copies == {}
    env = {item["name"]: item["value"] for item in config["spec"]["env"]}
    assert env["AUTOLABEL_DETECTOR"] == "yolo:/opt/weights/yolo/best.pt"
    assert f"--file yolo={url}" in fetch_command(config)
    for options, message in [
        (RenderOptions(detector=f"yolo:{tmp_path}/gone.pt"), f"yolo checkpoint {tmp_path}/gone.pt does not exist"),
        (RenderOptions(detector="yolo"), "--detector yolo:PATH (a local .pt file"),
        (RenderOptions(detector="yolo", weights=(("yolo", "https://example.org/best.pt"),)), "--weights yolo: "),
    ]:
        with pytest.raises(RenderError) as caught:
            render(ontology, "detector", options)
        assert message in one_line(caught)


def test_the_cli_renders_a_baked_function_and_names_a_missing_checkpoint(tiny, tmp_path):
    from typer.testing import CliRunner

    from sync.commands.functions import app

    ontology = tmp_path / "site.yaml"
    ontology.write_text("labels:\n  - {name: dog}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["render", "--ontology", str(ontology), "--out", str(tmp_path / "out"),
                                      "--detector", f"yolo:{tiny}", "--kinds", "detector"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "yolo" / "weights" / "yolo-tiny.pt").is_file()
    refused = CliRunner().invoke(app, ["render", "--ontology", str(ontology), "--out", str(tmp_path / "o2"),
                                       "--detector", f"yolo:{tmp_path}/best.pt"])
    assert refused.exit_code == 2 and f"{tmp_path}/best.pt" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "o2").exists()


# --------------------------------------------------------------------------- provenance


def test_a_yolo_run_records_its_checkpoint_digest_and_resumes_only_with_it(tiny, tmp_path):
    import shutil

    from sync.prelabel_store import RunRecorder
    from sync.store import open_store

    checkpoint = tmp_path / "best.pt"
    shutil.copyfile(tiny, checkpoint)
    yolo_settings = ModelSettings(detector=f"yolo:{checkpoint}")
    assert yolo_settings.model_revision(ONTOLOGY) == file_sha256(tiny)
    assert yolo_settings.model_revision(parse_ontology("labels: [{name: sunny, type: tag}]\n")) is None
    assert ModelSettings().model_revision(ONTOLOGY) is None
    assert ModelSettings(detector=f"yolo:{tmp_path}/gone.pt").model_revision(ONTOLOGY) is None
    with open_store(tmp_path / "store.db") as store:
        first = RunRecorder(store, "site", None, ONTOLOGY, yolo_settings, {})
        assert first.run.model_revision == file_sha256(tiny)
        assert RunRecorder(store, "site", None, ONTOLOGY, yolo_settings, {}).resumed
        checkpoint.write_bytes(checkpoint.read_bytes() + b"retrained")
        again = RunRecorder(store, "site", None, ONTOLOGY, yolo_settings, {})
        assert not again.resumed and "model revision" in again.note
        assert again.run.model_revision == file_sha256(checkpoint) != first.run.model_revision


def test_make_tiny_prints_the_yolo_spec(tmp_path):
    from typer.testing import CliRunner

    from sync.commands.models import app

    result = CliRunner().invoke(app, ["make-tiny", str(tmp_path), "--backend", "yolo"])
    assert result.exit_code == 0, result.output
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    spec = registry.parse_spec(shlex.split(exports["AUTOLABEL_TINY_YOLO"])[0], "detector", {})
    assert spec.backend == "yolo" and BACKEND.on_disk(spec.weights) == spec.weights and is_tiny(spec.weights)


def test_the_served_detector_function_lists_its_labels(tiny, tmp_path):
    """A rendered, baked ``yolo`` function served by ``autolabel serve`` (its variable pointed at
    where the build fetches the checkpoint) answers CVAT with the ontology's labels."""
    from serverless.render import RenderOptions, render_functions
    from serverless.serve import FunctionHost, ServeOptions
    from tests.test_serve import CVAT_DASHBOARD_HEADERS, INVOKE, call, cvat_body, invocation_headers, png_b64

    ontology = parse_ontology("name: yard\nlabels:\n  - {name: truck}\n  - {name: person}\n")
    options = RenderOptions(detector=f"yolo:{tiny}")
    (directory,) = render_functions(ontology, tmp_path / "functions", "detector", options)
    path = directory / "function.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for item in config["spec"]["env"]:
        if item["name"] == "AUTOLABEL_DETECTOR":
            item["value"] = f"yolo:{directory / 'weights' / 'yolo-tiny.pt'}"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral")) as host:
        listing = call(host.dashboard_port, "GET", "/api/functions", CVAT_DASHBOARD_HEADERS).json()
        spec = json.loads(listing["yard-yolo"]["metadata"]["annotations"]["spec"])
        assert [(label["name"], label["type"]) for label in spec] == [("truck", "rectangle"), ("person", "rectangle")]
        answer = call(host.dashboard_port, "POST", INVOKE, invocation_headers("yard-yolo"),
                      cvat_body(image=png_b64(160, 120), threshold=0.0))
    assert answer.status == 200, answer.body[:500]
    items = answer.json()
    assert items and {item["label"] for item in items} <= {"truck", "person"}
    assert {item["type"] for item in items} == {"rectangle"}
