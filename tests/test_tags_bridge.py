"""Tags through the loop on a fake CVAT with the real cvat-sdk: `autolabel prelabel` of the
sample photos with tiny Grounding DINO and tiny CLIP (an ontology of tags alone, and one of
boxes and tags) into the store, push (task labels of type tag, job tags with the score
attribute), annotators delete, add and relabel tags, pull: the revision holds their tags and
links each to its pre-label by CVAT tag id, never to a shape of the same id; then ``autolabel
cvat prelabel --classifier`` on a task of tags, and its refusal of another classifier.

The fake's version follows the installed SDK (`tests.bridge_support`), so this file also runs
under cvat-sdk 2.17 (``PYTHONPATH=.cache/sdk-2.17``).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cvat_bridge.client import connect
from sync.cli import app
from sync.pull import pull_jobs
from sync.push import push_run
from sync.store import StoreError, open_store
from serverless.convert.nuclio import score_percent
from tests.bridge_support import (
    ADMIN,
    ANNOTATORS,
    SAMPLES,
    copy_sqlite,
    label_ids,
    sdk_client,
    serve,
    settings_for,
    write_images,
)

PHOTOS = ("astronaut.jpg", "chelsea.jpg")
MIXED = """\
name: tagged
score_attribute: true
defaults: {threshold: 0.5, max_detections: 4}
labels:
  - name: person
    prompts: [person, astronaut]
  - name: cat
  - name: indoor
    type: tag
    threshold: 0.0
  - name: outdoor
    prompts: [outdoor scene]
    type: tag
    threshold: 0.0
"""
TAGS_ONLY = """\
name: scenes
defaults: {threshold: 0.0}
labels:
  - name: indoor
    type: tag
  - name: outdoor
    type: tag
