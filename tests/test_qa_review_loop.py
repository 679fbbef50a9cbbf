"""QA by embeddings, end to end on a fake CVAT with the real cvat-sdk: a pre-label run with a
label flip among near-identical object crops is pushed, accepted as it is and pulled (the
flip is now in the human revision); ``autolabel embed --objects`` and ``autolabel qa mistakes
--out`` make it the top suspect; ``autolabel cvat push --samples`` sends the human revision's
shapes of the suspect samples to a review task, each suspect with its reason in the
``qa_reason`` text attribute; an annotator fixes the label, ``autolabel cvat pull`` stores a
new revision, and ``autolabel eval`` (old revision against the new one) counts the relabel,
while the k-NN signal of ``qa mistakes`` on fresh crops no longer flags it.

Images and crops are those of `tests.test_qa_cli` (`stripes_checker`), with a tiny random-init
CLIP in its real on-disk format. The fake's version follows the installed SDK
(`tests.bridge_support`), so this file also runs under cvat-sdk 2.17
(``PYTHONPATH=.cache/sdk-2.17``).
"""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from serverless.models import registry
from serverless.ontology import parse_ontology
from sync.cli import app
from sync.console import CliError
from sync.store import Provenance, SampleIn, open_store
from sync.store.records import AnnotationIn
from tests.bridge_support import (
    ADMIN,
    cvat_env,
    edit_job,
    label_ids,
    sdk_client,
    serve,
    settings_for,
    shape_request,
)
from tests.test_qa_cli import FLIPPED, OBJECT_IMAGES, sha256, stripes_checker

DATASET = "objs"
ONTOLOGY = """\
name: stripes-and-checkers
score_attribute: true
labels:
  - name: stripes
  - name: checker
"""
STRIPED, CHECKERED = [10.0, 10.0, 50.0, 50.0], [90.0, 10.0, 130.0, 50.0]


def run_cli(env, *args):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return "clip:" + registry.backend("clip").tiny(tmp_path_factory.mktemp("clip") / "clip", 0)


@pytest.fixture
def fake():
    yield from serve()


@pytest.fixture
def world(tmp_path, fake, clip):
    """Dataset ``objs``: eight `stripes_checker` images and a pre-label run ``pre`` whose
    striped square of image `FLIPPED` is labelled 'checker'."""
    store = open_store(tmp_path / "store.db")
    ds = store.get_or_create_dataset(DATASET)
    paths = []
    for seed in range(OBJECT_IMAGES):
        paths.append(tmp_path / f"objects{seed}.png")
        Image.fromarray(stripes_checker(seed)).save(paths[-1])
    ids = store.add_samples(ds, [SampleIn(str(p), 160, 80, sha256(p)) for p in paths])
    ontology = parse_ontology(ONTOLOGY, "test ontology")
    rows = []
    for n, sid in enumerate(ids):
        rows.append(AnnotationIn(sid, "checker" if n == FLIPPED else "stripes", *STRIPED, score=0.8))
        rows.append(AnnotationIn(sid, "checker", *CHECKERED, score=0.9))
    store.add_finished_run(ds, "prelabel", rows, name="pre", provenance=Provenance.from_ontology(ontology))
    env = cvat_env(fake, f"sqlite:///{tmp_path / 'store.db'}", COLUMNS="250")
    yield {"store": store, "env": env, "ids": ids, "clip": clip, "fake": fake}
    store.close()


def pull_all(env, task_id: int) -> None:
    ok(run_cli(env, "cvat", "pull", "--task", task_id))


def complete(fake, task_id: int) -> None:
    """The admin marks every job of the task completed (an annotator's "done")."""
    client = sdk_client(fake, *ADMIN)
    for job in [j for j in fake.db.jobs.values() if j.task_id == task_id]:
        client.jobs.retrieve(job.id).update({"stage": "acceptance", "state": "completed"})


def task_named(fake, name: str):
    return next(t for t in fake.db.tasks.values() if t.name == name)


