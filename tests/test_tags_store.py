"""Tags in the store: whole-frame rows of shape type ``tag`` added with a run's shapes, read
back by the readers, pushed ids keyed by (kind, CVAT id) so that a tag and a shape with the
same CVAT id never mix, and schema version 3 reached from a version-2 store file (SQLite) and
from a version-2 schema (PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text

from serverless.models.base import Tags
from sync.store import SCHEMA_VERSION, SampleIn, StoreError, open_store, upgrade_store
from sync.store.convert import split_tags, tags_to_detections
from tests.test_store import make_det, pg_admin_url, store_url  # noqa: F401 (fixtures)

V2_DUMP = Path(__file__).parent / "data" / "store_v2.sql"


def tags(names, scores):
    return Tags(class_ids=np.arange(len(names)), scores=np.asarray(scores, np.float32), labels=np.asarray(names))


def test_tags_are_whole_frame_rows_and_split_back():
    det = tags_to_detections(tags(["indoor", "night"], [0.8, 0.4]), width=40, height=30)
    assert det.xyxy.tolist() == [[0, 0, 40, 30], [0, 0, 40, 30]]
    assert det.data["shape_type"].tolist() == ["tag", "tag"]
    mixed = make_det([[1, 2, 3, 4]], ["car"], data={"shape_type": np.array(["rectangle"])})
    from serverless.detections import Detections

    both = Detections.concatenate([mixed, det])
    shapes, found = split_tags(both)
    assert shapes.labels.tolist() == ["car"] and found.labels.tolist() == ["indoor", "night"]
    assert len(split_tags(make_det([[1, 2, 3, 4]], ["car"]))[1]) == 0  # no shape_type column: all shapes
    empty = tags_to_detections(tags([], []), width=4, height=3)
    assert len(empty) == 0
    with pytest.raises(StoreError, match="positive size"):
        tags_to_detections(tags(["a"], [0.5]), width=0, height=3)


def _run_with_tags(store):
    store.get_or_create_dataset("d")
    a, b = store.add_samples("d", [SampleIn("a.png", 40, 30), SampleIn("b.png", 20, 10)])
    run = store.create_run("d", "prelabel", name="r")
    store.add_detections(
        run,
        {a: make_det([[1, 2, 10, 12]], ["car"]), b: make_det([], [])},
        tags={a: tags(["indoor"], [0.75]), b: tags(["night", "indoor"], [0.5, 0.25])},
    )
    return a, b, store.finish_run(run)


def test_tags_are_stored_with_the_shapes_and_read_back(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        a, b, run = _run_with_tags(store)
        assert store.covered_samples(run) == [a, b]
        read = store.annotations_of(run, masks=True)
        assert read[a].data["shape_type"].tolist() == ["rectangle", "tag"]
        assert read[a].xyxy[1].tolist() == [0, 0, 40, 30] and read[a].scores[1] == pytest.approx(0.75)
        shapes, found = split_tags(read[b])
        assert len(shapes) == 0 and found.labels.tolist() == ["night", "indoor"]
        assert found.xyxy.tolist() == [[0, 0, 20, 10]] * 2
        other = store.create_run("d", "prelabel", name="r2")
        store.add_detections(other, {}, tags={a: tags(["indoor"], [0.6])})  # tags alone cover the sample
        with pytest.raises(StoreError, match="already covers"):
            store.add_detections(other, {a: make_det([], [])})
        with pytest.raises(StoreError, match="not a sample"):
            store.add_detections(other, {}, tags={a + b + 10: tags(["indoor"], [0.6])})


def test_a_tag_and_a_shape_with_the_same_cvat_id_never_mix(store_url):  # noqa: F811 (fixture)
    with open_store(store_url) as store:
        a, b, run = _run_with_tags(store)
        car, indoor = store.annotations_of(run)[a].data["annotation_id"].tolist()
        night = store.annotations_of(run)[b].data["annotation_id"].tolist()[0]
        task = store.link_cvat_task("d", "https://cvat.example", 7, run=run)
        store.link_frames(task, {0: a})
        # CVAT numbers shapes and tags apart: shape 5 and tag 5 are different objects
        store.record_pushed_shapes(
            task, {car: 5}, tags={indoor: 5}, job_id=1,
            geometry={car: ("rectangle", [1, 2, 10, 12]), indoor: ("tag", [])},
        )
        store.record_pushed_shapes(task, {car: 5}, tags={indoor: 5}, job_id=1)  # idempotent
        assert store.pushed_shapes(task) == {5: car}
        assert store.pushed_shapes(task, kind="tag") == {5: indoor}
        assert store.pushed_geometry(task, [car, indoor]) == {
            car: ("rectangle", [1.0, 2.0, 10.0, 12.0]), indoor: ("tag", []),
        }
        with pytest.raises(StoreError, match="CVAT tag 5 is already mapped"):
            store.record_pushed_shapes(task, {}, tags={night: 5})
        with pytest.raises(StoreError, match=f"annotation {indoor} was already pushed as CVAT tag 5, not shape 6"):
            store.record_pushed_shapes(task, {indoor: 6})
        with pytest.raises(StoreError, match="both as a CVAT shape and as a tag"):
            store.record_pushed_shapes(task, {car: 5}, tags={car: 6})

        job = store.upsert_cvat_job(task, 1, start_frame=0, stop_frame=0)
        human = make_det([[1, 2, 10, 12]], ["car"], data={"cvat_id": np.array([5]), "source": np.array(["auto"])})
        pulled = tags_to_detections(
            tags(["indoor", "night"], [1, 1]), width=40, height=30,
            data={"cvat_id": np.array([5, 6]), "source": np.array(["auto", "manual"])},
        )
        revision = store.record_human_revision(job, {a: human}, tags={a: pulled}, updated_date="2026-01-02T00:00:00Z")
        det = store.annotations_of(revision)[a]
        links = dict(zip(det.labels.tolist(), det.data["pre_annotation_id"].tolist(), strict=True))
        assert links == {"car": car, "indoor": indoor, "night": -1}  # tag 5 → the tag, shape 5 → the shape
        assert det.data["cvat_id"].tolist() == [5, 5, 6]
        with pytest.raises(StoreError, match="shape type 'tag'"):
            store.record_human_revision(job, {}, tags={a: human}, updated_date="2026-01-03T00:00:00Z")

        store.forget_pushed_shapes(task, [5], kind="tag")
        assert store.pushed_shapes(task) == {5: car} and store.pushed_shapes(task, kind="tag") == {}
        with pytest.raises(StoreError, match="kind must be one of"):
            store.pushed_shapes(task, kind="track")


def _schema(url: str) -> dict:
    """What the migration must make equal to a fresh store: per table, columns (name, type,
    nullability), primary key, unique and check constraints, foreign keys and indexes."""
    engine = create_engine(url if "://" in url else f"sqlite:///{url}")
    try:
        found = inspect(engine)
        result = {}
        for table in ("annotations", "pushed_shapes"):
            result[table] = (
                sorted((c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)),
                found.get_pk_constraint(table)["constrained_columns"],
                sorted((c["name"], tuple(c["column_names"])) for c in found.get_unique_constraints(table)),
                sorted((c["name"], " ".join(c["sqltext"].split())) for c in found.get_check_constraints(table)),
                sorted((tuple(k["constrained_columns"]), k["referred_table"]) for k in found.get_foreign_keys(table)),
                sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(table)),
            )
        return result
    finally:
        engine.dispose()


def _check_upgraded(url: str, fresh_url: str) -> None:
    """The upgraded store holds what version 2 held, takes tags, and has a fresh store's schema."""
    with pytest.raises(StoreError, match="autolabel store migrate"):
        open_store(url)
    store, before = upgrade_store(url)
    with store:
        assert before == 2
        run = store.get_run("site", "prelabel-1")
        revision = store.get_run("site", "job5-rev1")
        task = store.get_cvat_task("https://cvat.example", 7)
        assert store.pushed_shapes(task) == {1: 1, 2: 2} and store.pushed_shapes(task, kind="tag") == {}
        assert store.pushed_geometry(task, [1, 2])[2] == ("mask", [0.0, 7.0, 5.0, 4.0, 11.0, 9.0])
        kept = store.annotations_of(run, masks=True)
        assert kept[2].masks[0].sum() == 42 and kept[1].labels.tolist() == ["car"]
        assert store.annotations_of(revision)[1].data["pre_annotation_id"].tolist() == [1, -1]
        # a tag of the new kind, with CVAT id 1 like the pushed shape
        sample = store.samples("site")[0].id
        tag_run = store.create_run("site", "prelabel", name="with-tags")
        store.add_detections(tag_run, {}, tags={sample: tags(["indoor"], [0.9])})
        (tag_id,) = store.annotations_of(tag_run)[sample].data["annotation_id"].tolist()
        store.record_pushed_shapes(task, {}, tags={tag_id: 1})
        assert store.pushed_shapes(task, kind="tag") == {1: tag_id} and store.pushed_shapes(task) == {1: 1, 2: 2}
    open_store(url).close()  # current now
    open_store(fresh_url).close()
    assert _schema(url) == _schema(fresh_url)


