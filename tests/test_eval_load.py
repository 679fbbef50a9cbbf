"""Choosing and loading what `autolabel eval` compares (`sync.evaluate.load`), on SQLite stores
built run by run: pre-label runs, CVAT human revisions (several jobs, re-pulled), COCO imports.

Every expectation is derived from the runs the test records (which revision covers which
sample, which boxes each one holds), never from the loader's own output.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from serverless.detections import Detections
from serverless.ontology import parse_ontology
from sync.coco_import import import_coco
from sync.evaluate.data import EvalError
from sync.evaluate.load import choose_runs, default_pred, load_eval, run_thresholds, wants_masks
from sync.prelabel_store import file_sha256, sample_uri
from sync.store import AnnotationIn, Provenance, SampleIn, StoreError, open_store
from tests.bridge_support import write_images

SERVER = "https://cvat.example.com"
DATASET = "site"
W, H = 64, 48
ONTOLOGY = """name: zoo
defaults: {threshold: 0.3}
labels:
  - name: zebra
    threshold: 0.4
  - name: cat
  - name: apple
"""
"""Labels deliberately not in alphabetical order: zebra, cat, apple."""


def det(boxes, labels, scores=None, *, attributes=None, polygons=None, masks=None) -> Detections:
    """Detections of one sample; ``polygons`` / ``masks`` make polygon / mask rows."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    data = {}
    if attributes is not None:
        column = np.empty(n, dtype=object)
        column[:] = list(attributes)
        data["attributes"] = column
    return Detections(
        xyxy=boxes,
        scores=np.full(n, 0.9, np.float32) if scores is None else np.asarray(scores, np.float32),
        class_ids=np.zeros(n, np.int64),
        labels=np.array(labels if n else [], dtype=str),
        polygons=polygons,
        masks=masks,
        data=data,
    )


def box_mask(box, width=W, height=H) -> np.ndarray:
    """The pixels of an integer box (x2, y2 exclusive): COCO's box rasterization."""
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = np.zeros((height, width), bool)
    mask[y1:y2, x1:x2] = True
    return mask


class Site:
    """A store with one dataset of real image files (so COCO imports line up sample by sample)."""

    def __init__(self, store, tmp_path, n: int, dataset: str = DATASET) -> None:
        self.store, self.tmp_path, self.dataset = store, tmp_path, dataset
        self.images = write_images(tmp_path / f"images-{dataset}", n, width=W, height=H)
        ds = store.get_or_create_dataset(dataset)
        self.ids = store.add_samples(ds, [SampleIn(sample_uri(p), W, H, file_sha256(p)) for p in self.images])
        self._task_links = {}

    def prelabel(self, name, dets, *, ontology=True, params=None, finish=True):
        """A pre-label run over ``{sample_id: Detections}`` (with the zoo ontology's provenance)."""
        prov = (
            Provenance.from_ontology(parse_ontology(ONTOLOGY), params=params)
            if ontology
            else Provenance(params=params)
        )
        run = self.store.create_run(self.dataset, "prelabel", name=name, provenance=prov)
        self.store.add_detections(run, dets)
        return self.store.finish_run(run) if finish else run

    def task(self, task_id, sample_ids, pre):
        """A CVAT task whose frame i is ``sample_ids[i]``, pushed from ``pre``."""
        link = self.store.link_cvat_task(self.dataset, SERVER, task_id, name=f"task-{task_id}", run=pre)
        self.store.link_frames(link, dict(enumerate(sample_ids)))
        return link

    def revise(self, task, job_id, start, stop, dets, day):
        """A pull of job ``job_id`` (frames ``start..stop``) holding ``dets``, on 2026-01-``day``."""
        when = datetime(2026, 1, day, tzinfo=UTC)
        job = self.store.upsert_cvat_job(task, job_id, start_frame=start, stop_frame=stop, updated_date=when)
        return self.store.record_human_revision(job, dets, updated_date=when)

    def imported(self, name, role, per_image, *, crowd=()):
        """``autolabel import``: a COCO file with ``{image index: [(label, xyxy, score)]}`` as an
        import run of ``role``; annotation numbers in ``crowd`` (0-based, in order) are iscrowd."""
        labels = sorted({label for items in per_image.values() for label, _, _ in items})
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(labels)]
        images, annotations = [], []
        for index in sorted(per_image):
            images.append({"id": index + 1, "file_name": self.images[index].name, "width": W, "height": H})
            for label, (x1, y1, x2, y2), score in per_image[index]:
                row = {
                    "id": len(annotations) + 1, "image_id": index + 1, "category_id": labels.index(label) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(len(annotations) in crowd),
                }
                if score is not None:
                    row["score"] = score
                annotations.append(row)
        path = self.tmp_path / f"{name}.json"
        path.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))
        return import_coco(self.store, self.dataset, path, self.images[0].parent, name=name, role=role)


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as opened:
        yield opened


