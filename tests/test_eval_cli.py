"""`autolabel eval | tune | select` and `cvat push --samples`, and the pieces they rank with:
hard-sample selection (`sync.evaluate.hard_samples`) and the run ranking / report
(`sync.evaluate.report`).

Two pre-label runs are built so that the ranking keys disagree: ``exact`` finds 3 of the 4
objects with pixel-exact boxes (higher mAP over IoU .50:.95), ``loose`` finds all 4 with boxes
at IoU 0.71-0.73 (lower mAP, higher mAP50, F1 and time saved). Expected values come from
pycocotools (mAP) and from counting by hand (F1, seconds saved), never from the code under test.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from serverless.detections import Detections
from sync.cli import app
from sync.evaluate import hard_samples as hs
from sync.evaluate.data import EvalData, EvalError
from sync.evaluate.report import RANK_BY, build_report, evaluate_run, rank_runs
from sync.evaluate.seconds import ActionSeconds
from sync.store import Provenance, SampleIn, open_store
from tests.bridge_support import write_images
from tests.conftest import ROOT

AUTOLABEL = [sys.executable, "-m", "sync.cli"]
SIZE = 200
RANKED, FRESH = "ranked", "fresh"

T = [[10, 10, 60, 60], [100, 100, 150, 150], [20, 20, 80, 80], [100, 20, 160, 80]]
TRUTH = {0: [T[0], T[1]], 1: [T[2], T[3]]}
"""Four cats on two 200 x 200 images."""


def shift(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


PREDS = {
    # 3 of 4, exact: every IoU threshold finds them; one object is missed (drawn by hand)
    "exact": {0: [(T[0], 0.9), (T[1], 0.8)], 1: [(T[2], 0.7)]},
    # 4 of 4, moved: IoU 2100/2900 = 0.724 (50 px boxes, 8 px) and 3000/4200 = 0.714 (60 px, 10 px)
    "loose": {0: [(shift(T[0], 8), 0.9), (shift(T[1], 8), 0.9)], 1: [(shift(T[2], 10), 0.9), (shift(T[3], 10), 0.9)]},
}
SECONDS = ActionSeconds()
BY_HAND = {
    # F1 = 2TP / (2TP + FP + FN); saved = 4 drawn by hand - (accepted/adjusted * 7 + added * 30)
    "exact": {"f1": 6 / 7, "saved": 4 * SECONDS.draw - (3 * SECONDS.verify + SECONDS.draw)},
    "loose": {"f1": 1.0, "saved": 4 * SECONDS.draw - 4 * SECONDS.adjust},
}


def coco_oracle(preds):
    """pycocotools' (mAP, mAP50) of ``{image: [(box, score)]}`` against `TRUTH`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, gts, dts = [], [], []
    for image in sorted(TRUTH):
        images.append({"id": image + 1, "width": SIZE, "height": SIZE})
        for x1, y1, x2, y2 in TRUTH[image]:
            gts.append({"id": len(gts) + 1, "image_id": image + 1, "category_id": 1, "iscrowd": 0,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for (x1, y1, x2, y2), score in preds.get(image, []):
            dts.append({"image_id": image + 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": gts, "categories": [{"id": 1, "name": "cat"}]}
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(dts), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


@pytest.fixture(scope="module")
def expected():
    """Per run: map, map50 (pycocotools), f1, saved (by hand)."""
    values = {}
    for name, preds in PREDS.items():
        m, m50 = coco_oracle(preds)
        values[name] = {"map": m, "map50": m50, **BY_HAND[name]}
    # the premise of the ranking tests: the keys disagree
    assert values["exact"]["map"] > values["loose"]["map"]
    assert values["exact"]["saved"] < values["loose"]["saved"] and values["exact"]["map50"] < values["loose"]["map50"]
    return values


def detections(items):
    boxes = np.array([box for box, _ in items], np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        xyxy=boxes,
        scores=np.array([score for _, score in items], np.float32),
        class_ids=np.zeros(n, np.int64),
        labels=np.array(["cat"] * n if n else [], dtype=str),
    )


def eval_data(name):
    truth = tuple(detections([(box, 1.0) for box in TRUTH[i]]) for i in sorted(TRUTH))
    pred = tuple(detections(PREDS[name].get(i, [])) for i in sorted(TRUTH))
    return EvalData(
        labels=("cat",), sample_ids=np.array([1, 2]), uris=("a.png", "b.png"), sizes=np.full((2, 2), SIZE),
        truth=truth, pred=pred, pred_name=name,
    )


def oracle_order(expected, by, names):
    """Best first by the independent values; ties keep ``names`` order."""
    return sorted(names, key=lambda n: -expected[n][by])


# ---------------------------------------------------------------------------- report: ranking


def test_rank_runs_orders_by_each_key(expected):
    evaluations = {name: evaluate_run(eval_data(name), seconds=SECONDS) for name in PREDS}
    for name, evaluation in evaluations.items():  # the metrics the ranking reads are the oracle's
        overall = evaluation.boxes.overall
        assert overall.map == pytest.approx(expected[name]["map"], abs=1e-9)
        assert overall.map50 == pytest.approx(expected[name]["map50"], abs=1e-9)
        assert overall.f1 == pytest.approx(expected[name]["f1"])
        assert evaluation.edits.time.saved_seconds == pytest.approx(expected[name]["saved"])
    orders = {}
    for by in RANK_BY:
        for names in (["exact", "loose"], ["loose", "exact"]):
            ranked = rank_runs([evaluations[n] for n in names], by)
            assert [e.name for e in ranked] == oracle_order(expected, by, names), by
        orders[by] = oracle_order(expected, by, ["exact", "loose"])
    assert orders["map"] == ["exact", "loose"] and orders["saved"] == ["loose", "exact"]
    assert [e.name for e in rank_runs(list(evaluations.values()))] == orders["map"]  # the default


def test_rank_runs_keeps_the_given_order_on_ties_and_refuses_unknown_keys():
    first = evaluate_run(eval_data("exact"))
    second = evaluate_run(eval_data("exact"))
    for by in RANK_BY:
        assert rank_runs([first, second], by)[0] is first
        assert rank_runs([second, first], by)[0] is second
    with pytest.raises(EvalError, match="--rank-by must be one of map, map50, f1, saved, got 'bogus'"):
        rank_runs([first], "bogus")


def test_build_report_puts_the_best_run_on_top(expected):
    evaluations = [evaluate_run(eval_data(name), seconds=SECONDS) for name in ("exact", "loose")]
    for by in RANK_BY:
        report = build_report("site", evaluations, rank_by=by, seconds=SECONDS)
        order = oracle_order(expected, by, ["exact", "loose"])
        assert [r["name"] for r in report["runs"]] == order
        assert [r["rank"] for r in report["runs"]] == [1, 2]
        best = report["runs"][0]
        assert report["overall"] == best["overall"] and report["per_class"] == best["per_class"]
        assert report["overall"]["map"] == pytest.approx(expected[order[0]]["map"], abs=1e-9)
        assert (report["rank_by"], report["samples"], report["dataset"]) == (by, 2, "site")
        assert report["seconds"] == SECONDS.to_dict()
        for section in report["runs"]:
            assert section["edits"]["time"]["saved_seconds"] == pytest.approx(expected[section["name"]]["saved"])
    assert any("record no thresholds" in note for note in report["notes"])
    json.dumps(report, allow_nan=False)  # JSON-ready
    with pytest.raises(EvalError, match="--rank-by"):
        build_report("site", evaluations, rank_by="mAP")
    with pytest.raises(EvalError, match="no run"):
        build_report("site", [])


# ---------------------------------------------------------------------------- hard samples


@pytest.mark.parametrize(
    ("text", "total", "count"),
    [("10%", 25, 3), ("100%", 25, 25), ("4%", 25, 1), ("1%", 25, 1), ("10%", 30, 3), ("70%", 10, 7),
     ("12.5%", 8, 1), (" 50 % ", 9, 5), ("25", 10, 10), ("25", 40, 25), ("1", 3, 1), ("10%", 0, 0), ("3", 0, 0)],
)
def test_parse_budget(text, total, count):
    assert hs.parse_budget(text, total) == count


@pytest.mark.parametrize("text", ["0%", "0.0%", "150%", "100.5%", "-5%", "abc", "1.5", "0", "-3", "", "%", "10%%",
                                  "1e2", "ten"])
def test_parse_budget_refuses(text):
    with pytest.raises(EvalError, match="--budget") as caught:
        hs.parse_budget(text, 25)
    assert repr(text.strip()) in str(caught.value)


percentages = st.decimals(min_value="0.001", max_value="100", places=3)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 100_000), a=percentages, b=percentages)
def test_parse_budget_share_is_at_least_one_at_most_all_and_monotone(total, a, b):
    low, high = sorted((a, b))
    n_low, n_high = (hs.parse_budget(f"{p}%", total) for p in (low, high))
    for percent, n in ((low, n_low), (high, n_high)):
        assert 1 <= n <= total
        assert n == max(1, math.ceil(Fraction(total) * Fraction(str(percent)) / 100))  # exact arithmetic
    assert n_low <= n_high


def test_sample_f1_and_confidence_and_edits_on_hand_made_counts():
    tp, fp, fn = [0, 2, 0, 1, 0, 3], [0, 0, 3, 1, 0, 1], [0, 0, 0, 1, 2, 0]
    np.testing.assert_allclose(hs.sample_f1(tp, fp, fn), [1.0, 1.0, 0.0, 0.5, 0.0, 6 / 7])
    assert hs.sample_f1([], [], []).shape == (0,)
    scores = [np.array([0.9, 0.5], np.float32), np.zeros(0, np.float32), np.array([0.2], np.float32)]
    np.testing.assert_allclose(hs.sample_confidence(scores), [0.7, 0.0, 0.2], rtol=1e-6)
    per_sample = np.array([[5, 0, 0, 0, 0], [0, 1, 2, 3, 4], [9, 1, 0, 0, 0]])
    np.testing.assert_array_equal(hs.sample_edits(per_sample), [0, 10, 1])
    assert hs.sample_edits(np.zeros((0, 5), np.int64)).shape == (0,)


def test_pick_hardest_orders_and_breaks_ties_by_sample_id():
    ids = [40, 30, 10, 20, 50]
    uris = [f"u{i}" for i in ids]
    values = np.array([0.5, 0.2, 0.5, 0.2, 0.9])
    lowest = hs.pick_hardest(ids, uris, values, 3, ascending=True)
    assert [(p.sample_id, p.uri, p.value) for p in lowest] == [(20, "u20", 0.2), (30, "u30", 0.2), (10, "u10", 0.5)]
    highest = hs.pick_hardest(ids, uris, values, 5, ascending=False)
    assert [p.sample_id for p in highest] == [50, 10, 40, 20, 30]
    assert hs.pick_hardest(ids, uris, values, 0, ascending=True) == []


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]), min_size=0, max_size=30),
    ascending=st.booleans(),
    data=st.data(),
)
def test_pick_hardest_matches_a_sort(values, ascending, data):
    ids = data.draw(st.lists(st.integers(1, 10_000), min_size=len(values), max_size=len(values), unique=True))
    count = data.draw(st.integers(0, len(values)))
    picks = hs.pick_hardest(ids, [str(i) for i in ids], np.array(values, float), count, ascending=ascending)
    expected = sorted(zip(values, ids), key=lambda vi: (vi[0] if ascending else -vi[0], vi[1]))[:count]
    assert [(p.value, p.sample_id, p.uri) for p in picks] == [(v, i, str(i)) for v, i in expected]


