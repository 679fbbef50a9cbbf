"""Render deployable Nuclio function directories for CVAT from one ontology.

``render_functions(ontology, out)`` writes, for each kind in `KINDS`, ``out/<kind>/`` with:

- ``function.yaml`` (CPU) and ``function-gpu.yaml`` (GPU: ``nvidia.com/gpu`` limit, a CUDA
  base image, one worker). Both carry the same ``metadata.annotations.spec`` (a JSON string).
- ``main.py``: three lines over `serverless.nuclio_adapter`.
- ``ontology.yaml`` (detectors only): the ontology the spec labels were generated from, which
  ``main.py`` loads at ``init_context``, so labels, prompts and per-label thresholds cannot
  drift from the spec.

Function ids: `Ontology.function_name` of the kind (``grounding-dino`` or
``<ontology name>-grounding-dino``), except the browser-decoded SAM, which must be
`BROWSER_SAM_ID` for CVAT's SAM plugin to run.

Build contract with ``deploy/`` (Nuclio copies the function directory to ``/opt/nuclio``):
``wheels/`` in the directory must hold the project's wheel ``autolabel_cvat-*.whl`` (plus,
optionally, wheels of its dependencies); the build installs it with the ``models`` extra and
then runs ``python -m serverless.weights fetch --dest /opt/weights ...`` which writes the
weights to the paths in `GDINO_WEIGHTS` and `sam_weights_path`. A checkpoint given as a local
file (``--detector yolo:PATH``) is baked in: copied into the directory as
``weights/<file name>`` (`RenderedFunction.copies`) and fetched from there by the same command,
its sha256 taken at render. At run time the function finds
them through ``AUTOLABEL_GDINO_MODEL``, ``AUTOLABEL_SAM_CHECKPOINT`` and
``AUTOLABEL_SAM_MODEL_TYPE`` with ``HF_HUB_OFFLINE=1``; these shorthand variables take
precedence over an ontology's ``models`` (`serverless.pipeline.ModelSettings`), so a rendered
function always serves the weights its image fetched.

Everything is rendered in memory and checked before any file is written; the output is
deterministic (same ontology and options → same bytes).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from serverless.convert.cvat_contract import score_attribute_spec
from serverless.files import copy_file_atomic, write_text_atomic
from serverless.models.grounding_dino import DEFAULT_GDINO_MODEL
from serverless.models.registry import ModelSpec
from serverless.models.sam import SAM_CHECKPOINTS
from serverless.nuclio_adapter import BROWSER_SAM_ID
from serverless.ontology import Ontology

if TYPE_CHECKING:
    from serverless.weights import FileSource

__all__ = [
    "BROWSER_SAM_ID",
    "FunctionPlan",
    "ImageWeights",
    "ROLES",
    "CPU_BASE_IMAGE",
    "DETECTOR_KINDS",
    "GDINO_WEIGHTS",
    "GPU_BASE_IMAGE",
    "KINDS",
    "MAX_REQUEST_BODY_SIZE",
    "SAM_MODEL_TYPES",
    "WEIGHTS_ROOT",
    "RenderError",
    "RenderOptions",
    "RenderedFunction",
    "dump_function_yaml",
    "function_config",
    "function_name",
    "main_source",
    "render",
    "render_functions",
    "sam_weights_path",
    "spec_json",
    "spec_labels",
    "write_functions",
]

KINDS = ("grounding-dino", "grounded-sam", "sam", "sam-interactor")
"""The functions of the default models (Grounding DINO and SAM), in rendering order; also the
directory names under ``out``. Other models give other names (`RenderOptions.plan`)."""
DETECTOR_KINDS = ("grounding-dino", "grounded-sam")
"""Default-model kinds whose spec labels come from the ontology (and whose directory holds ontology.yaml)."""
ROLES = ("detector", "pipeline", "browser-sam", "interactor", "classifier")
"""What a function does: a detector's boxes (or masks, SAM 3), a detector + segmenter pipeline,
the SAM encoder for CVAT's browser decoder, a segmenter's clicks → mask, a classifier's tags."""
_ROLE_ALIASES = {"grounding-dino": "detector", "grounded-sam": "pipeline", "sam": "browser-sam",
                 "sam-interactor": "interactor"}
_ONTOLOGY_ROLES = ("detector", "pipeline", "classifier")

SAM_MODEL_TYPES = tuple(SAM_CHECKPOINTS)
"""SAM sizes the server-side functions can be rendered for."""

