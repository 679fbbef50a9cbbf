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
weights to the paths in `GDINO_WEIGHTS` and `sam_weights_path`. At run time the function finds
them through ``AUTOLABEL_GDINO_MODEL``, ``AUTOLABEL_SAM_CHECKPOINT`` and
``AUTOLABEL_SAM_MODEL_TYPE`` with ``HF_HUB_OFFLINE=1``; these shorthand variables take
precedence over an ontology's ``models`` (`serverless.pipeline.ModelSettings`), so a rendered
function always serves the weights its image fetched.

Everything is rendered in memory and checked before any file is written; the output is
deterministic (same ontology and options → same bytes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serverless.convert.cvat_contract import score_attribute_spec
from serverless.files import write_text_atomic
from serverless.models.grounding_dino import DEFAULT_GDINO_MODEL
from serverless.models.sam import SAM_CHECKPOINTS
from serverless.nuclio_adapter import BROWSER_SAM_ID
from serverless.ontology import Ontology

__all__ = [
    "BROWSER_SAM_ID",
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
"""Every function kind, in rendering order; also the directory names under ``out``."""
DETECTOR_KINDS = ("grounding-dino", "grounded-sam")
"""Kinds whose spec labels come from the ontology (and whose directory holds ontology.yaml)."""

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

class RenderError(ValueError):
    """Function directories cannot be rendered as asked (unknown kind, bad option, unwritable
    output); the message names the culprit."""


@dataclass(frozen=True)
class RenderOptions:
    """Which weights the rendered images fetch and load."""

    gdino_model: str = DEFAULT_GDINO_MODEL
    """Grounding DINO fetched at build time into `GDINO_WEIGHTS`: ``OWNER/NAME@<40-hex commit
    sha>``, or the bare default repository (whose revision ``serverless.weights`` pins)."""
    sam_model_type: str = "vit_h"
    """SAM size of ``grounded-sam`` and ``sam-interactor`` (the browser SAM is always vit_h)."""

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


@dataclass(frozen=True)
class RenderedFunction:
    """One function directory, rendered in memory: file name → text."""

    kind: str
    name: str
    files: dict[str, str] = field(compare=True)


def sam_weights_path(model_type: str) -> str:
    """The SAM checkpoint inside the image: ``/opt/weights/sam/sam_<type>.pth``."""
    return f"{WEIGHTS_ROOT}/sam/sam_{model_type}.pth"


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise RenderError(f"unknown function kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def function_name(ontology: Ontology, kind: str) -> str:
    """The Nuclio/CVAT function id of a kind for this ontology."""
    _check_kind(kind)
    return BROWSER_SAM_ID if kind == "sam" else ontology.function_name(kind)


def _sam_type(kind: str, options: RenderOptions) -> str:
    return "vit_h" if kind == "sam" else options.sam_model_type


# --------------------------------------------------------------------------- spec


def spec_labels(ontology: Ontology, kind: str) -> list[dict[str, Any]]:
    """CVAT spec labels of a function: one per ontology label for detectors (``[]`` for SAM).

    ``grounding-dino`` returns boxes only, so all its labels are ``rectangle``;
    ``grounded-sam`` answers each label with its ontology type. With
    `Ontology.score_attribute` each label carries the ``score`` number attribute
    (`serverless.convert.cvat_contract.score_attribute_spec`).
    """
    _check_kind(kind)
    if kind not in DETECTOR_KINDS:
        return []
    labels = []
    for i, label in enumerate(ontology.labels):
        labels.append(
            {
                "id": i,
                "name": label.name,
                "type": "rectangle" if kind == "grounding-dino" else label.type,
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


def _env(kind: str, gpu: bool, options: RenderOptions) -> list[dict[str, str]]:
    env: list[tuple[str, str]] = []
    if kind in DETECTOR_KINDS:
        env.append(("AUTOLABEL_GDINO_MODEL", GDINO_WEIGHTS))
    if kind != "grounding-dino":
        model_type = _sam_type(kind, options)
        env.append(("AUTOLABEL_SAM_CHECKPOINT", sam_weights_path(model_type)))
        env.append(("AUTOLABEL_SAM_MODEL_TYPE", model_type))
    env.append(("AUTOLABEL_DEVICE", "cuda" if gpu else "cpu"))
    env.append(("HF_HUB_OFFLINE", "1"))
    env.append(("TOKENIZERS_PARALLELISM", "false"))
    if gpu:
        env.append(("NVIDIA_VISIBLE_DEVICES", "all"))
        env.append(("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"))
    return [{"name": name, "value": value} for name, value in env]


def _fetch_command(kind: str, options: RenderOptions) -> str:
    parts = ["python -m serverless.weights fetch", f"--dest {WEIGHTS_ROOT}"]
    if kind in DETECTOR_KINDS:
        parts.append(f"--grounding-dino {options.gdino_model}")
    else:
        parts.append("--no-gdino")  # the fetcher takes Grounding DINO unless told not to
    if kind != "grounding-dino":
        parts.append(f"--sam {_sam_type(kind, options)}")
    return " ".join(parts)


def _directives(kind: str, gpu: bool, options: RenderOptions) -> dict[str, list[dict[str, str]]]:
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
            f'"$(echo {WHEELS_DIR}/autolabel_cvat-*.whl)[models]"',
        },
        {"kind": "RUN", "value": _fetch_command(kind, options)},
    ]
    return {"preCopy": pre, "postCopy": post}


_DISPLAY = {
    "grounding-dino": "Grounding DINO",
    "grounded-sam": "Grounded-SAM",
    "sam": "Segment Anything (browser decoder)",
    "sam-interactor": "Segment Anything",
}


def _display_name(ontology: Ontology, kind: str, options: RenderOptions) -> str:
    name = _DISPLAY[kind]
    if kind == "sam-interactor":
        name += f" {options.sam_model_type} (server)"
    if kind in DETECTOR_KINDS and ontology.name is not None:
        name += f" ({ontology.name})"
    return name


def _description(ontology: Ontology, kind: str, options: RenderOptions) -> str:
    digest = ontology.content_hash[:12]
    count = len(ontology.labels)
    if kind == "grounding-dino":
        return (
            f"Open-vocabulary boxes for {count} labels with Grounding DINO ({options.gdino_model}); "
            f"prompts and per-label thresholds from ontology.yaml (sha256 {digest})"
        )
    if kind == "grounded-sam":
        return (
            f"Grounding DINO ({options.gdino_model}) boxes refined by SAM {options.sam_model_type} "
            f"into masks and polygons for {count} labels; prompts and per-label thresholds from "
            f"ontology.yaml (sha256 {digest})"
        )
    if kind == "sam":
        return (
            "Segment Anything vit_h image encoder for CVAT's browser decoder: returns the frame "
            "embedding, the clicks are decoded in the browser"
        )
    return (
        f"Segment Anything {options.sam_model_type} interactor on the server: positive and "
        "negative clicks and an optional box to a mask; one embedding per frame, cached"
    )


def _annotations(ontology: Ontology, kind: str, options: RenderOptions) -> dict[str, str]:
    annotations = {
        "name": _display_name(ontology, kind, options),
        "type": "detector" if kind in DETECTOR_KINDS else "interactor",
        "framework": "pytorch",
        "spec": spec_json(spec_labels(ontology, kind)),
    }
    if kind in ("sam", "sam-interactor"):
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
    name = function_name(ontology, kind)
    spec: dict[str, Any] = {
        "description": _description(ontology, kind, options),
        "runtime": RUNTIME,
        "handler": "main:handler",
        "eventTimeout": EVENT_TIMEOUT,
        "readinessTimeoutSeconds": READINESS_TIMEOUT_SECONDS,
        "env": _env(kind, gpu, options),
        "build": {
            "image": f"cvat.autolabel.{name}" + ("-gpu" if gpu else ""),
            "baseImage": GPU_BASE_IMAGE if gpu else CPU_BASE_IMAGE,
            "directives": _directives(kind, gpu, options),
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
        "metadata": {"name": name, "namespace": "cvat", "annotations": _annotations(ontology, kind, options)},
        "spec": spec,
    }


def _header(ontology: Ontology, kind: str, gpu: bool, options: RenderOptions) -> str:
    file_name = "function-gpu.yaml" if gpu else "function.yaml"
    lines = [
        "Rendered by `autolabel functions render`: edit the ontology and render again, not this file.",
    ]
    if kind in DETECTOR_KINDS:
        lines.append(f"Spec labels from ontology.yaml (sha256 {ontology.content_hash[:12]}), which main.py loads.")
    lines += [
        f"Deploy: nuctl deploy --project-name cvat --path <this directory> --file {file_name} --platform local",
        "Build: the directory is copied to /opt/nuclio; wheels/ must hold the project wheel",
        "(autolabel_cvat-*.whl). Weights are fetched at build time:",
    ]
    if kind in DETECTOR_KINDS:
        lines.append(f"  {GDINO_WEIGHTS}  save_pretrained directory of {options.gdino_model}")
    if kind != "grounding-dino":
        model_type = _sam_type(kind, options)
        lines.append(f"  {sam_weights_path(model_type)}  segment-anything {model_type} checkpoint")
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
    "grounding-dino": "grounding_dino_function",
    "grounded-sam": "grounded_sam_function",
    "sam": "sam_embedding_function",
    "sam-interactor": "sam_interactor_function",
}


def main_source(kind: str) -> str:
    """The ``main.py`` of a function: the Nuclio entry points from its factory."""
    _check_kind(kind)
    factory = _FACTORIES[kind]
    if kind in DETECTOR_KINDS:
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


def _parse_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = [part.strip() for part in kinds.split(",") if part.strip()]
    chosen = []
    for kind in kinds:
        _check_kind(kind)
        if kind not in chosen:
            chosen.append(kind)
    if not chosen:
        raise RenderError(f"no function kind given; expected some of {', '.join(KINDS)}")
    return tuple(chosen)


def render(
    ontology: Ontology, kinds: Iterable[str] | str = KINDS, options: RenderOptions | None = None
) -> list[RenderedFunction]:
    """Every file of the asked function kinds (a list, or a comma-separated string), in memory."""
    if not isinstance(ontology, Ontology):
        raise RenderError(f"ontology must be an Ontology, got {type(ontology).__name__}")
    options = options or RenderOptions()
    rendered = []
    for kind in _parse_kinds(kinds):
        files = {
            "function.yaml": dump_function_yaml(
                function_config(ontology, kind, gpu=False, options=options), _header(ontology, kind, False, options)
            ),
            "function-gpu.yaml": dump_function_yaml(
                function_config(ontology, kind, gpu=True, options=options), _header(ontology, kind, True, options)
            ),
            "main.py": main_source(kind),
        }
        if kind in DETECTOR_KINDS:
            files["ontology.yaml"] = _ontology_text(ontology)
        rendered.append(RenderedFunction(kind=kind, name=function_name(ontology, kind), files=files))
    return rendered


def write_functions(rendered: Sequence[RenderedFunction], out: str | os.PathLike[str]) -> list[Path]:
    """Write each function to ``out/<kind>/`` (created as needed). Rendered files are replaced
    atomically; other files there (e.g. ``wheels/``) are left alone. Returns the directories."""
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
        written.append(directory)
    return written


def render_functions(
    ontology: Ontology,
    out: str | os.PathLike[str],
    kinds: Iterable[str] | str = KINDS,
    options: RenderOptions | None = None,
) -> list[Path]:
    """Render the asked kinds for ``ontology`` and write them under ``out``; returns the
    written directories (``out/<kind>``)."""
    return write_functions(render(ontology, kinds, options), out)
