"""Tags in files and on the command line: ``autolabel prelabel --out`` writes an image's tags on
its COCO entry, `autolabel import` reads them back into the store, `autolabel export` writes
them again (COCO) or leaves them out (YOLO); COCO readers take such files as they are. The
classifier's resolution (`ModelSettings`) and its one-line errors (exit 2). The CVAT tag
converters."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from serverless.convert.coco import CocoFormatError, CocoImage, from_coco, from_coco_tags, image_tags, to_coco
from serverless.detections import Detections
from serverless.models.base import Tags
from serverless.ontology import parse_ontology
from serverless.pipeline import ModelSettings, ModelSpecError
from sync.cli import app
from sync.store import open_store
from sync.store.convert import split_tags
from tests.conftest import ROOT, SAMPLES

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TAGS_ONLY = """\
defaults: {threshold: 0.0}
labels:
  - name: indoor
    type: tag
  - name: outdoor
    type: tag
"""
OBJECTS = "labels: [{name: cat}]\n"
MIXED = "labels: [{name: cat}, {name: indoor, type: tag}]\n"
PHOTOS = ("astronaut.jpg", "chelsea.jpg")


def tags(names, scores=None):
    scores = [1.0] * len(names) if scores is None else scores
    return Tags(class_ids=np.arange(len(names)), scores=np.asarray(scores, np.float32), labels=np.asarray(names, str))


def boxes(xyxy, names):
    n = len(names)
    return Detections(
        xyxy=np.asarray(xyxy, np.float32).reshape(n, 4), scores=np.full(n, 0.75, np.float32),
        class_ids=np.zeros(n, np.int64), labels=np.asarray(names, str) if n else np.zeros(0, "<U1"),
    )


# ----------------------------------------------------------------------------- COCO
def test_tags_go_on_the_image_entry_and_read_back():
    images = [CocoImage(1, "a.png", 40, 30), CocoImage(2, "b.png", 40, 30)]
    data = to_coco(
        images, [boxes([[1, 2, 10, 12]], ["cat"]), boxes([], [])], ["cat", "indoor", "outdoor"],
        tags=[tags(["outdoor", "indoor"], [0.875, 0.125]), tags([])],
    )
    assert data["images"][0]["tags"] == [{"category_id": 3, "score": 0.875}, {"category_id": 2, "score": 0.125}]
    assert data["images"][1]["tags"] == [] and len(data["annotations"]) == 1  # no annotation for a tag
    back = from_coco_tags(json.loads(json.dumps(data)), source="t.json")
    assert [(t.labels.tolist(), t.scores.tolist(), t.class_ids.tolist()) for t in back] == [
        (["outdoor", "indoor"], [0.875, 0.125], [2, 1]), ([], [], []),
    ]
    assert from_coco(data)[1] == ["cat", "indoor", "outdoor"]  # class ids of both index this list
    assert "tags" not in to_coco(images[:1], [boxes([], [])], ["cat"])["images"][0]  # none given, none written
    assert image_tags(tags(["indoor"], [0.5]), {"indoor": 4}, scores=False) == [{"category_id": 4}]
    with pytest.raises(ValueError, match=r"tag labels not in categories: \['night'\]"):
        to_coco(images[:1], [boxes([], [])], ["cat"], tags=[tags(["night"])])


@pytest.mark.parametrize(
    "tag, message",
    [
        ({"category_id": 9}, r"t.json: images\[0\].tags\[0\].category_id: unknown category id 9"),
        ({"category_id": 1, "score": 1.5}, r"images\[0\].tags\[0\].score: expected a number in 0..1, got 1.5"),
        ({"score": 0.5}, r"images\[0\].tags\[0\].category_id: expected an integer, got None"),
        ("indoor", r"images\[0\].tags\[0\]: expected an object, got str"),
    ],
)
def test_malformed_tags_are_named_by_path(tag, message):
    data = {"images": [{"id": 1, "file_name": "a", "width": 4, "height": 3, "tags": [tag]}],
            "categories": [{"id": 1, "name": "indoor"}], "annotations": []}
    with pytest.raises(CocoFormatError, match=message):
        from_coco_tags(data, source="t.json")


def test_coco_readers_take_a_file_with_tags():
    from faster_coco_eval import COCO as FastCOCO
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = to_coco(
        [CocoImage(1, "a.png", 40, 30), CocoImage(2, "b.png", 40, 30)],
        [boxes([[1, 2, 10, 12]], ["cat"]), boxes([[5, 5, 20, 25]], ["cat"])],
        ["cat", "indoor"],
        tags=[tags(["indoor"], [0.9]), tags([])],
    )
    for api_class in (COCO, FastCOCO):
        api = api_class()
        api.dataset = copy.deepcopy(data)
        api.createIndex()
        assert sorted(api.getImgIds()) == [1, 2] and len(api.getAnnIds()) == 2
    gt = COCO()
    gt.dataset = copy.deepcopy(data)
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(data["annotations"])), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def _image(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


def test_import_export_and_import_again_keep_the_tags(tmp_path):
    folder = tmp_path / "images"
    for name in ("a.png", "b.png"):
        _image(folder / name)
    data = to_coco(
        [CocoImage(1, "a.png", 40, 30), CocoImage(2, "b.png", 40, 30)],
        [boxes([[1, 2, 10, 12]], ["cat"]), boxes([], [])],
        ["cat", "indoor", "outdoor"],
        tags=[tags(["indoor"], [0.625]), tags(["outdoor", "indoor"], [0.5, 0.25])],
    )
    (tmp_path / "in.json").write_text(json.dumps(data))
    env = {"AUTOLABEL_DB": f"sqlite:///{tmp_path / 'store.db'}", "COLUMNS": "200"}
    runner = CliRunner()
    imported = runner.invoke(app, ["import", "--dataset", "d", "--coco", str(tmp_path / "in.json"),
                                   "--images", str(folder), "--as-revision", "truth"], env=env)
    assert imported.exit_code == 0, imported.output
    with open_store(tmp_path / "store.db") as store:
        run = store.get_run("d", "truth")
        assert run.params["tags"] == 3 and run.params["annotations"] == 1
        by_uri = {s.id: Path(s.uri).name for s in store.samples("d")}
        found = {by_uri[sid]: split_tags(det) for sid, det in store.annotations_of(run).items()}
    assert found["a.png"][0].labels.tolist() == ["cat"] and found["a.png"][1].labels.tolist() == ["indoor"]
    assert found["b.png"][1].labels.tolist() == ["outdoor", "indoor"]
    assert found["b.png"][1].xyxy.tolist() == [[0, 0, 40, 30]] * 2
    assert found["b.png"][1].scores.tolist() == [1.0, 1.0]  # a revision keeps no scores

    exported = runner.invoke(app, ["export", str(tmp_path / "out.json"), "--dataset", "d", "--format", "coco"], env=env)
    assert exported.exit_code == 0, exported.output
    out = json.loads((tmp_path / "out.json").read_text())
    names = {c["id"]: c["name"] for c in out["categories"]}
    assert sorted(names.values()) == ["cat", "indoor", "outdoor"]
    entries = {Path(e["file_name"]).name: e for e in out["images"]}
    assert [names[t["category_id"]] for t in entries["b.png"]["tags"]] == ["outdoor", "indoor"]
    assert all("score" not in t for e in out["images"] for t in e["tags"])  # human truth: no scores
    assert len(out["annotations"]) == 1
    again = runner.invoke(app, ["import", "--dataset", "d", "--coco", str(tmp_path / "out.json"),
                                "--images", str(folder), "--as-revision", "again"], env=env)
    assert again.exit_code == 0, again.output
    with open_store(tmp_path / "store.db") as store:
        first, second = (store.annotations_of(store.get_run("d", name)) for name in ("truth", "again"))
    assert {k: (v.labels.tolist(), v.data["shape_type"].tolist()) for k, v in first.items()} == {
        k: (v.labels.tolist(), v.data["shape_type"].tolist()) for k, v in second.items()
    }

    yolo = runner.invoke(app, ["export", str(tmp_path / "yolo"), "--dataset", "d", "--format", "yolo"], env=env)
    assert yolo.exit_code == 0, yolo.output
    meta = json.loads((tmp_path / "yolo" / "autolabel_export.json").read_text())
    assert meta["dropped"] == {"tags (image-level labels)": 3}
    assert "indoor" not in (tmp_path / "yolo" / "data.yaml").read_text()  # a tag is no YOLO class
    lines = [line for f in (tmp_path / "yolo" / "labels").rglob("*.txt") for line in f.read_text().splitlines()]
    assert len(lines) == 1 and lines[0].startswith("0 ")


def test_prelabel_out_writes_the_classifiers_tags_that_import_reads_back(tmp_path):
    from serverless.models import registry

    clip = registry.backend("clip").tiny(tmp_path / "tiny", 0)
    (tmp_path / "scenes.yaml").write_text(TAGS_ONLY)
    env = {"AUTOLABEL_DB": f"sqlite:///{tmp_path / 'store.db'}", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    args = ["prelabel", *(str(SAMPLES / p) for p in PHOTOS), "--ontology", str(tmp_path / "scenes.yaml"),
            "--classifier", f"clip:{clip}", "--out", str(tmp_path / "pre.json")]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "2 images, 0 detections, 4 tags" in result.output
    data = json.loads((tmp_path / "pre.json").read_text())
    assert data["info"]["classifier"] == f"clip:{clip}" and data["info"]["detector"] is None
    assert [len(e["tags"]) for e in data["images"]] == [2, 2] and data["annotations"] == []
    written = {e["file_name"]: sorted((t["category_id"], t["score"]) for t in e["tags"]) for e in data["images"]}
    result = CliRunner().invoke(app, ["import", "--dataset", "d", "--coco", str(tmp_path / "pre.json"), "--images",
                                      str(SAMPLES), "--as-run", "pred"], env=env)
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "store.db") as store:
        run = store.get_run("d", "pred")
        names = {s.id: Path(s.uri).name for s in store.samples("d")}
        read = {names[sid]: det for sid, det in store.annotations_of(run).items()}
    ids = {c["name"]: c["id"] for c in data["categories"]}
    for name, det in read.items():
        assert det.data["shape_type"].tolist() == ["tag", "tag"]
        pairs = sorted((ids[label], score) for label, score in zip(det.labels.tolist(), det.scores.tolist()))
        assert [p[0] for p in pairs] == [w[0] for w in written[name]]
        np.testing.assert_allclose([p[1] for p in pairs], [w[1] for w in written[name]], rtol=1e-6)


# ----------------------------------------------------------------------------- the classifier's resolution
def test_the_classifier_defaults_to_clip_only_for_an_ontology_with_tag_labels():
    mixed, objects = parse_ontology(MIXED, "m"), parse_ontology(OBJECTS, "o")
    assert ModelSettings.from_env(ontology=mixed, environ={}).classifier.backend == "clip"
    assert ModelSettings.from_env(ontology=objects, environ={}).classifier is None
    env = {"AUTOLABEL_CLASSIFIER": "clip:/env/clip"}
    assert ModelSettings.from_env(ontology=objects, environ=env).classifier is None  # a default for all: unused
    assert ModelSettings.from_env(ontology=mixed, environ=env).classifier.text == "clip:/env/clip"
    given = ModelSettings.from_env(classifier="clip:/given", ontology=mixed, environ=env)
    assert given.classifier.text == "clip:/given" and given.model_id(mixed) == given.gdino_model
    named = parse_ontology("models: {classifier: 'clip:/onto'}\n" + TAGS_ONLY, "t")
    settings = ModelSettings.from_env(ontology=named, environ={})
    assert settings.classifier.text == "clip:/onto" and settings.model_id(named) == "clip:/onto"
    with pytest.raises(ModelSpecError, match=r"classifier 'clip:/given' \(from given\) was named, but the ontology "
                                             r"has no tag labels"):
        ModelSettings.from_env(classifier="clip:/given", ontology=objects, environ={})
    onto_named = parse_ontology("models: {classifier: clip}\n" + OBJECTS, "o2")
    with pytest.raises(ModelSpecError, match="from the ontology's models.classifier"):
        ModelSettings.from_env(ontology=onto_named, environ={})
    assert ModelSettings().classifier_for(mixed).backend == "clip" and ModelSettings().classifier_for(objects) is None


def _autolabel(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOLABEL_")}
    env.update(AUTOLABEL_DB=str(tmp_path / "store.db"), HF_HUB_OFFLINE="1", COLUMNS="300")
    return subprocess.run([sys.executable, "-m", "sync.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=150, check=False)


@pytest.mark.parametrize(
    "ontology, classifier, expected",
    [
        (OBJECTS, "clip", "classifier 'clip' (from given) was named, but the ontology has no tag labels"),
        (TAGS_ONLY, "nope:x", "classifier spec 'nope:x': unknown model backend 'nope'"),
        (TAGS_ONLY, "grounding-dino", "grounding-dino is a detector, not a classifier"),
        # located before anything loads, before the detector's (offline, not cached) too
        (MIXED, "clip:{tmp}/no-such-clip", "cannot load CLIP from '{tmp}/no-such-clip': the directory does not exist"),
    ],
    ids=["no-tag-labels", "unknown-backend", "a-detector", "missing-weights"],
)
def test_classifier_errors_are_one_line_and_exit_2(tmp_path, ontology, classifier, expected):
    (tmp_path / "o.yaml").write_text(ontology)
    spec = classifier.format(tmp=tmp_path)
    result = _autolabel(["prelabel", str(SAMPLES / PHOTOS[0]), "--ontology", str(tmp_path / "o.yaml"),
                         "--classifier", spec, "--out", str(tmp_path / "o.json")], tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert expected.format(tmp=tmp_path) in line and "Traceback" not in result.stderr
    assert not (tmp_path / "o.json").exists()


def test_a_changed_classifier_is_another_run(tmp_path):
    from sync.cli import _run_params
    from sync.prelabel_store import RunRecorder

    ontology = parse_ontology(MIXED, "m")
    files = [SAMPLES / PHOTOS[0]]
    first = ModelSettings.from_env(classifier="clip:/a", ontology=ontology, environ={})
    other = ModelSettings.from_env(classifier="clip:/b", ontology=ontology, environ={})
    with open_store(tmp_path / "store.db") as store:
        params = _run_params(ontology, first, masks=False, threshold=None, batch_size=4)
        started = RunRecorder(store, "d", None, ontology, first, params, files=files)
        assert started.run.params["classifier"] == "clip:/a"
        resumed = RunRecorder(store, "d", None, ontology, first, params, files=files)
        assert resumed.resumed and resumed.name == started.name
        params = _run_params(ontology, other, masks=False, threshold=None, batch_size=4)
        fresh = RunRecorder(store, "d", None, ontology, other, params, files=files)
        assert not fresh.resumed and fresh.name != started.name
        assert "classifier clip:/a (now clip:/b)" in fresh.note


# ----------------------------------------------------------------------------- CVAT tags
def test_cvat_tags_for_a_function_push_and_pull():
    from cvat_sdk.api_client import models

    from serverless.convert.cvat_contract import SCORE_ATTRIBUTE_ID, tag_score_field
    from serverless.convert.cvat_shapes import from_cvat_tags, to_cvat_tag_dicts, to_cvat_tags

    found = tags(["indoor", "night"], [0.876, 0.2])
    made = to_cvat_tags(found, {"indoor": 0, "night": 1}, score_spec_ids={"indoor": SCORE_ATTRIBUTE_ID})
    assert all(isinstance(t, models.LabeledImageRequest) for t in made)
    assert [t.to_dict() for t in made] == [
        {"frame": 0, "label_id": 0, "attributes": [{"spec_id": SCORE_ATTRIBUTE_ID, "value": "88"}]},
        {"frame": 0, "label_id": 1, "attributes": []},
    ]  # what a cvat-sdk detection function returns: frame 0, spec ids, no source
    assert not tag_score_field()  # no cvat-sdk has a score on tags: the attribute carries it
    pushed = to_cvat_tag_dicts(found, {"indoor": 7, "night": 8}, frame=3, score_spec_ids={"night": 21})
    assert pushed == [
        {"frame": 3, "label_id": 7, "attributes": [], "source": "auto"},
        {"frame": 3, "label_id": 8, "attributes": [{"spec_id": 21, "value": "20"}], "source": "auto"},
    ]
    with pytest.raises(ValueError, match=r"labels missing from label_ids: \['night'\]"):
        to_cvat_tag_dicts(found, {"indoor": 7}, frame=0)
    read, columns = from_cvat_tags(
        [{"id": 5, "frame": 3, "label_id": 7, "source": "manual"}, {"id": 6, "frame": 3, "label_id": 8}],
        {7: "indoor", 8: "night"}, label_index={"night": 1},
    )
    assert read.labels.tolist() == ["indoor", "night"] and read.scores.tolist() == [1.0, 1.0]
    assert read.class_ids.tolist() == [-1, 1]
    assert {k: v.tolist() for k, v in columns.items()} == {
        "cvat_id": [5, 6], "source": ["manual", ""], "frame": [3, 3],
    }
    with pytest.raises(ValueError, match=r"tags\[0\]: label_id 9 is not in label_names"):
        from_cvat_tags([{"id": 1, "frame": 0, "label_id": 9}], {7: "indoor"})