def test_a_version_2_sqlite_store_file_is_upgraded_to_version_3(tmp_path):
    assert SCHEMA_VERSION >= 3
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V2_DUMP.read_text())
    conn.close()
    _check_upgraded(str(path), str(tmp_path / "fresh.db"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with pytest.raises(sqlite3.IntegrityError):  # the rebuilt tables kept their foreign keys
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("INSERT INTO pushed_shapes (task_link_id, cvat_shape_id, annotation_id) VALUES (1, 9, 999)")
    conn.close()


def test_the_sqlite_rebuild_refuses_to_run_with_foreign_keys_on(tmp_path):
    from sync.store.migrations import upgrade_schema

    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V2_DUMP.read_text())
    conn.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        with pytest.raises(StoreError, match="foreign keys off"):
            upgrade_schema(conn, 2, str(path))
        conn.rollback()
    engine.dispose()
    open_store(path, upgrade=True).close()  # the store was left as it was, and upgrades normally


def test_a_version_2_postgresql_store_is_upgraded_to_version_3(pg_admin_url):  # noqa: F811 (fixture)
    from tests.test_store import postgres_schema

    with postgres_schema(pg_admin_url) as fresh, postgres_schema(pg_admin_url) as old:
        url = old.render_as_string(hide_password=False)
        _make_v2_postgresql(url)
        _check_upgraded(url, fresh.render_as_string(hide_password=False))


PARENTS_FIRST = (
    "datasets", "samples", "runs", "run_samples", "annotations", "cvat_tasks", "cvat_frames", "cvat_jobs",
    "pushed_shapes", "store_meta",
)


def _make_v2_postgresql(url: str) -> None:
    """Version 2 on PostgreSQL: a fresh store with the version-3 changes undone (the old CHECK
    constraint, no ``kind`` in the primary key), holding the rows of the version-2 dump."""
    open_store(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE pushed_shapes DROP CONSTRAINT pushed_shapes_pkey"))
        conn.execute(text("ALTER TABLE pushed_shapes DROP COLUMN kind"))
        conn.execute(text("ALTER TABLE pushed_shapes ADD PRIMARY KEY (task_link_id, cvat_shape_id)"))
        conn.execute(text("ALTER TABLE annotations DROP CONSTRAINT ck_annotations_shape_type"))
        conn.execute(text(
            "ALTER TABLE annotations ADD CONSTRAINT ck_annotations_shape_type "
            "CHECK (shape_type IN ('rectangle', 'polygon', 'mask'))"
        ))
        conn.execute(text("DELETE FROM store_meta"))
        inserts = [line for line in V2_DUMP.read_text().splitlines() if line.startswith("INSERT INTO")]
        for table in PARENTS_FIRST:  # PostgreSQL checks foreign keys row by row
            for line in inserts:
                if line.startswith(f'INSERT INTO "{table}" '):
                    conn.execute(text(line.replace(":", "\\:")))  # no bind parameters in the values
        for table in ("datasets", "samples", "runs", "annotations", "cvat_tasks", "cvat_jobs"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    engine.dispose()
