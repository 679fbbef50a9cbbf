"""Which models exist, how a spec string names one, and loading each once per process.

**Spec strings.** A model is named ``<backend>[:<weights>]``; the backend reads the rest:

- ``grounding-dino:IDEA-Research/grounding-dino-tiny`` (a hub id) or
  ``grounding-dino:/models/gdino`` (a ``save_pretrained`` directory);
- ``sam:vit_b:/weights/sam_vit_b.pth``, ``sam:vit_b`` (the public checkpoint of that size,
  downloaded once into the autolabel cache), ``sam:/tiny/sam_tiny.json:/tiny/sam_tiny.pth``
  (encoder sizes from a JSON file, as `autolabel models make-tiny` writes);
- a bare backend name (``grounding-dino``, ``sam``) takes that backend's default weights,
  which the ``AUTOLABEL_GDINO_MODEL`` / ``AUTOLABEL_SAM_MODEL_TYPE`` /
  ``AUTOLABEL_SAM_CHECKPOINT`` variables set.

**Adding a model** is one module and one line in `BACKEND_MODULES`: the module defines a
`DetectorBackend`, `SegmenterBackend` or `ClassifierBackend` named ``BACKEND`` and imports
nothing heavy at module level (torch and friends inside the functions that need them), so
`backends()` and `autolabel models list` stay light. The conformance test
(``tests/test_models_protocols.py``) builds every registered backend from its tiny weights
and checks it against its protocol.

**Loading once.** Models are never loaded at import: `load_once(key, factory)` runs the
factory on the first request only; keys name what was loaded (kind, id/path, device).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from serverless.models.base import KINDS, Classifier, Detector, Kind, Segmenter, compiled_networks

if TYPE_CHECKING:
    from serverless.ontology import Ontology

__all__ = [
    "BACKEND_MODULES",
    "Backend",
    "ClassifierBackend",
    "DetectorBackend",
    "ModelLoadError",
    "ModelSpec",
    "ModelSpecError",
    "SegmenterBackend",
    "WeightsSource",
    "backend",
    "backends",
    "clear",
    "compile_models",
    "inference_context",
    "load_classifier",
    "load_detector",
    "load_once",
    "load_segmenter",
    "loaded_keys",
    "locate",
    "parse_spec",
    "select_device",
    "url_problem",
]

BACKEND_MODULES: dict[str, str] = {
    "grounding-dino": "serverless.models.grounding_dino",
    "owlv2": "serverless.models.owlv2",
    "mm-grounding-dino": "serverless.models.mm_grounding_dino",
    "yolo-world": "serverless.models.yolo_world",
    "yolo": "serverless.models.yolo",
    "sam3": "serverless.models.sam3",
    "sam": "serverless.models.sam",
    "sam2": "serverless.models.sam2",
    "clip": "serverless.models.clip",
}
"""Backend name → the module defining its ``BACKEND``, in the order `backends()` lists them."""

T = TypeVar("T")
B = TypeVar("B", bound="Backend")

_CACHE: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.RLock()  # a factory may load what it is built from


class ModelLoadError(RuntimeError):
    """Weights could not be found or loaded; the message names the location and the cause."""


class ModelSpecError(ValueError):
    """A model spec string is malformed, names no registered backend, or names a model of
    another kind; the message quotes the spec as written."""


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class WeightsSource:
    """Where a model will load from, decided before anything is loaded or downloaded."""

    load_from: str | None
    """A directory, a hub id or a checkpoint file; None: the public weights (downloaded)."""
    note: str
    """Where the weights come from, in words for the user."""


@dataclass(frozen=True)
class Backend:
    """What a model module tells the registry; each kind's subclass adds ``build``."""

    kind: ClassVar[Kind]
    name: str
    """The spec prefix, e.g. ``grounding-dino``."""
    summary: str
    """One line for `autolabel models list`."""
    parse: Callable[[str, Mapping[str, str]], str]
    """``(weights as written, environment)`` → canonical weights; "" means the defaults
    (read from the environment). Raises ValueError saying what is wrong; no I/O."""
    locate: Callable[[str, bool], WeightsSource]
    """``(canonical weights, download allowed)`` → where they load from, in seconds;
    `ModelLoadError` in one line when they are nowhere to be had."""
    on_disk: Callable[[str], str | None]
    """``canonical weights`` → where they are on this machine, or None; never downloads."""
    tiny: Callable[[Path, int], str]
    """``(directory, seed)`` → canonical weights of a tiny random-init model, in the backend's
    real on-disk format, written under ``directory/<backend name>/`` (for tests and offline
    demos; idempotent: an existing one is reused)."""