WEIGHTS_ROOT = "/opt/weights"
"""Where the image build fetches the weights (``--dest`` of ``serverless.weights fetch``)."""
GDINO_WEIGHTS = f"{WEIGHTS_ROOT}/grounding-dino"
"""The Grounding DINO ``save_pretrained`` directory inside the image."""
WHEELS_DIR = "/opt/nuclio/wheels"
"""Where the project wheel lands (the function directory's ``wheels/``, copied by Nuclio)."""

CPU_BASE_IMAGE = "python:3.11-slim-bookworm"
GPU_BASE_IMAGE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"  # Python 3.11, torch 2.5.1
CPU_TORCH = "torch==2.5.1 torchvision==0.20.1"
"""Installed from PyTorch's CPU index in CPU images (the GPU base image ships the same pair)."""
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
RUNTIME = "python:3.11"
MAX_REQUEST_BODY_SIZE = 33_554_432
"""32 MiB: large frames in base64; the SAM embedding reply alone is about 5.6 MB."""
EVENT_TIMEOUT = "120s"
"""CVAT waits 120 s without retry; SAM and Grounded-SAM on CPU can need tens of seconds."""
READINESS_TIMEOUT_SECONDS = 300
"""init_context loads the weights before the worker is ready."""

_FILE_BACKENDS = {"yolo-world": "yolo-world-clip"}
"""Backends whose weights are a checkpoint file (``--weights NAME=URL#sha256=HEX``) plus a
transformers text encoder (``--weights <the value>=OWNER/REPO@SHA``)."""
_CHECKPOINT_BACKENDS = ("yolo",)
"""Backends whose weights are one checkpoint file: ``--weights NAME=URL#sha256=HEX``, else the
spec's local file, baked into the function (`BAKED_DIR`)."""
FUNCTION_ROOT = "/opt/nuclio"
"""Where Nuclio copies the function directory in the image."""
BAKED_DIR = "weights"
"""The function directory's folder of checkpoints copied in at render, fetched from
``file:///opt/nuclio/weights/<file name>`` by the build."""


class RenderError(ValueError):
    """Function directories cannot be rendered as asked (unknown kind, bad option, unwritable
    output); the message names the culprit."""


@dataclass(frozen=True)
class FunctionPlan:
    """One function to render: its directory name (the function id before the ontology's
    prefix), what it does and the backends it runs."""

    kind: str
    role: str
    detector: str | None = None
    segmenter: str | None = None
    classifier: str | None = None


@dataclass(frozen=True)
class ImageWeights:
    """What an image needs for its models: variables for the function, fetch arguments for
    its build, lines for the header."""

    env: tuple[tuple[str, str], ...]
    fetch: tuple[str, ...]
    notes: tuple[str, ...]
    copies: tuple[tuple[str, str], ...] = ()
    """``(name in the function directory, local file)`` of each checkpoint baked in."""