# ---------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """``ranked``: the two runs and a human revision of the four cats; ``fresh``: a pre-label
    run only (s0 scores 0.9 and 0.5, s1 nothing, s2 0.2, s3 0.95; s4 not covered)."""
    root = tmp_path_factory.mktemp("eval-cli")
    path = root / "store.db"
    with open_store(f"sqlite:///{path}") as store:
        images = write_images(root / "ranked", 2, width=SIZE, height=SIZE)
        ds = store.get_or_create_dataset(RANKED)
        ids = store.add_samples(ds, [SampleIn(str(p.resolve()), SIZE, SIZE) for p in images])
        runs = {}
        for name, preds in PREDS.items():
            run = store.create_run(ds, "prelabel", name=name, provenance=Provenance(thresholds={"cat": 0.5}))
            store.add_detections(run, {sid: detections(preds.get(i, [])) for i, sid in enumerate(ids)})
            runs[name] = store.finish_run(run)
        task = store.link_cvat_task(ds, "https://cvat.example.com", 1, run=runs["exact"])
        store.link_frames(task, dict(enumerate(ids)))
        when = datetime(2026, 1, 1, tzinfo=UTC)
        job = store.upsert_cvat_job(task, 1, start_frame=0, stop_frame=1, updated_date=when)
        truth = {sid: detections([(box, 1.0) for box in TRUTH[i]]) for i, sid in enumerate(ids)}
        store.record_human_revision(job, truth, updated_date=when)

        images = write_images(root / "fresh", 5, width=32, height=24)
        ds = store.get_or_create_dataset(FRESH)
        fresh = store.add_samples(ds, [SampleIn(str(p.resolve()), 32, 24) for p in images])
        run = store.create_run(ds, "prelabel", name="first-pass")
        box = [[1, 1, 9, 9]]
        store.add_detections(run, {
            fresh[0]: detections([(box[0], 0.9), ([10, 10, 20, 20], 0.5)]),
            fresh[1]: Detections.empty(),
            fresh[2]: detections([(box[0], 0.2)]),
            fresh[3]: detections([(box[0], 0.95)]),
        })
        store.finish_run(run)
    return {"path": path, "url": f"sqlite:///{path}", "fresh": fresh, "uris": [str(p.resolve()) for p in images]}


def invoke(args, db):
    result = CliRunner().invoke(app, args, env={"AUTOLABEL_DB": db["url"], "COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def environment(db, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVAT_")}
    env.update(AUTOLABEL_DB=db["url"], COLUMNS="200", HF_HUB_OFFLINE="1", **extra)
    return env


def run_parallel(cases, db, cwd, **env_extra):
    """``{name: (args, env overrides)}`` run as processes at once; ``{name: CompletedProcess-like}``."""
    running = {
        name: subprocess.Popen(AUTOLABEL + args, env=environment(db, **env_extra, **env), cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (args, env) in cases.items()
    }
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        results[name] = (process.returncode, out, err)
    return results


def assert_one_line_exit_2(name, result, fragment):
    code, out, err = result
    assert code == 2, f"{name}: exit {code}\n{out}{err}"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err}"
    assert fragment in lines[0], f"{name}: {lines[0]}"
    assert "Traceback" not in out + err


def test_eval_ranks_two_runs_and_writes_the_ranking_as_json(db, tmp_path, expected):
    for by in ("map", "saved"):
        report_file = tmp_path / f"report-{by}.json"
        result = invoke(["eval", "--dataset", RANKED, "--pred", "exact", "--pred", "loose", "--rank-by", by,
                         "--json", str(report_file)], db)
        report = json.loads(report_file.read_text())
        order = oracle_order(expected, by, ["exact", "loose"])
        assert [r["name"] for r in report["runs"]] == order
        assert [r["rank"] for r in report["runs"]] == [1, 2]
        assert report["rank_by"] == by and report["samples"] == 2
        assert report["overall"] == report["runs"][0]["overall"]
        for section in report["runs"]:
            values = expected[section["name"]]
            assert section["overall"]["map"] == pytest.approx(values["map"], abs=1e-9)
            assert section["overall"]["map50"] == pytest.approx(values["map50"], abs=1e-9)
            assert section["overall"]["f1"] == pytest.approx(values["f1"])
            assert section["edits"]["time"]["saved_seconds"] == pytest.approx(values["saved"])
        # the printed ranking: best first, in the same order
        stdout = result.stdout
        table = stdout[stdout.index(f"Pre-label runs, best first (by {by})"):]
        assert table.index(order[0]) < table.index(order[1])
        assert f"Details below: run {order[0]} (rank 1)" in stdout


def test_select_by_confidence_needs_no_truth_and_puts_empty_samples_first(db, tmp_path):
    out_file = tmp_path / "pick.json"
    fresh, uris = db["fresh"], db["uris"]
    invoke(["select", "--dataset", FRESH, "--by", "confidence", "--budget", "100%", "--out", str(out_file)], db)
    picked = json.loads(out_file.read_text())
    assert (picked["dataset"], picked["run"], picked["truth"], picked["by"]) == (FRESH, "first-pass", None, "confidence")
    # means: s1 nothing (0.0), s2 0.2, s0 (0.9 + 0.5) / 2, s3 0.95; s4 is not covered by the run
    assert [p["sample_id"] for p in picked["samples"]] == [fresh[1], fresh[2], fresh[0], fresh[3]]
    assert [p["uri"] for p in picked["samples"]] == [uris[1], uris[2], uris[0], uris[3]]
    assert [p["confidence"] for p in picked["samples"]] == pytest.approx([0.0, 0.2, 0.7, 0.95], rel=1e-6)
    result = invoke(["select", "--dataset", FRESH, "--by", "confidence", "--out", str(out_file)], db)  # 10% of 4
    assert [p["sample_id"] for p in json.loads(out_file.read_text())["samples"]] == [fresh[1]]
    assert "1 of 4 samples by confidence" in result.stdout


def test_eval_tune_select_errors_are_one_line_with_exit_2(db, tmp_path):
    eval_ranked = ["eval", "--dataset", RANKED]
    cases = {
        "eval without truth": (["eval", "--dataset", FRESH], {}),
        "iou above 1": ([*eval_ranked, "--iou", "1.5"], {}),
        "iou of 0": ([*eval_ranked, "--iou", "0"], {}),
        "unknown rank key": ([*eval_ranked, "--rank-by", "bogus"], {}),
        "negative seconds": ([*eval_ranked, "--seconds-draw", "-1"], {}),
        "unknown pred": ([*eval_ranked, "--pred", "nope"], {}),
        "unknown dataset": (["eval", "--dataset", "nowhere"], {}),
        "budget 0%": (["select", "--dataset", FRESH, "--by", "confidence", "--budget", "0%"], {}),
        "budget not a number": (["select", "--dataset", FRESH, "--by", "confidence", "--budget", "1.5"], {}),
        "select f1 without truth": (["select", "--dataset", FRESH, "--by", "f1"], {}),
        "select edits without truth": (["select", "--dataset", FRESH, "--by", "edits"], {}),
        "select by bogus": (["select", "--dataset", RANKED, "--by", "bogus"], {}),
        "tune without truth": (["tune", "--dataset", FRESH], {}),
        "tune by bogus": (["tune", "--dataset", RANKED, "--by", "bogus"], {}),
    }
    expected = {
        "eval without truth": f"dataset {FRESH!r} has no human revision to compare with",
        "iou above 1": "--iou must lie between 0 and 1, got 1.5",
        "iou of 0": "--iou must lie between 0 and 1",
        "unknown rank key": "--rank-by must be one of map, map50, f1, saved, got 'bogus'",
        "negative seconds": "draw must be a finite number >= 0, got -1",
        "unknown pred": "no run named 'nope'",
        "unknown dataset": "'nowhere'",
        "budget 0%": "--budget must be a percentage in (0, 100], got '0%'",
        "budget not a number": "--budget must be a percentage such as 10% or a sample count such as 25, got '1.5'",
        "select f1 without truth": "no human revision",
        "select edits without truth": "no human revision",
        "select by bogus": "--by must be one of f1, confidence, edits, mistakenness, uniqueness, got 'bogus'",
        "tune without truth": "no human revision",
        "tune by bogus": "--by must be f1 or time, got 'bogus'",
    }
    results = run_parallel(cases, db, tmp_path)
    for name, result in results.items():
        assert_one_line_exit_2(name, result, expected[name])
    assert not list(tmp_path.iterdir())  # no report, no selection written


def store_dump(path):
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def files_under(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tune_without_write_changes_nothing_and_says_dry_run(db, tmp_path):
    ontology = tmp_path / "ontology.yaml"
    ontology.write_text("labels:\n  - name: cat\n    threshold: 0.5\n")
    before_files, before_store = files_under(tmp_path), store_dump(db["path"])
    code, out, err = run_parallel({"tune": (["tune", "--dataset", RANKED, "--pred", "loose"], {})}, db, tmp_path)["tune"]
    assert code == 0, out + err
    assert "dry run" in err and "--write" in err
    assert "Thresholds for loose" in out and "cat" in out
    assert files_under(tmp_path) == before_files
    assert store_dump(db["path"]) == before_store


# ---------------------------------------------------------------------------- cvat push --samples


def listener():
    """A TCP port that records whether anything connected (nothing ever answers)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.setblocking(False)
    return server