def test_suspects_go_to_review_with_their_reasons_and_the_fix_comes_back(world, tmp_path):
    store, env, fake, clip = world["store"], world["env"], world["fake"], world["clip"]
    flipped = world["ids"][FLIPPED]

    # the pre-labels are accepted as they are: the flip is now human truth (two jobs, two revisions)
    ok(run_cli(env, "cvat", "push", "--dataset", DATASET, "--run", "pre", "--task-name", "batch-1",
               "--segment-size", OBJECT_IMAGES // 2))
    batch = task_named(fake, "batch-1")
    complete(fake, batch.id)
    pull_all(env, batch.id)
    revisions = store.list_runs(DATASET, kind="human")
    assert len(revisions) == 2
    (first,) = [r for r in revisions if flipped in store.covered_samples(r)]
    (other,) = [r for r in revisions if r.id != first.id]
    in_first = set(store.covered_samples(first))

    # embed → qa mistakes: the flip is the top suspect, an annotation of the revision
    ok(run_cli(env, "embed", "--dataset", DATASET, "--model", clip, "--objects"))
    suspects = tmp_path / "suspects.json"
    written = ok(run_cli(env, "qa", "mistakes", "--dataset", DATASET, "--model", clip, "--k", "3", "--top",
                         OBJECT_IMAGES, "--out", suspects))
    for revision_run in (first, other):  # the hint names each run the suspects belong to
        assert f"--run {revision_run.name} --samples {suspects}" in " ".join(written.output.split())
    selection = json.loads(suspects.read_text())
    top = selection["samples"][0]
    assert top["sample_id"] == flipped and top["mistakenness"] == pytest.approx(1.0)
    assert len(selection["samples"]) == OBJECT_IMAGES  # the suspects of both revisions
    every = {a["annotation_id"]: a["reason"] for s in selection["samples"] for a in s["annotations"]}
    scored = {a["annotation_id"]: a["reason"] for s in selection["samples"] if s["sample_id"] in in_first
              for a in s["annotations"]}
    reasons = {annotation: reason for annotation, reason in scored.items() if reason}  # "": not suspect at all
    revision = store.annotations_of(first)
    flip_id = next(int(a) for a, label, box in zip(revision[flipped].data["annotation_id"], revision[flipped].labels,
                                                   revision[flipped].xyxy.tolist(), strict=True)
                   if label == "checker" and box == STRIPED)
    assert top["annotations"][0]["annotation_id"] == flip_id
    assert reasons[flip_id] == "label 'checker' but 3 of 3 nearest are 'stripes'"

    # the pre-label run does not hold the suspects: one line naming the run that does
    refused = run_cli(env, "cvat", "push", "--dataset", DATASET, "--run", "pre", "--samples", suspects,
                      "--task-name", "review")
    assert isinstance(refused.exception, CliError), refused.output
    names = ", ".join(repr(r.name) for r in sorted(revisions, key=lambda r: r.name))
    assert str(refused.exception) == (f"none of the {len(every)} annotations the selection scores is of run 'pre': "
                                      f"they are annotations of run {names}; push with --run naming it")
    assert all(t.name != "review" for t in fake.db.tasks.values())
    # a project's labels cannot carry the reasons: refused before anything is created
    tasks = len(fake.db.tasks)
    refused = run_cli(env, "cvat", "push", "--dataset", DATASET, "--run", first.name, "--samples", suspects,
                      "--task-name", "review", "--project", "1")
    assert isinstance(refused.exception, CliError) and "without --project" in str(refused.exception)
    assert len(fake.db.tasks) == tasks
    # a task of that name made before without the reason attribute is not taken over
    uris = [s.uri for s in store.samples(DATASET, ids=sorted(in_first))]
    old = sdk_client(fake, *ADMIN).tasks.create_from_data(
        spec={"name": "review-old", "labels": [{"name": n, "type": "rectangle"} for n in ("stripes", "checker")]},
        resources=uris, data_params={"sorting_method": "predefined"},
    )
    refused = run_cli(env, "cvat", "push", "--dataset", DATASET, "--run", first.name, "--samples", suspects,
                      "--task-name", "review-old")
    assert isinstance(refused.exception, CliError), refused.output
    assert str(refused.exception).startswith(
        f"task {old.id} ('review-old'): labels ['checker', 'stripes'] have no text attribute 'qa_reason'")
    assert store.get_cvat_task(settings_for(fake).server, old.id) is None

    # the review task: the revision's shapes of its suspect samples, each suspect with its reason;
    # the other revision's samples are left out, and the warning names it
    pushed = ok(run_cli(env, "cvat", "push", "--dataset", DATASET, "--run", first.name, "--samples", suspects,
                        "--task-name", "review"))
    assert f", {len(reasons)} with a review reason" in pushed.stdout
    assert (f"warning: {OBJECT_IMAGES - len(in_first)} samples of {suspects} left out: their scored annotations are "
            f"of '{other.name}'") in pushed.stderr
    review = task_named(fake, "review")
    specs = {label.name: {a.name: a for a in label.attributes} for label in fake.db.labels.values()
             if label.task_id == review.id}
    assert set(specs) == {"stripes", "checker"}
    for attributes in specs.values():
        reason_spec = attributes["qa_reason"]
        assert (reason_spec.input_type, reason_spec.default_value, reason_spec.values, reason_spec.mutable) == (
            "text", "", [""], False)
        assert "score" in attributes
    link = store.get_cvat_task(settings_for(fake).server, review.id)
    frames = store.frames_of(link)
    assert sorted(frames.values()) == sorted(in_first)
    cvat_to_annotation = store.pushed_shapes(link)
    spec_ids = {a.id for attributes in specs.values() for a in [attributes["qa_reason"]]}
    sent = {}  # what push stored: a value for the suspects only
    for shape in fake.db.shapes(review.id):
        sent[cvat_to_annotation[shape["id"]]] = [a["value"] for a in shape["attributes"] if a["spec_id"] in spec_ids]
    assert set(sent) == set(scored)
    assert sent == {annotation: [reasons[annotation]] if annotation in reasons else [] for annotation in scored}
    (job,) = [j for j in fake.db.jobs.values() if j.task_id == review.id]
    client = sdk_client(fake, *ADMIN)
    seen = {}  # what the reviewer sees: the reason, else the attribute's default ""
    for shape in client.jobs.retrieve(job.id).get_annotations().shapes:
        (value,) = [a.value for a in shape.attributes if a.spec_id in spec_ids]
        seen[cvat_to_annotation[shape.id]] = value
    assert seen == {annotation: reasons.get(annotation, "") for annotation in scored}

    # a rerun sends nothing
    again = ok(run_cli(env, "cvat", "push", "--dataset", DATASET, "--run", first.name, "--samples", suspects,
                       "--task-name", "review"))
    assert "(0 annotation requests)" in again.stdout

    # the reviewer reads the reason and fixes the label (a label's attributes are its own: CVAT
    # gives the shape the new label's defaults); pull makes a new revision
    ids = label_ids(fake, review.id)
    (flip_shape,) = [s for s in fake.db.shapes(review.id) if cvat_to_annotation[s["id"]] == flip_id]
    relabelled = shape_request(flip_shape, label_id=ids["stripes"], source="manual", attributes=[])
    edit_job(client, job.id, "update", [relabelled])
    complete(fake, review.id)
    pull_all(env, review.id)
    (second,) = [r for r in store.list_runs(DATASET, kind="human") if r.id not in {first.id, other.id}]
    pulled = {}  # pushed annotation id -> (label, qa_reason) in the new revision
    for det in store.annotations_of(second).values():
        for i, pre_id in enumerate(det.data["pre_annotation_id"].tolist()):
            pulled[pre_id] = (str(det.labels[i]), det.data["attributes"][i]["qa_reason"])
    assert pulled[flip_id] == ("stripes", "")
    # the pull keeps the attribute as it keeps any other
    assert {a: v[1] for a, v in pulled.items() if a != flip_id} == {
        a: reasons.get(a, "") for a in scored if a != flip_id}

    # eval shows the fix: the old revision against the new one, one relabel matched by shape id
    report_file = tmp_path / "report.json"
    ok(run_cli(env, "eval", "--dataset", DATASET, "--pred", first.name, "--truth", second.name, "--json", report_file))
    (section,) = json.loads(report_file.read_text())["runs"]
    edits = section["edits"]
    assert edits["overall"]["relabeled"] == 1 and edits["per_class"]["checker"]["relabeled"] == 1
    assert edits["overall"]["accepted"] == 2 * len(in_first) - 1
    assert edits["matched_by"]["iou"] == 0

    # and the neighbours on fresh crops of the new truth agree with it (the evaluation's signal
    # would now flag the box the pre-label run got wrong: --no-evaluation leaves it out)
    ok(run_cli(env, "embed", "--dataset", DATASET, "--model", clip, "--objects"))
    ok(run_cli(env, "qa", "mistakes", "--dataset", DATASET, "--model", clip, "--k", "3", "--no-evaluation",
               "--out", suspects))
    after = json.loads(suspects.read_text())
    assert after["samples"][0]["mistakenness"] < 0.5
    flipped_now = next(s for s in after["samples"] if s["sample_id"] == flipped)
    assert {a["label"] for a in flipped_now["annotations"]} == {"stripes", "checker"}
    assert not any(a["reason"].startswith("label 'checker' but 3 of 3") for a in flipped_now["annotations"])


@pytest.mark.parametrize(
    "annotations, message",
    [
        ([{"annotation_id": 7, "reason": 3}], "(ValueError: reason must be a string, got 3)"),
        ([{"annotation_id": "7", "reason": "x"}], "(ValueError: annotation_id must be a whole number, got '7')"),
        ([{"annotation_id": 7}], "(KeyError: 'reason')"),
    ],
)
def test_a_bad_reason_in_the_selection_is_one_line(tmp_path, annotations, message):
    from sync.commands.cvat import _read_selection_file

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"dataset": DATASET, "samples": [{"sample_id": 1, "annotations": annotations}]}))
    with pytest.raises(CliError) as caught:
        _read_selection_file(path, DATASET)
    assert str(caught.value) == f"{path}: not a selection file of `autolabel select --out` {message}"


def test_a_selection_without_annotations_has_no_reasons(tmp_path):
    from sync.commands.cvat import _read_selection_file

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"dataset": DATASET, "samples": [{"sample_id": 4}, {"sample_id": 2}]}))
    assert _read_selection_file(path, DATASET) == ([4, 2], {})
