"""The one place where a Nuclio event becomes validated inputs and a result (or an error)
becomes a Nuclio response, for every function under ``serverless/functions/``.

Contract (``cvat_protocol.md`` §3, §6):

- Requests arrive as CVAT's lambda manager sends them: a JSON object with ``image`` (base64 of
  a JPEG/PNG frame) and, for detectors, an optional ``threshold`` in 0..1; interactors add
  ``pos_points``/``neg_points`` (lists of ``[x, y]``) and ``obj_bbox`` (null or
  ``[[x1, y1], [x2, y2]]``). The Nuclio runtime hands over a decoded dict when the content
  type is exactly ``application/json``, else bytes; bytes holding a JSON object are accepted
  too (e.g. ``application/json; charset=utf-8``).
- Every reply is a ``context.Response`` with ``content_type="application/json"``, never a bare
  list (the Nuclio runtime would treat a returned list as a batch of responses).
- A bad request gets ``{"error": "<what is wrong>"}`` with status 400 (not a JSON object, JSON
  nested too deeply or with an integer over Python's 4300-digit limit, missing field, invalid
  base64), 413 (image over the pixel limit, or masks that would make a reply over
  `max_reply_bytes`) or 422 (a field of the wrong type or out of range, bytes that are not an
  image, a frame more elongated than 500:1, more than `MAX_POINTS` clicks, an interactor call
  with neither a positive point nor a box). Anything unexpected gets 500 ``{"error":
  "internal error (<ExceptionType>)"}`` and the traceback goes to ``context.logger``, never to
  the caller.
- Work per request is bounded: the ontology's ``defaults.max_detections`` caps detections
  before SAM runs, the mask payload of a reply is capped at `max_reply_bytes`, and under
  ``autolabel serve`` a request given up on (deadline passed, client gone) stops at the next
  stage boundary (`serverless.serve_function.request_cancelled`); its late reply is 503.

``*_function`` factories return the ``(init_context, handler)`` pair a ``main.py`` exposes.
``init_context`` resolves the models (`ModelSettings.from_env`: the environment, else the
ontology's ``models``, else Grounding DINO and SAM), loads them once per worker through the
registry and keeps them in ``context.user_data`` as protocols (`Detector`, `Segmenter`,
`EmbeddingExporter`, `Classifier`); ``handler`` never loads weights. Models and converters live elsewhere
(``serverless.models``, ``serverless.convert``): nothing here knows how a model works.

Micro-batching: when the function's environment (`serverless.serve_function.function_environ`)
has ``AUTOLABEL_MICRO_BATCH`` (set per function by ``autolabel serve --micro-batch``), the
detector or classifier is wrapped by `serverless.micro_batch` so that concurrent handlers'
``detect([image])`` calls share model calls; the handlers themselves do not change. Under
Nuclio the variable is unset and nothing is wrapped. Interactors are never batched.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import math
import numbers
import os
import traceback
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serverless.images import ImageError, decode_image, max_pixels
from serverless.micro_batch import Abandoned, wrap_classifier, wrap_detector
from serverless.models.base import Classifier, Detector, EmbeddingExporter, Segmenter, check_threshold

if TYPE_CHECKING:
    from serverless.ontology import Ontology
    from serverless.pipeline import ModelSettings

__all__ = [
    "BROWSER_SAM_ID",
    "MAX_POINTS",
    "RequestError",
    "classifier_function",
    "decode_request_image",
    "detector_function",
    "error_response",
    "grounded_sam_function",
    "grounding_dino_function",
    "json_response",
    "max_reply_bytes",
    "parse_detector_request",
    "parse_image_request",
    "parse_interactor_request",
    "request_body",
    "sam_embedding_function",
    "sam_interactor_function",
]

BROWSER_SAM_ID = "pth-facebookresearch-sam-vit-h"
"""The only function id for which CVAT's browser SAM plugin decodes an embedding."""

JSON = "application/json"

MAX_POINTS = 1000
"""Most clicks (``pos_points`` plus ``neg_points``) an interactor request may carry."""
_DEFAULT_MAX_REPLY_BYTES = 256 * 1024 * 1024

InitContext = Callable[[Any], None]
Handler = Callable[[Any, Any], Any]