def connections(server):
    """How many connections reached ``server`` (then closes it)."""
    count = 0
    with server:
        while True:
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


SELECTIONS = {
    "another dataset": ({"dataset": "other", "samples": [{"sample_id": 1}]},
                        f"the selection is of dataset 'other', not {RANKED!r}"),
    "not JSON": ("{oops", "not a selection file of `autolabel select --out`"),
    "a list": ([1, 2], "not a selection file"),
    "no samples key": ({"dataset": RANKED}, "not a selection file"),
    "no sample_id": ({"dataset": RANKED, "samples": [{"id": 1}]}, "not a selection file"),
    "text sample id": ({"dataset": RANKED, "samples": [{"sample_id": "x"}]}, "not a selection file"),
    "null sample id": ({"dataset": RANKED, "samples": [{"sample_id": None}]}, "not a selection file"),
    "empty": ({"dataset": RANKED, "samples": []}, "the selection holds no samples"),
    "missing file": (None, "cannot read"),
}


def push_with_selections(selections, db, tmp_path):
    """``cvat push --samples FILE`` for each ``{name: (file content, expected error)}``, each
    against its own silent server: ``{name: ((exit code, stdout, stderr), connections)}``."""
    servers, results = {}, {}
    for name, (content, _) in selections.items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        if content is not None:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        servers[name] = listener()
        env = {"CVAT_URL": f"http://127.0.0.1:{servers[name].getsockname()[1]}"}
        results[name] = (["cvat", "push", "--dataset", RANKED, "--run", "exact", "--task-name", "review",
                          "--samples", str(path)], env)
    done = run_parallel(results, db, ROOT, CVAT_USERNAME="someone", CVAT_PASSWORD="some-Secret-pw-9",
                        CVAT_RETRIES="0", CVAT_TIMEOUT="1")
    return {name: (done[name], connections(servers[name])) for name in selections}


