"""`autolabel export`: the run chosen per sample, COCO (checked with pycocotools) and YOLO
(checked with ultralytics' own dataset checker and label verifier; no network, no weights).

Expected boxes, labels and normalized coordinates are derived from the detections the tests
store, never from the exporters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serverless.detections import Detections
from sync.export import ExportError, choose_runs, export_coco, export_yolo, split_of
from sync.store import Provenance, SampleIn, StoreError, open_store
from tests.test_import import autolabel, one_line, sha256, write_image

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "ultralytics"))

# ---------------------------------------------------------------------------- the dataset


def det(boxes, labels, scores=None, **kwargs) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        xyxy=boxes,
        scores=np.linspace(0.9, 0.5, n).astype(np.float32) if scores is None else np.asarray(scores, np.float32),
        class_ids=np.zeros(n, np.int64),
        labels=np.asarray(labels, dtype=str).reshape(n),
        **kwargs,
    )


@dataclass
class Site:
    """A dataset where every sample's expected source is known (see `site`)."""

    store: object
    ids: dict  # name -> sample id
    paths: dict  # name -> Path (local files)
    sizes: dict  # name -> (width, height)
    stored: dict  # (run name, sample name) -> Detections as stored
    runs: dict  # role -> run name


@pytest.fixture
def site(tmp_path):
    """Samples a, b (same file name ``x.png`` in two folders), c, d, e, remote (a URL), gone
    (deleted file). Runs, oldest first:

    - ``pre`` (pre-label, finished): a, b, c, d, remote, gone;
    - a human revision of CVAT job 7 (frames 0..1): a, b;
    - ``truth-file`` (import, role revision): a, c — a stays human, c comes from here;
    - ``model-y`` (import, role prediction): e — never chosen by default, so e is left out;
    - ``pre-open`` (pre-label, unfinished): d — ignored.
    """
    folder = tmp_path / "photos"
    files = {
        "a": write_image(folder / "one" / "x.png", 40, 30, seed=1),
        "b": write_image(folder / "two" / "x.png", 40, 30, seed=2),
        "c": write_image(folder / "c.jpg", 50, 20, seed=3),
        "d": write_image(folder / "d.png", 32, 24, seed=4),
        "e": write_image(folder / "e.png", 20, 20, seed=5),
        "gone": write_image(folder / "gone.png", 16, 16, seed=6),
    }
    store = open_store(tmp_path / "store.db")
    ds = store.get_or_create_dataset("site")
    sizes = {name: pil_size(path) for name, path in files.items()}
    samples = [SampleIn(str(p.resolve()), *sizes[n], sha256(p)) for n, p in files.items()]
    samples.append(SampleIn("https://example.com/remote.jpg", 64, 48, None))
    sizes["remote"] = (64, 48)
    ids = dict(zip([*files, "remote"], store.add_samples(ds, samples)))
    files["gone"].unlink()

    blob = np.zeros((24, 32), dtype=bool)
    blob[4:14, 6:20] = True
    stored = {
        ("pre", "a"): det([[1, 2, 11, 12], [20, 5, 30, 25]], ["cat", "dog"]),
        ("pre", "b"): det([[0, 0, 40, 30]], ["dog"]),
        ("pre", "c"): det([[5, 5, 15, 15]], ["cat"]),
        ("pre", "d"): det(
            [[6, 4, 20, 14], [-5, -3, 10, 8], [40, 0, 50, 10]],
            ["person", "cat", "cat"],
            masks=np.stack([blob, np.zeros_like(blob), np.zeros_like(blob)]),
            data={"shape_type": np.array(["mask", "rectangle", "rectangle"])},
        ),
        ("pre", "remote"): det([[1, 1, 5, 5]], ["cat"]),
        ("pre", "gone"): det([[1, 1, 5, 5]], ["cat"]),
    }
    pre = store.create_run(ds, "prelabel", name="pre")
    store.add_detections(pre, {ids[s]: d for (r, s), d in stored.items()})
    store.finish_run(pre)

    task = store.link_cvat_task(ds, "https://cvat.example.com", 3, name="t", run=pre)
    store.link_frames(task, {0: ids["a"], 1: ids["b"]})
    job = store.upsert_cvat_job(task, 7, start_frame=0, stop_frame=1, updated_date=datetime(2026, 1, 2, tzinfo=UTC))
    stored[("human", "a")] = det([[2, 3, 12, 13], [0.5, 0.5, 39.5, 29.5]], ["cat", "person"])
    stored[("human", "b")] = det([[10, 10, 20, 20]], ["dog"])
    human = store.record_human_revision(
        job, {ids["a"]: stored[("human", "a")], ids["b"]: stored[("human", "b")]}, updated_date="2026-01-02T05:00:00Z"
    )

    truth = store.create_run(ds, "import", name="truth-file", provenance=Provenance(params={"role": "revision"}))
    ring = np.array([[10, 2], [30, 2], [30, 18], [10, 18]], np.float32)
    stored[("truth-file", "a")] = det([[0, 0, 5, 5]], ["dog"])
    stored[("truth-file", "c")] = det(
        [[10, 2, 30, 18], [0, 0, 8, 8], [35, 3, 45, 13]],
        ["person", "person", "dog"],
        polygons=((ring,), (), ()),
        data={"attributes": np.array([None, {"iscrowd": True}, None], dtype=object)},
    )
    store.add_detections(
        truth, {ids["a"]: stored[("truth-file", "a")], ids["c"]: stored[("truth-file", "c")]}, with_scores=False
    )
    store.finish_run(truth)

    model = store.create_run(ds, "import", name="model-y", provenance=Provenance(params={"role": "prediction"}))
    store.add_detections(model, {ids["e"]: det([[1, 1, 9, 9]], ["cat"])})
    store.finish_run(model)
    still_open = store.create_run(ds, "prelabel", name="pre-open")
    store.add_detections(still_open, {ids["d"]: det([[0, 0, 1, 1]], ["cat"])})

    yield Site(store, ids, files, sizes, stored, {"human": human.name})
    store.close()