@dataclass(frozen=True)
class RenderOptions:
    """Which models the rendered functions run and which pinned weights their images fetch.

    ``detector`` / ``segmenter`` / ``classifier`` are model specs (default: the ontology's
    ``models``, else Grounding DINO and SAM; a classifier only for ontologies with ``tag``
    labels). Grounding DINO's weights are `gdino_model`, SAM's size `sam_model_type`; any
    other backend's weights must be pinned for the build: a transformers model as
    ``OWNER/REPO@<commit sha>`` (in its spec, ``owlv2:google/owlv2-base-patch16-ensemble@SHA``,
    or in ``weights``), YOLO-World as a checkpoint ``URL#sha256=HEX`` (``weights["yolo-world"]``)
    plus its CLIP text encoder (``weights["yolo-world-clip"]``), a trained YOLO as the local
    checkpoint of its spec (``yolo:PATH``, baked into the function) or ``weights["yolo"]``
    (``URL#sha256=HEX``)."""

    gdino_model: str = DEFAULT_GDINO_MODEL
    """Grounding DINO fetched at build time into `GDINO_WEIGHTS`: ``OWNER/NAME@<40-hex commit
    sha>``, or the bare default repository (whose revision ``serverless.weights`` pins)."""
    sam_model_type: str = "vit_h"
    """SAM size of pipelines and the interactor (the browser SAM is always vit_h)."""
    detector: str | None = None
    segmenter: str | None = None
    classifier: str | None = None
    weights: tuple[tuple[str, str], ...] = ()
    """Pinned weights by fetch name (``--weights NAME=SOURCE``)."""

    def __post_init__(self) -> None:
        from serverless.weights import GdinoSource, WeightsError

        if (
            not isinstance(self.gdino_model, str)
            or not self.gdino_model.strip()
            or any(c.isspace() or c in "'\"$`\\;&|<>" for c in self.gdino_model)
        ):
            raise RenderError(
                f"gdino_model must be a Hugging Face hub id such as "
                f"'IDEA-Research/grounding-dino-tiny', got {self.gdino_model!r}"
            )
        try:  # the image build accepts only what the weights fetcher can pin
            GdinoSource.parse(self.gdino_model).check_pinned()
        except WeightsError as err:
            raise RenderError(f"gdino_model {self.gdino_model!r}: {err}") from None
        if self.sam_model_type not in SAM_MODEL_TYPES:
            raise RenderError(
                f"sam_model_type must be one of {', '.join(SAM_MODEL_TYPES)}, got {self.sam_model_type!r}"
            )
        object.__setattr__(self, "weights", tuple((str(k), str(v)) for k, v in dict(self.weights).items()))

    # ----------------------------------------------------------------- models
    def spec(self, ontology: Ontology, kind: str) -> ModelSpec | None:
        """The model spec of ``kind`` (detector, segmenter, classifier) for ``ontology``."""
        from serverless.models.registry import ModelSpecError, parse_spec

        given = getattr(self, kind) or getattr(ontology.models, kind)
        if given is None:
            if kind == "classifier":
                return parse_spec("clip", kind, {}) if ontology.has_tags else None
            given = "grounding-dino" if kind == "detector" else "sam"
        try:
            return parse_spec(given, kind, {})  # type: ignore[arg-type]
        except ModelSpecError as err:
            raise RenderError(str(err)) from None

    def plan(self, ontology: Ontology) -> list[FunctionPlan]:
        """Every function these models give for ``ontology``, in rendering order."""
        from serverless.models.registry import backend

        plans: list[FunctionPlan] = []
        if ontology.has_objects:
            detector = self.spec(ontology, "detector").backend  # type: ignore[union-attr]
            segmenter = self.spec(ontology, "segmenter").backend  # type: ignore[union-attr]
            plans.append(FunctionPlan(detector, "detector", detector=detector))
            if not getattr(backend(detector), "masks", False):
                pipeline = "grounded-sam" if (detector, segmenter) == ("grounding-dino", "sam") else f"{detector}-{segmenter}"
                plans.append(FunctionPlan(pipeline, "pipeline", detector=detector, segmenter=segmenter))
            if segmenter == "sam":
                plans.append(FunctionPlan("sam", "browser-sam", segmenter="sam"))
            plans.append(FunctionPlan(f"{segmenter}-interactor", "interactor", segmenter=segmenter))
        classifier = self.spec(ontology, "classifier")
        if classifier is not None:
            plans.append(FunctionPlan(classifier.backend, "classifier", classifier=classifier.backend))
        return plans

    def pinned(self, name: str, spec_weights: str = "") -> str:
        """The pinned source of fetch name ``name``: ``weights[name]``, else a spec's weights
        that are already pinned (``OWNER/REPO@SHA``); `RenderError` saying how to pin one."""
        found = dict(self.weights).get(name) or (spec_weights if "@" in spec_weights else "")
        if not found:
            what = spec_weights or "its weights"
            raise RenderError(
                f"{name}: the image build fetches pinned weights only; give --weights {name}=OWNER/REPO@<commit sha> "
                f"(or a spec such as {name}:OWNER/REPO@<commit sha>) for {what}; "
                "`python -m serverless.weights pin` resolves a commit online"
            )
        return found

    def image_weights(self, ontology: Ontology, plan: FunctionPlan) -> ImageWeights:
        """The variables, fetch arguments and header notes of ``plan``'s models."""
        env: list[tuple[str, str]] = []
        fetch: list[str] = []
        notes: list[str] = []
        copies: list[tuple[str, str]] = []
        if plan.detector == "grounding-dino":
            env.append(("AUTOLABEL_GDINO_MODEL", GDINO_WEIGHTS))
            fetch.append(f"--grounding-dino {self.gdino_model}")
            notes.append(f"  {GDINO_WEIGHTS}  save_pretrained directory of {self.gdino_model}")
        elif plan.detector is not None:
            self._other(ontology, "detector", plan.detector, env, fetch, notes, copies)
        if plan.segmenter == "sam":
            model_type = "vit_h" if plan.role == "browser-sam" else self.sam_model_type
            env += [("AUTOLABEL_SAM_CHECKPOINT", sam_weights_path(model_type)), ("AUTOLABEL_SAM_MODEL_TYPE", model_type)]
            fetch.append(f"--sam {model_type}")
            notes.append(f"  {sam_weights_path(model_type)}  segment-anything {model_type} checkpoint")
        elif plan.segmenter is not None:
            self._other(ontology, "segmenter", plan.segmenter, env, fetch, notes, copies)
        if plan.classifier is not None:
            self._other(ontology, "classifier", plan.classifier, env, fetch, notes, copies)
        if plan.detector != "grounding-dino":
            fetch.insert(0, "--no-gdino")  # the fetcher takes Grounding DINO unless told not to
        return ImageWeights(tuple(env), tuple(fetch), tuple(notes), tuple(copies))

    def _other(
        self, ontology: Ontology, kind: str, name: str, env: list, fetch: list, notes: list, copies: list
    ) -> None:
        spec = self.spec(ontology, kind)
        weights = spec.weights if spec is not None and spec.backend == name else ""
        variable = f"AUTOLABEL_{kind.upper()}"
        if name in _CHECKPOINT_BACKENDS:
            from serverless.weights import WeightsError

            try:
                source, note, copy = self._checkpoint(name, weights)
            except WeightsError as err:
                raise RenderError(f"--weights {name}: {err}") from None
            target = f"{WEIGHTS_ROOT}/{name}/{source.basename}"
            env.append((variable, f"{name}:{target}"))
            fetch.append(f"--file {name}={source.url}#sha256={source.sha256}")
            notes.append(f"  {target}  {note}")
            copies += [copy] if copy else []
            return
        if name in _FILE_BACKENDS:
            from serverless.weights import FileSource, WeightsError

            clip_name = _FILE_BACKENDS[name]
            try:
                checkpoint = FileSource.parse(self.pinned(name))
            except WeightsError as err:
                raise RenderError(f"--weights {name}: {err}") from None
            text_encoder = self.pinned(clip_name)
            target = f"{WEIGHTS_ROOT}/{name}/{checkpoint.basename}"
            env.append((variable, f"{name}:{target}:{WEIGHTS_ROOT}/{clip_name}"))
            fetch += [f"--file {name}={checkpoint.url}#sha256={checkpoint.sha256}", f"--hf {clip_name}={text_encoder}"]
            notes += [f"  {target}  {name} checkpoint (sha256 {checkpoint.sha256[:12]})",
                      f"  {WEIGHTS_ROOT}/{clip_name}  save_pretrained directory of {text_encoder}"]
            return
        source = self.pinned(name, weights)
        from serverless.weights import GdinoSource, WeightsError

        try:
            GdinoSource.parse(source, f"--weights {name}").check_pinned()
        except WeightsError as err:
            raise RenderError(str(err)) from None
        env.append((variable, f"{name}:{WEIGHTS_ROOT}/{name}"))
        fetch.append(f"--hf {name}={source}")
        notes.append(f"  {WEIGHTS_ROOT}/{name}  save_pretrained directory of {source}")

    def _checkpoint(self, name: str, spec_weights: str) -> tuple[FileSource, str, tuple[str, str] | None]:
        """``(FileSource, header note, copy or None)`` of a one-file backend (`_CHECKPOINT_BACKENDS`):
        ``weights[name]`` (``URL#sha256=HEX``) is fetched from its URL; else the spec's local
        file is baked in: copied to ``weights/<file name>`` of the function directory and
        fetched from ``file:///opt/nuclio/weights/<file name>`` with the sha256 it has now.
        `RenderError` when there is neither, or the file is missing."""
        from serverless.weights import FileSource

        given = dict(self.weights).get(name)
        if given:
            source = FileSource.parse(given)
            return source, f"{name} checkpoint (sha256 {source.sha256[:12]})", None
        if not spec_weights:
            raise RenderError(
                f"{name}: give the checkpoint to build into the image: --detector {name}:PATH (a local .pt file, "
                f"copied into the function) or --weights {name}=URL#sha256=<64 hex>"
            )
        path = Path(spec_weights).expanduser()
        if not path.is_file():
            raise RenderError(f"{name} checkpoint {spec_weights} does not exist (it is copied into the function)")
        digest = _sha256(path.resolve())
        baked = f"{BAKED_DIR}/{path.name}"
        url = PurePosixPath(FUNCTION_ROOT, baked).as_uri()
        note = f"{name} checkpoint {baked} of this directory, copied at render (sha256 {digest})"
        return FileSource.parse(f"{url}#sha256={digest}"), note, (baked, str(path.resolve()))