@dataclass(frozen=True)
class DetectorBackend(Backend):
    kind: ClassVar[Kind] = "detector"
    build: Callable[[str, WeightsSource, Ontology, str | None], Detector]
    """``(weights, source, ontology, device)`` → a `Detector` bound to the ontology."""
    masks: bool = False
    """True when its detections carry masks of their own (SAM 3): doors then deliver polygon
    and mask labels without a segmenter, and a function's spec declares the labels' types."""


@dataclass(frozen=True)
class SegmenterBackend(Backend):
    kind: ClassVar[Kind] = "segmenter"
    build: Callable[[str, WeightsSource, str | None], Segmenter]
    """``(weights, source, device)`` → a `Segmenter`."""


@dataclass(frozen=True)
class ClassifierBackend(Backend):
    kind: ClassVar[Kind] = "classifier"
    build: Callable[[str, WeightsSource, Ontology, str | None], Classifier]
    """``(weights, source, ontology, device)`` → a `Classifier` for the ontology's labels."""


def backend(name: str) -> Backend:
    """The registered backend called ``name`` (ModelSpecError naming the known ones)."""
    module = BACKEND_MODULES.get(name)
    if module is None:
        raise ModelSpecError(f"unknown model backend {name!r}; expected one of {', '.join(BACKEND_MODULES)}")
    found = importlib.import_module(module).BACKEND
    if not isinstance(found, Backend) or found.name != name:
        raise TypeError(f"{module}.BACKEND must be the Backend named {name!r}")
    return found


def backends(kind: Kind | None = None) -> list[Backend]:
    """Every registered backend (of ``kind``), detectors first, in registry order."""
    found = [backend(name) for name in BACKEND_MODULES]
    return [b for k in KINDS for b in found if b.kind == k and kind in (None, k)]


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: a registered backend and its canonical weights (defaults filled in)."""

    backend: str
    weights: str
    kind: Kind

    @property
    def text(self) -> str:
        """The spec string, e.g. ``sam:vit_b:/w/sam_vit_b.pth``."""
        return f"{self.backend}:{self.weights}" if self.weights else self.backend

    def __str__(self) -> str:
        return self.text


def parse_spec(text: str, kind: Kind, environ: Mapping[str, str] | None = None) -> ModelSpec:
    """Parse ``text`` (``backend[:weights]``) as a model of ``kind``; the environment
    (default ``os.environ``) gives the weights a bare backend name stands for."""
    if not isinstance(text, str) or not text.strip():
        raise ModelSpecError(f"a {kind} spec must be a non-empty string such as {_example(kind)!r}, got {text!r}")
    name, _, rest = text.strip().partition(":")
    try:
        found = backend(name)
    except ModelSpecError as err:
        raise ModelSpecError(f"{kind} spec {text!r}: {err}") from None
    if found.kind != kind:
        raise ModelSpecError(f"{kind} spec {text!r}: {name} is a {found.kind}, not a {kind}")
    try:
        weights = found.parse(rest, os.environ if environ is None else environ)
    except ValueError as err:
        raise ModelSpecError(f"{kind} spec {text!r}: {err}") from None
    return ModelSpec(name, weights, kind)


def _example(kind: Kind) -> str:
    examples = {
        "detector": "grounding-dino:IDEA-Research/grounding-dino-tiny",
        "segmenter": "sam:vit_b",
        "classifier": "clip:openai/clip-vit-base-patch32",
    }
    return examples.get(kind, f"{kind}-backend:weights")


def locate(spec: ModelSpec, *, download: bool = True) -> WeightsSource:
    """Where ``spec``'s weights load from, settled in seconds (`ModelLoadError` otherwise)."""
    return backend(spec.backend).locate(spec.weights, download)


def _backend_for(spec: ModelSpec, cls: type[B]) -> B:
    found = backend(spec.backend)
    if not isinstance(found, cls):
        raise ModelSpecError(f"{spec.text!r} is a {found.kind}, not a {cls.kind}")
    return found


def load_detector(
    spec: ModelSpec, ontology: Ontology, *, device: str | None = None, source: WeightsSource | None = None
) -> Detector:
    """The `Detector` of ``spec`` bound to ``ontology``'s object labels (its ``tag`` labels
    are a classifier's: `Ontology.part`), once per process: the weights are
    shared by every ontology, and doors asking for the same spec, ontology (by content) and
    device share one detector. ``source``: where the weights are, when already located."""
    found = _backend_for(spec, DetectorBackend)
    objects = ontology.part("objects")  # tag labels are a classifier's (OntologyError if only tags)
    where = source or found.locate(spec.weights, True)
    key = ("detector", spec.text, objects.content_hash, device)
    return load_once(key, lambda: found.build(spec.weights, where, objects, device))