def pil_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


EXPECTED_RUN = {"a": "human", "b": "human", "c": "truth-file", "d": "pre", "remote": "pre", "gone": "pre"}


def expected(site, name):
    run = EXPECTED_RUN[name]
    return site.stored[(run, name)], (site.runs["human"] if run == "human" else run)


# ---------------------------------------------------------------------------- the choice


def test_default_choice_prefers_human_then_import_revision_then_prelabel(site):
    choice = choose_runs(site.store, "site")
    got = {c.sample.id: (c.run.name, c.source) for c in choice.chosen}
    sources = {"human": "human", "truth-file": "import-revision", "pre": "prelabel"}
    want = {site.ids[n]: (expected(site, n)[1], sources[r]) for n, r in EXPECTED_RUN.items()}
    assert got == want
    assert [s.id for s in choice.left_out] == [site.ids["e"]]
    assert choice.counts() == {"human": 2, "import-revision": 1, "prelabel": 3}

    only = choose_runs(site.store, "site", revision="model-y")
    assert [(c.sample.id, c.source) for c in only.chosen] == [(site.ids["e"], "import-prediction")]
    with pytest.raises(ExportError, match="'pre-open' of dataset 'site' is not finished"):
        choose_runs(site.store, "site", revision="pre-open")
    with pytest.raises(StoreError, match="no run named 'nope'"):
        choose_runs(site.store, "site", revision="nope")


