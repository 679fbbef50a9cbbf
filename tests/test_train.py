"""``autolabel train``, ``autolabel lineage`` and the trained model behind every door, on a
small synthetic dataset (tests/train_support.py) with a YOLO built from ultralytics' yaml
(random init, imgsz 64, one epoch, offline): the lineage is recorded, pre-labels made with
the trained weights lead back to it, ``autolabel eval`` counts held-out samples only, and
the model answers CVAT through a rendered function served by ``autolabel serve``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sync.cli import app
from sync.console import CliError
from sync.export.yolo import split_of
from sync.prelabel_store import file_sha256
from sync.store import open_store
from tests.train_support import fill_store

FAST = ["--model", "yolo11n.yaml", "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0",
        "--device", "cpu", "--no-plots", "--val", "0.3"]
ONTOLOGY = "name: pets\nlabels:\n  - {name: cat}\n  - {name: dog}\n"


def cli(args: list[str], db: Path, *, ok: bool = True):
    result = CliRunner().invoke(app, args, env={"AUTOLABEL_DB": str(db), "COLUMNS": "200"})
    if ok:
        assert result.exit_code == 0, result.output[-3000:] + repr(result.exception)
    return result


def refused(args: list[str], db: Path) -> str:
    """The one-line message of a command that must fail as the CLI fails (exit 2)."""
    result = cli(args, db, ok=False)
    assert isinstance(result.exception, CliError), (result.output[-2000:], result.exception)
    message = str(result.exception)
    assert "\n" not in message  # (ultralytics' logger may print "--- Logging error ---" into a closed
    return message              # CliRunner stream of an earlier test: a test artefact, not output)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    db = root / "store.db"
    with open_store(db) as store:
        fill_store(store, root)
    (root / "pets.yaml").write_text(ONTOLOGY)
    result = cli(["train", "--dataset", "pets", *FAST, "--out", str(root / "run"), "--ontology", str(root / "pets.yaml")],
                 db)
    weights = root / "run" / "train" / "weights" / "best.pt"
    return {"root": root, "db": db, "weights": weights, "output": result.output}


def test_a_training_run_records_what_it_was_trained_on(trained):
    with open_store(trained["db"]) as store:
        (run,) = store.list_training_runs("pets")
        samples = store.samples("pets")
        fixed = store.get_run("pets", "fixed")
        used = store.training_samples(run)
    assert run.finished and run.labels == "human" and run.threshold is None and run.classes == ("cat", "dog")
    assert run.weights_path == str(trained["weights"]) and run.weights_sha256 == file_sha256(trained["weights"])
    assert set(run.metrics) >= {"precision", "recall", "map50", "map"}
    assert run.params["epochs"] == 1 and run.params["imgsz"] == 64 and run.base_model == "yolo11n.yaml"
    assert set(run.versions) == {"ultralytics", "torch", "autolabel-cvat"}
    # every sample, its side of the dataset's split, and the human revision its labels came from
    sides = split_of([s.uri for s in samples], 0.3, 0)
    assert {sid: s.split for sid, s in used.items()} == {s.id: sides[s.uri] for s in samples}
    assert {s.run_id for s in used.values()} == {fixed.id}
    assert trained["weights"].is_file() and "train-1" in trained["output"]
    shown = cli(["lineage", "--dataset", "pets", "--run", "train-1"], trained["db"]).output
    n_val = sum(s.split == "val" for s in used.values())
    assert f"{len(used) - n_val} train / {n_val} val samples" in shown and "labelled by fixed (import)" in shown


def test_pre_labels_of_the_trained_model_lead_back_to_it_and_eval_counts_held_out_samples_only(trained):
    root, db, weights = trained["root"], trained["db"], trained["weights"]
    cli(["prelabel", str(root / "images"), "--ontology", str(root / "pets.yaml"), "--dataset", "pets",
         "--run", "distilled", "--detector", f"yolo:{weights}", "--device", "cpu", "--threshold", "0.001"], db)
    with open_store(db) as store:
        distilled = store.get_run("pets", "distilled")
        (training,) = store.list_training_runs("pets")
        held_out = {sid for sid, s in store.training_samples(training).items() if s.split == "val"}
    assert distilled.model_revision == file_sha256(weights)
    lineage = cli(["lineage", "--dataset", "pets", "--run", "distilled", "--json", str(root / "l.json")], db)
    assert "training run train-1" in lineage.output
    assert json.loads((root / "l.json").read_text())["training_runs"][0]["weights_sha256"] == distilled.model_revision
    report = root / "eval.json"
    cli(["eval", "--dataset", "pets", "--pred", "distilled", "--pred", "auto", "--json", str(report)], db)
    found = json.loads(report.read_text())
    assert found["samples"] == len(held_out)  # both runs, on the held-out samples only
    assert any("train-1" in note for note in found["notes"])
    # a model naming a class the weights do not have is refused in one line
    (root / "birds.yaml").write_text("labels: [{name: cat}, {name: bird}]\n")
    message = refused(["prelabel", str(root / "images"), "--ontology", str(root / "birds.yaml"), "--out",
                       str(root / "x.json"), "--detector", f"yolo:{weights}", "--device", "cpu"], db)
    assert "bird" in message


def test_the_trained_model_answers_cvat_through_a_served_function(trained, tmp_path):
    import yaml

    from serverless.ontology import load_ontology
    from serverless.render import RenderOptions, render_functions
    from serverless.serve import FunctionHost, ServeOptions
    from tests.test_serve import INVOKE, call, cvat_body, invocation_headers, png_b64

    weights = trained["weights"]
    ontology = load_ontology(trained["root"] / "pets.yaml")
    (directory,) = render_functions(ontology, tmp_path / "fn", "detector",
                                    RenderOptions(detector=f"yolo:{weights}"))
    assert (directory / "weights" / "best.pt").read_bytes() == weights.read_bytes()  # baked into the image
    config = yaml.safe_load((directory / "function.yaml").read_text())
    env = {item["name"]: item["value"] for item in config["spec"]["env"]}
    assert env["AUTOLABEL_DETECTOR"] == "yolo:/opt/weights/yolo/best.pt"
    for item in config["spec"]["env"]:  # as if the image build had fetched the file there
        if item["name"] == "AUTOLABEL_DETECTOR":
            item["value"] = f"yolo:{weights}"
    (directory / "function.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with FunctionHost([directory], ServeOptions(port=0, function_ports="ephemeral")) as host:
        answer = call(host.dashboard_port, "POST", INVOKE, invocation_headers(config["metadata"]["name"]),
                      cvat_body(image=png_b64(128, 96), threshold=0.0))
    assert answer.status == 200, answer.body[:500]
    items = answer.json()
    assert items and {item["label"] for item in items} <= {"cat", "dog"}
    assert {item["type"] for item in items} == {"rectangle"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A second store for the refusals: the pets dataset, one unlabelled and one single-image dataset."""
    root = tmp_path_factory.mktemp("refusals")
    db = root / "store.db"
    with open_store(db) as store:
        fill_store(store, root / "pets")
        fill_store(store, root / "unlabelled", dataset="unlabelled", truth=False)
        fill_store(store, root / "one", dataset="one", n=1)
    (root / "birds.yaml").write_text("labels: [{name: cat}, {name: dog}, {name: bird}]\n")
    (root / "cats.yaml").write_text("labels: [{name: cat}]\n")
    return {"root": root, "db": db}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--dataset", "nope"], "no dataset 'nope'"),
        (["--dataset", "unlabelled"], "nothing to train on with --labels human"),
        (["--dataset", "one"], "the val split would be empty"),
        (["--dataset", "pets", "--ontology", "{root}/birds.yaml"], "class 'bird' has no examples in the train split"),
        (["--dataset", "pets", "--ontology", "{root}/cats.yaml"], "labels ['dog'] that ontology"),
        (["--dataset", "pets", "--labels", "prelabel:auto", "--threshold", "0.99"], "hold no box to train on"),
        (["--dataset", "pets", "--labels", "prelabel:fixed"], "not pre-labels"),
        (["--dataset", "pets", "--labels", "prelabel:gone"], "no run named 'gone'"),
        (["--dataset", "pets", "--labels", "everything"], "--labels must be human, prelabel:RUN"),
        (["--dataset", "pets", "--threshold", "0.5"], "--labels human has none"),
        (["--dataset", "pets", "--val", "1.5"], "--val must lie strictly between 0 and 1"),
        (["--dataset", "pets", "--model", "/nowhere/best.pt"], "no such checkpoint"),
        (["--dataset", "pets", "--model", "yolo11n.pt"], "downloads are off"),
        (["--dataset", "pets", "--model", "nothing.yaml"], "no such model yaml"),
        (["--dataset", "pets", "--epochs", "0"], "--epochs must be at least 1"),
        (["--dataset", "pets", "--device", "99"], "--device 99: Invalid CUDA 'device=99' requested"),
    ],
)
def test_bad_input_is_one_line_before_training_and_nothing_is_written(small, args, expected, monkeypatch):
    monkeypatch.setenv("AUTOLABEL_OFFLINE", "1")
    out = small["root"] / "out"
    base = FAST[: FAST.index("--val")]  # each case sets its own split options
    given = [a.format(root=small["root"]) for a in args]
    message = refused(["train", *base, *given, "--out", str(out)], small["db"])
    assert expected in message
    assert not out.exists()
    with open_store(small["db"]) as store:
        assert all(store.list_training_runs(d.name) == [] for d in store.list_datasets())