"""


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    from serverless.models import registry

    return registry.backend("clip").tiny(tmp_path_factory.mktemp("tiny-clip"), 0)


@pytest.fixture(scope="module")
def prelabelled(tmp_path_factory, tiny_models, clip_dir):
    """A store file with two runs made by ``autolabel prelabel --dataset --run`` on two sample
    photos: ``mixed`` (boxes and tags) and ``scenes`` (tags alone, no detector run)."""
    folder = tmp_path_factory.mktemp("tags-prelabel")
    db = folder / "store.db"
    env = {**tiny_models.environment(), "AUTOLABEL_DB": f"sqlite:///{db}", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    photos = [str(SAMPLES / p) for p in PHOTOS]
    for name, text in (("mixed", MIXED), ("scenes", TAGS_ONLY)):
        (folder / f"{name}.yaml").write_text(text)
        args = ["prelabel", *photos, "--ontology", str(folder / f"{name}.yaml"), "--dataset", name, "--run", name,
                "--classifier", f"clip:{clip_dir}"]
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        assert "tags" in result.output
    return db


@pytest.fixture
def store(prelabelled, tmp_path):
    """A private copy of the pre-labelled store."""
    copy_sqlite(prelabelled, tmp_path / "store.db")
    with open_store(tmp_path / "store.db") as opened:
        yield opened


@pytest.fixture
def fake():
    yield from serve()


def stored(store, run):
    """``{sample id: [(label, shape type, score, annotation id, CVAT id, pre-label id)]}``."""
    found = {}
    for sample_id, det in store.annotations_of(run).items():
        found[sample_id] = [
            (str(det.labels[i]), str(det.data["shape_type"][i]), float(det.scores[i]),
             int(det.data["annotation_id"][i]), int(det.data["cvat_id"][i]), int(det.data["pre_annotation_id"][i]))
            for i in range(len(det))
        ]
    return found


def tag_request(tag, **changes):
    from cvat_sdk import models

    fields = {key: tag[key] for key in ("id", "frame", "label_id", "source") if tag.get(key) is not None}
    fields["attributes"] = [
        models.AttributeValRequest(spec_id=a["spec_id"], value=str(a["value"])) for a in tag.get("attributes") or []
    ]
    return models.LabeledImageRequest(**{**fields, **changes})


def edit_tags(client, job_id: int, action: str, tags) -> None:
    """PATCH ``action`` on a job's tags with the SDK, as an annotator's tools do."""
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    client.jobs.retrieve(job_id).update_annotations(
        models.PatchedLabeledDataRequest(shapes=[], tags=list(tags), tracks=[]), action=AnnotationUpdateAction(action)
    )


def test_the_runs_hold_tags_as_whole_frame_rows(store, clip_dir):
    for name, with_boxes in (("mixed", True), ("scenes", False)):
        run = store.get_run(name, name)
        assert run.params["classifier"] == f"clip:{clip_dir}"
        rows = [row for rows in stored(store, run).values() for row in rows]
        tags = [row for row in rows if row[1] == "tag"]
        assert sorted(row[0] for row in tags) == ["indoor", "indoor", "outdoor", "outdoor"]  # threshold 0: both
        assert all(0 <= row[2] <= 1 for row in tags)
        assert any(row[1] == "rectangle" for row in rows) == with_boxes
    assert store.get_run("scenes", "scenes").model_id == f"clip:{clip_dir}"  # no detector ran
    sizes = {s.id: (s.width, s.height) for s in store.samples("scenes")}
    for sample_id, det in store.annotations_of(store.get_run("scenes", "scenes")).items():
        assert det.xyxy.tolist() == [[0, 0, *sizes[sample_id]]] * 2


def test_tags_are_pushed_edited_and_pulled_back_linked_by_tag_id(store, fake):
    session = connect(settings_for(fake))
    run = store.get_run("mixed", "mixed")
    pushed = push_run(store, session, dataset="mixed", run_name="mixed", task_name="tagged", assignees=["alice"])
    (task,) = fake.db.tasks.values()
    ids = label_ids(fake, task.id)
    types = {label.name: label.type for label in fake.db.labels.values() if label.task_id == task.id}
    assert types == {"person": "rectangle", "cat": "rectangle", "indoor": "tag", "outdoor": "tag"}
    server_tags, server_shapes = fake.db.tags(task.id), fake.db.shapes(task.id)
    assert pushed.tags == len(server_tags) == 4 and pushed.shapes == len(server_shapes)
    assert {t["source"] for t in server_tags} == {"auto"}
    link = store.get_cvat_task(session.server, task.id)
    tag_links, shape_links = store.pushed_shapes(link, kind="tag"), store.pushed_shapes(link)
    assert sorted(tag_links) == sorted(t["id"] for t in server_tags)
    assert set(tag_links) & set(shape_links), "tags and shapes are numbered apart: their ids meet"
    prelabels = {row[3]: row for rows in stored(store, run).values() for row in rows}
    names = {i: n for n, i in ids.items()}
    for tag in server_tags:  # each tag is the pre-label recorded for its id, its score in the attribute
        label, kind, score, *_ = prelabels[tag_links[tag["id"]]]
        assert (kind, label) == ("tag", names[tag["label_id"]])
        assert [a["value"] for a in tag["attributes"]] == [score_percent(score)]
    assert all(prelabels[ann][1] == "rectangle" for ann in shape_links.values())
    again = push_run(store, session, dataset="mixed", run_name="mixed", task_name="tagged")
    assert again.annotation_requests == 0 and again.tags == 4

    # alice deletes a tag of frame 0, relabels the other, adds one; frame 1 stays as pushed
    (job,) = fake.db.task_jobs(task.id)
    alice = sdk_client(fake, "alice", ANNOTATORS["alice"])
    frame0 = sorted((t for t in server_tags if t["frame"] == 0), key=lambda t: t["id"])
    deleted, relabelled = frame0
    other = "indoor" if names[relabelled["label_id"]] == "outdoor" else "outdoor"
    edit_tags(alice, job.id, "delete", [tag_request(deleted)])
    edit_tags(alice, job.id, "update", [tag_request(relabelled, label_id=ids[other], source="manual", attributes=[])])
    edit_tags(alice, job.id, "create", [tag_request({"frame": 0, "label_id": ids["indoor"], "source": "manual"})])
    refused = push_run(store, session, dataset="mixed", run_name="mixed", task_name="tagged")
    assert refused.skipped_jobs == (job.id,) and refused.annotation_requests == 0

    result = pull_jobs(store, session, task_id=task.id)
    assert result.tags == 4 and result.shapes == len(server_shapes)
    revision = store.get_run("mixed", result.revisions[0])
    frames = store.frames_of(link)
    rows = stored(store, revision)
    now = {t["id"]: t for t in fake.db.tags(task.id)}
    revision_tags = {row[4]: row for sample_rows in rows.values() for row in sample_rows if row[1] == "tag"}
    assert sorted(revision_tags) == sorted(now) and deleted["id"] not in now
    for tag_id, (label, _, _, _, _, pre_id) in revision_tags.items():
        assert label == names[now[tag_id]["label_id"]]
        assert pre_id == tag_links.get(tag_id, -1)  # untouched and relabelled: their pre-label; added: none
        assert now[tag_id]["frame"] in frames and revision_tags[tag_id] in rows[frames[now[tag_id]["frame"]]]
    assert revision_tags[relabelled["id"]][0] == other and revision_tags[relabelled["id"]][5] != -1
    assert [row[5] for row in revision_tags.values()].count(-1) == 1  # the added one
    for sample_rows in rows.values():  # a shape with a tag's id links to a shape, never to the tag
        for label, kind, _, _, cvat_id, pre_id in sample_rows:
            if kind != "tag":
                assert pre_id == shape_links[cvat_id] and prelabels[pre_id][1] == "rectangle"


def test_a_run_of_tags_alone_is_pushed_as_tags_and_pulled_back(store, fake):
    session = connect(settings_for(fake))
    pushed = push_run(store, session, dataset="scenes", run_name="scenes", task_name="scenes")
    (task,) = fake.db.tasks.values()
    assert (pushed.shapes, pushed.tags) == (0, 4) and fake.db.shapes(task.id) == []
    assert {t["attributes"] == [] for t in fake.db.tags(task.id)} == {True}  # no score attribute asked for
    result = pull_jobs(store, session, task_id=task.id)
    revision = store.get_run("scenes", result.revisions[0])
    link = store.get_cvat_task(session.server, task.id)
    tag_links = store.pushed_shapes(link, kind="tag")
    rows = [row for sample_rows in stored(store, revision).values() for row in sample_rows]
    assert sorted((row[4], row[5]) for row in rows) == sorted(tag_links.items())
    assert {row[1] for row in rows} == {"tag"} and {row[2] for row in rows} == {1.0}  # human: no scores


def test_cvat_prelabel_uploads_tags_and_refuses_another_classifier(tmp_path, fake, clip_dir):
    from cvat_sdk.core.proxies.tasks import ResourceType

    from cvat_bridge.tasks import labels_spec
    from serverless.ontology import parse_ontology
    from serverless.pipeline import ModelSettings
    from sync.cvat_prelabel import prelabel_task

    ontology = parse_ontology(TAGS_ONLY, "scenes.yaml")
    client = sdk_client(fake, *ADMIN)
    task = client.tasks.create_from_data(
        spec={"name": "scenes", "labels": labels_spec(ontology)},
        resource_type=ResourceType.LOCAL,
        resources=[str(p) for p in write_images(tmp_path / "frames", 3)],
        data_params={"image_quality": 95, "sorting_method": "predefined"},
    )
    session = connect(settings_for(fake))
    settings = ModelSettings.from_env(classifier=f"clip:{clip_dir}", ontology=ontology, environ={})
    with open_store(tmp_path / "store.db") as store:
        result = prelabel_task(store, session, task.id, ontology, settings)
        assert result.complete and (result.shapes, result.tags) == (0, 6)
        link = store.get_cvat_task(session.server, task.id)
        assert sorted(store.pushed_shapes(link, kind="tag")) == sorted(t["id"] for t in fake.db.tags(task.id))
        assert store.get_run(result.dataset, result.run).params["classifier"] == f"clip:{clip_dir}"
        again = prelabel_task(store, session, task.id, ontology, settings)
        assert again.already_uploaded_jobs == result.uploaded_jobs and not again.processed
        other = ModelSettings.from_env(classifier=f"clip:{tmp_path / 'other-clip'}", ontology=ontology, environ={})
        with pytest.raises(StoreError, match=r"--classifier 'clip:.*tiny.*' \(this time 'clip:.*other-clip'\)"):
            prelabel_task(store, session, task.id, ontology, other)


def test_cvat_push_and_pull_report_their_tags(prelabelled, fake, tmp_path):
    """``autolabel cvat push`` / ``pull`` as a user runs them: the summaries count the tags."""
    from tests.bridge_support import cvat_env

    copy_sqlite(prelabelled, tmp_path / "store.db")
    env = cvat_env(fake, f"sqlite:///{tmp_path / 'store.db'}")
    pushed = CliRunner().invoke(app, ["cvat", "push", "--dataset", "scenes", "--run", "scenes", "--task-name", "t"],
                                env=env)
    assert pushed.exit_code == 0, pushed.output
    assert "0 pre-labels and 4 tags" in pushed.output
    (task,) = fake.db.tasks.values()
    pulled = CliRunner().invoke(app, ["cvat", "pull", "--task", str(task.id)], env=env)
    assert pulled.exit_code == 0, pulled.output
    assert "(0 shapes, 4 tags)" in pulled.output