# ---------------------------------------------------------------------------- COCO


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on NumPy 2
def test_coco_export_loads_with_pycocotools_with_the_chosen_boxes(site, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "out" / "labels.json"
    summary = export_coco(site.store, "site", out)
    assert (summary.images, summary.left_out) == (6, 1)
    assert dict(summary.counts) == {"human": 2, "import-revision": 1, "prelabel": 3}
    coco = COCO(str(out))
    labels = sorted({label for name in EXPECTED_RUN for label in expected(site, name)[0].labels.tolist()})
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == labels == list(summary.categories)
    info = coco.dataset["info"]
    assert info["dataset"] == "site" and info["choice"]["counts"] == dict(summary.counts)
    assert info["choice"]["left_out"] == [str(site.paths["e"].resolve())]
    datetime.fromisoformat(info["exported_at"])

    by_name = {n: site.ids[n] for n in EXPECTED_RUN}
    for name, sample_id in by_name.items():
        image = coco.imgs[sample_id]
        want, run_name = expected(site, name)
        assert image["autolabel_run"] == run_name
        uri = "https://example.com/remote.jpg" if name == "remote" else str(site.paths[name].resolve())
        assert image["file_name"] == uri
        assert (image["width"], image["height"]) == site.sizes[name]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[sample_id], iscrowd=None))
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        np.testing.assert_allclose(np.array(boxes).reshape(-1, 4), want.xyxy, atol=1e-5)
        assert [coco.cats[a["category_id"]]["name"] for a in anns] == want.labels.tolist()
        scored = EXPECTED_RUN[name] == "pre"
        assert all(("score" in a) == scored for a in anns)
        if scored:
            np.testing.assert_allclose([a["score"] for a in anns], want.scores, atol=1e-6)

    d_anns = coco.loadAnns(coco.getAnnIds(imgIds=[site.ids["d"]]))
    np.testing.assert_array_equal(coco.annToMask(d_anns[0]).astype(bool), site.stored[("pre", "d")].masks[0])
    assert d_anns[1]["segmentation"] == [] and d_anns[0]["area"] == site.stored[("pre", "d")].masks[0].sum()
    c_anns = coco.loadAnns(coco.getAnnIds(imgIds=[site.ids["c"]], iscrowd=None))
    assert [a["iscrowd"] for a in c_anns] == [0, 1, 0]
    assert c_anns[0]["segmentation"] == [[10.0, 2.0, 30.0, 2.0, 30.0, 18.0, 10.0, 18.0]]


def test_coco_export_of_one_revision_and_refusals(site, tmp_path):
    out = tmp_path / "pre.json"
    summary = export_coco(site.store, "site", out, revision="pre")
    data = json.loads(out.read_text())
    assert {img["autolabel_run"] for img in data["images"]} == {"pre"}
    assert sorted(img["id"] for img in data["images"]) == sorted(site.ids[n] for n in EXPECTED_RUN)
    a_anns = [a for a in data["annotations"] if a["image_id"] == site.ids["a"]]
    assert [a["bbox"] for a in a_anns] == [[1, 2, 10, 10], [20, 5, 10, 20]]
    assert summary.counts == {"prelabel": 6} and data["info"]["choice"]["rule"] == "--revision pre"

    with pytest.raises(ExportError, match="exists; pass --overwrite"):
        export_coco(site.store, "site", out)
    assert export_coco(site.store, "site", out, overwrite=True).images == 6
    assert {img["autolabel_run"] for img in json.loads(out.read_text())["images"]} != {"pre"}
    with pytest.raises(ExportError, match="is a folder"):
        export_coco(site.store, "site", tmp_path)
    bare = site.store.get_or_create_dataset("bare")
    site.store.add_samples(bare, [SampleIn("/nowhere/z.png", 4, 4)])
    with pytest.raises(ExportError, match="'bare' has no labelled sample to export"):
        export_coco(site.store, "bare", tmp_path / "bare.json")
    assert not (tmp_path / "bare.json").exists()


# ---------------------------------------------------------------------------- YOLO


def read_labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