def test_an_interrupted_training_resumes_into_the_same_run(tmp_path, monkeypatch):
    from ultralytics.engine.trainer import BaseTrainer

    db = tmp_path / "store.db"
    with open_store(db) as store:
        fill_store(store, tmp_path)
    save = BaseTrainer.save_model

    def save_then_stop(trainer):  # a Ctrl-C right after the first epoch's checkpoint
        save(trainer)
        if trainer.epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(BaseTrainer, "save_model", save_then_stop)
    args = ["train", "--dataset", "pets", *FAST, "--epochs", "2", "--out", str(tmp_path / "run")]
    stopped = cli(args, db, ok=False)
    assert stopped.exit_code == 130 and "autolabel train --dataset pets --resume" in stopped.output
    with open_store(db) as store:
        (run,) = store.list_training_runs("pets")
    assert not run.finished and (tmp_path / "run" / "train" / "weights" / "last.pt").is_file()
    monkeypatch.setattr(BaseTrainer, "save_model", save)
    resumed = cli(["train", "--dataset", "pets", "--resume"], db)
    with open_store(db) as store:
        (done,) = store.list_training_runs("pets")
    assert done.id == run.id and done.finished and done.weights_sha256 == file_sha256(Path(done.weights_path))
    assert "train-1" in resumed.output
    assert "no unfinished training run" in refused(["train", "--dataset", "pets", "--resume"], db)