def one_cat(sample_ids, x=0.0):
    """One cat box per sample whose left edge is ``x`` (tells runs apart)."""
    return {sid: det([[x, 2, x + 10, 12]], ["cat"]) for sid in sample_ids}


def truth_boxes(data):
    """Left edge of each truth box, per sample (the runs below encode their identity there)."""
    return [[float(v) for v in t.xyxy[:, 0]] for t in data.truth]


# ---------------------------------------------------------------------------- default pred


def test_default_pred_is_the_latest_finished_prelabel_run(store, tmp_path):
    site = Site(store, tmp_path, 2)
    site.prelabel("p1", one_cat(site.ids))
    p2 = site.prelabel("p2", one_cat(site.ids))
    site.imported("model-x", "prediction", {0: [("cat", (1, 1, 9, 9), 0.8)]})  # newer, but not a pre-label run
    site.prelabel("p3-open", one_cat(site.ids), finish=False)
    assert default_pred(store, DATASET).id == p2.id
    assert choose_runs(store, DATASET, truth="model-x").preds[0].name == "p2"


def test_default_pred_falls_back_to_a_prediction_import(store, tmp_path):
    site = Site(store, tmp_path, 2)
    site.prelabel("open", one_cat(site.ids), finish=False)  # unfinished pre-label runs never count
    site.imported("model-a", "prediction", {0: [("cat", (1, 1, 9, 9), 0.8)]})
    model_b = site.imported("model-b", "prediction", {0: [("cat", (1, 1, 9, 9), 0.7)]})
    site.imported("gt", "revision", {0: [("cat", (1, 1, 9, 9), None)]})  # newest, but truth
    assert default_pred(store, DATASET).id == model_b.id
    selection = choose_runs(store, DATASET)
    assert [r.name for r in selection.preds] == ["model-b"]
    assert {r.name for r in selection.truth.values()} == {"gt"}


def test_no_pred_at_all_says_how_to_make_one(store, tmp_path):
    site = Site(store, tmp_path, 2)
    site.imported("gt", "revision", {0: [("cat", (1, 1, 9, 9), None)]})
    site.prelabel("open", one_cat(site.ids), finish=False)
    with pytest.raises(EvalError, match="autolabel prelabel") as caught:
        choose_runs(store, DATASET)
    assert repr(DATASET) in str(caught.value)


# ---------------------------------------------------------------------------- default truth


@pytest.fixture
def revised(store, tmp_path):
    """Six samples s0..s5, pre-labelled by p1 (all) and p2 (s0..s2), corrected as follows
    (the left edge of every truth box encodes the run that holds it):

    - task 1 (frames 0..3 = s0..s3): job 10 (s0, s1) pulled on day 1 (x=10) and again on
      day 3 (x=30); job 11 (s2, s3) pulled on day 2 (x=20);
    - task 2 (frames 0..1 = s3, s4): job 20 pulled on day 4 (x=40), after job 11;
    - an imported revision of s4 and s5 (x=50), newer than every human revision;
    - an unfinished import with role revision of s5 (x=60) and a prediction import of s5 (x=70).
    """
    site = Site(store, tmp_path, 6)
    s = site.ids
    p1 = site.prelabel("p1", one_cat(s, x=1))
    site.prelabel("p2", one_cat(s[:3], x=2))
    task1 = site.task(1, s[:4], p1)
    site.revise(task1, 10, 0, 1, one_cat(s[0:2], x=10), day=1)
    site.revise(task1, 11, 2, 3, one_cat(s[2:4], x=20), day=2)
    site.revise(task1, 10, 0, 1, one_cat(s[0:2], x=30), day=3)
    task2 = site.task(2, [s[3], s[4]], p1)
    site.revise(task2, 20, 0, 1, one_cat(s[3:5], x=40), day=4)
    site.imported("gt-import", "revision", {4: [("cat", (50, 2, 60, 12), None)], 5: [("cat", (50, 2, 60, 12), None)]})
    ds = store.get_or_create_dataset(DATASET)
    open_import = store.create_run(ds, "import", name="open-import", provenance=Provenance(params={"role": "revision"}))
    store.add_detections(open_import, one_cat(s[5:], x=60), with_scores=False)
    site.imported("pred-import", "prediction", {5: [("cat", (70, 2, 80, 12), 0.5)]})
    return site