def test_push_samples_checks_the_selection_before_connecting(db, tmp_path):
    results = push_with_selections(SELECTIONS, db, tmp_path)
    for name, (result, connected) in results.items():
        assert_one_line_exit_2(name, result, SELECTIONS[name][1])
        assert connected == 0, f"{name}: cvat push connected to the server before checking --samples"
    _, _, err = results["another dataset"][0]
    assert "'other'" in err and repr(RANKED) in err


def test_push_samples_refuses_sample_ids_that_are_not_whole_numbers(db, tmp_path):
    """``"sample_id": 1.5`` or ``true`` names no sample; neither may be read as sample 1 and pushed."""
    selections = {
        "fractional sample id": ({"dataset": RANKED, "samples": [{"sample_id": 1.5}]}, "not a selection file"),
        "boolean sample id": ({"dataset": RANKED, "samples": [{"sample_id": True}]}, "not a selection file"),
    }
    for name, (result, connected) in push_with_selections(selections, db, tmp_path).items():
        assert_one_line_exit_2(name, result, selections[name][1])
        assert connected == 0, f"{name}: cvat push went on to the server"


# ---------------------------------------------------------------------------- tune --write


def labelled(items):
    """``[(label, box, score)]`` as `Detections`."""
    n = len(items)
    return Detections(
        xyxy=np.array([box for _, box, _ in items], np.float32).reshape(-1, 4),
        scores=np.array([score for _, _, score in items], np.float32),
        class_ids=np.zeros(n, np.int64),
        labels=np.array([label for label, _, _ in items] if n else [], dtype=str),
    )


