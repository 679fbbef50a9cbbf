"""The label store (sync.store) on SQLite and on a real PostgreSQL server.

Every store test runs on both backends. PostgreSQL comes from ``AUTOLABEL_TEST_POSTGRES_URL``
(default ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``, then the same as ``root``);
each test gets its own fresh schema, dropped afterwards. When no server answers, the
PostgreSQL tests fail with a message saying how to start one; they are never skipped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import URL, create_engine, func, inspect, make_url, select, text, update

from serverless.detections import Detections
from sync.store import (
    SCHEMA_VERSION,
    AnnotationIn,
    Provenance,
    SampleIn,
    StoreError,
    detections_to_rows,
    open_store,
    resolve_url,
    rows_to_detections,
    strip_credentials,
)
from sync.store.convert import row_values
from sync.store.credentials import check_no_secrets
from sync.store.migrations import VERSION_KEY, read_version, upgrade_schema
from sync.store.schema import Base, CvatFrame, CvatJob, CvatTask, PushedShape, StoreMeta

PG_ENV = "AUTOLABEL_TEST_POSTGRES_URL"
PG_DEFAULTS = (
    "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg2://root@127.0.0.1:5432/test",
)
SECRET = "hunter2-Sekr3t"

# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pg_admin_url() -> URL:
    """A PostgreSQL URL that accepts connections, or a test failure saying how to get one."""
    configured = os.environ.get(PG_ENV)
    candidates = [configured] if configured else list(PG_DEFAULTS)
    problems = []
    for candidate in candidates:
        url = make_url(candidate)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except Exception as err:  # noqa: BLE001 (any failure to connect is reported below)
            reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
            problems.append(f"{url.render_as_string(hide_password=True)}: {reason}")
        finally:
            engine.dispose()
    pytest.fail(
        "the PostgreSQL store tests need a PostgreSQL server and are not skipped; tried "
        + "; ".join(problems)
        + ". Start the local one (`.ci/run` does: pg_ctlcluster --skip-systemctl-redirect "
        "$(ls /etc/postgresql) main start) or point the tests at yours with "
        f"{PG_ENV}=postgresql+psycopg2://USER@HOST:PORT/DB",
        pytrace=False,
    )


@contextmanager
def postgres_schema(admin_url: URL):
    """A URL on a new PostgreSQL schema (through ``search_path``), dropped afterwards."""
    schema = f"autolabel_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield admin_url.update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A URL for a fresh, empty store: a SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
        return
    with postgres_schema(request.getfixturevalue("pg_admin_url")) as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_admin_url) -> URL:
    """A fresh PostgreSQL schema only (for what only a server can show)."""
    with postgres_schema(pg_admin_url) as url:
        yield url


@pytest.fixture
def store(store_url):
    with open_store(store_url) as opened:
        yield opened


def make_det(boxes, labels, scores=None, **kwargs) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        xyxy=boxes,
        scores=np.full(n, 0.9, np.float32) if scores is None else scores,
        class_ids=np.zeros(n, np.int64),
        labels=labels,
        **kwargs,
    )


def dataset_with_samples(store, n=3, name="site", width=32, height=24):
    ds = store.get_or_create_dataset(name)
    ids = store.add_samples(ds, [SampleIn(f"img/{i}.jpg", width, height, f"sha256:{i}") for i in range(n)])
    return ds, ids


def all_text(store) -> str:
    """Every value of every table of the store, as one string."""
    chunks = []
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


# ---------------------------------------------------------------------------- import, URLs


def test_import_sync_store_imports_no_heavy_library():
    code = (
        "import sys, sync.store; "
        "print(sorted(m for m in ('torch', 'cv2', 'transformers', 'pycocotools', 'faster_coco_eval', 'segment_anything') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_resolve_url_order(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTOLABEL_DB", raising=False)
    assert resolve_url().render_as_string() == "sqlite:///autolabel.db"
    monkeypatch.setenv("AUTOLABEL_DB", str(tmp_path / "env.db"))
    assert resolve_url().database == str(tmp_path / "env.db")
    assert resolve_url(tmp_path / "arg.db").database == str(tmp_path / "arg.db")
    assert resolve_url("postgresql+psycopg2://u@h:5432/d").get_backend_name() == "postgresql"
    assert resolve_url("postgresql://u@h:5432/d").drivername == "postgresql+psycopg2"
    with pytest.raises(StoreError, match="supported: sqlite, postgresql"):
        resolve_url("mysql://u@h/d")


def test_open_store_defaults_to_autolabel_db_in_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTOLABEL_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    with open_store() as store:
        store.get_or_create_dataset("d")
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "autolabel.db").is_file()


def test_open_store_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOLABEL_DB", f"sqlite:///{tmp_path / 'env.db'}")
    with open_store() as store:
        store.get_or_create_dataset("d")
    assert (tmp_path / "env.db").is_file()


def test_open_store_refuses_missing_directory_and_create_false(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "no" / "such" / "dir.db")
    with pytest.raises(StoreError, match="there is no store"):
        open_store(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://alice:s3cret@cvat.example.com:8080/?token=abc#x", "https://cvat.example.com:8080"),
        ("http://bob@localhost:8080/", "http://localhost:8080"),
        ("HTTPS://CVAT.example.com/sub/path/", "https://cvat.example.com/sub/path"),
        ("http://u:p@[::1]:8080", "http://[::1]:8080"),
        ("IDEA-Research/grounding-dino-tiny", "IDEA-Research/grounding-dino-tiny"),
    ],
)
def test_strip_credentials(url, expected):
    assert strip_credentials(url) == expected


def test_check_no_secrets_refuses_secret_keys_without_echoing_values():
    assert check_no_secrets({"max_tokens": 256, "nms_iou": 0.5}, "params") == {"max_tokens": 256, "nms_iou": 0.5}
    assert check_no_secrets({"hub": ["https://u:p@h.example/x"]}, "params") == {"hub": ["https://h.example/x"]}
    for key in ("password", "hf_token", "api_key", "Authorization", "awsSecretAccessKey", "cvat-auth"):
        with pytest.raises(StoreError, match="looks like a credential") as info:
            check_no_secrets({"nested": {key: SECRET}}, "params")
        assert SECRET not in str(info.value)


def test_unparsable_url_error_hides_password():
    with pytest.raises(StoreError) as info:
        resolve_url(f"postgresql://user:{SECRET}@host:notaport/db")
    text_ = "".join(traceback.format_exception(info.value))
    assert SECRET not in text_


# ---------------------------------------------------------------------------- datasets, samples


def test_datasets_and_samples_are_idempotent(store):
    ds = store.get_or_create_dataset("site")
    assert store.get_or_create_dataset("site") == ds
    assert store.get_dataset("site") == ds
    assert [d.name for d in store.list_datasets()] == ["site"]
    with pytest.raises(StoreError, match="no dataset 'other'.*'site'"):
        store.get_dataset("other")

    items = [SampleIn(f"img/{i}.jpg", 640, 480, f"sha256:{i}") for i in range(700)]
    ids = store.add_samples(ds, items)
    assert len(set(ids)) == 700
    assert store.add_samples("site", items[::-1]) == ids[::-1]
    assert store.add_samples(ds, [items[3], items[3]]) == [ids[3], ids[3]]
    infos = store.samples(ds)
    assert [s.id for s in infos] == sorted(ids)
    assert {(s.uri, s.width, s.height, s.content_hash) for s in infos} == {
        (i.uri, i.width, i.height, i.content_hash) for i in items
    }
    assert [s.uri for s in store.samples(ds, ids=[ids[5], ids[1]])] == ["img/1.jpg", "img/5.jpg"]

    with pytest.raises(StoreError, match=r"sample 'img/2\.jpg'.*never changed"):
        store.add_samples(ds, [SampleIn("img/new.jpg", 10, 10), SampleIn("img/2.jpg", 640, 480, "sha256:other")])
    assert len(store.samples(ds)) == 700  # all or nothing: img/new.jpg was not added
    with pytest.raises(StoreError, match="appears twice"):
        store.add_samples(ds, [SampleIn("a.jpg", 1, 1), SampleIn("a.jpg", 2, 2)])
    with pytest.raises(StoreError, match="must be >= 1"):
        store.add_samples(ds, [SampleIn("zero.jpg", 0, 10)])
    with pytest.raises(StoreError, match="credentials") as info:
        store.add_samples(ds, [SampleIn(f"s3://key:{SECRET}@bucket/a.jpg", 1, 1)])
    assert SECRET not in str(info.value)


# ---------------------------------------------------------------------------- runs


def test_run_provenance_round_trips(store, sample_ontology):
    ds, _ = dataset_with_samples(store)
    provenance = Provenance.from_ontology(
        sample_ontology,
        model_id=f"https://me:{SECRET}@models.example.com/gdino",
        model_revision="abc123",
        params={"device": "cpu", "nms_iou": 0.5, "chunks": [1, 2], "max_tokens": 256},
    )
    run = store.create_run(ds, "prelabel", provenance=provenance)
    assert run.name == "prelabel-1" and run.kind == "prelabel" and not run.finished
    assert run.model_id == "https://models.example.com/gdino"
    assert run.model_revision == "abc123"
    assert run.ontology_yaml == sample_ontology.source
    assert run.ontology_hash == sample_ontology.content_hash
    assert run.thresholds == {
        name: pytest.approx(float(sample_ontology.threshold_for(i)))
        for i, name in enumerate(sample_ontology.label_names)
    }
    assert run.params == {"device": "cpu", "nms_iou": 0.5, "chunks": [1, 2], "max_tokens": 256}
    assert run.created_at.tzinfo is not None
    assert store.get_run(ds, "prelabel-1") == run
    assert store.run_by_id(run.id) == run

    second = store.create_run(ds, "prelabel", name="night", parent=run)
    third = store.create_run(ds, "prelabel")
    assert second.parent_run_id == run.id and third.name == "prelabel-3"
    imported = store.create_run(ds, "import", provenance=Provenance(params={"file": "gt.json"}))
    assert [r.name for r in store.list_runs(ds)] == ["prelabel-1", "night", "prelabel-3", "import-1"]
    assert [r.name for r in store.list_runs(ds, kind="import")] == ["import-1"]
    assert store.latest_run(ds, "prelabel") is None  # none finished yet
    assert store.latest_run(ds, "prelabel", finished=False) == third
    finished = store.finish_run(run)
    assert finished.finished and store.finish_run(run) == finished
    assert store.latest_run(ds, "prelabel") == finished
    assert imported.kind == "import"

    with pytest.raises(StoreError, match="already has a run named 'night'"):
        store.create_run(ds, "prelabel", name="night")
    with pytest.raises(StoreError, match="record_human_revision"):
        store.create_run(ds, "human")
    with pytest.raises(StoreError, match="looks like a credential") as info:
        store.create_run(ds, "prelabel", provenance=Provenance(params={"cvat_password": SECRET}))
    assert SECRET not in str(info.value)
    with pytest.raises(StoreError, match="no run named 'nope'"):
        store.get_run(ds, "nope")
    assert SECRET not in all_text(store)


def test_provenance_from_an_ontology_without_source_text(sample_ontology):
    from serverless.ontology import parse_ontology

    rebuilt = Provenance.from_ontology(sample_ontology.with_thresholds({}))
    assert rebuilt.ontology_yaml
    assert parse_ontology(rebuilt.ontology_yaml).content_hash == rebuilt.ontology_hash


# ---------------------------------------------------------------------------- Detections <-> rows


def rich_detections(height=24, width=32) -> Detections:
    boxes = [[1, 2, 9, 10], [4.25, 5.5, 20.75, 18.125], [0, 0, 32, 24]]
    masks = np.zeros((3, height, width), dtype=bool)
    masks[0, 2:10, 1:9] = True
    masks[1, 6:18, 5:21] = True
    masks[1, 10:12, 10:12] = False
    ring = np.array([[5, 6], [20, 6], [20, 17], [5, 17]], dtype=np.float32)
    hole = np.array([[10, 10], [11.5, 10], [11.5, 11.5]], dtype=np.float32)
    attributes = np.empty(3, dtype=object)
    attributes[:] = [{"occluded": True, "note": "tab\there\nnewline \\ back"}, None, {"n": 3}]
    return make_det(
        boxes,
        ["person", "ladder", "hard hat"],
        scores=np.array([0.25, 0.5, 1.0], np.float32),
        masks=masks,
        polygons=((), (ring, hole), ()),
        data={
            "cvat_id": np.array([11, -1, 13]),
            "source": np.array(["auto", "semi-auto", "manual"]),
            "shape_type": np.array(["mask", "polygon", "rectangle"]),
            "attributes": attributes,
        },
    )


def assert_same_detections(got: Detections, want: Detections, *, masks=True):
    np.testing.assert_array_equal(got.xyxy, want.xyxy)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.labels.tolist() == want.labels.tolist()
    if masks:
        np.testing.assert_array_equal(got.masks, want.masks)
    if want.polygons is None:
        assert got.polygons is None
    else:
        assert len(got.polygons) == len(want.polygons)
        for got_rings, want_rings in zip(got.polygons, want.polygons):
            assert len(got_rings) == len(want_rings)
            for a, b in zip(got_rings, want_rings):
                np.testing.assert_array_equal(a, b)
    for key in ("cvat_id", "source", "shape_type"):
        if key in want.data:
            assert got.data[key].tolist() == want.data[key].tolist()
    if "attributes" in want.data:
        assert list(got.data["attributes"]) == list(want.data["attributes"])


def test_detections_round_trip_with_masks_polygons_and_attributes(store):
    ds, ids = dataset_with_samples(store)
    det = rich_detections()
    run = store.create_run(ds, "prelabel")
    assert store.add_detections(run, {ids[0]: det, ids[1]: Detections.empty()}) == 3
    out = store.annotations_of(run, masks=True, label_index={"person": 0, "hard hat": 2})
    assert list(out) == [ids[0], ids[1]]
    assert len(out[ids[1]]) == 0
    assert_same_detections(out[ids[0]], det)
    assert out[ids[0]].class_ids.tolist() == [0, -1, 2]
    assert out[ids[0]].data["pre_annotation_id"].tolist() == [-1, -1, -1]
    annotation_ids = out[ids[0]].data["annotation_id"]
    assert len(set(annotation_ids.tolist())) == 3 and annotation_ids.min() > 0

    lazy = store.annotations_of(run, sample_ids=[ids[0], ids[2]])
    assert list(lazy) == [ids[0]]  # ids[2] is not covered by the run
    assert lazy[ids[0]].masks is None
    assert_same_detections(lazy[ids[0]], det, masks=False)

    with pytest.raises(StoreError, match="masks have size"):
        store.add_detections(run, {ids[2]: rich_detections(height=10, width=10)})


def test_rows_without_masks_get_box_and_polygon_pixels_when_masks_are_asked(store):
    ds, ids = dataset_with_samples(store, n=1, width=12, height=10)
    run = store.create_run(ds, "import")
    mask = np.zeros((1, 10, 12), dtype=bool)
    mask[0, 1:3, 1:4] = True
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask[0].astype(np.uint8)))
    rows = [
        AnnotationIn(ids[0], "a", 1, 1, 4, 3, "mask", mask_rle={"size": [10, 12], "counts": rle["counts"].decode()}),
        AnnotationIn(ids[0], "b", 2.0, 3.0, 5.0, 7.0),
        AnnotationIn(ids[0], "c", 6, 1, 9, 4, "polygon", polygon=((6, 1, 9, 1, 9, 4, 6, 4),)),
    ]
    store.add_annotations(run, rows)
    det = store.annotations_of(run, masks=True)[ids[0]]
    np.testing.assert_array_equal(det.masks[0], mask[0])
    expected_box = np.zeros((10, 12), dtype=bool)
    expected_box[3:7, 2:5] = True  # pixels whose centre lies inside 2..5 x 3..7
    np.testing.assert_array_equal(det.masks[1], expected_box)
    expected_polygon = np.zeros((10, 12), dtype=bool)
    expected_polygon[1:5, 6:10] = True  # polygons_to_mask fills boundary pixels
    np.testing.assert_array_equal(det.masks[2], expected_polygon)
    assert det.data["shape_type"].tolist() == ["mask", "rectangle", "polygon"]
    assert det.scores.tolist() == [1.0, 1.0, 1.0]  # no score stored reads as 1.0


def test_detections_to_rows_infers_shape_types_and_validates():
    det = rich_detections()
    plain = det.with_columns(data={})
    assert [r.shape_type for r in detections_to_rows(1, plain)] == ["mask", "mask", "mask"]
    no_masks = plain.with_columns(masks=None)
    rows = detections_to_rows(1, no_masks, with_scores=False, source="file")
    assert [r.shape_type for r in rows] == ["rectangle", "polygon", "rectangle"]
    assert {r.source for r in rows} == {"file"} and {r.score for r in rows} == {None}
    back = rows_to_detections(rows, width=32, height=24)
    np.testing.assert_array_equal(back.xyxy, det.xyxy)
    assert back.polygons[0] == () and len(back.polygons[1]) == 2
    with pytest.raises(StoreError, match="shape_type"):
        detections_to_rows(1, plain.with_columns(data={"shape_type": np.array(["box", "mask", "mask"])}))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (AnnotationIn(1, "a", 0, 0, 1, 1, "circle"), "shape_type must be one of"),
        (AnnotationIn(1, "a", 0, 0, float("nan"), 1), "4 finite numbers"),
        (AnnotationIn(1, "a", 0, 0, 1, 1, score=1.5), "score must lie in 0..1"),
        (AnnotationIn(1, "", 0, 0, 1, 1), "label must be a non-empty string"),
        (AnnotationIn(1, "a", 0, 0, 1, 1, "polygon", polygon=((0, 0, 1, 1),)), "polygon ring 0"),
        (AnnotationIn(1, "a", 0, 0, 1, 1, "mask", mask_rle={"counts": "x"}), "COCO compressed RLE"),
        (AnnotationIn(1, "a", 0, 0, 1, 1, attributes={"v": float("inf")}), "JSON-serializable"),
    ],
)
def test_malformed_rows_are_refused_with_the_reason(row, message):
    with pytest.raises(StoreError, match=message):
        row_values(row, "rows[0]")


LABEL_TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ ñ日\t\n\\\"',;{}")), min_size=1, max_size=12)


@st.composite
def box_detections(draw):
    n = draw(st.integers(0, 8))
    coords = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
    boxes = []
    for _ in range(n):
        x1, y1 = draw(coords), draw(coords)
        w, h = draw(st.floats(0, 1e4, width=32)), draw(st.floats(0, 1e4, width=32))
        boxes.append([x1, y1, np.float32(x1) + np.float32(w), np.float32(y1) + np.float32(h)])
    scores = np.array(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)), np.float32)
    labels = draw(st.lists(LABEL_TEXT, min_size=n, max_size=n))
    sources = draw(st.lists(st.sampled_from(["auto", "manual", "semi-auto", "file"]), min_size=n, max_size=n))
    return make_det(boxes, labels, scores=scores, data={"source": np.array(sources, dtype=str).reshape(n)})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(det=box_detections())
def test_boxes_scores_and_labels_round_trip_exactly(store, det):
    ds = store.get_or_create_dataset("hyp")
    (sample_id,) = store.add_samples(ds, [SampleIn("img.jpg", 100, 100)])
    run = store.create_run(ds, "prelabel")
    store.add_detections(run, {sample_id: det})
    got = store.annotations_of(run)[sample_id]
    assert_same_detections(got, det)


# ---------------------------------------------------------------------------- immutability


def test_open_runs_resume_without_duplicates_and_finished_runs_are_sealed(store):
    ds, ids = dataset_with_samples(store, n=4)
    run = store.create_run(ds, "prelabel")
    one = make_det([[0, 0, 5, 5]], ["person"])
    store.add_detections(run, {ids[0]: one, ids[1]: Detections.empty()})
    with pytest.raises(StoreError, match=rf"already covers sample ids \[{ids[1]}\]"):
        store.add_detections(run, {ids[2]: one, ids[1]: one})
    assert store.covered_samples(run) == [ids[0], ids[1]]  # ids[2] was not half-added
    assert store.count_annotations(run) == 1
    store.add_annotations(run, [AnnotationIn(ids[2], "person", 1, 1, 2, 2, score=0.5)], cover=[ids[3]])
    assert store.covered_samples(run) == ids
    store.finish_run(run)
    with pytest.raises(StoreError, match="is finished"):
        store.add_detections(run, {ids[3]: one})
    with pytest.raises(StoreError, match="not samples of dataset"):
        other = store.create_run(ds, "prelabel")
        store.add_detections(other, {10**9: one})
    with pytest.raises(StoreError, match="box must have"):
        store.add_annotations(other, [AnnotationIn(ids[0], "person", 5, 5, 1, 1)])


def link_task(store, ds, ids, run, *, server=f"https://alice:{SECRET}@cvat.example.com/?token={SECRET}"):
    task = store.link_cvat_task(ds, server, 12, name="site-a", project_id=3, run=run)
    store.link_frames(task, {frame: sid for frame, sid in enumerate(ids)})
    return task


def test_each_pull_adds_a_revision_and_keeps_the_old_ones(store):
    ds, ids = dataset_with_samples(store, n=4)
    pre = store.create_run(ds, "prelabel")
    store.add_detections(
        pre, {ids[0]: make_det([[0, 0, 5, 5], [1, 1, 9, 9]], ["person", "ladder"]), ids[1]: Detections.empty()}
    )
    store.finish_run(pre)
    task = link_task(store, ds, ids, pre)
    pre_ids = store.annotations_of(pre)[ids[0]].data["annotation_id"].tolist()
    store.record_pushed_shapes(task, {pre_ids[0]: 501, pre_ids[1]: 502}, job_id=7)
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = store.upsert_cvat_job(
        task, 7, start_frame=0, stop_frame=2, assignee="alice", stage="annotation", state="new", updated_date=t0
    )
    assert job.needs_pull

    edited = make_det(
        [[0, 0, 6, 6], [2, 2, 4, 4]],
        ["person", "hard hat"],
        data={"cvat_id": np.array([501, 503]), "source": np.array(["auto", "manual"])},
    )
    rev1 = store.record_human_revision(
        job,
        {ids[0]: edited},
        updated_date="2026-01-02T05:00:00Z",
        assignee="alice",
        stage="validation",
        state="completed",
    )
    assert (rev1.name, rev1.kind, rev1.parent_run_id, rev1.finished) == ("job7-rev1", "human", pre.id, True)
    assert (rev1.cvat_server, rev1.cvat_task_id, rev1.cvat_job_id) == ("https://cvat.example.com", 12, 7)
    assert (rev1.assignee, rev1.stage, rev1.state) == ("alice", "validation", "completed")
    assert rev1.cvat_updated_date == datetime(2026, 1, 2, 5, tzinfo=UTC)
    assert store.covered_samples(rev1) == ids[:3]  # frames 0..2, frames 1 and 2 left empty
    first = store.annotations_of(rev1)
    assert first[ids[0]].data["pre_annotation_id"].tolist() == [pre_ids[0], -1]
    assert first[ids[0]].data["cvat_id"].tolist() == [501, 503]
    assert first[ids[0]].data["source"].tolist() == ["auto", "manual"]
    assert first[ids[0]].scores.tolist() == [1.0, 1.0]  # human work has no score
    job = store.get_cvat_job(task, 7)
    assert not job.needs_pull and job.last_revision_id == rev1.id
    assert job.last_pulled_updated_date == datetime(2026, 1, 2, 5, tzinfo=UTC)

    job = store.upsert_cvat_job(
        task,
        7,
        start_frame=0,
        stop_frame=2,
        assignee="bob",
        stage="acceptance",
        state="in progress",
        updated_date=datetime(2026, 1, 3, tzinfo=UTC),
    )
    assert job.needs_pull
    rev2 = store.record_human_revision(job, {ids[0]: Detections.empty(), ids[1]: edited}, updated_date=job.updated_date)
    assert rev2.name == "job7-rev2" and rev2.id != rev1.id
    assert (rev2.assignee, rev2.stage, rev2.state) == ("bob", "acceptance", "in progress")  # as last seen
    assert [r.name for r in store.revisions_of(job)] == ["job7-rev1", "job7-rev2"]
    assert store.latest_run(ds, "human") == rev2
    again = store.annotations_of(rev1)
    for sid in first:
        assert_same_detections(again[sid], first[sid], masks=False)
        assert again[sid].data["annotation_id"].tolist() == first[sid].data["annotation_id"].tolist()
    assert len(store.annotations_of(rev2)[ids[0]]) == 0
    assert store.count_annotations(pre) == 2


def test_a_failed_pull_records_nothing(store):
    ds, ids = dataset_with_samples(store, n=2)
    _, other_ids = dataset_with_samples(store, n=1, name="other")
    task = link_task(store, ds, ids, None)
    job = store.upsert_cvat_job(task, 8, start_frame=0, stop_frame=1)
    with pytest.raises(StoreError, match="not samples of dataset"):
        store.record_human_revision(
            job,
            {ids[0]: make_det([[0, 0, 1, 1]], ["a"]), other_ids[0]: make_det([[0, 0, 1, 1]], ["a"])},
            updated_date=datetime.now(UTC),
        )
    assert store.list_runs(ds) == []
    assert store.get_cvat_job(task, 8).last_pulled_at is None
    with pytest.raises(StoreError, match="timezone-aware"):
        store.record_human_revision(job, {}, updated_date=datetime(2026, 1, 1))


# ---------------------------------------------------------------------------- comparison


def test_compare_pairs_samples_both_runs_cover(store):
    ds, ids = dataset_with_samples(store, n=4)
    a = store.create_run(ds, "prelabel")
    b = store.create_run(ds, "import")
    det_a = {
        ids[0]: make_det([[0, 0, 4, 4]], ["x"]),
        ids[1]: make_det([[1, 1, 3, 3], [0, 0, 2, 2]], ["x", "y"]),
        ids[2]: Detections.empty(),
    }
    det_b = {
        ids[1]: make_det([[1, 1, 3, 3]], ["x"]),
        ids[2]: make_det([[5, 5, 6, 6]], ["y"]),
        ids[3]: Detections.empty(),
    }
    store.add_detections(a, det_a)
    store.add_detections(b, det_b)
    comparison = store.compare(a, b)
    assert comparison.run_a.id == a.id and comparison.run_b.id == b.id
    assert [p.sample_id for p in comparison.pairs] == [ids[1], ids[2]]
    assert comparison.only_a == (ids[0],) and comparison.only_b == (ids[3],)
    for pair in comparison.pairs:
        assert_same_detections(pair.a, det_a[pair.sample_id], masks=False)
        assert_same_detections(pair.b, det_b[pair.sample_id], masks=False)
    other, _ = dataset_with_samples(store, n=1, name="other")
    with pytest.raises(StoreError, match="different datasets"):
        store.compare(a, store.create_run(other, "import"))


# ---------------------------------------------------------------------------- CVAT links


def count(store, model) -> int:
    with store.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_cvat_links_are_idempotent_and_contradictions_fail(store):
    ds, ids = dataset_with_samples(store, n=3)
    pre = store.create_run(ds, "prelabel")
    store.add_detections(pre, {ids[0]: make_det([[0, 0, 1, 1], [0, 0, 2, 2]], ["a", "b"])})
    ann = store.annotations_of(pre)[ids[0]].data["annotation_id"].tolist()
    for _ in range(2):  # a rerun of the same push
        task = link_task(store, ds, ids, pre)
        store.record_pushed_shapes(task, {ann[0]: 900, ann[1]: 901}, job_id=1)
        job = store.upsert_cvat_job(task, 1, start_frame=0, stop_frame=2, stage="annotation", state="new")
    assert (count(store, CvatTask), count(store, CvatFrame), count(store, PushedShape), count(store, CvatJob)) == (
        1,
        3,
        2,
        1,
    )
    assert task.server == "https://cvat.example.com" and task.run_id == pre.id and task.project_id == 3
    assert store.get_cvat_task("https://bob:other@cvat.example.com/", 12) == task
    assert store.get_cvat_task("https://cvat.example.com", 13) is None
    assert store.cvat_tasks(ds) == [task]
    assert store.frames_of(task) == {0: ids[0], 1: ids[1], 2: ids[2]}
    assert store.pushed_shapes(task) == {900: ann[0], 901: ann[1]}
    assert store.jobs_of(task) == [job]
    assert store.upsert_cvat_job(task, 1, start_frame=0, stop_frame=2, stage="validation").stage == "validation"

    other, other_ids = dataset_with_samples(store, n=1, name="other")
    with pytest.raises(StoreError, match="linked to another dataset"):
        store.link_cvat_task(other, "https://cvat.example.com", 12)
    with pytest.raises(StoreError, match="already holds pre-label run"):
        store.link_cvat_task(ds, "https://cvat.example.com", 12, run=store.create_run(ds, "prelabel"))
    with pytest.raises(StoreError, match=f"frame 0 is already linked to sample {ids[0]}"):
        store.link_frames(task, {0: ids[1]})
    with pytest.raises(StoreError, match="not samples of dataset"):
        store.link_frames(task, {5: other_ids[0]})
    with pytest.raises(StoreError, match="CVAT shape 900 is already mapped"):
        store.record_pushed_shapes(task, {ann[1]: 900})
    with pytest.raises(StoreError, match="frames 0..2, got 0..5"):
        store.upsert_cvat_job(task, 1, start_frame=0, stop_frame=5)
    with pytest.raises(StoreError, match="is not in the store"):
        store.get_cvat_job(task, 99)
    assert (count(store, CvatFrame), count(store, PushedShape)) == (3, 2)


# ---------------------------------------------------------------------------- schema version


def stamp(store, version: int) -> None:
    with store.session() as s:
        s.execute(update(StoreMeta).where(StoreMeta.key == VERSION_KEY).values(value=str(version)))


def test_a_store_from_a_newer_autolabel_is_refused(store_url):
    with open_store(store_url) as store:
        stamp(store, SCHEMA_VERSION + 1)
    with pytest.raises(
        StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than the {SCHEMA_VERSION}.*upgrade autolabel"
    ):
        open_store(store_url)


def test_an_older_store_needs_a_migration(store_url):
    with open_store(store_url) as store:
        stamp(store, 0)
    with pytest.raises(StoreError, match=r"schema version 0; this autolabel needs .*autolabel store migrate"):
        open_store(store_url)
    with pytest.raises(StoreError, match="no migration from schema version 0 to 1"):
        open_store(store_url, upgrade=True)
    with pytest.raises(StoreError, match="schema version 0"):
        open_store(store_url)  # the failed upgrade changed nothing


def test_upgrade_schema_runs_each_step_and_stamps_it(store_url):
    def add_notes(conn):
        conn.execute(text("CREATE TABLE notes_v2 (id INTEGER PRIMARY KEY)"))

    def add_tags(conn):
        conn.execute(text("CREATE TABLE tags_v3 (id INTEGER PRIMARY KEY)"))

    with open_store(store_url) as store:
        with store.engine.begin() as conn:
            assert upgrade_schema(conn, 1, store.url, target=3, migrations={1: add_notes, 2: add_tags}) == 3
            assert read_version(conn, store.url) == 3
        tables = set(inspect(store.engine).get_table_names())
        assert {"notes_v2", "tags_v3"} <= tables
        with pytest.raises(StoreError, match="no migration from schema version 3 to 4"), store.engine.begin() as conn:
            upgrade_schema(conn, 3, store.url, target=5, migrations={4: add_notes})
        with store.engine.connect() as conn:
            assert read_version(conn, store.url) == 3


def test_a_database_with_foreign_tables_of_our_names_is_refused(store_url):
    engine = create_engine(resolve_url(store_url))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE samples (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(StoreError, match="not an autolabel store"):
        open_store(store_url)


# ---------------------------------------------------------------------------- bulk


def test_bulk_insert_of_100k_annotations(store):
    ds = store.get_or_create_dataset("bulk")
    ids = store.add_samples(ds, [SampleIn(f"img/{i:04d}.jpg", 640, 480) for i in range(1000)])
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, (100, 2))
    template = make_det(np.hstack([xy, xy + 50]), ["person"] * 100, scores=rng.uniform(0, 1, 100).astype(np.float32))
    run = store.create_run(ds, "prelabel")
    assert store.add_detections(run, {sid: template for sid in ids}) == 100_000
    assert store.count_annotations(run) == 100_000
    out = store.annotations_of(run)
    assert sum(len(d) for d in out.values()) == 100_000
    assert_same_detections(out[ids[-1]], template, masks=False)


# ---------------------------------------------------------------------------- credentials


def test_credentials_never_reach_the_store_or_the_logs(store, caplog):
    caplog.set_level(logging.DEBUG)
    ds, ids = dataset_with_samples(store, n=2)
    run = store.create_run(
        ds,
        "prelabel",
        provenance=Provenance(
            model_id=f"https://u:{SECRET}@hub.example/m", params={"cvat": f"https://u:{SECRET}@cvat.example"}
        ),
    )
    task = link_task(store, ds, ids, run)
    job = store.upsert_cvat_job(task, 5, start_frame=0, stop_frame=1)
    store.record_human_revision(job, {}, updated_date=datetime.now(UTC) - timedelta(days=1))
    dump = all_text(store)
    assert "cvat.example.com" in dump and "hub.example/m" in dump
    assert SECRET not in dump and "alice" not in dump
    assert SECRET not in caplog.text


def test_a_postgres_login_failure_never_shows_the_password(pg_admin_url):
    bad = pg_admin_url.set(username=f"nouser_{uuid.uuid4().hex[:8]}", password=SECRET)
    with pytest.raises(StoreError, match="cannot open the store at postgresql") as info:
        open_store(bad.render_as_string(hide_password=False))
    text_ = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert SECRET not in text_
    assert bad.username in text_  # the message names the culprit


def test_a_store_opened_with_a_password_never_shows_it(pg_url):
    with_password = pg_url.set(password=SECRET)  # trust authentication ignores it
    with open_store(with_password.render_as_string(hide_password=False)) as store:
        store.get_or_create_dataset("d")
        assert SECRET not in repr(store) and SECRET not in store.url
        with pytest.raises(StoreError) as info:
            store.get_dataset("missing")
        assert SECRET not in "".join(traceback.format_exception(info.value))


def test_a_malformed_stored_mask_is_reported_not_decoded(store):
    ds, ids = dataset_with_samples(store, n=1, width=6, height=5)
    run = store.create_run(ds, "import")
    store.add_annotations(
        run, [AnnotationIn(ids[0], "a", 0, 0, 2, 2, "mask", mask_rle={"size": [5, 6], "counts": "zzzz"})]
    )
    assert len(store.annotations_of(run)[ids[0]]) == 1  # boxes are readable without decoding masks
    with pytest.raises(StoreError, match=r"annotation \d+: malformed mask RLE"):
        store.annotations_of(run, masks=True)


def test_a_missing_driver_is_named_without_the_password():
    with pytest.raises(StoreError, match="database driver is missing") as info:
        open_store(f"postgresql+nosuchdriver://user:{SECRET}@127.0.0.1:5432/test")
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_forget_pushed_shapes_drops_only_the_named_links(store):
    ds = store.get_or_create_dataset("forget")
    (sample,) = store.add_samples(ds, [SampleIn("img/f.jpg", 8, 8)])
    run = store.create_run(ds, "prelabel", name="r")
    det = Detections(xyxy=[[0, 0, 2, 2], [1, 1, 3, 3]], scores=[0.9, 0.8], class_ids=[0, 0], labels=["a", "a"])
    store.add_detections(run, {sample: det})
    store.finish_run(run)
    ids = sorted(store.annotations_of(run)[sample].data["annotation_id"].tolist())
    task = store.link_cvat_task(ds, "https://cvat.example.com", 7, name="t", run=run)
    store.record_pushed_shapes(task, {ids[0]: 100, ids[1]: 101})
    store.forget_pushed_shapes(task, [100])
    assert store.pushed_shapes(task) == {101: ids[1]}
