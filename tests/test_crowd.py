"""The crowd attribute as imports write it (``True``) and as CVAT returns it (text), read the
same way by the evaluator and both exporters."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from serverless.detections import Detections
from sync.crowd import crowd_column, is_crowd
from sync.export import export_coco
from sync.export.yolo import label_lines
from sync.store import SampleIn, open_store


def test_is_crowd_reads_booleans_numbers_and_cvat_checkbox_text():
    assert [is_crowd({"iscrowd": v}) for v in (True, 1, "true", "True", " TRUE ", "1", "yes", "on")] == [True] * 8
    assert [is_crowd({"iscrowd": v}) for v in (False, 0, "false", "False", "0", "", "no", None, 2, 0.5)] == [False] * 10
    assert not is_crowd(None) and not is_crowd({}) and not is_crowd({"occluded": "true"})


@given(st.lists(st.one_of(st.none(), st.booleans(), st.sampled_from(["true", "false"])), max_size=8))
def test_crowd_column_is_is_crowd_per_row(values):
    rows = [None if v is None else {"iscrowd": v} for v in values]
    column = np.empty(len(rows), dtype=object)
    column[:] = rows
    assert crowd_column(column, len(rows)).tolist() == [v is True or v == "true" for v in values]
    assert crowd_column(None, len(rows)).tolist() == [False] * len(rows)


def pulled(boxes, values):
    """Boxes as `sync.pull` stores a CVAT job: attribute values as text."""
    attributes = np.empty(len(values), dtype=object)
    attributes[:] = [{"iscrowd": v} for v in values]
    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, np.float32), scores=np.ones(n, np.float32), class_ids=np.zeros(n, np.int64),
        labels=np.array(["cat"] * n), data={"attributes": attributes},
    )


def test_exports_keep_a_cvat_checkbox_that_is_off_and_drop_one_that_is_on(tmp_path):
    store = open_store(tmp_path / "store.db")
    ds = store.get_or_create_dataset("d")
    (sample,) = store.add_samples(ds, [SampleIn("/nowhere/a.png", 40, 30)])
    run = store.create_run(ds, "import", name="truth")
    store.add_detections(run, {sample: pulled([[0, 0, 9, 9], [10, 10, 20, 20]], ["false", "true"])}, with_scores=False)
    store.finish_run(run)

    out = tmp_path / "labels.json"
    export_coco(store, "d", out, revision="truth")
    assert [a["iscrowd"] for a in json.loads(out.read_text())["annotations"]] == [0, 1]

    (stored,) = store.annotations_of(run).values()
    lines, dropped = label_lines(stored, 40, 30)
    assert len(lines) == 1 and dropped == {"crowd regions": 1}
    np.testing.assert_allclose(lines[0][1], [4.5 / 40, 4.5 / 30, 9 / 40, 9 / 30], atol=1e-6)
    store.close()
