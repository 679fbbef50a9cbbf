"""The CVAT contract (`serverless.convert.cvat_contract`): its rules, and that each is written
once in the product code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serverless.convert.cvat_contract import (
    QA_REASON_MAX_CHARS,
    SHAPE_TYPES,
    needs_mask,
    qa_reason_attribute_spec,
    qa_reason_value,
    score_attribute_request,
    score_attribute_spec,
    sdk_shapes_have_score,
    shape_type_for,
    shape_types_for,
)
from serverless.convert.cvat_shapes import delivered_shape_dicts, delivered_types
from serverless.detections import Detections

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("cvat_bridge", "serverless", "sync")
CONTRACT = Path("serverless/convert/cvat_contract.py")


def _code(text: str) -> str:
    """A module's code without comments and docstrings (``ast.unparse``, quotes normalized)."""
    tree = ast.parse(text)
    for parent in ast.walk(tree):  # docstrings, and attribute docstrings (a bare string after an assignment)
        for name in ("body", "orelse", "finalbody"):
            items = getattr(parent, name, None)
            if isinstance(items, list):
                items[:] = [
                    item for item in items
                    if not (isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant)
                            and isinstance(item.value.value, str))
                ] or [ast.Pass()]
    return ast.unparse(tree)


def _product_sources() -> dict[Path, str]:
    return {
        path.relative_to(ROOT): _code(path.read_text(encoding="utf-8"))
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
    }


@pytest.mark.parametrize(
    "rule, pattern, in_contract",
    [
        ("the SDK capability check", r"attribute_map", True),
        ("the score attribute's values", r"""[\[(]\s*["']0["']\s*,\s*["']100["']\s*,\s*["']1["']\s*[\])]""", True),
        ("the score attribute's values", r"number_attribute_values\(", False),
        ("the score attribute's name", r"""SCORE_ATTRIBUTE\w*\s*(:[^=]*)?=\s*(["']score["']|\{)""", True),
        ("the score attribute's name", r"""["']name["']\s*:\s*["']score["']""", False),
        ("the score attribute's spec id", r"""SCORE_ATTRIBUTE_ID\s*(:[^=]*)?=\s*\d""", True),
        ("the score attribute's default", r"""["']default_value["']\s*:""", True),
        ("the review reason attribute's name", r"""["']qa_reason["']""", True),
        ("the review reason attribute's type", r"""["']input_type["']\s*:\s*["']text["']""", True),
        ("the label-type dispatch", r"""\bkind\s*!=\s*["']rectangle["']""", False),
        ("the label-type dispatch", r"""labels_of_type\([^)]*\[""", False),
    ],
)
def test_each_contract_rule_is_written_once(rule: str, pattern: str, in_contract: bool) -> None:
    """``grep`` over the code (not the docs) of cvat_bridge/, serverless/ and sync/: the rule
    is written in the contract, and nowhere else."""
    found = {str(path) for path, text in _product_sources().items() if re.search(pattern, text)}
    assert (str(CONTRACT) in found) == in_contract, f"{rule}: the pattern does not find the contract as expected"
    extra = sorted(found - {str(CONTRACT)})
    assert not extra, f"{rule} is written outside {CONTRACT}: {extra}"


def test_score_attribute_spec_is_cvats_number_attribute() -> None:
    spec = score_attribute_spec()
    assert spec == {
        "name": "score",
        "input_type": "number",
        "mutable": False,
        "values": ["0", "100", "1"],
        "default_value": "0",
    }
    spec["values"].append("x")  # a fresh dict each time: callers cannot corrupt the rule
    assert score_attribute_spec()["values"] == ["0", "100", "1"]


def test_score_attribute_request_matches_the_json_spec() -> None:
    request = score_attribute_request(7)
    try:
        from cvat_sdk.attributes import number_attribute_values
        from cvat_sdk.auto_annotation import number_attribute_spec
    except ImportError:  # cvat-sdk 2.17 has neither helper
        pass
    else:
        assert request == number_attribute_spec("score", 7, number_attribute_values(0, 100, 1))
    spec = score_attribute_spec()
    assert (request.name, request.id, str(request.input_type), request.values, request.mutable) == (
        spec["name"],
        7,
        spec["input_type"],
        spec["values"],
        spec["mutable"],
    )