def expected_box_lines(d: Detections, width: int, height: int, classes: dict) -> list[list[float]]:
    """``cls cx cy w h`` of the non-crowd boxes, clipped to the image, by hand."""
    lines = []
    crowd = [bool(a and a.get("iscrowd")) for a in d.data.get("attributes", [None] * len(d))]
    for box, label, is_crowd in zip(d.xyxy.tolist(), d.labels.tolist(), crowd):
        if is_crowd:
            continue
        x1, y1 = max(box[0], 0), max(box[1], 0)
        x2, y2 = min(box[2], width), min(box[3], height)
        if x2 <= x1 or y2 <= y1:
            continue
        lines.append([classes[label], (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                      (y2 - y1) / height])
    return lines


@pytest.fixture
def ultralytics_data(monkeypatch):
    """ultralytics' dataset checker, label verifier and dataset class. Importing ultralytics patches
    ``PIL.Image.open`` and ``torch.save`` process-wide (an unidentified image then raises
    ModuleNotFoundError for pi_heif); both are restored after the test."""
    import torch
    from PIL import Image

    monkeypatch.setattr(Image, "open", Image.open)
    monkeypatch.setattr(torch, "save", torch.save)
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset, verify_image_label

    return SimpleNamespace(
        check_det_dataset=check_det_dataset, verify_image_label=verify_image_label, YOLODataset=YOLODataset
    )


def test_yolo_export_passes_ultralytics_checks_with_the_stored_boxes(site, tmp_path, ultralytics_data):
    check_det_dataset, verify_image_label = ultralytics_data.check_det_dataset, ultralytics_data.verify_image_label
    YOLODataset = ultralytics_data.YOLODataset

    out = tmp_path / "yolo"
    summary = export_yolo(site.store, "site", out, val=0.5, seed=3)
    assert summary.images == 4 and summary.train + summary.val == 4 and summary.train >= 1
    assert sorted(uri for uri, _ in summary.skipped) == sorted(["https://example.com/remote.jpg",
                                                                str(site.paths["gone"].resolve())])
    reasons = dict(summary.skipped)
    assert "URL" in reasons["https://example.com/remote.jpg"] and "no such file" in reasons[
        str(site.paths["gone"].resolve())]
    assert summary.dropped == {"crowd regions": 1, "boxes empty inside the image": 1}

    data = check_det_dataset(str(out / "data.yaml"))
    assert Path(data["path"]) == out.resolve()
    names = list(summary.categories)
    assert data["names"] == dict(enumerate(names)) and data["nc"] == len(names)
    classes = {n: i for i, n in enumerate(names)}

    meta = json.loads((out / "autolabel_export.json").read_text())
    assert meta["choice"]["counts"] == {"human": 2, "import-revision": 1, "prelabel": 3}  # chosen
    assert meta["exported_counts"] == summary.counts == {"human": 2, "import-revision": 1, "prelabel": 1}
    assert {s["uri"] for s in meta["skipped"]} == {uri for uri, _ in summary.skipped}
    records = {r["sample_id"]: r for r in meta["samples"]}
    name_of = {v: k for k, v in site.ids.items()}
    assert {name_of[i] for i in records} == {"a", "b", "c", "d"}
    # a and b are both x.png: two images, two label files
    assert len({records[site.ids[n]]["image"] for n in "ab"}) == 2
    assert len({records[site.ids[n]]["label"] for n in "ab"}) == 2

    for sample_id, record in records.items():
        name = name_of[sample_id]
        want, run_name = expected(site, name)
        assert record["run"] == run_name
        image = out / record["image"]
        assert image.read_bytes() == site.paths[name].read_bytes()
        label = out / record["label"]
        im_file, lb, shape, segments, _, nm, nf, ne, nc, msg = verify_image_label(
            (str(image), str(label), "", False, len(names), 0, 0, False)
        )
        assert nc == 0 and nm == 0, msg
        assert tuple(shape) == site.sizes[name][::-1]
        want_lines = expected_box_lines(want, *site.sizes[name], classes)
        np.testing.assert_allclose(lb, np.array(want_lines, np.float32).reshape(-1, 5), atol=2e-6)
        np.testing.assert_allclose(read_labels(label), np.array(want_lines).reshape(-1, 5), atol=1e-6)

    total = 0
    for part in ("train", "val"):
        dataset = YOLODataset(img_path=data[part], data=data, task="detect", imgsz=64, augment=False, batch_size=1)
        total += len(dataset.labels)
        assert all(lbl["im_file"].startswith(str(out / "images" / part)) for lbl in dataset.labels)
    assert total == 4 and summary.val == len(list((out / "images" / "val").iterdir()))


def test_yolo_segments_from_polygons_masks_and_boxes(site, tmp_path, ultralytics_data):
    verify_image_label = ultralytics_data.verify_image_label

    out = tmp_path / "seg"
    summary = export_yolo(site.store, "site", out, segments=True)
    classes = {n: i for i, n in enumerate(summary.categories)}
    records = {r["sample_id"]: r for r in json.loads((out / "autolabel_export.json").read_text())["samples"]}

    def lines_of(name):
        record = records[site.ids[name]]
        result = verify_image_label(
            (str(out / record["image"]), str(out / record["label"]), "", False, len(classes), 0, 0, False)
        )
        assert result[8] == 0, result[9]
        return result[1], result[3]

    # c: the stored polygon, exactly; the crowd region is left out; the plain box as its 4 corners
    lb, segments = lines_of("c")
    width, height = site.sizes["c"]
    ring = np.array([[10, 2], [30, 2], [30, 18], [10, 18]], np.float64) / [width, height]
    np.testing.assert_allclose(segments[0], ring, atol=1e-6)
    box = np.array([[35, 3], [45, 3], [45, 13], [35, 13]], np.float64) / [width, height]
    np.testing.assert_allclose(segments[1], box, atol=1e-6)
    assert lb[:, 0].tolist() == [classes["person"], classes["dog"]]

    # d: the mask's outline (boundary pixels: within a pixel of the mask's extent), then a clipped box
    lb, segments = lines_of("d")
    width, height = site.sizes["d"]
    mask = site.stored[("pre", "d")].masks[0]
    ys, xs = np.nonzero(mask)
    pixels = segments[0] * [width, height]
    assert abs(pixels[:, 0].min() - xs.min()) <= 1 and abs(pixels[:, 0].max() - (xs.max() + 1)) <= 1
    assert abs(pixels[:, 1].min() - ys.min()) <= 1 and abs(pixels[:, 1].max() - (ys.max() + 1)) <= 1
    clipped = np.array([[0, 0], [10, 0], [10, 8], [0, 8]], np.float64) / [width, height]
    np.testing.assert_allclose(segments[1], clipped, atol=1e-6)
    assert len(segments) == 2  # the third box lies outside the image
    assert lb[:, 0].tolist() == [classes["person"], classes["cat"]]


def test_yolo_refuses_non_empty_out_and_overwrites_only_its_own_export(site, tmp_path):
    remote_only = site.store.create_run("site", "prelabel", name="pre-remote")
    site.store.add_detections(remote_only, {site.ids["remote"]: det([[1, 1, 2, 2]], ["cat"])})
    site.store.finish_run(remote_only)
    out = tmp_path / "yolo"
    export_yolo(site.store, "site", out, revision="truth-file")
    with pytest.raises(ExportError, match="not empty; pass --overwrite"):
        export_yolo(site.store, "site", out)
    stale = out / "images" / "train" / "stale.png"
    stale.write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    summary = export_yolo(site.store, "site", out, overwrite=True)
    assert summary.images == 4 and not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "autolabel_export.json").read_text())["choice"]["rule"].startswith("latest human")

    foreign = tmp_path / "foreign"
    (foreign / "images").mkdir(parents=True)
    (foreign / "images" / "keep.png").write_bytes(b"precious")
    with pytest.raises(ExportError, match="holds no autolabel_export.json"):
        export_yolo(site.store, "site", foreign, overwrite=True)
    assert (foreign / "images" / "keep.png").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half export left
    with pytest.raises(ExportError, match=r"validation fraction must lie in \[0, 1\)"):
        export_yolo(site.store, "site", tmp_path / "v", val=1.0)
    with pytest.raises(ExportError, match="none of the 1 chosen samples is a local image file"):
        export_yolo(site.store, "site", tmp_path / "r", revision="pre-remote")


