"""Labels renamed or deleted in CVAT after a push: pull notices them by id and says so, and
eval does not count a label change as annotators' edits (issue: a rename made every untouched
car 'relabeled' plus a new class; a deletion counted its shapes as deleted by annotators)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from sync.cli import app
from sync.label_changes import label_changes
from sync.store import open_store
from tests.bridge_support import SAMPLES, copy_sqlite, cvat_env, sdk_client, serve

DATASET, RUN, TASK = "photos", "tiny-run", "photos-batch-1"
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")


def test_a_rename_keeps_the_pushed_name_and_deletions_and_additions_are_listed():
    at_push = {1: ("car", "rectangle"), 2: ("truck", "rectangle"), 3: ("person", "polygon")}
    changes = label_changes(at_push, {1: "automobile", 3: "person", 9: "bus"})
    assert changes.names == {1: "car", 3: "person", 9: "bus"}
    assert changes.renamed == {"car": "automobile"}
    assert changes.deleted == ("truck",) and changes.added == ("bus",)
    assert changes.to_params() == {"renamed": {"car": "automobile"}, "deleted": ["truck"], "added": ["bus"]}
    lines = changes.messages("task 4")
    assert len(lines) == 3 and all(line.startswith("task 4: label ") for line in lines)
    assert not label_changes(at_push, {i: name for i, (name, _) in at_push.items()})
    assert label_changes(None, {5: "x"}).names == {5: "x"} and not label_changes(None, {5: "x"})


@given(
    st.dictionaries(st.integers(1, 30), st.sampled_from(["a", "b", "c", "d", "e"]), max_size=6),
    st.dictionaries(st.integers(1, 30), st.sampled_from(["a", "b", "c", "x", "y"]), max_size=6),
)
def test_every_label_id_is_named_once_by_its_name_at_push(before, now):
    changes = label_changes({i: (name, "rectangle") for i, name in before.items()}, now)
    assert set(changes.names) == set(now)
    for label_id, name in changes.names.items():
        assert name == (before[label_id] if label_id in before else now[label_id])
    assert list(changes.deleted) == [before[i] for i in sorted(before) if i not in now]
    assert list(changes.added) == [now[i] for i in sorted(now) if i not in before]
    assert set(changes.renamed.items()) <= {(before[i], now[i]) for i in set(before) & set(now) if before[i] != now[i]}
    assert bool(changes) == bool(changes.deleted or changes.added or changes.renamed)


def run_cli(args, env):
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def prelabelled(tmp_path_factory, tiny_models):
    db = tmp_path_factory.mktemp("label-changes") / "store.db"
    env = {**tiny_models.environment(), "AUTOLABEL_DB": f"sqlite:///{db}", "HF_HUB_OFFLINE": "1"}
    run_cli(["prelabel", *(str(SAMPLES / p) for p in PHOTOS), "--ontology", str(SAMPLES / "ontology.yaml"),
             "--dataset", DATASET, "--run", RUN, "--threshold", "0.9"], env)
    return db


@pytest.fixture
def fake():
    yield from serve()


def test_rename_and_delete_in_cvat_are_reported_and_not_counted_as_edits(fake, prelabelled, tmp_path):
    db = tmp_path / "store.db"
    copy_sqlite(prelabelled, db)
    url = f"sqlite:///{db}"
    env = cvat_env(fake, url)
    run_cli(["cvat", "push", "--dataset", DATASET, "--run", RUN, "--task-name", TASK], env)
    (task,) = fake.db.tasks.values()
    admin = sdk_client(fake, "admin", "admin-Secret-pw-1")
    labels = {label.name: label.id for label in admin.tasks.retrieve(task.id).get_labels()}
    store = open_store(url)
    pre = store.annotations_of(store.get_run(DATASET, RUN))
    counts = {name: sum(int((d.labels == name).sum()) for d in pre.values()) for name in labels}
    renamed, deleted = sorted((n for n in labels if counts[n]), key=lambda n: -counts[n])[:2]  # both have pre-labels

    # the schema changes in CVAT: one label renamed, one deleted (CVAT deletes its shapes too)
    admin.tasks.retrieve(task.id).update({"labels": [{"id": labels[renamed], "name": "renamed-in-cvat"}]})
    admin.api_client.labels_api.destroy(labels[deleted])
    for job in [j for j in fake.db.jobs.values() if j.task_id == task.id]:
        admin.jobs.retrieve(job.id).update({"stage": "acceptance", "state": "completed"})
    pulled = run_cli(["cvat", "pull", "--task", str(task.id)], env)
    flat = " ".join(pulled.output.split())
    assert f"label '{renamed}' was renamed 'renamed-in-cvat'" in flat
    assert f"label '{deleted}' was deleted in CVAT" in flat

    report_file = tmp_path / "report.json"
    run_cli(["eval", "--dataset", DATASET, "--json", str(report_file)], env)
    report = json.loads(report_file.read_text())
    edits = report["runs"][0]["edits"]
    assert edits["overall"]["accepted"] == sum(counts.values()) - counts[deleted]
    assert (edits["overall"]["relabeled"], edits["overall"]["deleted"], edits["overall"]["added"]) == (0, 0, 0)
    assert "renamed-in-cvat" not in report["per_class"]  # no new class from a rename
    assert edits["per_class"][deleted]["pre_labels"] == 0
    notes = " ".join(report["notes"])
    assert f"label '{deleted}' was deleted" in notes and f"label '{renamed}' was renamed" in notes