def load_segmenter(spec: ModelSpec, *, device: str | None = None, source: WeightsSource | None = None) -> Segmenter:
    """The `Segmenter` of ``spec``, loaded once per process."""
    found = _backend_for(spec, SegmenterBackend)
    return found.build(spec.weights, source or found.locate(spec.weights, True), device)


def load_classifier(
    spec: ModelSpec, ontology: Ontology, *, device: str | None = None, source: WeightsSource | None = None
) -> Classifier:
    """The `Classifier` of ``spec`` for ``ontology``'s ``tag`` labels (`Ontology.part`;
    `OntologyError` when it has none), once per process as `load_detector`."""
    found = _backend_for(spec, ClassifierBackend)
    tags = ontology.part("tags")
    where = source or found.locate(spec.weights, True)
    key = ("classifier", spec.text, tags.content_hash, device)
    return load_once(key, lambda: found.build(spec.weights, where, tags, device))


# --------------------------------------------------------------------------- probing


def url_problem(url: str, timeout: float = 3.0) -> str | None:
    """None when a HEAD request to ``url`` gets any HTTP answer within ``timeout`` seconds, else
    why not. Proxies from the environment are honoured; the probe runs in a daemon thread so
    the whole of it is bounded (name resolution alone can stall ~25 s offline)."""
    import http.client
    import urllib.error
    import urllib.request

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # an HTTP answer, even an error status: the server is there
        except urllib.error.URLError as err:
            outcome.append(str(err.reason))
        except (OSError, ValueError, http.client.HTTPException) as err:
            outcome.append(str(err) or type(err).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


# --------------------------------------------------------------------------- loading


def select_device(preferred: str | None = None) -> str:
    """``preferred`` → ``AUTOLABEL_DEVICE`` → CUDA when present → CPU."""
    import torch

    device = preferred or os.environ.get("AUTOLABEL_DEVICE") or ""
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but CUDA is not available")
    return device


@contextlib.contextmanager
def inference_context(device: str) -> Iterator[None]:
    """``torch.inference_mode`` everywhere; bf16 (or fp16) autocast on CUDA."""
    import torch

    with torch.inference_mode():
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                yield
        else:
            yield


COMPILE_BACKEND_VARIABLE = "AUTOLABEL_COMPILE_BACKEND"
"""The ``torch.compile`` backend `compile_models` uses (default ``inductor``; ``cudagraphs``,
``aot_eager`` or ``eager`` to tell a compiler problem from a model one)."""
_COMPILED: weakref.WeakSet[Any] = weakref.WeakSet()


def compile_models(*models: object, backend: str | None = None) -> list[str]:
    """``torch.compile`` the networks each loaded model names (`serverless.models.base.Compilable`),
    in place, so every door holding the model runs them compiled; the names compiled, in order
    (empty when none of the models names any). A network is compiled once per process, however
    many doors load it. Compilation itself happens at the first call of each input shape (slow:
    seconds to minutes); results equal the eager ones up to float noise. ``backend``: given →
    ``AUTOLABEL_COMPILE_BACKEND`` → ``inductor``; one that torch does not know is a
    `ModelLoadError` naming the ones it does."""
    import torch

    chosen = backend or os.environ.get(COMPILE_BACKEND_VARIABLE) or "inductor"
    if chosen not in torch.compiler.list_backends(exclude_tags=()):
        raise ModelLoadError(  # the list named: torch's own, without its debugging backends
            f"torch.compile backend {chosen!r} (from {'the caller' if backend else COMPILE_BACKEND_VARIABLE}) is not "
            f"one of {', '.join(sorted(torch.compiler.list_backends()))}"
        )
    networks = compiled_networks(*models)
    with _LOCK:
        for module in networks.values():
            if module not in _COMPILED:
                module.compile(backend=chosen)
                _COMPILED.add(module)
    return list(networks)


def load_once(key: tuple[Any, ...], factory: Callable[[], T]) -> T:
    """Return the cached object for ``key``, building it with ``factory`` the first time."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


def loaded_keys() -> list[tuple[Any, ...]]:
    with _LOCK:
        return list(_CACHE)


def clear() -> None:
    """Forget every loaded model (tests, or to free memory)."""
    with _LOCK:
        _CACHE.clear()
