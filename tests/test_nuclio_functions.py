"""The rendered Nuclio functions, called through nuclio-sdk's test platform exactly as CVAT's
lambda manager calls them (JSON bodies with base64 PNG/JPEG frames), on tiny random models
loaded through the real loaders. Replies are checked against what CVAT's code accepts
(``cvat_protocol.md`` §3); bad requests must get a 4xx JSON error and leave the worker usable.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import struct
import sys
import zlib
from pathlib import Path

import nuclio_sdk
import numpy as np
import pytest
from nuclio_sdk.test import Platform
from PIL import Image

from serverless.images import decode_image
from serverless.ontology import parse_ontology
from serverless.render import KINDS, render_functions

JSON = "application/json"
EMBEDDING_BYTES = 4_194_304  # float32 [1, 256, 64, 64]

# Per-label thresholds chosen so the tiny model yields a few shapes of every type while
# Grounded-SAM decodes only a handful of boxes (SAM's decoder is the slow part on CPU).
ONTOLOGY = """\
name: site
score_attribute: true
defaults: {threshold: 0.9}
labels:
  - {name: person, prompts: [person, worker], threshold: 0.999}
  - {name: cup, type: mask, threshold: 0.999}
  - {name: car, type: polygon, threshold: 0.9999}
  - {name: dog}
"""


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_env(tiny_models):
    """Point the functions at the tiny models for this module (init_context reads these)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in tiny_models.environment().items():
            patch.setenv(name, value)
        patch.setenv("AUTOLABEL_DEVICE", "cpu")
        yield


@pytest.fixture(scope="module")
def function_dirs(tmp_path_factory):
    out = tmp_path_factory.mktemp("functions")
    render_functions(parse_ontology(ONTOLOGY, source="site.yaml"), out)
    return out


def _import_main(directory: Path):
    """Import a function's main.py the way Nuclio does: as a top-level module from its dir."""
    name = f"nuclio_main_{directory.name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, directory / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the test platform finds init_context through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mains(function_dirs, tiny_env):
    modules = {kind: _import_main(function_dirs / kind) for kind in KINDS}
    yield modules
    for module in modules.values():
        sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def platform():
    return Platform()


@pytest.fixture(scope="module")
def specs(function_dirs):
    import yaml

    result = {}
    for kind in KINDS:
        config = yaml.safe_load((function_dirs / kind / "function.yaml").read_text(encoding="utf-8"))
        result[kind] = {label["name"]: label for label in json.loads(config["metadata"]["annotations"]["spec"])}
    return result