# ---------------------------------------------------------------------------- the split

URIS = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=40, unique=True)


@settings(max_examples=60, deadline=None)
@given(uris=URIS, val=st.floats(0, 0.99), seed=st.integers(0, 10**6), data=st.data())
def test_split_is_deterministic_order_free_and_always_trains(uris, val, seed, data):
    split = split_of(uris, val, seed)
    assert set(split) == set(uris) and set(split.values()) <= {"train", "val"}
    assert "train" in split.values()
    if val > 0 and len(uris) >= 2:
        assert "val" in split.values()
    if val == 0:
        assert set(split.values()) == {"train"}
    shuffled = data.draw(st.permutations(uris))
    assert split_of(shuffled, val, seed) == split


def test_split_fraction_nesting_and_seed():
    uris = [f"/data/img_{i:05d}.jpg" for i in range(3000)]
    small, large = split_of(uris, 0.1, 0), split_of(uris, 0.3, 0)
    assert abs(sum(v == "val" for v in small.values()) / len(uris) - 0.1) < 0.03
    assert abs(sum(v == "val" for v in large.values()) / len(uris) - 0.3) < 0.03
    assert all(large[u] == "val" for u in uris if small[u] == "val")  # a larger fraction only adds to val
    assert split_of(uris, 0.3, 1) != large
    grown = split_of([*uris, "/data/new.jpg"], 0.3, 0)
    assert all(grown[u] == large[u] for u in uris)  # adding a file moves no other


