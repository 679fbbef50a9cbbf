"""`autolabel eval | select | tune` on a trained detector's pre-labels: the samples its training
run trained on (``train`` split) never count, for any compared run (`sync.evaluate.load`).

Dataset ``site``: six 64 x 48 images, one cat each (box ``T``), corrected by an imported
revision. Training run ``train-yolo`` trained on samples 0-2 (``train``) and validated on 3
(``val``); 4 and 5 it never saw. Its weights made run ``yolo``: perfect on 0-2 (``T`` at 0.9),
and on 3-5 the cat at 0.4 plus a false box ``F`` at 0.8. The foundation model's run ``gdino``
finds nothing on 0-2 and the cat on 3 and 4 (0.9), nothing on 5. Both runs were made at
threshold 0.3, so every stored pre-label counts.

Counted by hand on the held-out samples 3-5 (3 cats; annotator seconds 7 verify, 1.5 delete,
30 draw): ``yolo`` TP 3, FP 3, FN 0: P 1/2, R 1, F1 2/3, 3 accepted + 3 deleted = 25.5 s of
90 s by hand, saved 64.5 s; ``gdino`` TP 2, FP 0, FN 1: P 1, R 2/3, F1 4/5, 2 accepted + 1
drawn = 44 s, saved 46 s. Had samples 0-2 leaked, ``yolo`` would score F1 4/5 and ``gdino``
1/2: the ranking by F1 would flip.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sync.cli import app
from sync.evaluate.data import EvalError
from sync.evaluate.load import choose_runs, load_eval
from sync.store import AnnotationIn, Provenance, SampleIn, TrainingSampleIn, open_store

W, H = 64, 48
T = (4, 4, 24, 24)
F = (40, 26, 60, 46)
"""A false box, far from every cat (IoU 0)."""
TRAINED_SHA = "sha256:" + "a" * 64
OTHER_SHA = "sha256:" + "b" * 64
TRAIN, VAL, HELD_OUT = (0, 1, 2), (3,), (3, 4, 5)
NOTE = "3 samples are left out because training run 'train-yolo' trained on them"


def box(sample_id, xyxy, score=None, label="cat"):
    return AnnotationIn(sample_id, label, *xyxy, score=score)


def tag(sample_id, label, score=None):
    return AnnotationIn(sample_id, label, 0, 0, W, H, shape_type="tag", score=score)


def add_site(store, name, n, *, train=TRAIN, val=VAL, finish=True, revision=TRAINED_SHA, sealed=TRAINED_SHA):
    """Dataset ``name`` as in the module docstring (``n`` samples): the truth, ``yolo``
    (``model_revision`` = ``revision``), ``gdino`` and training run ``train-yolo`` over ``train``
    and ``val``, finished with weights ``sealed`` when ``finish``. The sample ids."""
    ds = store.get_or_create_dataset(name)
    ids = store.add_samples(ds, [SampleIn(f"/photos/{name}/{i}.jpg", W, H) for i in range(n)])
    store.add_finished_run(ds, "import", [box(sid, T) for sid in ids], name="corrected",
                           provenance=Provenance(params={"role": "revision", "with_scores": False}))
    yolo = [box(ids[i], T, 0.9) for i in range(n) if i in train]
    yolo += [row for i in range(n) if i not in train for row in (box(ids[i], T, 0.4), box(ids[i], F, 0.8))]
    store.add_finished_run(ds, "prelabel", yolo, name="yolo", cover=ids, provenance=Provenance(
        model_id="yolo:/w/best.pt", model_revision=revision, thresholds={"cat": 0.3}))
    gdino = [box(ids[i], T, 0.9) for i in (3, 4) if i < n]
    store.add_finished_run(ds, "prelabel", gdino, name="gdino", cover=ids, provenance=Provenance(
        model_id="IDEA-Research/grounding-dino-tiny", model_revision="0123abcd", thresholds={"cat": 0.3}))
    samples = [TrainingSampleIn(ids[i], "train") for i in train] + [TrainingSampleIn(ids[i], "val") for i in val]
    training = store.create_training_run(ds, labels="human", base_model="yolov8n.pt", val_fraction=0.25, seed=0,
                                         samples=samples, name="train-yolo")
    if finish:
        store.finish_training_run(training, weights_path="/w/best.pt", weights_sha256=sealed)
    return ids


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """``site`` (see the module docstring); ``open``: the same, training not finished, plus a
    finished training run of other weights; ``other-sha``: ``yolo`` made with weights no
    training run of its dataset produced (``train-yolo`` of ``elsewhere`` did); ``all-trained``:
    two samples, both trained on."""
    path = tmp_path_factory.mktemp("held-out") / "store.db"
    with open_store(f"sqlite:///{path}") as store:
        ids = {"site": add_site(store, "site", 6)}
        ids["open"] = add_site(store, "open", 6, finish=False)
        store.finish_training_run(
            store.create_training_run("open", labels="human", base_model="yolov8n.pt", val_fraction=0.5, seed=0,
                                      samples=[TrainingSampleIn(i, "train") for i in ids["open"]], name="other"),
            weights_path="/w/other.pt", weights_sha256=OTHER_SHA,
        )
        ids["other-sha"] = add_site(store, "other-sha", 6, revision=OTHER_SHA)
        ids["elsewhere"] = add_site(store, "elsewhere", 6, train=(0, 1, 2, 3, 4), val=(5,), sealed=OTHER_SHA)
        ids["all-trained"] = add_site(store, "all-trained", 2, train=(0, 1), val=())
    return {"url": f"sqlite:///{path}", "ids": ids}


def invoke(args, db):
    result = CliRunner().invoke(app, args, env={"AUTOLABEL_DB": db["url"], "COLUMNS": "250"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def flat(text):
    return " ".join(text.split())


# ---------------------------------------------------------------------------- eval


def test_eval_compares_both_runs_on_the_held_out_samples_only(db, tmp_path):
    report_file, html_file = tmp_path / "report.json", tmp_path / "report.html"
    result = invoke(["eval", "--dataset", "site", "--pred", "yolo", "--pred", "gdino", "--rank-by", "f1",
                     "--json", str(report_file), "--html", str(html_file)], db)
    report = json.loads(report_file.read_text())
    assert report["samples"] == len(HELD_OUT)
    assert [run["name"] for run in report["runs"]] == ["gdino", "yolo"]  # a leak would put yolo first
    runs = {run["name"]: run for run in report["runs"]}
    by_hand = {"yolo": (3, 3, 0, 1 / 2, 1.0, 2 / 3, 64.5), "gdino": (2, 0, 1, 1.0, 2 / 3, 4 / 5, 46.0)}
    for name, (tp, fp, fn, precision, recall, f1, saved) in by_hand.items():
        overall = runs[name]["overall"]
        assert (overall["tp"], overall["fp"], overall["fn"], overall["truth"]) == (tp, fp, fn, 3), name
        assert (overall["precision"], overall["recall"], overall["f1"]) == pytest.approx((precision, recall, f1))
        assert runs[name]["edits"]["time"]["manual_seconds"] == pytest.approx(90.0)
        assert runs[name]["edits"]["time"]["saved_seconds"] == pytest.approx(saved)
    notes = [note for note in report["notes"] if "training run" in note]
    assert len(notes) == 1 and notes[0].startswith(NOTE) and "'yolo'" in notes[0]
    assert NOTE in flat(result.stdout)
    assert html.escape(notes[0], quote=True) in html_file.read_text()


def test_eval_of_the_foundation_run_alone_ignores_the_training_run(db):
    with open_store(db["url"]) as store:
        selection = choose_runs(store, "site", preds=["gdino"])
    assert selection.sample_ids == tuple(db["ids"]["site"])
    assert not any("training run" in note for note in selection.notes)


def test_selection_and_tags_keep_to_the_held_out_samples(db):
    """Tags follow the samples: a trained run's tags are right on its training samples only."""
    ids = db["ids"]["site"]
    with open_store(db["url"]) as store:
        selection = choose_runs(store, "site", preds=["gdino", "yolo"], truth="corrected")
        assert selection.sample_ids == tuple(ids[i] for i in HELD_OUT)
        assert set(selection.truth) == set(selection.sample_ids)
        assert sum("training run 'train-yolo'" in note for note in selection.notes) == 1

        ds = store.get_or_create_dataset("tagged")
        tagged = store.add_samples(ds, [SampleIn(f"/photos/tagged/{i}.jpg", W, H) for i in range(4)])
        store.add_finished_run(ds, "import", [tag(sid, "indoor") for sid in tagged], name="truth",
                               provenance=Provenance(params={"role": "revision", "with_scores": False}))
        rows = [tag(sid, "indoor" if i < 2 else "outdoor", 0.9) for i, sid in enumerate(tagged)]
        store.add_finished_run(ds, "prelabel", rows, name="classifier",
                               provenance=Provenance(model_id="yolo:/w/cls.pt", model_revision="sha256:" + "c" * 64))
        training = store.create_training_run(ds, labels="human", base_model="yolov8n-cls.pt", val_fraction=0.5,
                                             seed=0, samples=[TrainingSampleIn(sid, "train") for sid in tagged[:2]])
        store.finish_training_run(training, weights_path="/w/cls.pt", weights_sha256="sha256:" + "c" * 64)
        (data,) = load_eval(store, choose_runs(store, "tagged"))
    assert data.sample_ids.tolist() == tagged[2:]
    assert data.tags.truth.shape[0] == 2 and data.tags.labels == ("indoor", "outdoor")
    assert data.tags.truth[:, 0].all() and not data.tags.truth[:, 1].any()
    assert data.tags.scores[:, 1].tolist() == pytest.approx([0.9, 0.9]) and np.isnan(data.tags.scores[:, 0]).all()