_log = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the function cannot serve; ``status`` is the HTTP status (4xx) of the
    reply and the message (``str(err)``) names the offending field and what was expected."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


# --------------------------------------------------------------------------- responses


def json_response(context: Any, body: Any, status: int = 200) -> Any:
    """``context.Response`` with ``body`` as JSON text, content type ``application/json``."""
    return context.Response(
        body=json.dumps(body, separators=(",", ":"), allow_nan=False),
        headers={},
        content_type=JSON,
        status_code=int(status),
    )


def error_response(context: Any, status: int, message: str) -> Any:
    """``{"error": message}`` as a JSON response with ``status``."""
    return json_response(context, {"error": message}, status)


class _Cancelled(Exception):
    """The host gave up on this request (deadline passed, client gone); nobody reads the reply."""


def _checkpoint(stage: str) -> None:
    """Stop between stages when ``autolabel serve`` has given up on the request."""
    from serverless.serve_function import request_cancelled

    if request_cancelled():
        raise _Cancelled(f"request given up on (deadline passed or client gone) before {stage}")


def max_reply_bytes() -> int:
    """The largest mask payload a reply may carry, in bytes (``AUTOLABEL_MAX_REPLY_BYTES``,
    default 256 MiB); mask pixels are counted at 4 bytes each (``255,``)."""
    return int(os.environ.get("AUTOLABEL_MAX_REPLY_BYTES", _DEFAULT_MAX_REPLY_BYTES))


def _check_reply_size(masks: Sequence[np.ndarray], image: np.ndarray) -> None:
    """413 before a reply is built when the raw bitmaps of ``masks`` (each cropped to its box,
    about 4 bytes a pixel in JSON) would exceed `max_reply_bytes`."""
    from serverless.convert.polygons import mask_bbox

    boxes = [box for box in map(mask_bbox, masks) if box is not None]
    size, limit = 4 * sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in boxes), max_reply_bytes()
    if size > limit:
        height, width = image.shape[:2]
        raise RequestError(
            413,
            f"the {len(boxes)} mask(s) for this {width}x{height} frame would make a reply of about "
            f"{size // 2**20} MiB, over the limit of {limit // 2**20} MiB (AUTOLABEL_MAX_REPLY_BYTES); "
            "send a smaller frame, or lower defaults.max_detections or use polygon labels in the ontology",
        )


# --------------------------------------------------------------------------- request parsing


def _describe(value: Any) -> str:
    """A short, safe rendering of a JSON value for error messages (never a whole image)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, numbers.Integral) and len(text := repr(value)) > 40:
        return f"an integer of {len(text.lstrip('-'))} digits"
    if isinstance(value, numbers.Real):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def request_body(event: Any) -> dict[str, Any]:
    """The JSON object of a request: ``event.body`` as the runtime decoded it, or bytes/str
    that parse as JSON. Raises `RequestError` 400 when there is no JSON object."""
    body = event.body
    if isinstance(body, (bytes, bytearray, memoryview, str)):
        raw = bytes(body) if not isinstance(body, str) else body
        if not raw:
            raise RequestError(400, "request body is empty; expected a JSON object with 'image'")
        try:
            body = json.loads(raw)
        except RecursionError:
            message = "request body is JSON nested too deeply; expected a JSON object with 'image'"
            raise RequestError(400, message) from None
        except (UnicodeDecodeError, ValueError) as err:
            content_type = getattr(event, "content_type", None) or "none"
            reason = str(err).split(";")[0]  # the integer-digits error ends with advice for Python programmers
            raise RequestError(
                400,
                f"request body is not JSON this function reads ({reason}); send a JSON object with content type "
                f"application/json (got content type {_describe(content_type)})",
            ) from None
    if not isinstance(body, dict):
        raise RequestError(400, f"request body must be a JSON object, got {_describe(body)}")
    return body


def _image_too_large(data: bytes) -> bool:
    """True when the encoded image's header declares more pixels than accepted (or PIL's own
    bomb guard refuses it); only used to pick 413 over 422 after a decode failure."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return width * height > max_pixels()


