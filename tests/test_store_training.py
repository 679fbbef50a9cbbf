"""Training runs in the store (schema version 4): written in two transactions, never changed
once finished, found again from the weights' sha256 (lineage)."""

from __future__ import annotations

import pytest

from sync.store import SampleIn, StoreError, TrainingSampleIn, open_store


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        store.get_or_create_dataset("site")
        ids = store.add_samples("site", [SampleIn(f"/img/{i}.jpg", 64, 48) for i in range(4)])
        store.get_or_create_dataset("other")
        store.ids = ids
        yield store


def samples(store, run_id=None):
    return [TrainingSampleIn(i, "val" if k == 0 else "train", run_id) for k, i in enumerate(store.ids)]


def test_a_training_run_records_its_samples_and_is_found_from_its_weights(store):
    pre = store.add_finished_run("site", "prelabel", [], cover=store.ids)
    run = store.create_training_run(
        "site", labels=f"prelabel:{pre.name}", threshold=0.3, base_model="yolo11n.yaml", val_fraction=0.25, seed=7,
        samples=samples(store, pre.id), params={"epochs": 1}, versions={"ultralytics": "8"}, classes=["cat", "dog"],
    )
    assert run.name == "train-1" and not run.finished and run.classes == ("cat", "dog")
    assert store.training_runs_for_weights("sha256:ab") == []  # open runs produced no weights yet
    stored = store.training_samples(run)
    assert {i: s.split for i, s in stored.items()} == {store.ids[0]: "val", **{i: "train" for i in store.ids[1:]}}
    assert {s.run_id for s in stored.values()} == {pre.id}
    done = store.finish_training_run(run, weights_path="/w/best.pt", weights_sha256="sha256:ab", metrics={"map50": 0.5})
    assert done.finished and done.metrics == {"map50": 0.5}
    assert [r.name for r in store.training_runs_for_weights("sha256:ab")] == ["train-1"]
    with pytest.raises(StoreError, match="finished already"):
        store.finish_training_run(run, weights_path="/w/x.pt", weights_sha256="sha256:cd")
    assert store.get_training_run("site", "train-1") == done
    assert store.create_training_run(
        "site", labels="human", base_model="m.pt", val_fraction=0.2, seed=0, samples=samples(store)
    ).name == "train-2"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"samples": []}, "at least one sample"),
        ({"samples": [TrainingSampleIn(1, "val")]}, "at least one sample in the train split"),
        ({"samples": [TrainingSampleIn(1, "test")]}, "split must be one of"),
        ({"threshold": 1.5}, "threshold must be a number in 0..1"),
        ({"val_fraction": 0.0}, "val_fraction must lie strictly between 0 and 1"),
        ({"params": {"api_key": "x"}}, "api_key"),
    ],
)
def test_bad_training_runs_are_refused_and_nothing_is_written(store, change, message):
    given = dict(labels="human", base_model="m.pt", val_fraction=0.2, seed=0, samples=samples(store)) | change
    with pytest.raises(StoreError, match=message):
        store.create_training_run("site", **given)
    assert store.list_training_runs("site") == []


def test_samples_and_runs_of_another_dataset_are_refused(store):
    (foreign,) = store.add_samples("other", [SampleIn("/img/x.jpg", 64, 48)])
    with pytest.raises(StoreError, match="not samples of dataset"):
        store.create_training_run("site", labels="human", base_model="m", val_fraction=0.2, seed=0,
                                  samples=[TrainingSampleIn(foreign, "train")])
    other_run = store.add_finished_run("other", "prelabel", [], cover=[foreign])
    with pytest.raises(StoreError, match="not runs of dataset"):
        store.create_training_run("site", labels="human", base_model="m", val_fraction=0.2, seed=0,
                                  samples=samples(store, other_run.id))
    with pytest.raises(StoreError, match="no training run 'nope'"):
        store.get_training_run("site", "nope")
    assert store.list_training_runs("site") == []