def test_default_truth_is_the_latest_human_revision_per_sample_else_the_imported_revision(store, revised):
    s = revised.ids
    selection = choose_runs(store, DATASET, preds=["p1"])
    expected = {s[0]: "job10-rev2", s[1]: "job10-rev2", s[2]: "job11-rev1", s[3]: "job20-rev1",
                s[4]: "job20-rev1", s[5]: "gt-import"}
    assert {sid: run.name for sid, run in selection.truth.items()} == expected
    assert selection.sample_ids == tuple(s)
    assert selection.truth_description.startswith("latest human revision else imported revision per sample")
    (data,) = load_eval(store, selection)
    assert truth_boxes(data) == [[30.0], [30.0], [20.0], [40.0], [40.0], [50.0]]
    assert [list(p.xyxy[:, 0]) for p in data.pred] == [[1.0]] * 6
    assert data.pred_name == "p1" and data.truth_name == selection.truth_description
    np.testing.assert_array_equal(data.sample_ids, s)
    np.testing.assert_array_equal(data.sizes, [[W, H]] * 6)
    assert data.uris == tuple(sample_uri(p) for p in revised.images)
    # human truth has no score: it reads as 1.0
    assert all(t.scores.tolist() == [1.0] for t in data.truth)


def test_explicit_truth_run(store, revised):
    s = revised.ids
    selection = choose_runs(store, DATASET, preds=["p1"], truth="job10-rev1")
    assert selection.sample_ids == (s[0], s[1])
    assert {run.name for run in selection.truth.values()} == {"job10-rev1"}
    assert selection.truth_description == "job10-rev1 (human)"
    (data,) = load_eval(store, selection)
    assert truth_boxes(data) == [[10.0], [10.0]]  # the older pull, as asked
    with pytest.raises(EvalError, match="'open-import' is not finished"):
        choose_runs(store, DATASET, preds=["p1"], truth="open-import")
    with pytest.raises(StoreError, match="no run named 'nope'"):
        choose_runs(store, DATASET, preds=["p1"], truth="nope")


def test_a_pred_run_that_is_also_the_truth_is_refused(store, revised):
    with pytest.raises(EvalError, match="'p1' is both a prediction and the truth"):
        choose_runs(store, DATASET, preds=["p1"], truth="p1")
    with pytest.raises(EvalError, match="'gt-import' is both a prediction and the truth"):
        choose_runs(store, DATASET, preds=["gt-import"])  # the default truth of s5


def test_unfinished_unknown_and_repeated_pred_runs_are_refused(store, revised):
    revised.prelabel("open", one_cat(revised.ids), finish=False)
    with pytest.raises(EvalError, match="'open' is not finished"):
        choose_runs(store, DATASET, preds=["p1", "open"])
    with pytest.raises(StoreError, match="no run named 'nope'"):
        choose_runs(store, DATASET, preds=["nope"])
    with pytest.raises(EvalError, match="twice"):
        choose_runs(store, DATASET, preds=["p1", "p1"])
    with pytest.raises(StoreError, match="nowhere"):
        choose_runs(store, "nowhere")


def test_no_truth_at_all_is_an_error_naming_the_ways_to_get_one(store, tmp_path):
    site = Site(store, tmp_path, 2)
    site.prelabel("p1", one_cat(site.ids))
    site.imported("pred-import", "prediction", {0: [("cat", (1, 1, 9, 9), 0.5)]})
    with pytest.raises(EvalError, match="no human revision") as caught:
        choose_runs(store, DATASET)
    assert "autolabel cvat pull" in str(caught.value) and "--truth" in str(caught.value)