def decode_request_image(body: dict[str, Any], key: str = "image") -> np.ndarray:
    """The RGB uint8 (H, W, 3) frame in ``body[key]`` (base64 of an encoded image)."""
    if key not in body:
        raise RequestError(400, f"missing '{key}': expected the base64 of a JPEG or PNG frame")
    value = body[key]
    if not isinstance(value, str):
        raise RequestError(422, f"'{key}' must be a base64 string, got {_describe(value)}")
    text = "".join(value.split())  # tolerate line-wrapped base64
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(400, f"'{key}' is not valid base64: {err}") from None
    if not data:
        raise RequestError(422, f"'{key}' is empty; expected the base64 of a JPEG or PNG frame")
    try:
        return decode_image(data, name=key)
    except ImageError as err:
        status = 413 if _image_too_large(data) else 422
        raise RequestError(status, str(err)) from None


def _threshold(body: dict[str, Any]) -> float | None:
    value = body.get("threshold")
    try:
        return check_threshold(value)
    except ValueError:
        raise RequestError(422, f"'threshold' must be a number in 0..1, got {_describe(value)}") from None


def _coordinate(value: Any, where: str) -> float:
    number = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer of hundreds of digits: no float holds it
            number = float(value)
    if not math.isfinite(number):
        raise RequestError(422, f"{where} must be a finite number, got {_describe(value)}")
    return number


def _point(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RequestError(422, f"{where} must be a point [x, y], got {_describe(value)}")
    return _coordinate(value[0], f"{where}[0]"), _coordinate(value[1], f"{where}[1]")


def _points(body: dict[str, Any], key: str) -> np.ndarray:
    value = body.get(key)
    if value is None:
        return np.zeros((0, 2), np.float32)
    if not isinstance(value, (list, tuple)):
        raise RequestError(422, f"'{key}' must be a list of [x, y] points, got {_describe(value)}")
    if len(value) > MAX_POINTS:
        raise RequestError(422, f"'{key}' has {len(value)} points; at most {MAX_POINTS} clicks are accepted")
    points = [_point(item, f"'{key}'[{i}]") for i, item in enumerate(value)]
    return np.array(points, dtype=np.float32).reshape(-1, 2)


def _box(body: dict[str, Any]) -> np.ndarray | None:
    value = body.get("obj_bbox")
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RequestError(422, f"'obj_bbox' must be null or [[x1, y1], [x2, y2]], got {_describe(value)}")
    (xa, ya), (xb, yb) = (_point(corner, f"'obj_bbox'[{i}]") for i, corner in enumerate(value))
    return np.array([min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)], dtype=np.float32)


def parse_image_request(event: Any) -> np.ndarray:
    """The frame of a request that needs nothing else (the SAM encoder); other fields, such
    as the points CVAT sends to every interactor, are ignored."""
    return decode_request_image(request_body(event))


def parse_detector_request(event: Any) -> tuple[np.ndarray, float | None]:
    """``(image, threshold)`` from a detector request ``{image, threshold?}``; a missing or
    null threshold is None (the ontology's per-label thresholds then apply)."""
    body = request_body(event)
    threshold = _threshold(body)
    return decode_request_image(body), threshold


