"""A Nuclio function directory's ``function.yaml``, read and checked for ``autolabel serve``.

`read_function_dir` parses the yaml (Nuclio format) and checks it against what CVAT 2.17 needs
(``cvat_protocol.md`` §1; golden README, files 11–14): ``metadata.name`` usable as a CVAT
function id, ``metadata.annotations`` present with string values and ``spec`` a JSON list (CVAT
answers 500 otherwise), ``spec.description`` present (CVAT 2.17 answers 500 for the whole list
otherwise), a well-formed ``spec.handler`` whose module exists. Problems raise `ServeError`
naming the file and the field; odd but accepted values (an unknown ``type``,
``startswith_box: "false"``) are logged as warnings.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_TIMEOUT",
    "FUNCTION_NAME",
    "KINDS",
    "FunctionDefinition",
    "ServeError",
    "parse_duration",
    "read_function_dir",
]

log = logging.getLogger("autolabel.serve")

DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024
"""Request body limit when the function sets no ``maxRequestBodySize`` (CVAT's functions use 32 MiB)."""

DEFAULT_QUEUE_SIZE = 16
"""Requests that may wait per function behind the running one before new ones get 503."""

DEFAULT_TIMEOUT = 120.0
"""Seconds a request may take (queue wait included) when neither ``autolabel serve --timeout`` nor
``spec.eventTimeout`` says otherwise: CVAT's own ``CVAT_NUCLIO_DEFAULT_TIMEOUT``."""

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")  # CVAT's URL pattern for function ids
_HANDLER = re.compile(r"^([\w-]+(?:\.[\w-]+)*):(\w+)$")  # Nuclio's handler pattern
KINDS = ("detector", "interactor", "tracker", "reid")
_SPEC_KEYS = ("description", "handler", "runtime", "eventTimeout", "triggers")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration as Nuclio writes them (``"30s"``, ``"2m"``, ``"1m30s"``,
    ``"500ms"``) or a bare number of seconds (``"120"``); `ValueError` otherwise or when not positive."""
    value = text.strip()
    if re.fullmatch(r"\d{1,9}(?:\.\d{1,9})?", value):
        seconds = float(value)
    else:
        parts = _DURATION_PART.findall(value)
        if not value or len(value) > 64 or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"expected a duration such as 30s, 2m or 1m30s, got {text[:40]!r}")
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {text[:40]!r}")
    return seconds


class ServeError(RuntimeError):
    """A function directory cannot be hosted, or the server cannot start; the message names
    the function (or directory, or address) and the cause."""


@dataclass(frozen=True)
class FunctionDefinition:
    """What ``function.yaml`` says about a function, checked and normalised."""

    name: str
    """``metadata.name``: the CVAT function id."""
    directory: Path
    annotations: Mapping[str, str]
    """``metadata.annotations`` with every value as a string (Nuclio stores strings)."""
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    """The part of ``spec`` the dashboard reports (description, handler, runtime,
    eventTimeout, triggers); never ``env`` or ``build``."""
    env: tuple[tuple[str, str], ...]
    handler_module: str
    handler_name: str
    max_body_size: int | None
    """``triggers.*.attributes.maxRequestBodySize`` of the HTTP trigger, if set."""
    port: int | None
    """``triggers.*.attributes.port`` of the HTTP trigger (a pinned port), if set."""
    event_timeout: float | None = None
    """``spec.eventTimeout`` in seconds (Nuclio's per-event limit), if set."""

    @property
    def kind(self) -> str:
        return self.annotations.get("type", "")

    @property
    def module_file(self) -> Path:
        return self.directory.joinpath(*self.handler_module.split(".")).with_suffix(".py")


def _annotation_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ServeError(f"{where} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError as err:
        raise ServeError(f"{where} must be a positive integer, got {value!r}") from err
    if number <= 0:
        raise ServeError(f"{where} must be a positive integer, got {value!r}")
    return number


def _http_trigger(spec: Mapping[str, Any], where: str) -> tuple[int | None, int | None]:
    triggers = spec.get("triggers") or {}
    if not isinstance(triggers, Mapping):
        raise ServeError(f"{where}: spec.triggers must be a mapping")
    for trigger_name, trigger in triggers.items():
        if isinstance(trigger, Mapping) and trigger.get("kind") == "http":
            attributes = trigger.get("attributes") or {}
            at = f"{where}: spec.triggers.{trigger_name}.attributes"
            size = attributes.get("maxRequestBodySize")
            port = attributes.get("port")
            size = None if size is None else _positive_int(size, f"{at}.maxRequestBodySize")
            port = None if port is None else _positive_int(port, f"{at}.port")
            if port is not None and port > 65535:
                raise ServeError(f"{at}.port must be at most 65535, got {port}")
            return size, port
    return None, None


def _check_annotations(annotations: dict[str, str], where: str) -> None:
    kind = annotations.get("type", "")
    if kind not in KINDS:
        log.warning("%s: metadata.annotations.type %r is not one of %s; CVAT lists it as unusable", where, kind, KINDS)
    spec_text = annotations.get("spec", "")
    if spec_text.strip():
        try:
            labels = json.loads(spec_text)
        except json.JSONDecodeError as err:
            raise ServeError(f"{where}: metadata.annotations.spec is not valid JSON: {err}") from err
        if not isinstance(labels, list):
            raise ServeError(
                f"{where}: metadata.annotations.spec must be a JSON list of labels (CVAT answers 500 otherwise)"
            )
    if annotations.get("startswith_box", "").lower() == "false":
        log.warning("%s: startswith_box 'false' means true to CVAT (bool of a string); omit the key", where)


def read_function_dir(directory: str | os.PathLike[str]) -> FunctionDefinition:
    """Parse and check ``<directory>/function.yaml``; raises `ServeError` naming the field."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    root = Path(directory).resolve()
    yaml_file = root / "function.yaml"
    if not yaml_file.is_file():
        raise ServeError(f"{root}: no function.yaml (not a function directory)")
    try:
        data = YAML(typ="safe", pure=True).load(yaml_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YAMLError) as err:
        raise ServeError(f"{yaml_file}: cannot read: {err}") from err
    except RecursionError as err:
        raise ServeError(f"{yaml_file}: cannot read: nested too deeply") from err
    where = str(yaml_file)
    if not isinstance(data, Mapping):
        raise ServeError(f"{where}: must be a mapping with metadata and spec")
    metadata = data.get("metadata")
    spec = data.get("spec")
    if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
        raise ServeError(f"{where}: needs the mappings metadata and spec")
    name = metadata.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise ServeError(f"{where}: metadata.name must match [a-zA-Z0-9_.-]+ (the CVAT function id), got {name!r}")
    raw_annotations = metadata.get("annotations")
    if not isinstance(raw_annotations, Mapping):
        raise ServeError(f"{where}: metadata.annotations is required by CVAT (a mapping)")
    for key, value in raw_annotations.items():
        if isinstance(value, (Mapping, list)):
            raise ServeError(
                f"{where}: metadata.annotations.{key} must be a string (Nuclio stores strings; CVAT answers 500 "
                f"otherwise); write JSON labels as a block: `spec: |`"
            )
    annotations = {str(k): _annotation_text(v) for k, v in raw_annotations.items()}
    _check_annotations(annotations, where)
    description = spec.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ServeError(f"{where}: spec.description is required (CVAT 2.17 answers 500 for the whole list without it)")
    handler = str(spec.get("handler") or "main:handler")
    match = _HANDLER.match(handler)
    if not match:
        raise ServeError(f"{where}: spec.handler must look like 'main:handler', got {handler!r}")
    env: list[tuple[str, str]] = []
    for i, entry in enumerate(spec.get("env") or []):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ServeError(f"{where}: spec.env[{i}] must be a mapping with name and value")
        if "value" not in entry:
            log.warning("%s: spec.env[%d] (%s) has no plain value; not applied", where, i, entry["name"])
            continue
        env.append((entry["name"], _annotation_text(entry["value"])))
    max_body, port = _http_trigger(spec, where)
    event_timeout = None
    if spec.get("eventTimeout") is not None:
        try:
            event_timeout = parse_duration(str(spec["eventTimeout"]))
        except ValueError as err:
            raise ServeError(f"{where}: spec.eventTimeout: {err}") from err
    labels = metadata.get("labels") or {}
    definition = FunctionDefinition(
        name=name,
        directory=root,
        annotations=annotations,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        spec={key: spec[key] for key in _SPEC_KEYS if key in spec},
        env=tuple(env),
        handler_module=match.group(1),
        handler_name=match.group(2),
        max_body_size=max_body,
        port=port,
        event_timeout=event_timeout,
    )
    if not definition.module_file.is_file():
        raise ServeError(f"{where}: spec.handler {handler!r} needs {definition.module_file}, which does not exist")
    return definition