@pytest.fixture
def tuning(tmp_path):
    """One image, truth: two cats. Pre-labels (run threshold 0.3): the first cat at 0.8123, a
    false cat at 0.4567, a false dog at 0.6; the second cat is missed."""
    path = tmp_path / "store.db"
    with open_store(f"sqlite:///{path}") as store:
        (image,) = write_images(tmp_path / "img", 1, width=SIZE, height=SIZE)
        ds = store.get_or_create_dataset("tuning")
        (sid,) = store.add_samples(ds, [SampleIn(str(image.resolve()), SIZE, SIZE)])
        run = store.create_run(ds, "prelabel", name="pre", provenance=Provenance(thresholds={"cat": 0.3, "dog": 0.3}))
        store.add_detections(run, {sid: labelled([
            ("cat", T[0], 0.8123), ("cat", [150, 150, 190, 190], 0.4567), ("dog", [5, 5, 30, 30], 0.6),
        ])})
        task = store.link_cvat_task(ds, "https://cvat.example.com", 1, run=store.finish_run(run))
        store.link_frames(task, {0: sid})
        when = datetime(2026, 1, 1, tzinfo=UTC)
        job = store.upsert_cvat_job(task, 1, start_frame=0, stop_frame=0, updated_date=when)
        store.record_human_revision(job, {sid: labelled([("cat", T[0], 1.0), ("cat", T[1], 1.0)])}, updated_date=when)
    ontology = tmp_path / "ontology.yaml"
    ontology.write_text("labels:\n  - name: cat  # felines\n    threshold: 0.3\n  - name: dog\n")
    return {"path": path, "url": f"sqlite:///{path}", "ontology": ontology}