def parse_interactor_request(
    event: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(image, pos (N, 2), neg (M, 2), box xyxy (4,) | None)`` from an interactor request
    ``{image, pos_points, neg_points, obj_bbox, threshold?}``. Missing point lists count as
    empty; the box corners may come in any order. At least one positive point or a box is
    required (422 otherwise). ``threshold`` is checked but not used."""
    body = request_body(event)
    _threshold(body)
    positive = _points(body, "pos_points")
    negative = _points(body, "neg_points")
    box = _box(body)
    if len(positive) + len(negative) > MAX_POINTS:
        raise RequestError(
            422,
            f"{len(positive)} positive and {len(negative)} negative points; at most {MAX_POINTS} clicks are accepted",
        )
    if len(positive) == 0 and box is None:
        raise RequestError(
            422,
            "an interactor request needs at least one point in 'pos_points' or an 'obj_bbox'; "
            f"got {len(positive)} positive and {len(negative)} negative points and no box",
        )
    image = decode_request_image(body)
    return image, positive, negative, box


# --------------------------------------------------------------------------- handler shell


def _log_internal_error(context: Any, err: BaseException) -> None:
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    logger = getattr(context, "logger", None)
    if logger is not None:
        logger.error_with("handler failed", error=f"{type(err).__name__}: {err}", traceback=trace)
    else:
        _log.error("handler failed: %s", trace)


def _serve(context: Any, event: Any, work: Callable[[Any, Any], Any]) -> Any:
    """Run ``work(user_data, event)`` and turn its JSON-ready result or exception into a
    JSON response."""
    try:
        if not getattr(context.user_data, "ready", False):
            raise RuntimeError("init_context was not called for this worker")
        body = work(context.user_data, event)
    except RequestError as err:
        return error_response(context, err.status, err.message)
    except (_Cancelled, Abandoned) as err:
        return error_response(context, 503, str(err))
    except Exception as err:  # noqa: BLE001 - the HTTP boundary: log it, answer 500 JSON
        _log_internal_error(context, err)
        return error_response(context, 500, f"internal error ({type(err).__name__}); see the function log")
    return json_response(context, body)


def _expose(module: str, init_context: InitContext, handler: Handler) -> tuple[InitContext, Handler]:
    """Make the pair look defined in ``module`` (the ``main.py`` that exposes them), which is
    where Nuclio's test platform looks for ``init_context``."""
    for function in (init_context, handler):
        function.__module__ = module
    return init_context, handler


def _settings(context: Any, ontology: Ontology | None = None) -> ModelSettings:
    from serverless.pipeline import ModelSettings
    from serverless.serve_function import function_environ

    settings = ModelSettings.from_env(ontology=ontology, environ=function_environ())  # spec.env under serve
    logger = getattr(context, "logger", None)
    if settings.tiny and logger is not None:
        logger.warn_with("TINY RANDOM MODELS IN USE: every box, mask and score is meaningless")
    return settings


def _load_ontology(path: str | PathLike[str]) -> Ontology:
    from serverless.ontology import load_ontology

    return load_ontology(path)


def _log_ready(context: Any, function: str, **details: Any) -> None:
    logger = getattr(context, "logger", None)
    if logger is not None:
        logger.info_with("function ready", function=function, **details)


def _init_detector(context: Any, path: Path, function: str, *, segmenter: bool) -> None:
    """Ontology (its object labels), `Detector` (and `Segmenter`) into ``context.user_data``,
    loaded once. ``user_data.masks``: whether the detector's own detections carry masks."""
    from serverless.models.registry import backend
    from serverless.pipeline import load_models
    from serverless.serve_function import function_environ

    ontology = _load_ontology(path)
    settings = _settings(context, ontology)
    user_data = context.user_data
    user_data.ontology = ontology.part("objects")  # the detector's class ids index these
    detector, user_data.segmenter = load_models(settings, ontology, masks=segmenter)
    user_data.detector = wrap_detector(detector, function_environ())  # micro-batched under serve --micro-batch
    user_data.masks = bool(getattr(backend(settings.detector.backend), "masks", False))
    user_data.ready = True
    models = {"detector": settings.detector.text, **({"segmenter": settings.segmenter.text} if segmenter else {})}
    _log_ready(context, function, **models, labels=len(user_data.ontology.labels))


# --------------------------------------------------------------------------- detectors


def _shape_items(
    image: np.ndarray, detector: Detector, segmenter: Segmenter | None, ontology: Ontology, threshold: float | None
) -> list[dict[str, Any]]:
    """Detector items, in detection order, each delivered as the CVAT contract says for its
    label's type (`serverless.convert.cvat_contract`): ``rectangle`` labels get boxes,
    ``polygon`` labels polygons, ``mask`` labels raw-bitmap masks with polygon ``points`` (so
    CVAT can keep them as masks or convert them). The masks come from ``segmenter`` (run only
    for the boxes that need one: one embedding, one batched decode) or, without one, from the
    detector itself (SAM 3); detections without a mask are boxes. Shapes left empty (no mask
    pixels, no area) are dropped."""
    from serverless.convert.cvat_contract import needs_mask, shape_types_for
    from serverless.convert.nuclio import to_detector_items
    from serverless.models.grounded_sam import add_masks

    _checkpoint("detection")
    (found,) = detector.detect([image], threshold=threshold)
    label_types = [ontology.labels[int(class_id)].type for class_id in found.class_ids]
    segment = np.array([needs_mask(kind) for kind in label_types], dtype=bool)
    if segmenter is not None:
        _checkpoint("segmentation")
        masked = add_masks(segmenter, image, found, only=segment)  # one embedding, one batched decode
    else:
        masked = found
        segment &= found.masks is not None
    shapes = shape_types_for(label_types, has_mask=masked.masks is not None)
    shapes = [shape if segment[i] else "rectangle" for i, shape in enumerate(shapes)]
    _check_reply_size([masked.masks[i] for i, shape in enumerate(shapes) if shape == "mask"], image)
    size = (image.shape[1], image.shape[0])
    boxes = found.with_columns(masks=None, polygons=None)  # rectangle rows: the box alone
    items: list[dict[str, Any]] = []
    for i, shape in enumerate(shapes):
        _checkpoint("converting the shapes")
        row = masked[i] if segment[i] else boxes[i]
        items += to_detector_items(
            row, image_size=size, score_attribute=ontology.score_attribute, as_polygons=shape == "polygon"
        )
    return items


def detector_function(ontology_path: str | PathLike[str], *, module: str) -> tuple[InitContext, Handler]:
    """A detector function over the configured `Detector` (`ModelSettings`: the environment's
    ``AUTOLABEL_DETECTOR``, else the ontology's ``models.detector``, else Grounding DINO) for
    the object labels of the ontology at ``ontology_path`` (read in ``init_context``).

    A box detector answers every label with a rectangle. A detector whose detections carry
    masks (SAM 3: `DetectorBackend.masks`) answers each label with its type, as
    `grounded_sam_function` does. A request's ``threshold`` overrides every label's; without
    one (CVAT's UI never sends it) each label's own threshold applies. ``module`` is the
    ``__name__`` of the ``main.py`` that exposes the pair."""
    path = Path(ontology_path)

    def init_context(context: Any) -> None:
        _init_detector(context, path, "detector", segmenter=False)

    def detect(user_data: Any, event: Any) -> list[dict[str, Any]]:
        from serverless.convert.nuclio import to_detector_items

        image, threshold = parse_detector_request(event)
        if user_data.masks:
            return _shape_items(image, user_data.detector, None, user_data.ontology, threshold)
        detector: Detector = user_data.detector
        _checkpoint("detection")
        (det,) = detector.detect([image], threshold=threshold)
        size = (image.shape[1], image.shape[0])
        return to_detector_items(det, image_size=size, score_attribute=user_data.ontology.score_attribute)

    def handler(context: Any, event: Any) -> Any:
        return _serve(context, event, detect)

    return _expose(module, init_context, handler)


grounding_dino_function = detector_function
"""The name older rendered ``main.py`` files import (the detector was Grounding DINO then)."""


def grounded_sam_function(ontology_path: str | PathLike[str], *, module: str) -> tuple[InitContext, Handler]:
    """A detector + segmenter function: the `Detector`'s boxes, then the `Segmenter`'s masks
    for the boxes of ``polygon`` and ``mask`` labels (one embedding and one batched decode per
    frame). Items follow each label's type in the ontology: rectangles, polygons, or masks (raw
    bitmap of the inclusive box crop + box) with polygon ``points``. Thresholds as in
    `detector_function`."""
    path = Path(ontology_path)

    def init_context(context: Any) -> None:
        _init_detector(context, path, "grounded-sam", segmenter=True)

    def detect(user_data: Any, event: Any) -> list[dict[str, Any]]:
        image, threshold = parse_detector_request(event)
        return _shape_items(image, user_data.detector, user_data.segmenter, user_data.ontology, threshold)

    def handler(context: Any, event: Any) -> Any:
        return _serve(context, event, detect)

    return _expose(module, init_context, handler)


# --------------------------------------------------------------------------- classifiers


def classifier_function(ontology_path: str | PathLike[str], *, module: str) -> tuple[InitContext, Handler]:
    """A detector function that answers tags: the configured `Classifier` (``AUTOLABEL_CLASSIFIER``,
    else the ontology's ``models.classifier``, else CLIP) over the ``tag`` labels of the
    ontology at ``ontology_path``. Replies are ``type: "tag"`` items (CVAT stores them as tags
    on task labels of type ``tag`` or ``any``); ``threshold`` as in `detector_function`."""
    path = Path(ontology_path)

    def init_context(context: Any) -> None:
        from serverless.pipeline import load_classifier
        from serverless.serve_function import function_environ

        ontology = _load_ontology(path)
        settings = _settings(context, ontology)
        user_data = context.user_data
        user_data.ontology = ontology.part("tags")
        user_data.classifier = wrap_classifier(load_classifier(settings, ontology), function_environ())
        user_data.ready = True
        spec = settings.classifier_for(ontology)
        _log_ready(context, "classifier", classifier=spec.text if spec else "", labels=len(user_data.ontology.labels))

    def classify(user_data: Any, event: Any) -> list[dict[str, Any]]:
        from serverless.convert.nuclio import to_tag_items

        image, threshold = parse_detector_request(event)
        classifier: Classifier = user_data.classifier
        _checkpoint("classification")
        (tags,) = classifier.classify([image], threshold=threshold)
        return to_tag_items(tags, score_attribute=user_data.ontology.score_attribute)

    def handler(context: Any, event: Any) -> Any:
        return _serve(context, event, classify)

    return _expose(module, init_context, handler)


# --------------------------------------------------------------------------- SAM


def _load_segmenter(context: Any) -> tuple[Segmenter, str]:
    """The configured `Segmenter` into ``context.user_data``; returns it and its spec."""
    from serverless.models import registry

    settings = _settings(context)
    segmenter = registry.load_segmenter(settings.segmenter, device=settings.device)
    context.user_data.segmenter = segmenter
    return segmenter, settings.segmenter.text


def sam_embedding_function(*, module: str) -> tuple[InitContext, Handler]:
    """The image encoder for CVAT's browser decoder (function id `BROWSER_SAM_ID`): replies
    ``{"blob": base64 float32 [1, 256, 64, 64]}`` computed on the frame exactly as sent (not
    resized). Points in the request are ignored: the browser decodes the clicks. The segmenter
    must be an `EmbeddingExporter` (SAM); one whose embedding no browser decoder reads (SAM
    other than vit_h) is served with a warning in the log."""

    def init_context(context: Any) -> None:
        segmenter, spec = _load_segmenter(context)
        if not isinstance(segmenter, EmbeddingExporter):
            raise TypeError(f"segmenter {spec!r} exports no embedding for CVAT's browser decoder")
        logger = getattr(context, "logger", None)
        if segmenter.browser_decoder is None and logger is not None:
            logger.warn_with(
                "CVAT's browser decoder was exported for SAM vit_h; other encoders give wrong masks", segmenter=spec
            )
        context.user_data.ready = True
        _log_ready(context, "sam", segmenter=spec)

    def embed(user_data: Any, event: Any) -> dict[str, str]:
        from serverless.convert.nuclio import embedding_reply

        image = parse_image_request(event)
        segmenter: EmbeddingExporter = user_data.segmenter
        _checkpoint("the SAM encoder")
        return embedding_reply(segmenter.export_embedding(segmenter.embed(image)))

    def handler(context: Any, event: Any) -> Any:
        return _serve(context, event, embed)

    return _expose(module, init_context, handler)


def sam_interactor_function(*, module: str) -> tuple[InitContext, Handler]:
    """The server-side interactor over the configured `Segmenter` (SAM of any size unless
    ``AUTOLABEL_SEGMENTER`` names another): positive/negative clicks and an
    optional box → ``{"mask": 2-D 0/255 crop, "bounds": [xtl, ytl, xbr, ybr]}``. Each frame's
    embedding is cached by image content hash, so clicks after the first on a frame cost only
    the decoder."""

    def init_context(context: Any) -> None:
        _, spec = _load_segmenter(context)
        context.user_data.ready = True
        _log_ready(context, "sam-interactor", segmenter=spec)

    def interact(user_data: Any, event: Any) -> dict[str, list]:
        from serverless.convert.nuclio import to_interactor_reply

        image, positive, negative, box = parse_interactor_request(event)
        segmenter: Segmenter = user_data.segmenter
        _checkpoint("the SAM encoder")
        embedding = segmenter.embed(image)
        _checkpoint("the SAM decoder")
        mask = segmenter.segment_points(embedding, positive, negative, box)
        _check_reply_size([mask], image)
        return to_interactor_reply(mask)

    def handler(context: Any, event: Any) -> Any:
        return _serve(context, event, interact)

    return _expose(module, init_context, handler)