# ---------------------------------------------------------------------------- the command


def test_cli_export_reports_skips_and_one_line_errors(site, tmp_path):
    db = tmp_path / "store.db"
    out = tmp_path / "cli-yolo"
    ok = autolabel(["export", "--dataset", "site", "--format", "yolo", out, "--val", "0.5"], db)
    assert ok.returncode == 0, ok.stderr
    assert "exported 4 images" in ok.stdout and "from human 2, import-revision 1, prelabel 1;" in ok.stdout
    assert "1 samples left out" in ok.stdout and "2 skipped" in ok.stdout
    assert "skipped https://example.com/remote.jpg: not a local file" in ok.stderr
    assert (out / "data.yaml").is_file()

    coco = autolabel(["export", "--dataset", "site", "--format", "coco", tmp_path / "c.json"], db)
    assert coco.returncode == 0 and "exported 6 images" in coco.stdout, coco.stderr
    for args, message in [
        (["--format", "xml", tmp_path / "x"], "--format must be one of coco, yolo, got 'xml'"),
        (["--format", "coco", "--segments", tmp_path / "x.json"], "apply to --format yolo only"),
        (["--format", "yolo", out], "not empty; pass --overwrite"),
        (["--format", "yolo", "--revision", "nope", tmp_path / "y"], "no run named 'nope'"),
    ]:
        bad = autolabel(["export", "--dataset", "site", *args], db)
        assert bad.returncode == 2 and message in one_line(bad.stderr)


def test_yolo_names_that_yaml_would_misread_stay_strings(tmp_path, ultralytics_data):
    labels = ["yes", "null", "1", "a: b", 'quote " and ü', "#hash"]
    image = write_image(tmp_path / "pics" / "p.png", 30, 20, seed=9)
    with open_store(tmp_path / "names.db") as store:
        ds = store.get_or_create_dataset("names")
        (sample_id,) = store.add_samples(ds, [SampleIn(str(image.resolve()), 30, 20, sha256(image))])
        run = store.create_run(ds, "prelabel")
        store.add_detections(run, {sample_id: det([[i, i, i + 5, i + 5] for i in range(len(labels))], labels)})
        store.finish_run(run)
        out = tmp_path / "odd: folder #1"
        summary = export_yolo(store, "names", out, val=0.0)
    data = ultralytics_data.check_det_dataset(str(out / "data.yaml"))
    assert data["names"] == dict(enumerate(sorted(labels))) == dict(enumerate(summary.categories))
    assert Path(data["path"]) == out.resolve()
    assert Path(data["val"]) == out.resolve() / "images" / "train"  # no validation image: val is train
    assert (summary.train, summary.val) == (1, 0)
    lines = read_labels(out / "labels" / "train" / "p.txt")
    assert [int(line[0]) for line in lines] == [sorted(labels).index(label) for label in labels]


def test_a_coco_export_imports_back_with_the_same_labels(site, tmp_path):
    from sync.coco_import import import_coco

    out = tmp_path / "truth.json"
    export_coco(site.store, "site", out, revision="truth-file")
    run = import_coco(site.store, "site", out, tmp_path, name="re-imported", role="revision")
    assert store_boxes(site.store, run) == store_boxes(site.store, site.store.get_run("site", "truth-file"))


def store_boxes(store, run):
    result = {}
    for sample_id, d in store.annotations_of(run).items():
        attributes = [dict(a) if a else None for a in d.data["attributes"]]
        rings = [[r.tolist() for r in rings] for rings in d.polygons] if d.polygons is not None else None
        result[sample_id] = (d.xyxy.tolist(), d.labels.tolist(), attributes, rings, d.data["shape_type"].tolist())
    return result


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_the_yolo_export_folder_follows_the_umask(site, tmp_path, umask):
    """Like every other output (mkdtemp alone would leave the export folder 0700)."""
    previous = os.umask(umask)
    try:
        export_yolo(site.store, "site", tmp_path / "yolo", revision="truth-file")
        plain = tmp_path / "plain"
        plain.mkdir()
    finally:
        os.umask(previous)
    assert (tmp_path / "yolo").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o777 & ~umask
