"""Schema version 2: what push sent and the task's labels at push time; a version-1 store
is refused until it is upgraded, and upgrades in place (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from sync.store import StoreError, open_store
from sync.store.schema import SCHEMA_VERSION
from tests.test_store import make_det, pg_admin_url, store_url  # noqa: F401 (fixtures)


def make_v1(url: str) -> None:
    """A store exactly as schema version 1 left it: made now, then the v2 columns dropped."""
    open_store(url).close()
    engine = create_engine(url if "://" in url else f"sqlite:///{url}")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE pushed_shapes DROP COLUMN shape_type"))
        conn.execute(text("ALTER TABLE pushed_shapes DROP COLUMN points"))
        conn.execute(text("ALTER TABLE cvat_tasks DROP COLUMN labels"))
        conn.execute(text("UPDATE store_meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()


def columns(url: str, table: str) -> set[str]:
    engine = create_engine(url if "://" in url else f"sqlite:///{url}")
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_a_version_1_store_is_refused_then_upgraded_in_place(store_url):  # noqa: F811 (fixture)
    assert SCHEMA_VERSION >= 2
    make_v1(store_url)
    with pytest.raises(StoreError, match="autolabel store migrate"):
        open_store(store_url)
    with open_store(store_url, upgrade=True) as store:
        store.get_or_create_dataset("d")
        task = store.link_cvat_task("d", "https://cvat.example", 7, name="t")
        assert store.task_labels_at_push(task) is None  # nothing recorded before version 2
        store.record_task_labels(task, {3: ("car", "rectangle")})
        assert store.task_labels_at_push(task) == {3: ("car", "rectangle")}
    assert {"shape_type", "points"} <= columns(store_url, "pushed_shapes")
    assert "labels" in columns(store_url, "cvat_tasks")
    open_store(store_url).close()  # now current: opens without upgrade


def test_pushed_geometry_is_kept_exactly_and_checked(store_url):  # noqa: F811 (fixture)
    from sync.store import SampleIn

    with open_store(store_url) as store:
        store.get_or_create_dataset("d")
        (sample,) = store.add_samples("d", [SampleIn("a.png", width=40, height=30)])
        run = store.create_run("d", "prelabel", name="r")
        store.add_detections(run, {sample: make_det([[1, 2, 10, 12], [3, 3, 9, 9]], ["car", "road"])})
        ann = store.annotations_of(run)[sample].data["annotation_id"].tolist()
        task = store.link_cvat_task("d", "https://cvat.example", 7, run=run)
        polygon = [0.5, 1.25, 10.0, 1.0, 3.3333333333333335, 9.0]
        store.record_pushed_shapes(
            task, {ann[0]: 101, ann[1]: 102}, geometry={ann[0]: ("rectangle", [1, 2, 10, 12]), ann[1]: ("polygon", polygon)}
        )
        assert store.pushed_geometry(task, ann) == {
            ann[0]: ("rectangle", [1.0, 2.0, 10.0, 12.0]),
            ann[1]: ("polygon", polygon),
        }
        with pytest.raises(StoreError, match="finite points"):
            store.record_pushed_shapes(task, {ann[0]: 101}, geometry={ann[0]: ("rectangle", [float("nan")] * 4)})
        with pytest.raises(StoreError, match="finite points"):
            store.record_pushed_shapes(task, {ann[0]: 101}, geometry={ann[0]: ("ellipse", [1, 2, 3, 4])})


def test_dataset_by_id(store_url):  # noqa: F811 (fixture)
    with open_store(store_url) as store:
        made = store.get_or_create_dataset("d")
        assert store.dataset_by_id(made.id) == made
        with pytest.raises(StoreError, match=f"no dataset with id {made.id + 1}"):
            store.dataset_by_id(made.id + 1)