def test_mixed_labels_take_human_revisions_where_they_exist_and_filter_only_pre_labels(tmp_path):
    from sync.coco_import import import_coco
    from sync.train import LabelSource, prepare_training
    from sync.train.plan import choose_training_labels

    with open_store(tmp_path / "store.db") as store:
        fill_store(store, tmp_path, truth=False)
        truth = json.loads((tmp_path / "truth.json").read_text())
        truth["images"] = truth["images"][:4]  # the annotators corrected 4 of the 10 images
        truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] <= 4]
        (tmp_path / "some.json").write_text(json.dumps(truth))
        import_coco(store, "pets", tmp_path / "some.json", tmp_path / "images", name="fixed", role="revision")
        choice = choose_training_labels(store, "pets", LabelSource.parse("mixed:auto"))
        assert choice.counts() == {"import-prediction": 6, "import-revision": 4}
        plan = prepare_training(store, "pets", LabelSource.parse("mixed:auto"), tmp_path / "data", threshold=0.5,
                                val=0.3, seed=0)
    # the false pre-labels (0.25 on even images, 0.45 on odd ones) of the 6 uncorrected images go;
    # the corrected images keep every human box
    assert plan.export.dropped == {"pre-labels scored below 0.5": 6}
    assert plan.export.annotations == 20
    sources = {r["source"] for r in plan.metadata["samples"] if r["uri"].endswith(("photo00.png", "photo03.png"))}
    assert sources == {"import-revision"}
    with pytest.raises(Exception, match="--labels must be"):
        LabelSource.parse("human:fixed")