def test_several_preds_are_compared_on_the_samples_they_all_cover(store, revised):
    s = revised.ids
    selection = choose_runs(store, DATASET, preds=["p1", "p2"])
    assert [r.name for r in selection.preds] == ["p1", "p2"]
    assert selection.sample_ids == tuple(s[:3])
    assert len(selection.notes) == 1
    assert "'p2'" in selection.notes[0] and "3 samples" in selection.notes[0]  # s3, s4, s5
    datas = load_eval(store, selection)
    assert [d.pred_name for d in datas] == ["p1", "p2"]
    assert [[list(p.xyxy[:, 0]) for p in d.pred] for d in datas] == [[[1.0]] * 3, [[2.0]] * 3]
    assert all(d.notes == selection.notes for d in datas)
    # the same samples, truth and labels for every run
    assert all(d.truth is datas[0].truth and d.labels == datas[0].labels for d in datas)
    reverse = choose_runs(store, DATASET, preds=["p2", "p1"])
    assert reverse.sample_ids == selection.sample_ids
    assert len(reverse.notes) == 1 and "'p2'" in reverse.notes[0]


def test_preds_without_a_common_sample_are_an_error(store, tmp_path):
    site = Site(store, tmp_path, 3)
    s = site.ids
    pre = site.prelabel("left", one_cat(s[:1]))
    site.prelabel("right", one_cat(s[1:]))
    site.revise(site.task(1, s, pre), 1, 0, 2, one_cat(s), day=1)
    with pytest.raises(EvalError, match="no sample of dataset 'site' is covered by both 'left', 'right'"):
        choose_runs(store, DATASET, preds=["left", "right"])


# ---------------------------------------------------------------------------- labels, crowd, thresholds


def test_labels_are_the_first_runs_ontology_then_the_others_sorted(store, tmp_path):
    site = Site(store, tmp_path, 2)
    s = site.ids
    onto = site.prelabel("onto", {s[0]: det([[0, 0, 9, 9], [5, 5, 20, 20]], ["cat", "zebra"]), s[1]: Detections.empty()})
    site.prelabel("free", {s[0]: det([[0, 0, 9, 9]], ["bird"]), s[1]: det([[1, 1, 8, 8]], ["cat"])}, ontology=False)
    site.revise(site.task(1, s, onto), 1, 0, 1, {
        s[0]: det([[0, 0, 9, 9], [3, 3, 7, 7]], ["cat", "dog"]), s[1]: det([[2, 2, 6, 6]], ["zebra"]),
    }, day=1)

    datas = load_eval(store, choose_runs(store, DATASET, preds=["onto", "free"]))
    # ontology order (apple has no annotation but is in the ontology), then bird, dog sorted
    assert all(d.labels == ("zebra", "cat", "apple", "bird", "dog") for d in datas)
    # the first run has no ontology: every label found, sorted
    datas += load_eval(store, choose_runs(store, DATASET, preds=["free", "onto"]))
    assert datas[2].labels == ("bird", "cat", "dog", "zebra")
    for data in datas:
        for items in (data.truth, data.pred):
            for d in items:
                assert [data.labels[c] for c in d.class_ids.tolist()] == d.labels.tolist()
                assert d.class_ids.dtype == np.int64


def test_crowd_attribute_becomes_iscrowd(store, tmp_path):
    site = Site(store, tmp_path, 2)
    s = site.ids
    pre = site.prelabel("p1", one_cat(s))
    attrs = [{"iscrowd": True}, {"occluded": True}, None, {"iscrowd": False}]
    boxes = [[0, 0, 9, 9], [10, 10, 20, 20], [20, 20, 30, 30], [30, 30, 40, 40]]
    site.revise(site.task(1, [s[0]], pre), 1, 0, 0, {s[0]: det(boxes, ["cat"] * 4, attributes=attrs)}, day=1)
    site.imported("gt", "revision", {1: [("cat", (0, 0, 9, 9), None), ("cat", (10, 10, 20, 20), None)]}, crowd={1})
    (data,) = load_eval(store, choose_runs(store, DATASET, preds=["p1"]))
    assert data.truth[0].data["iscrowd"].tolist() == [True, False, False, False]
    assert data.truth[1].data["iscrowd"].tolist() == [False, True]  # COCO iscrowd=1 of the import
    assert data.truth[0].data["iscrowd"].dtype == bool


