"""`autolabel import`: COCO files into the store as one finished import run, all or nothing.

Expected values come from the COCO dicts the tests write and from pycocotools (the reference
reader of the format), never from the importer itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from serverless.detections import Detections
from serverless.images import read_image
from sync.coco_import import CocoImportError, import_coco
from sync.store import StoreError, open_store
from sync.store.schema import Annotation
from sync.views import latest_runs_per_sample
from tests.conftest import ROOT

# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "store.db") as opened:
        yield opened


def write_image(path: Path, width: int, height: int, *, seed: int = 0, orientation: int | None = None) -> Path:
    """A small noise image (PNG or JPEG by suffix); distinct seeds give distinct bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(path, exif=exif)
    else:
        image.save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths over the column-major pixels, background first."""
    counts, current, run = [], False, 0
    for value in mask.T.reshape(-1).tolist():
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}]


@pytest.fixture
def boxes_coco(tmp_path):
    """Three images (one in a subfolder, one without annotations) and scored boxes."""
    images_dir = tmp_path / "images"
    write_image(images_dir / "a.png", 40, 30, seed=1)
    write_image(images_dir / "sub" / "b.jpg", 50, 20, seed=2)
    write_image(images_dir / "c.png", 16, 16, seed=3)
    data = {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "sub/b.jpg", "width": 50, "height": 20},
            {"id": 12, "file_name": "c.png", "width": 16, "height": 16},
        ],
        "categories": CATEGORIES,
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1.5, 2.25, 10, 5.5], "score": 0.9},
            {"id": 2, "image_id": 11, "category_id": 1, "bbox": [0, 0, 50, 20], "score": 0.25},
            {"id": 3, "image_id": 10, "category_id": 1, "bbox": [20.1, 3.3, 7.7, 4.4], "score": 0.625},
        ],
    }
    return write_json(tmp_path / "boxes.json", data), images_dir, data


def runs_of(store, dataset):
    return [] if dataset not in {d.name for d in store.list_datasets()} else store.list_runs(dataset)


def stored_scores(store, run):
    with store.session() as s:
        return list(s.execute(select(Annotation.score).where(Annotation.run_id == run.id)).scalars())


# ---------------------------------------------------------------------------- round trips


def test_boxes_labels_and_scores_round_trip(store, boxes_coco):
    coco_file, images_dir, data = boxes_coco
    run = import_coco(store, "site", coco_file, images_dir, name="model-x", role="prediction")
    assert (run.kind, run.name, run.finished) == ("import", "model-x", True)
    assert run.params["role"] == "prediction" and run.params["source_file"] == "boxes.json"
    assert run.params["images"] == 3 and run.params["annotations"] == 3 and run.params["with_scores"] is True
    assert sorted(run.params["categories"]) == ["cat", "dog"]
    assert run.ontology_yaml is None

    samples = {s.uri: s for s in store.samples("site")}
    by_coco_id = {}
    for image in data["images"]:
        path = images_dir / image["file_name"]
        sample = samples[str(path.resolve())]
        assert (sample.width, sample.height, sample.content_hash) == (image["width"], image["height"], sha256(path))
        by_coco_id[image["id"]] = sample.id
    assert store.covered_samples(run) == sorted(by_coco_id.values())

    got = store.annotations_of(run)
    names = {c["id"]: c["name"] for c in CATEGORIES}
    for image_id, sample_id in by_coco_id.items():
        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        det = got[sample_id]
        want = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(det.xyxy, want)
        assert det.labels.tolist() == [names[a["category_id"]] for a in anns]
        assert det.scores.tolist() == [np.float32(a["score"]) for a in anns]
        assert set(det.data["shape_type"].tolist()) <= {"rectangle"}
        assert set(det.data["source"].tolist()) <= {"file"}
    assert len(got[by_coco_id[12]]) == 0  # an image without annotations is covered, empty


def test_revision_drops_scores_and_a_file_without_scores_stores_none(store, boxes_coco, tmp_path):
    coco_file, images_dir, data = boxes_coco
    revision = import_coco(store, "site", coco_file, images_dir, name="truth", role="revision")
    assert revision.params["role"] == "revision" and revision.params["with_scores"] is False
    assert stored_scores(store, revision) == [None, None, None]

    for ann in data["annotations"]:
        del ann["score"]
    unscored = write_json(tmp_path / "unscored.json", data)
    run = import_coco(store, "site", unscored, images_dir, name="pred-noscore", role="prediction")
    assert run.params["with_scores"] is False and stored_scores(store, run) == [None, None, None]
    # the same files: the second import reuses the samples of the first
    assert store.covered_samples(run) == store.covered_samples(revision)
    assert len(store.samples("site")) == 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on NumPy 2
def test_polygons_rle_masks_and_crowd_round_trip(store, tmp_path):
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    images_dir = tmp_path / "img"
    write_image(images_dir / "m.png", 24, 20, seed=4)
    write_image(images_dir / "plain.png", 12, 10, seed=5)
    blob = np.zeros((20, 24), dtype=bool)
    blob[3:9, 10:20] = True
    blob[12:15, 2:5] = True
    compressed = mask_util.encode(np.asfortranarray(blob.astype(np.uint8)))
    crowd = np.zeros((20, 24), dtype=bool)
    crowd[10:18, 12:22] = True
    counts = uncompressed_rle(crowd)
    rings = [[2.0, 2.0, 8.0, 2.0, 8.0, 7.0, 2.0, 7.0], [14.0, 14.0, 20.0, 14.0, 17.0, 19.0]]
    data = {
        "images": [
            {"id": 1, "file_name": "m.png", "width": 24, "height": 20},
            {"id": 2, "file_name": "plain.png", "width": 12, "height": 10},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "crowd"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 18, 17], "segmentation": rings, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 3, 3], "segmentation": []},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [2, 3, 18, 12],
             "segmentation": {"size": [20, 24], "counts": compressed["counts"].decode()}},
            {"id": 4, "image_id": 1, "category_id": 2, "bbox": [12, 10, 10, 8],
             "segmentation": {"size": [20, 24], "counts": counts}, "iscrowd": 1},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "segmentation": []},
        ],
    }
    coco_file = write_json(tmp_path / "seg.json", data)
    reference = COCO(str(coco_file))
    np.testing.assert_array_equal(reference.annToMask(reference.anns[4]).astype(bool), crowd)  # the test's RLE

    run = import_coco(store, "seg", coco_file, images_dir, name="gt", role="revision")
    assert run.params["crowd_annotations"] == 1
    uri = {s.uri: s.id for s in store.samples("seg")}
    sample_m, sample_plain = uri[str((images_dir / "m.png").resolve())], uri[str((images_dir / "plain.png").resolve())]
    det = store.annotations_of(run, masks=True)[sample_m]
    order = [1, 3, 4, 5]  # COCO ids of image 1, in file order
    assert det.data["shape_type"].tolist() == ["polygon", "mask", "mask", "rectangle"]
    assert det.labels.tolist() == ["person", "person", "crowd", "person"]
    assert [a if a is None else dict(a) for a in det.data["attributes"]] == [None, None, {"iscrowd": True}, None]
    got_rings = [ring.reshape(-1).tolist() for ring in det.polygons[0]]
    assert got_rings == rings
    for i, coco_id in enumerate(order[:3]):  # segmented annotations: pycocotools' pixels exactly
        np.testing.assert_array_equal(det.masks[i], reference.annToMask(reference.anns[coco_id]).astype(bool))
    with store.session() as s:  # the box-only row stores no mask (only the segmented ones do)
        stored = s.execute(
            select(Annotation.shape_type, Annotation.mask_rle.is_not(None))
            .where(Annotation.run_id == run.id, Annotation.sample_id == sample_m)
            .order_by(Annotation.id)
        ).all()
    assert [tuple(r) for r in stored] == [("polygon", True), ("mask", True), ("mask", True), ("rectangle", False)]
    assert store.annotations_of(run)[sample_plain].data["shape_type"].tolist() == ["rectangle"]


def test_imports_line_up_with_prelabel_samples_including_exif_rotation(store, tmp_path, sample_ontology):
    from sync.prelabel_store import RunRecorder

    folder = tmp_path / "photos"
    files = [
        write_image(folder / "upright.jpg", 30, 20, seed=6),
        write_image(folder / "rotated.jpg", 30, 20, seed=7, orientation=6),  # shown 20 wide, 30 high
    ]
    settings = SimpleNamespace(gdino_model="m", model_revision=lambda ontology: None)  # ModelSettings' two reads
    recorder = RunRecorder(store, "site", "pre", sample_ontology, settings, {})
    sizes = []
    for path in files:
        height, width = read_image(path).shape[:2]  # what the pre-label pipeline decodes
        sizes.append((width, height))
        recorder.record(path, width, height, Detections.empty())
    pre = recorder.finish()
    assert sizes == [(30, 20), (20, 30)]

    images = [
        {"id": i + 1, "file_name": p.name, "width": w, "height": h} for i, (p, (w, h)) in enumerate(zip(files, sizes))
    ]
    coco = write_json(tmp_path / "c.json", {"images": images, "categories": [], "annotations": []})
    run = import_coco(store, "site", coco, folder, name="truth", role="revision")
    assert store.covered_samples(run) == store.covered_samples(pre)
    assert len(store.samples("site")) == 2

    images[1]["width"], images[1]["height"] = 30, 20  # the raw, un-rotated size
    write_json(coco, {"images": images, "categories": [], "annotations": []})
    with pytest.raises(CocoImportError, match=r"images\[1\] \('rotated.jpg'\).*says 30x20.*is 20x30.*EXIF"):
        import_coco(store, "site", coco, folder, name="truth-2", role="revision")


# ---------------------------------------------------------------------------- bad files leave nothing behind


def _edit(data, change):
    data = json.loads(json.dumps(data))
    change(data)
    return data


BAD_FILES = [
    ("missing width", lambda d: d["images"][0].pop("width"), r"boxes\.json: images\[0\]\.width: expected an integer"),
    ("missing bbox", lambda d: d["annotations"][1].pop("bbox"), r"annotations\[1\]\.bbox: expected 4 numbers"),
    ("unknown category", lambda d: d["annotations"][2].update(category_id=7), r"annotations\[2\]\.category_id"),
    ("no images list", lambda d: d.pop("images"), r"images: expected a list"),
    ("missing image file", lambda d: d["images"][1].update(file_name="sub/none.jpg"),
     r"images\[1\] \('sub/none\.jpg'\): no such image file"),
    ("size mismatch", lambda d: d["images"][0].update(width=41), r"images\[0\] \('a\.png'\): the COCO file says 41x30"),
    ("same file twice", lambda d: d["images"][2].update(file_name="a.png", width=40, height=30),
     r"images\[2\] \('a\.png'\): the same file as images\[0\]"),
    # the bad segmentation is file annotation 2, the second annotation of its image
    ("bad polygon", lambda d: d["annotations"][2].update(segmentation=[[1, 2, 3]]),
     r"annotations\[2\]\.segmentation\[0\]: expected an even number"),
    ("bad RLE size", lambda d: d["annotations"][1].update(segmentation={"size": [1, 1], "counts": "1"}),
     r"annotations\[1\]\.segmentation\.size: expected \[20, 50\]"),
]


@pytest.mark.parametrize(("change", "message"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_files_name_the_culprit_and_leave_no_run(store, boxes_coco, change, message):
    coco_file, images_dir, data = boxes_coco
    write_json(coco_file, _edit(data, change))
    with pytest.raises(CocoImportError, match=message):
        import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert runs_of(store, "site") == []
    assert runs_of(store, "site") == [] and store.list_datasets() == []  # not even the dataset was created


def test_json_syntax_error_names_the_line_and_column(store, boxes_coco):
    coco_file, images_dir, _ = boxes_coco
    coco_file.write_text('{\n  "images": [],\n  "categories": [}\n', encoding="utf-8")
    with pytest.raises(CocoImportError, match=r"boxes\.json: invalid JSON at line 3 column 18"):
        import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert store.list_datasets() == []


def test_unreadable_inputs_are_named(store, boxes_coco, tmp_path):
    coco_file, images_dir, data = boxes_coco
    with pytest.raises(CocoImportError, match=r"nope\.json: cannot read"):
        import_coco(store, "site", tmp_path / "nope.json", images_dir, name="gt", role="revision")
    with pytest.raises(CocoImportError, match="not a folder"):
        import_coco(store, "site", coco_file, tmp_path / "no-dir", name="gt", role="revision")
    with pytest.raises(CocoImportError, match="role must be one of"):
        import_coco(store, "site", coco_file, images_dir, name="gt", role="truth")
    (images_dir / "a.png").write_bytes(b"not an image")
    with pytest.raises(CocoImportError, match=r"images\[0\] \('a\.png'\):.*not a recognised image format"):
        import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert store.list_datasets() == []


def test_store_refusals_leave_no_new_run(store, boxes_coco):
    coco_file, images_dir, data = boxes_coco
    first = import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    with pytest.raises(StoreError, match="already has a run named 'gt'"):
        import_coco(store, "site", coco_file, images_dir, name="gt", role="prediction")
    write_image(images_dir / "a.png", 40, 30, seed=99)  # same name and size, other content
    with pytest.raises(StoreError, match=r"a\.png.*stored with hash"):
        import_coco(store, "site", coco_file, images_dir, name="gt-2", role="revision")
    assert [r.name for r in store.list_runs("site")] == ["gt"]
    assert store.count_annotations(first) == 3


def test_a_failed_write_leaves_no_run(store, boxes_coco, tmp_path):
    """A database error while the annotations go in (a trigger aborts the insert) rolls the
    whole run back: no run, nothing read as a result, and the same name can be imported again."""
    import sqlite3

    coco_file, images_dir, _ = boxes_coco
    with sqlite3.connect(tmp_path / "store.db") as conn:
        conn.execute("CREATE TRIGGER broken BEFORE INSERT ON annotations BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(StoreError, match="disk full"):
        import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert store.list_runs("site") == []
    assert latest_runs_per_sample(store, "site", ("import",)) == {}

    with sqlite3.connect(tmp_path / "store.db") as conn:
        conn.execute("DROP TRIGGER broken")
    run = import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert run.finished and store.count_annotations(run) == 3


# ---------------------------------------------------------------------------- the command

CLI = (
    "import sys\n"
    "from sync import cli\n"
    "from sync.commands import data\n"
    "if not any(c.name == 'import' for c in cli.app.registered_commands):\n"
    "    data.register(cli.app)\n"
    "sys.argv = ['autolabel', *sys.argv[1:]]\n"
    "cli.main()\n"
)


def autolabel(args, db: Path):
    env = {**os.environ, "AUTOLABEL_DB": str(db), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_cli_import_summary_and_one_line_errors(boxes_coco, tmp_path):
    coco_file, images_dir, data = boxes_coco
    db = tmp_path / "cli.db"
    args = ["import", "--dataset", "site", "--coco", coco_file, "--images", images_dir]
    ok = autolabel([*args, "--as-run", "model-x"], db)
    assert ok.returncode == 0, ok.stderr
    assert "imported 3 images and 3 annotations from boxes.json into run 'model-x' (prediction)" in ok.stdout

    taken = autolabel([*args, "--as-revision", "model-x"], db)
    assert taken.returncode == 2 and "already has a run named 'model-x'" in one_line(taken.stderr)
    both = autolabel([*args, "--as-run", "a", "--as-revision", "b"], db)
    assert both.returncode == 2 and "exactly one of --as-run NAME or --as-revision NAME" in one_line(both.stderr)
    coco_file.write_text('{"images": [\n\n  oops]}', encoding="utf-8")
    bad = autolabel([*args, "--as-revision", "gt"], db)
    assert bad.returncode == 2 and "invalid JSON at line 3 column 3" in one_line(bad.stderr)
    assert "Traceback" not in bad.stderr
    with open_store(db) as opened:
        assert [r.name for r in opened.list_runs("site")] == ["model-x"]


def test_help_with_data_commands_imports_no_heavy_library():
    code = CLI.replace("cli.main()\n", "") + (
        "sys.argv = ['autolabel', '--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'cv2', 'pycocotools', 'faster_coco_eval', 'matplotlib', 'ultralytics')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "COLUMNS": "200"})
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "import" in result.stdout and "export" in result.stdout