def test_qa_reason_attribute_spec_is_cvats_text_attribute() -> None:
    """What CVAT 2.17 and 2.54 store for a text attribute (golden flow 02: ``plate``)."""
    spec = qa_reason_attribute_spec()
    assert spec == {"name": "qa_reason", "input_type": "text", "mutable": False, "values": [""], "default_value": ""}
    spec["values"].append("x")
    assert qa_reason_attribute_spec()["values"] == [""]


@given(st.text(max_size=QA_REASON_MAX_CHARS + 20))
def test_qa_reason_value_fits_cvats_attribute_value(reason: str) -> None:
    value = qa_reason_value(reason)
    assert len(value) <= QA_REASON_MAX_CHARS
    assert value == reason if len(reason) <= QA_REASON_MAX_CHARS else value == reason[:QA_REASON_MAX_CHARS - 1] + "…"


def test_qa_reason_value_refuses_a_non_string() -> None:
    with pytest.raises(ValueError, match="must be a string, got int"):
        qa_reason_value(3)  # type: ignore[arg-type]


def test_sdk_capability_follows_the_installed_models() -> None:
    from cvat_sdk.api_client import models

    assert sdk_shapes_have_score() == ("score" in models.LabeledShapeRequest.attribute_map)


@given(
    label_type=st.sampled_from(SHAPE_TYPES), has_mask=st.booleans(), conv_mask_to_poly=st.booleans()
)
def test_shape_type_rule(label_type: str, has_mask: bool, conv_mask_to_poly: bool) -> None:
    kind = shape_type_for(label_type, has_mask=has_mask, conv_mask_to_poly=conv_mask_to_poly)
    if not has_mask or label_type == "rectangle":
        assert kind == "rectangle"
    elif conv_mask_to_poly:
        assert kind == "polygon"  # a mask label becomes a polygon; a polygon stays one
    else:
        assert kind == label_type
    assert needs_mask(label_type) == (label_type != "rectangle")
    assert (kind != "mask") or not conv_mask_to_poly


@pytest.mark.parametrize("bad", ["points", "Rectangle", "", "tag"])
def test_unknown_label_types_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        shape_type_for(bad, has_mask=True)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        needs_mask(bad)
    with pytest.raises(ValueError, match=re.escape(str([bad]))):
        shape_types_for(["rectangle", bad], has_mask=False)


def _masked(labels: list[str]) -> Detections:
    n = len(labels)
    masks = np.zeros((n, 8, 8), dtype=bool)
    masks[:, 2:6, 2:6] = True
    return Detections(
        xyxy=np.tile(np.array([[2, 2, 6, 6]], dtype=np.float32), (n, 1)),
        scores=np.full(n, 0.5, dtype=np.float32),
        class_ids=np.arange(n, dtype=np.int64),
        labels=np.asarray(labels, dtype=str),
        masks=masks,
    )


def test_delivered_types_follow_the_contract_with_conv_mask_to_poly() -> None:
    det = _masked(["box", "outline", "blob"])
    types = {"box": "rectangle", "outline": "polygon", "blob": "mask"}
    assert delivered_types(det, types) == ["rectangle", "polygon", "mask"]
    assert delivered_types(det, types, conv_mask_to_poly=True) == ["rectangle", "polygon", "polygon"]
    shapes, origin = delivered_shape_dicts(
        det, types, {"box": 1, "outline": 2, "blob": 3}, frame=0, conv_mask_to_poly=True, source=None,
        score_spec_ids={"blob": 0}, score_field=False,
    )
    assert sorted(zip(origin, (s["type"] for s in shapes))) == [(0, "rectangle"), (1, "polygon"), (2, "polygon")]
    assert all("source" not in s and "score" not in s for s in shapes)
    assert [s["attributes"] for s, i in zip(shapes, origin) if i == 2] == [[{"spec_id": 0, "value": "50"}]]