@dataclass(frozen=True)
class RenderedFunction:
    """One function directory, rendered in memory: file name → text, and the local files copied
    in when it is written (a checkpoint baked in: ``weights/<file name>`` → its path)."""

    kind: str
    name: str
    files: dict[str, str] = field(compare=True)
    copies: dict[str, Path] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    """The hex sha256 of a checkpoint to bake in, hashed once per content version (the render
    asks for it per file it writes)."""
    stat = path.stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    from serverless.weights import file_sha256

    return file_sha256(path).removeprefix("sha256:")


def sam_weights_path(model_type: str) -> str:
    """The SAM checkpoint inside the image: ``/opt/weights/sam/sam_<type>.pth``."""
    return f"{WEIGHTS_ROOT}/sam/sam_{model_type}.pth"


def _plan_of(ontology: Ontology, kind: str, options: RenderOptions) -> FunctionPlan:
    plans = options.plan(ontology)
    for plan in plans:
        if plan.kind == kind:
            return plan
    role = _ROLE_ALIASES.get(kind, kind)
    for plan in plans:
        if plan.role == role:
            return plan
    detector = options.spec(ontology, "detector")
    if role == "pipeline" and detector is not None and ontology.has_objects:
        from serverless.models.registry import backend

        if getattr(backend(detector.backend), "masks", False):
            raise RenderError(
                f"function kind {kind!r}: {detector.backend} gives masks itself, so it has no detector + segmenter "
                f"pipeline; its {detector.backend!r} function answers mask and polygon labels"
            )
    if role in ("detector", "pipeline") and not ontology.has_objects:
        raise RenderError(f"function kind {kind!r}: the ontology has only tag labels; render the classifier")
    if role == "classifier" and not ontology.has_tags:
        raise RenderError(f"function kind {kind!r}: the ontology has no tag labels (type: tag) for a classifier")
    known = ", ".join(dict.fromkeys([p.kind for p in plans] + [p.role for p in plans]))
    raise RenderError(f"unknown function kind {kind!r} for these models and this ontology; expected one of {known}")


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise RenderError(f"unknown function kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def function_name(ontology: Ontology, kind: str, options: RenderOptions | None = None) -> str:
    """The Nuclio/CVAT function id of a kind for this ontology."""
    plan = _plan_of(ontology, kind, options or RenderOptions())
    return BROWSER_SAM_ID if plan.role == "browser-sam" else ontology.function_name(plan.kind)


# --------------------------------------------------------------------------- spec


def spec_labels(ontology: Ontology, kind: str, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """CVAT spec labels of a function (``[]`` for interactors).

    A box detector (``grounding-dino``, ``owlv2``, ...) declares every object label as
    ``rectangle``; a pipeline or a masking detector (SAM 3) each object label with its
    ontology type; a classifier each ``tag`` label as ``tag``. With `Ontology.score_attribute`
    each label carries the ``score`` number attribute
    (`serverless.convert.cvat_contract.score_attribute_spec`).
    """
    from serverless.models.registry import backend

    plan = _plan_of(ontology, kind, options or RenderOptions())
    if plan.role in ("browser-sam", "interactor"):
        return []
    part = ontology.part("tags" if plan.role == "classifier" else "objects")
    keep_types = plan.role == "pipeline" or (
        plan.role == "detector" and bool(getattr(backend(plan.detector or ""), "masks", False))
    )
    labels = []
    for i, label in enumerate(part.labels):
        labels.append(
            {
                "id": i,
                "name": label.name,
                "type": label.type if keep_types or plan.role == "classifier" else "rectangle",
                "attributes": [score_attribute_spec()] if ontology.score_attribute else [],
            }
        )
    return labels


def spec_json(labels: Sequence[dict[str, Any]]) -> str:
    """The JSON text of ``metadata.annotations.spec``: one label per line."""
    if not labels:
        return "[]"
    lines = ",\n".join("  " + json.dumps(label, ensure_ascii=False) for label in labels)
    return f"[\n{lines}\n]\n"


# --------------------------------------------------------------------------- function.yaml


def _env(weights: ImageWeights, gpu: bool) -> list[dict[str, str]]:
    env = list(weights.env)
    env.append(("AUTOLABEL_DEVICE", "cuda" if gpu else "cpu"))
    env.append(("HF_HUB_OFFLINE", "1"))
    env.append(("TOKENIZERS_PARALLELISM", "false"))
    if gpu:
        env.append(("NVIDIA_VISIBLE_DEVICES", "all"))
        env.append(("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"))
    return [{"name": name, "value": value} for name, value in env]


def _fetch_command(weights: ImageWeights) -> str:
    return " ".join(["python -m serverless.weights fetch", f"--dest {WEIGHTS_ROOT}", *weights.fetch])


def _directives(weights: ImageWeights, gpu: bool) -> dict[str, list[dict[str, str]]]:
    pre = [
        {
            "kind": "RUN",
            "value": "apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 "
            "&& rm -rf /var/lib/apt/lists/*",
        }
    ]
    if not gpu:
        pre.append({"kind": "RUN", "value": f"pip install --no-cache-dir {CPU_TORCH} --index-url {CPU_TORCH_INDEX}"})
    post = [
        {
            "kind": "RUN",
            "value": f"pip install --no-cache-dir --find-links {WHEELS_DIR} "
            f'"$(echo {WHEELS_DIR}/autolabel_cvat-*.whl)[models,yolo]"'
            if any("--file " in arg for arg in weights.fetch)
            else f"pip install --no-cache-dir --find-links {WHEELS_DIR} "
            f'"$(echo {WHEELS_DIR}/autolabel_cvat-*.whl)[models]"',
        },
        {"kind": "RUN", "value": _fetch_command(weights)},
    ]
    return {"preCopy": pre, "postCopy": post}


_DISPLAY = {"grounding-dino": "Grounding DINO", "sam": "Segment Anything"}


def _model_title(name: str) -> str:
    """A backend's display name: the part of its registry summary before `` (``."""
    if name in _DISPLAY:
        return _DISPLAY[name]
    from serverless.models.registry import backend

    return backend(name).summary.split(" (")[0].split(":")[0].strip()


def _display_name(ontology: Ontology, plan: FunctionPlan, options: RenderOptions) -> str:
    if plan.kind == "grounded-sam":
        name = "Grounded-SAM"
    elif plan.role == "browser-sam":
        name = "Segment Anything (browser decoder)"
    elif plan.role == "interactor":
        size = f" {options.sam_model_type}" if plan.segmenter == "sam" else ""
        name = f"{_model_title(plan.segmenter or '')}{size} (server)"
    elif plan.role == "pipeline":
        name = f"{_model_title(plan.detector or '')} + {_model_title(plan.segmenter or '')}"
    else:
        name = _model_title(plan.detector or plan.classifier or "")
    if plan.role in _ONTOLOGY_ROLES and ontology.name is not None:
        name += f" ({ontology.name})"
    return name


def _description(ontology: Ontology, plan: FunctionPlan, options: RenderOptions) -> str:
    digest = ontology.content_hash[:12]
    source = f"prompts and per-label thresholds from ontology.yaml (sha256 {digest})"
    if plan.role == "classifier":
        count = len(ontology.part("tags").labels)
        return f"Zero-shot image tags for {count} labels with {_model_title(plan.classifier or '')}; {source}"
    count = len(ontology.part("objects").labels) if ontology.has_objects else 0
    if plan.kind == "grounding-dino":
        return f"Open-vocabulary boxes for {count} labels with Grounding DINO ({options.gdino_model}); {source}"
    if plan.kind == "grounded-sam":
        return (
            f"Grounding DINO ({options.gdino_model}) boxes refined by SAM {options.sam_model_type} "
            f"into masks and polygons for {count} labels; {source}"
        )
    if plan.role == "detector":
        return f"{_model_title(plan.detector or '')} for {count} labels; {source}"
    if plan.role == "pipeline":
        return (
            f"{_model_title(plan.detector or '')} boxes refined by {_model_title(plan.segmenter or '')} "
            f"into masks and polygons for {count} labels; {source}"
        )
    if plan.role == "browser-sam":
        return (
            "Segment Anything vit_h image encoder for CVAT's browser decoder: returns the frame "
            "embedding, the clicks are decoded in the browser"
        )
    size = f" {options.sam_model_type}" if plan.segmenter == "sam" else ""
    return (
        f"{_model_title(plan.segmenter or '')}{size} interactor on the server: positive and "
        "negative clicks and an optional box to a mask; one embedding per frame, cached"
    )


def _annotations(ontology: Ontology, plan: FunctionPlan, options: RenderOptions) -> dict[str, str]:
    annotations = {
        "name": _display_name(ontology, plan, options),
        "type": "interactor" if plan.role in ("browser-sam", "interactor") else "detector",
        "framework": "pytorch",
        "spec": spec_json(spec_labels(ontology, plan.kind, options)),
    }
    if plan.role in ("browser-sam", "interactor"):
        annotations.update(
            {
                "version": "2",
                "min_pos_points": "1",
                "min_neg_points": "0",
                "help_message": "Left-click inside the object to add it, right-click to exclude a "
                "region; each click refines the mask",
            }
        )
    return annotations


def function_config(
    ontology: Ontology, kind: str, *, gpu: bool, options: RenderOptions | None = None
) -> dict[str, Any]:
    """The content of ``function.yaml`` (``gpu=False``) or ``function-gpu.yaml`` as plain data."""
    options = options or RenderOptions()
    plan = _plan_of(ontology, kind, options)
    weights = options.image_weights(ontology, plan)
    name = function_name(ontology, plan.kind, options)
    spec: dict[str, Any] = {
        "description": _description(ontology, plan, options),
        "runtime": RUNTIME,
        "handler": "main:handler",
        "eventTimeout": EVENT_TIMEOUT,
        "readinessTimeoutSeconds": READINESS_TIMEOUT_SECONDS,
        "env": _env(weights, gpu),
        "build": {
            "image": f"cvat.autolabel.{name}" + ("-gpu" if gpu else ""),
            "baseImage": GPU_BASE_IMAGE if gpu else CPU_BASE_IMAGE,
            "directives": _directives(weights, gpu),
        },
        "triggers": {
            "myHttpTrigger": {
                "kind": "http",
                "maxWorkers": 1 if gpu else 2,
                "workerAvailabilityTimeoutMilliseconds": 10000,
                "attributes": {"maxRequestBodySize": MAX_REQUEST_BODY_SIZE},
            }
        },
    }
    if gpu:
        spec["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    spec["platform"] = {
        "attributes": {
            "restartPolicy": {"name": "always", "maximumRetryCount": 3},
            "mountMode": "volume",
        }
    }
    return {
        "metadata": {"name": name, "namespace": "cvat", "annotations": _annotations(ontology, plan, options)},
        "spec": spec,
    }


def _header(ontology: Ontology, plan: FunctionPlan, gpu: bool, options: RenderOptions) -> str:
    file_name = "function-gpu.yaml" if gpu else "function.yaml"
    lines = [
        "Rendered by `autolabel functions render`: edit the ontology and render again, not this file.",
    ]
    if plan.role in _ONTOLOGY_ROLES:
        lines.append(f"Spec labels from ontology.yaml (sha256 {ontology.content_hash[:12]}), which main.py loads.")
    lines += [
        f"Deploy: nuctl deploy --project-name cvat --path <this directory> --file {file_name} --platform local",
        "Build: the directory is copied to /opt/nuclio; wheels/ must hold the project wheel",
        "(autolabel_cvat-*.whl). Weights are fetched at build time:",
        *options.image_weights(ontology, plan).notes,
    ]
    return "".join(f"# {line}\n" for line in lines)


def dump_function_yaml(config: dict[str, Any], header: str = "") -> str:
    """YAML text of a function config: keys in insertion order, multi-line strings (the spec
    JSON) as literal ``|`` blocks, lists indented, no line folding."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
            return super().increase_indent(flow, False)

    def _str(dumper: yaml.SafeDumper, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    text = yaml.dump(
        config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000, default_flow_style=False
    )
    return header + text


# --------------------------------------------------------------------------- main.py

_FACTORIES = {
    "detector": "detector_function",
    "pipeline": "grounded_sam_function",
    "browser-sam": "sam_embedding_function",
    "interactor": "sam_interactor_function",
    "classifier": "classifier_function",
}


def main_source(kind: str, role: str | None = None) -> str:
    """The ``main.py`` of a function: the Nuclio entry points from its role's factory
    (``role`` defaults to that of the default models' ``kind``)."""
    if role is None:
        role = _ROLE_ALIASES[_check_kind(kind)]
    factory = "grounding_dino_function" if kind == "grounding-dino" else _FACTORIES[role]
    if role in _ONTOLOGY_ROLES:
        call = f'{factory}(Path(__file__).with_name("ontology.yaml"), module=__name__)'
        imports = "from pathlib import Path\n\n"
    else:
        call = f"{factory}(module=__name__)"
        imports = ""
    return (
        f'"""Nuclio entry point of the {kind} function (rendered by `autolabel functions render`).\n\n'
        'The request handling lives in serverless.nuclio_adapter; the model code in serverless.models."""\n\n'
        f"{imports}"
        f"from serverless.nuclio_adapter import {factory}\n\n"
        f"init_context, handler = {call}\n"
    )


# --------------------------------------------------------------------------- rendering


def _ontology_text(ontology: Ontology) -> str:
    if ontology.source is not None:
        return ontology.source if ontology.source.endswith("\n") else ontology.source + "\n"
    import yaml

    return yaml.safe_dump(ontology.to_dict(), sort_keys=False, allow_unicode=True)


def _parse_kinds(ontology: Ontology, kinds: Iterable[str] | str | None, options: RenderOptions) -> list[FunctionPlan]:
    if kinds is None:
        return options.plan(ontology)
    if isinstance(kinds, str):
        kinds = [part.strip() for part in kinds.split(",") if part.strip()]
    chosen: list[FunctionPlan] = []
    for kind in kinds:
        plan = _plan_of(ontology, kind, options)
        if plan not in chosen:
            chosen.append(plan)
    if not chosen:
        known = ", ".join(p.kind for p in options.plan(ontology))
        raise RenderError(f"no function kind given; expected some of {known}")
    return chosen


def render(
    ontology: Ontology, kinds: Iterable[str] | str | None = None, options: RenderOptions | None = None
) -> list[RenderedFunction]:
    """Every file of the asked function kinds (a list, or a comma-separated string; None: every
    function of the models, `RenderOptions.plan`), in memory."""
    if not isinstance(ontology, Ontology):
        raise RenderError(f"ontology must be an Ontology, got {type(ontology).__name__}")
    options = options or RenderOptions()
    rendered = []
    for plan in _parse_kinds(ontology, kinds, options):
        files = {
            "function.yaml": dump_function_yaml(
                function_config(ontology, plan.kind, gpu=False, options=options), _header(ontology, plan, False, options)
            ),
            "function-gpu.yaml": dump_function_yaml(
                function_config(ontology, plan.kind, gpu=True, options=options), _header(ontology, plan, True, options)
            ),
            "main.py": main_source(plan.kind, plan.role),
        }
        if plan.role in _ONTOLOGY_ROLES:
            files["ontology.yaml"] = _ontology_text(ontology)
        copies = {name: Path(local) for name, local in options.image_weights(ontology, plan).copies}
        name = function_name(ontology, plan.kind, options)
        rendered.append(RenderedFunction(kind=plan.kind, name=name, files=files, copies=copies))
    return rendered


def write_functions(rendered: Sequence[RenderedFunction], out: str | os.PathLike[str]) -> list[Path]:
    """Write each function to ``out/<kind>/`` (created as needed). Rendered files and copies
    (`RenderedFunction.copies`) are replaced atomically; other files there (e.g. ``wheels/``)
    are left alone. Returns the directories."""
    root = Path(out)
    written = []
    for function in rendered:
        directory = root / function.kind
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, text in function.files.items():
                write_text_atomic(directory / name, text, newline="\n")
        except OSError as err:
            raise RenderError(f"cannot write {directory}: {err.strerror or err}") from err
        for name, local in function.copies.items():
            try:
                (directory / name).parent.mkdir(parents=True, exist_ok=True)
                copy_file_atomic(local, directory / name)
            except OSError as err:
                raise RenderError(f"cannot copy {local} to {directory / name}: {err.strerror or err}") from err
        written.append(directory)
    return written


def render_functions(
    ontology: Ontology,
    out: str | os.PathLike[str],
    kinds: Iterable[str] | str | None = None,
    options: RenderOptions | None = None,
) -> list[Path]:
    """Render the asked kinds for ``ontology`` and write them under ``out``; returns the
    written directories (``out/<kind>``)."""
    return write_functions(render(ontology, kinds, options), out)