@pytest.mark.parametrize("dataset", ["open", "other-sha"])
def test_an_unfinished_or_unrelated_training_run_excludes_nothing(db, tmp_path, dataset):
    report_file = tmp_path / "report.json"
    invoke(["eval", "--dataset", dataset, "--pred", "yolo", "--pred", "gdino", "--rank-by", "f1",
            "--json", str(report_file)], db)
    report = json.loads(report_file.read_text())
    assert report["samples"] == 6
    assert not any("training run" in note for note in report["notes"])
    runs = {run["name"]: run["overall"] for run in report["runs"]}
    # all six samples: yolo TP 6, FP 3 (F1 12/15); gdino TP 2, FN 4 (F1 1/2)
    assert (runs["yolo"]["tp"], runs["yolo"]["fp"], runs["yolo"]["f1"]) == (6, 3, pytest.approx(0.8))
    assert (runs["gdino"]["tp"], runs["gdino"]["fn"], runs["gdino"]["f1"]) == (2, 4, pytest.approx(0.5))


def test_everything_trained_on_is_a_one_line_error(db):
    env = {**os.environ, "AUTOLABEL_DB": db["url"], "COLUMNS": "250"}
    result = subprocess.run([sys.executable, "-m", "sync.cli", "eval", "--dataset", "all-trained", "--pred", "yolo",
                             "--pred", "gdino"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no held-out sample"), result.stderr
    assert "training run 'train-yolo' trained on all 2 samples" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    with open_store(db["url"]) as store, pytest.raises(EvalError, match="training run 'train-yolo'"):
        choose_runs(store, "all-trained", preds=["gdino", "yolo"])


# ---------------------------------------------------------------------------- select, tune


@pytest.mark.parametrize("by", ["f1", "edits"])
def test_select_never_picks_a_training_sample(db, tmp_path, by):
    picks_file = tmp_path / f"picks-{by}.json"
    result = invoke(["select", "--dataset", "site", "--pred", "yolo", "--by", by, "--budget", "100%",
                     "--out", str(picks_file)], db)
    ids = db["ids"]["site"]
    picks = json.loads(picks_file.read_text())["samples"]
    assert sorted(p["sample_id"] for p in picks) == [ids[i] for i in HELD_OUT]  # the val sample 3 stays
    assert f"3 of 3 samples by {by}" in flat(result.stdout)
    assert "trained on them" in flat(result.stderr)


def test_tune_counts_the_held_out_samples_only(db):
    """On 3-5 the best F1 keeps everything (the run's 0.3): P 1/2, R 1, F1 2/3, 3 * 7 + 3 * 1.5 = 25.5 s
    (with 0-2 it would be P 2/3, F1 4/5, 46.5 s)."""
    result = invoke(["tune", "--dataset", "site", "--pred", "yolo"], db)
    (row,) = [line for line in result.stdout.splitlines() if re.search(r"\bcat\b", line)]
    cells = [cell.strip() for cell in re.split(r"[│┃|]", row) if cell.strip()]
    assert cells == ["cat", "0.300", "unchanged", "0.500", "1.000", "0.667", "26"], row
    assert "trained on them" in flat(result.stderr)  # the user is told why samples are missing


# ---------------------------------------------------------------------------- the rule


@st.composite
def layouts(draw):
    """Samples with or without a truth, covered by each of two runs or not, and up to three
    training runs: their train/val/unused split, finished or not, and whose weights made which run."""
    n = draw(st.integers(1, 6))
    mostly = st.sampled_from([True, True, True, False])
    truth = draw(st.lists(mostly, min_size=n, max_size=n))
    covers = [draw(st.lists(mostly, min_size=n, max_size=n)) for _ in range(2)]
    splits = st.lists(st.sampled_from(["train", "val", None]), min_size=n, max_size=n).map(
        lambda s: s if "train" in s else ["train", *s[1:]]  # a training run trains on something
    )
    trainings = draw(st.lists(st.tuples(splits, mostly, st.sampled_from([0, 1, None])), max_size=3))
    return n, truth, covers, trainings


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts())
@example(layout=(3, [True] * 3, [[True] * 3] * 2, [(["train", "val", None], True, 1)]))  # leaves out sample 0
def test_held_out_samples_are_the_common_ones_minus_every_train_split(db, layout):
    n, truth, covers, trainings = layout
    with open_store(db["url"]) as store:
        ds = store.get_or_create_dataset(f"rule-{len(store.list_datasets())}")
        ids = store.add_samples(ds, [SampleIn(f"/rule/{ds.id}/{i}.jpg", W, H) for i in range(n)])
        shas = [f"sha256:{ds.id:060d}{k:04d}" for k in range(3)]
        store.add_finished_run(ds, "import", [], name="truth", cover=[s for s, t in zip(ids, truth) if t],
                               provenance=Provenance(params={"role": "revision"}))
        for k, cover in enumerate(covers):
            store.add_finished_run(ds, "prelabel", [], name=f"run-{k}", cover=[s for s, c in zip(ids, cover) if c],
                                   provenance=Provenance(model_revision=shas[k]))
        excluded, names = set(), []
        for j, (splits, finished, made) in enumerate(trainings):
            samples = [TrainingSampleIn(s, split) for s, split in zip(ids, splits) if split]
            training = store.create_training_run(ds, labels="human", base_model="b.pt", val_fraction=0.5, seed=j,
                                                 samples=samples)
            if finished:
                sha = shas[2 if made is None else made]
                store.finish_training_run(training, weights_path="w.pt", weights_sha256=sha)
            if finished and made is not None:
                excluded |= {s for s, split in zip(ids, splits) if split == "train"}
                names.append(training.name)
        common = {s for i, s in enumerate(ids) if truth[i] and covers[0][i] and covers[1][i]}
        try:
            selection = choose_runs(store, ds.name, preds=["run-0", "run-1"])
        except EvalError as error:
            assert not common - excluded, error
            return
    assert selection.sample_ids == tuple(sorted(common - excluded))
    assert set(selection.truth) == set(selection.sample_ids)
    noted = [re.search(r"training run '([^']+)'", note).group(1) for note in selection.notes if "training run" in note]
    assert sorted(noted) == sorted(names)