# ----------------------------------------------------------------------------- frames and calls
def make_frame(width: int = 128, height: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, ((x // 16 + y // 16) % 2) * 200], -1).astype(np.uint8)
    frame[height // 5 : height * 3 // 5, width // 4 : width * 5 // 8] = (250, 30, 30)
    return frame


def encode(frame: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid tiny 1x1 PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb
    header, made without allocating anything)."""
    png = encode(np.zeros((1, 1, 3), np.uint8), "PNG")
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


FRAME = make_frame()
FRAMES = {fmt: encode(FRAME, fmt) for fmt in ("PNG", "JPEG")}


def call(platform, module, body, content_type=JSON):
    """One invocation; checks the reply is a JSON Response (never a bare list) and returns
    ``(status, decoded body)``."""
    response = platform.call_handler(module.handler, nuclio_sdk.Event(body=body, content_type=content_type))
    assert isinstance(response, nuclio_sdk.Response)
    assert response.content_type == JSON
    assert isinstance(response.body, str)
    return response.status_code, json.loads(response.body)


def interactor_body(image: str, pos=((40.5, 30.0),), neg=((5, 5),), box=None, **extra):
    return {
        "image": image,
        "pos_points": [list(p) for p in pos],
        "neg_points": [list(p) for p in neg],
        "obj_bbox": box,
        **extra,
    }


# ----------------------------------------------------------------------------- reply checks (CVAT's view)
def check_points_inside(points, width, height):
    assert len(points) % 2 == 0 and len(points) >= 6
    assert all(isinstance(v, (int, float)) for v in points)
    xs, ys = points[0::2], points[1::2]
    assert all(0 <= x <= width for x in xs) and all(0 <= y <= height for y in ys)


def check_detector_items(items, spec, width, height, *, rectangles_only=False):
    """What CVAT's lambda manager and UI accept from a detector."""
    assert isinstance(items, list)
    for item in items:
        assert item["label"] in spec, item["label"]
        label = spec[item["label"]]
        assert item["type"] == ("rectangle" if rectangles_only else label["type"])
        value = item["attributes"][0]["value"]
        assert item["attributes"] == [{"name": "score", "value": value}]
        assert value.isnumeric() and 0 <= int(value) <= 100  # CVAT's number check
        assert int(value) == round(item["confidence"] * 100)
        points = item.get("points")
        if item["type"] == "rectangle":
            x1, y1, x2, y2 = points
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        elif item["type"] == "polygon":
            check_points_inside(points, width, height)
        else:
            mask = item["mask"]
            assert all(type(v) is int for v in mask)
            xtl, ytl, xbr, ybr = mask[-4:]
            assert 0 <= xtl <= xbr < width and 0 <= ytl <= ybr < height
            assert len(mask) == (xbr - xtl + 1) * (ybr - ytl + 1) + 4
            assert set(mask[:-4]) <= {0, 255} and 255 in mask[:-4]
            check_points_inside(points, width, height)


def check_interactor_reply(reply, width, height):
    assert set(reply) == {"mask", "bounds"}
    mask = np.array(reply["mask"])
    assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
    x1, y1, x2, y2 = reply["bounds"]
    assert all(type(v) is int for v in reply["bounds"])
    assert 0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height
    assert mask.shape == (y2 - y1 + 1, x2 - x1 + 1)
    if mask.any():  # cropped to the object: every edge of the crop touches it
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
    return mask


# ----------------------------------------------------------------------------- detectors
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_grounding_dino_replies_rectangles_cvat_accepts(platform, mains, specs, fmt):
    status, items = call(platform, mains["grounding-dino"], {"image": b64(FRAMES[fmt])})
    assert status == 200
    assert items, "the tiny model at these thresholds yields boxes; nothing was checked"
    check_detector_items(items, specs["grounding-dino"], FRAME.shape[1], FRAME.shape[0], rectangles_only=True)
    assert {item["label"] for item in items} <= {"person", "cup", "car", "dog"}


def test_per_label_thresholds_apply_unless_the_request_sends_one(platform, mains):
    module = mains["grounding-dino"]
    image = b64(FRAMES["PNG"])
    _, everything = call(platform, module, {"image": image, "threshold": 0.0})
    _, per_label = call(platform, module, {"image": image})  # what CVAT's UI sends
    _, strict = call(platform, module, {"threshold": 0.9999, "image": image})  # batch: threshold first
    own = {"person": 0.999, "cup": 0.999, "car": 0.9999, "dog": 0.9}
    tolerance = 1e-6  # confidences are float32 printed shortest
    # The per-label thresholds must matter for this frame, else the test proves nothing.
    assert any(i["confidence"] < own[i["label"]] - tolerance for i in everything)
    assert per_label and all(i["confidence"] >= own[i["label"]] - tolerance for i in per_label)
    assert any(i["confidence"] < 0.999 for i in per_label), "one global threshold would drop these"
    assert all(i["confidence"] >= 0.9999 - tolerance for i in strict)
    assert len(strict) < len(per_label) < len(everything)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_grounded_sam_replies_each_label_type_as_cvat_accepts(platform, mains, specs, fmt):
    status, items = call(platform, mains["grounded-sam"], {"image": b64(FRAMES[fmt])})
    assert status == 200
    check_detector_items(items, specs["grounded-sam"], FRAME.shape[1], FRAME.shape[0])
    assert {item["type"] for item in items} == {"rectangle", "mask", "polygon"}
    assert {item["label"] for item in items if item["type"] == "mask"} == {"cup"}


# ----------------------------------------------------------------------------- SAM
def test_browser_sam_embedding_is_computed_on_the_frame_as_sent(platform, mains, tiny_models):
    from segment_anything import SamPredictor

    from serverless.models.sam import SamSegmenter

    frame = make_frame(200, 120)  # not a multiple of anything: resizing would show
    data = encode(frame, "PNG")
    status, reply = call(platform, mains["sam"], interactor_body(b64(data)))
    assert status == 200 and set(reply) == {"blob"}
    blob = base64.b64decode(reply["blob"])
    assert len(blob) == EMBEDDING_BYTES
    embedding = np.frombuffer(blob, dtype="<f4").reshape(1, 256, 64, 64)
    segmenter = SamSegmenter.load(str(tiny_models.sam_model_type), str(tiny_models.sam_checkpoint), device="cpu")
    predictor = SamPredictor(segmenter.model)
    predictor.set_image(decode_image(data), image_format="RGB")
    assert predictor.original_size == (120, 200)
    np.testing.assert_allclose(embedding, predictor.get_image_embedding().numpy(), rtol=0, atol=1e-6)


def test_browser_sam_takes_jpeg_frames(platform, mains):
    status, reply = call(platform, mains["sam"], interactor_body(b64(FRAMES["JPEG"])))
    assert status == 200 and len(base64.b64decode(reply["blob"])) == EMBEDDING_BYTES


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_sam_interactor_replies_a_cropped_mask(platform, mains, fmt):
    status, reply = call(platform, mains["sam-interactor"], interactor_body(b64(FRAMES[fmt]), threshold=0.5))
    assert status == 200
    mask = check_interactor_reply(reply, FRAME.shape[1], FRAME.shape[0])
    assert mask.any()


def test_sam_interactor_takes_a_box_alone_in_either_corner_order(platform, mains):
    module = mains["sam-interactor"]
    image = b64(FRAMES["PNG"])
    _, forward = call(platform, module, interactor_body(image, pos=(), neg=(), box=[[20, 15], [90, 70]]))
    _, backward = call(platform, module, interactor_body(image, pos=(), neg=(), box=[[90, 70], [20, 15]]))
    check_interactor_reply(forward, FRAME.shape[1], FRAME.shape[0])
    assert forward == backward
    status, both = call(platform, module, interactor_body(image, pos=((50, 40),), box=[[20, 15], [90, 70]]))
    assert status == 200
    check_interactor_reply(both, FRAME.shape[1], FRAME.shape[0])


def test_sam_interactor_embeds_each_frame_once(platform, mains, tiny_models):
    from serverless.models.sam import SamSegmenter

    segmenter = SamSegmenter.load(str(tiny_models.sam_model_type), str(tiny_models.sam_checkpoint), device="cpu")
    frame = make_frame(96, 80)
    data = encode(frame, "PNG")
    assert not segmenter.cached(decode_image(data))
    encoder_runs = []
    hook = segmenter.model.image_encoder.register_forward_hook(lambda *args: encoder_runs.append(1))
    try:
        first = call(platform, mains["sam-interactor"], interactor_body(b64(data), pos=((30, 30),), neg=()))
        second = call(platform, mains["sam-interactor"], interactor_body(b64(data), pos=((30, 30),), neg=((70, 60),)))
    finally:
        hook.remove()
    assert first[0] == second[0] == 200
    assert len(encoder_runs) == 1, "the second click must reuse the frame's embedding"
    assert segmenter.cached(decode_image(data))


# ----------------------------------------------------------------------------- bad requests
GOOD_IMAGE = b64(FRAMES["PNG"])
NOT_AN_IMAGE = b64(b"GIF89a but not really an image")
BOMB = b64(bomb_png())

COMMON_BAD = [
    ("not json", b"\x89PNG\r\n raw bytes", "image/png", 400, "not JSON"),
    ("empty body", b"", "", 400, "empty"),
    ("json list", [{"image": GOOD_IMAGE}], JSON, 400, "JSON object"),
    ("json string", "just a string", JSON, 400, "not JSON"),
    ("missing image", {"threshold": 0.5}, JSON, 400, "missing 'image'"),
    ("image not a string", {"image": 12345}, JSON, 422, "'image' must be a base64 string"),
    ("invalid base64", {"image": "not*base64!"}, JSON, 400, "not valid base64"),
    ("not an image", {"image": NOT_AN_IMAGE}, JSON, 422, "image"),
    ("decompression bomb", {"image": BOMB}, JSON, 413, "pixels"),
]
COMMON_WHAT = {case[0] for case in COMMON_BAD}
CLICKS = {"pos_points": [[40, 30]], "neg_points": [], "obj_bbox": None}
BASE = {"grounding-dino": {}, "grounded-sam": {}, "sam": CLICKS, "sam-interactor": CLICKS}
DETECTOR_BAD = [
    ("threshold too high", {"image": GOOD_IMAGE, "threshold": 1.5}, JSON, 422, "'threshold' must be a number in 0..1"),
    ("threshold negative", {"image": GOOD_IMAGE, "threshold": -0.1}, JSON, 422, "'threshold'"),
    ("threshold a string", {"image": GOOD_IMAGE, "threshold": "high"}, JSON, 422, "'threshold'"),
    ("threshold a boolean", {"image": GOOD_IMAGE, "threshold": True}, JSON, 422, "'threshold'"),
    ("threshold a list", {"image": GOOD_IMAGE, "threshold": [0.5]}, JSON, 422, "'threshold'"),
    ("threshold of 401 digits", {"image": GOOD_IMAGE, "threshold": 10**400}, JSON, 422, "an integer of 401 digits"),
]
INTERACTOR_BAD = [
    ("no points no box", interactor_body(GOOD_IMAGE, pos=(), neg=()), JSON, 422, "at least one point in 'pos_points'"),
    ("negatives only", interactor_body(GOOD_IMAGE, pos=(), neg=((3, 3),)), JSON, 422, "'pos_points'"),
    (
        "points not a list",
        {**interactor_body(GOOD_IMAGE), "pos_points": "10,20"},
        JSON,
        422,
        "'pos_points' must be a list",
    ),
    ("point of 3 numbers", {**interactor_body(GOOD_IMAGE), "pos_points": [[1, 2, 3]]}, JSON, 422, "'pos_points'[0]"),
    ("coordinate a string", {**interactor_body(GOOD_IMAGE), "neg_points": [[1, "a"]]}, JSON, 422, "'neg_points'[0][1]"),
    ("coordinate of 401 digits", {**interactor_body(GOOD_IMAGE), "pos_points": [[10**400, 1]]}, JSON, 422, "'pos_points'[0][0]"),
    ("flat box", interactor_body(GOOD_IMAGE, box=[1, 2, 30, 40]), JSON, 422, "'obj_bbox'"),
    ("box corner not numbers", interactor_body(GOOD_IMAGE, box=[[0, 0], ["a", 1]]), JSON, 422, "'obj_bbox'[1][0]"),
    ("threshold out of range", interactor_body(GOOD_IMAGE, threshold=2), JSON, 422, "'threshold'"),
]
BAD = (
    [(kind, *case) for kind in KINDS for case in COMMON_BAD]
    + [(kind, *case) for kind in ("grounding-dino", "grounded-sam") for case in DETECTOR_BAD]
    + [("sam-interactor", *case) for case in INTERACTOR_BAD]
)


@pytest.mark.parametrize("kind,what,body,content_type,status,expected", BAD, ids=[f"{b[0]}-{b[1]}" for b in BAD])
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(
    platform, mains, kind, what, body, content_type, status, expected
):
    if isinstance(body, dict) and what in COMMON_WHAT:
        body = {**BASE[kind], **body}  # the rest of a well-formed request of this kind
    got_status, reply = call(platform, mains[kind], body, content_type)
    assert got_status == status, reply
    assert set(reply) == {"error"} and isinstance(reply["error"], str)
    assert expected in reply["error"]
    assert "Traceback" not in reply["error"]


GOOD = {
    "grounding-dino": {"image": GOOD_IMAGE},
    "grounded-sam": {"image": GOOD_IMAGE, "threshold": 0.9999},
    "sam": interactor_body(GOOD_IMAGE),
    "sam-interactor": interactor_body(GOOD_IMAGE),
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_good_request_after_bad_ones_still_works(platform, mains, kind):
    for _, body, content_type, _, _ in COMMON_BAD:
        body = {**BASE[kind], **body} if isinstance(body, dict) else body
        assert call(platform, mains[kind], body, content_type)[0] in (400, 413, 422)
    status, reply = call(platform, mains[kind], GOOD[kind])
    assert status == 200
    assert isinstance(reply, list if kind in ("grounding-dino", "grounded-sam") else dict)


def test_json_sent_as_bytes_with_a_charset_is_accepted(platform, mains):
    body = json.dumps(interactor_body(GOOD_IMAGE)).encode()
    status, reply = call(platform, mains["sam"], body, "application/json; charset=utf-8")
    assert status == 200 and set(reply) == {"blob"}


def test_pixel_limit_from_the_environment_gives_413(platform, mains, monkeypatch):
    monkeypatch.setenv("AUTOLABEL_MAX_IMAGE_PIXELS", "1000")
    status, reply = call(platform, mains["sam"], interactor_body(GOOD_IMAGE))
    assert status == 413 and "exceeds the limit of 1000 pixels" in reply["error"]


# ----------------------------------------------------------------------------- worker lifecycle
def _context_with_log():
    stream = io.StringIO()
    logger = nuclio_sdk.Logger(logging.DEBUG, "test")
    logger.set_handler("test", stream, nuclio_sdk.logger.HumanReadableFormatter())
    return nuclio_sdk.Context(logger=logger), stream


def test_init_context_loads_once_and_handlers_never_load(mains, tiny_models):
    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.registry import loaded_keys

    context, log = _context_with_log()
    mains["grounding-dino"].init_context(context)
    assert context.user_data.detector.model is GroundingDino.load(str(tiny_models.gdino_dir), device="cpu")
    assert context.user_data.ontology.label_names == ("person", "cup", "car", "dog")
    assert "TINY RANDOM MODELS" in log.getvalue()
    before = loaded_keys()
    response = mains["grounding-dino"].handler(context, nuclio_sdk.Event(body={"image": GOOD_IMAGE}, content_type=JSON))
    assert response.status_code == 200
    assert loaded_keys() == before


def test_an_internal_error_is_a_short_500_json_with_the_traceback_in_the_log(mains):
    module = mains["sam-interactor"]
    context, log = _context_with_log()
    module.init_context(context)
    context.user_data.segmenter = None  # a broken worker state, as a bug would leave it
    response = module.handler(context, nuclio_sdk.Event(body=interactor_body(GOOD_IMAGE), content_type=JSON))
    assert response.status_code == 500 and response.content_type == JSON
    assert json.loads(response.body) == {"error": "internal error (AttributeError); see the function log"}
    assert "Traceback" in log.getvalue() and "AttributeError" in log.getvalue()


def test_a_handler_without_init_context_answers_500_json(mains):
    context, log = _context_with_log()
    response = mains["grounding-dino"].handler(context, nuclio_sdk.Event(body={"image": GOOD_IMAGE}, content_type=JSON))
    assert response.status_code == 500
    assert json.loads(response.body)["error"].startswith("internal error")
    assert "init_context was not called" in log.getvalue()


@pytest.mark.parametrize(("width", "height"), [(1, 1), (2, 3), (40, 3)])
def test_tiny_frames_get_boxes_inside_them(platform, mains, specs, width, height):
    frame = make_frame(width, height)
    status, items = call(platform, mains["grounding-dino"], {"image": b64(encode(frame, "PNG")), "threshold": 0.0})
    assert status == 200
    check_detector_items(items, specs["grounding-dino"], width, height, rectangles_only=True)


# ----------------------------------------------------------------------------- bounds on work (issue 9)
def test_a_reply_over_the_mask_budget_is_413_before_it_is_built(platform, mains, monkeypatch):
    monkeypatch.setenv("AUTOLABEL_MAX_REPLY_BYTES", "64")
    status, reply = call(platform, mains["grounded-sam"], {"image": b64(FRAMES["PNG"])})
    assert status == 413
    assert "128x96 frame" in reply["error"] and "AUTOLABEL_MAX_REPLY_BYTES" in reply["error"]
    status, reply = call(platform, mains["sam-interactor"], interactor_body(b64(FRAMES["PNG"]), box=[[0, 0], [127, 95]]))
    assert status == 413 and "AUTOLABEL_MAX_REPLY_BYTES" in reply["error"]
    monkeypatch.delenv("AUTOLABEL_MAX_REPLY_BYTES")
    assert call(platform, mains["grounded-sam"], {"image": b64(FRAMES["PNG"])})[0] == 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_given_up_on_stops_before_the_models_run(platform, mains, kind, monkeypatch):
    import threading

    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.sam import SamSegmenter
    from serverless.serve_function import cancellation_scope

    def never(*args, **kwargs):
        raise AssertionError("a model ran for a request nobody waits for")

    monkeypatch.setattr(GroundingDino, "detect", never)
    monkeypatch.setattr(SamSegmenter, "embed", never)
    given_up = threading.Event()
    given_up.set()
    with cancellation_scope(given_up):
        status, reply = call(platform, mains[kind], interactor_body(b64(FRAMES["PNG"])))
    assert status == 503 and "given up" in reply["error"]


# ----------------------------------------------------------------------------- models by spec (issue 10)
def test_the_ontologys_models_serve_when_the_environment_names_none(tmp_path, tiny_models, monkeypatch):
    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.sam import SamSegmenter

    for name in tiny_models.environment():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTOLABEL_DEVICE", "cpu")
    detector = f"grounding-dino:{tiny_models.gdino_dir}"
    segmenter = f"sam:{tiny_models.sam_model_type}:{tiny_models.sam_checkpoint}"
    text = f"models:\n  detector: {detector}\n  segmenter: {segmenter}\n" + ONTOLOGY
    render_functions(parse_ontology(text, source="site.yaml"), tmp_path, kinds="grounded-sam")
    module = _import_main(tmp_path / "grounded-sam")
    try:
        context, log = _context_with_log()
        module.init_context(context)
        response = module.handler(context, nuclio_sdk.Event(body={"image": GOOD_IMAGE}, content_type=JSON))
    finally:
        sys.modules.pop(module.__name__, None)
    assert response.status_code == 200
    assert context.user_data.detector.model is GroundingDino.load(str(tiny_models.gdino_dir), device="cpu")
    loaded = SamSegmenter.load(str(tiny_models.sam_model_type), str(tiny_models.sam_checkpoint), device="cpu")
    assert context.user_data.segmenter is loaded
    assert detector in log.getvalue() and segmenter in log.getvalue()