def test_tune_writes_the_shortest_threshold_that_keeps_the_chosen_predictions(tuning):
    """By time: keeping the cats at >= 0.8123 costs 7 + 30 s against 38.5 s for both and 60 s
    for none; any threshold above 0.4567 up to 0.8123 keeps the same, so 0.8 is written. The
    dog is only a false box (no truth): keeping none is cheapest, written as 1.0."""
    from serverless.ontology import load_ontology

    by_time = invoke(["tune", "--dataset", "tuning", "--by", "time", "--write", str(tuning["ontology"])], tuning)
    assert "cat: 0.300 → 0.800" in by_time.output and "dog: 0.300 (the default) → 1.000" in by_time.output
    text = tuning["ontology"].read_text()
    assert text == "labels:\n  - name: cat  # felines\n    threshold: 0.8\n  - name: dog\n    threshold: 1.0\n"
    assert [load_ontology(tuning["ontology"]).threshold_for(i) for i in range(2)] == [0.8, 1.0]

    # by F1: 0.8123 again (F1 2/3 against 1/2); the dog has no truth, so no F1 to tune: unchanged
    by_f1 = invoke(["tune", "--dataset", "tuning", "--write", str(tuning["ontology"])], tuning)
    assert "unchanged" in by_f1.output and tuning["ontology"].read_text() == text