def test_crowd_attribute_pulled_from_cvat_as_text_is_read_as_a_boolean(store, tmp_path):
    """CVAT attribute values are text (`sync.pull` stores ``str(value)``): a checkbox
    ``iscrowd`` that is off arrives as ``"false"`` and is not a crowd region."""
    site = Site(store, tmp_path, 1)
    s = site.ids
    pre = site.prelabel("p1", one_cat(s))
    attrs = [{"iscrowd": "false"}, {"iscrowd": "true"}]
    site.revise(site.task(1, s, pre), 1, 0, 0, {s[0]: det([[0, 0, 9, 9], [10, 10, 20, 20]], ["cat"] * 2,
                                                          attributes=attrs)}, day=1)
    (data,) = load_eval(store, choose_runs(store, DATASET, preds=["p1"]))
    assert data.truth[0].data["iscrowd"].tolist() == [False, True]


def test_run_thresholds_honour_one_threshold_for_every_label(store, tmp_path):
    site = Site(store, tmp_path, 1)
    s = site.ids
    labels = ["zebra", "cat", "apple", "dog"]
    recorded = {"zebra": 0.4, "cat": 0.3, "apple": 0.3}  # the zoo ontology's
    one = site.prelabel("one", one_cat(s), params={"threshold": 0.9})
    own = site.prelabel("own", one_cat(s), params={"device": "cpu"})
    flag = site.prelabel("flag", one_cat(s), params={"threshold": True})  # not a number
    bare = site.prelabel("bare", one_cat(s), ontology=False)
    assert run_thresholds(one, labels) == {label: 0.9 for label in labels}
    assert run_thresholds(own, labels) == pytest.approx(recorded)
    assert run_thresholds(flag, labels) == pytest.approx(recorded)
    assert run_thresholds(bare, labels) is None
    site.revise(site.task(1, s, one), 1, 0, 0, one_cat(s), day=1)
    datas = load_eval(store, choose_runs(store, DATASET, preds=["one", "own", "bare"]))
    assert datas[0].pred_thresholds == {label: 0.9 for label in datas[0].labels}
    assert datas[1].pred_thresholds == pytest.approx(recorded)
    assert datas[2].pred_thresholds is None


# ---------------------------------------------------------------------------- masks


def rle_of(mask):
    """COCO compressed RLE of a full-frame mask, as the store keeps it."""
    from faster_coco_eval.core import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rect_ring(x1, y1, x2, y2):
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)


@pytest.fixture
def shaped(store, tmp_path):
    """Four samples; pre-label runs ``boxes`` (rectangles only), ``masks`` (mask rows on s0
    and s3, a rectangle on s0 and s1, s2 empty) and ``masks-12`` (s1, s2 only: a mask on s1);
    truth: job 1 (s0..s2) with a polygon on s0, rectangles elsewhere; job 2 (s3) a polygon."""
    site = Site(store, tmp_path, 4)
    s = site.ids
    mask_a = box_mask([5, 6, 25, 30])
    mask_a[10:12, 10:12] = False  # a hole: not a box
    mask_b = box_mask([30, 10, 50, 40])
    boxes = site.prelabel("boxes", {sid: det([[4, 4, 20, 20]], ["cat"]) for sid in s})
    site.prelabel("masks", {
        s[0]: det([[5, 6, 25, 30]], ["cat"], masks=mask_a[None]),
        s[1]: det([[2, 3, 12, 15]], ["cat"]),
        s[2]: Detections.empty(),
        s[3]: det([[30, 10, 50, 40]], ["zebra"], masks=mask_b[None]),
    })
    # s0 once more: a mask row and a plain rectangle row (no stored mask) in one sample
    mixed = store.create_run(DATASET, "prelabel", name="mixed")
    store.add_annotations(mixed, [
        AnnotationIn(s[0], "cat", 5, 6, 25, 30, "mask", 0.9, mask_rle=rle_of(mask_a)),
        AnnotationIn(s[0], "cat", 40, 2, 60, 22, "rectangle", 0.8),
    ])
    store.finish_run(mixed)
    site.prelabel("masks-12", {s[1]: det([[2, 3, 12, 15]], ["cat"], masks=box_mask([2, 3, 12, 15])[None]),
                               s[2]: Detections.empty()})
    task = site.task(1, s, boxes)
    site.revise(task, 1, 0, 2, {
        s[0]: det([[10, 10, 31, 21], [40, 30, 50, 40]], ["cat", "cat"],
                  polygons=((rect_ring(10, 10, 30, 20),), ())),
        s[1]: det([[2, 3, 12, 15]], ["cat"]),
        s[2]: det([[0, 0, 5, 5]], ["apple"]),
    }, day=1)
    site.revise(task, 2, 3, 3, {s[3]: det([[30, 10, 51, 41]], ["zebra"], polygons=((rect_ring(30, 10, 50, 40),),))},
                day=2)
    return site, {"mask_a": mask_a, "mask_b": mask_b}


def test_wants_masks_only_when_both_sides_have_mask_or_polygon_shapes(store, shaped):
    assert wants_masks(store, choose_runs(store, DATASET, preds=["masks"]))
    assert not wants_masks(store, choose_runs(store, DATASET, preds=["boxes"]))  # truth polygons, pred boxes
    # a mask pre-label whose samples (s1, s2) have rectangle truth only: the polygons of s0
    # and s3 are outside the comparison
    assert not wants_masks(store, choose_runs(store, DATASET, preds=["masks-12"]))
    # pred masks, but the chosen truth holds rectangles only
    assert not wants_masks(store, choose_runs(store, DATASET, preds=["masks"], truth="boxes"))
    assert wants_masks(store, choose_runs(store, DATASET, preds=["boxes", "masks"]))  # some pre-label has masks


def test_load_eval_with_masks_gives_every_annotation_a_full_frame_mask(store, shaped):
    site, masks = shaped
    selection = choose_runs(store, DATASET, preds=["masks", "boxes"])
    datas = load_eval(store, selection, masks=True)
    for data in datas:
        assert data.has_masks
        for items in (data.truth, data.pred):
            for d in items:
                assert d.masks is not None and d.masks.dtype == bool and d.masks.shape == (len(d), H, W)
    masks_run, boxes_run = datas
    # stored masks as they are; rectangles rasterized as their pixels
    np.testing.assert_array_equal(masks_run.pred[0].masks[0], masks["mask_a"])
    np.testing.assert_array_equal(masks_run.pred[1].masks[0], box_mask([2, 3, 12, 15]))
    np.testing.assert_array_equal(masks_run.pred[3].masks[0], masks["mask_b"])
    for d in boxes_run.pred:
        np.testing.assert_array_equal(d.masks[0], box_mask([4, 4, 20, 20]))
    # truth: polygons filled with their boundary pixels (vertices at whole pixels), rectangles as pixels
    truth = masks_run.truth
    expected_polygon = np.zeros((H, W), bool)
    expected_polygon[10:21, 10:31] = True
    np.testing.assert_array_equal(truth[0].masks[0], expected_polygon)
    np.testing.assert_array_equal(truth[0].masks[1], box_mask([40, 30, 50, 40]))
    np.testing.assert_array_equal(truth[1].masks[0], box_mask([2, 3, 12, 15]))
    np.testing.assert_array_equal(truth[2].masks[0], box_mask([0, 0, 5, 5]))
    expected_polygon = np.zeros((H, W), bool)
    expected_polygon[10:41, 30:51] = True
    np.testing.assert_array_equal(truth[3].masks[0], expected_polygon)
    assert len(masks_run.pred[2]) == 0 and masks_run.pred[2].masks.shape == (0, H, W)
    # without masks=True nothing is rasterized
    plain = load_eval(store, selection)
    assert all(d.masks is None for data in plain for d in (*data.truth, *data.pred) if len(d))
    assert not plain[1].has_masks


def test_load_eval_with_masks_keeps_a_rectangle_row_next_to_a_mask_row_as_its_box(store, shaped):
    site, masks = shaped
    (data,) = load_eval(store, choose_runs(store, DATASET, preds=["mixed"]), masks=True)
    (pred,) = data.pred
    assert pred.data["shape_type"].tolist() == ["mask", "rectangle"]
    np.testing.assert_array_equal(pred.masks[0], masks["mask_a"])
    np.testing.assert_array_equal(pred.masks[1], box_mask([40, 2, 60, 22]))
