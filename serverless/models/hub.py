"""Where a transformers model loads from: a ``save_pretrained`` directory or a Hugging Face hub
id, settled in seconds before anything is loaded. One owner for every transformers backend
(Grounding DINO, MM-Grounding-DINO, OWLv2, SAM 2.1, SAM 3, CLIP).

A path must be an existing directory. A hub id is looked up in the Hugging Face cache; when the
hub is off (``HF_HUB_OFFLINE``), downloads are not allowed, or the hub does not answer a bounded
probe, a cached snapshot is used and a missing one is a `ModelLoadError` saying what to set:
never the hub client's minutes of retries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from serverless.models.registry import ModelLoadError, WeightsSource, url_problem

__all__ = [
    "cached_snapshot",
    "checked_config",
    "load_error",
    "locate_pretrained",
    "looks_like_path",
    "pretrained_on_disk",
]


def looks_like_path(value: str) -> bool:
    """A local path rather than a hub id: absolute, ``~``/``./``/``../``, existing, or with a
    separator but not of the hub form ``OWNER/NAME``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if value.startswith(("~", "./", "../", ".\\", "..\\")) or os.path.isabs(value):
        return True
    if os.path.exists(os.path.expanduser(value)):
        return True
    if "/" in value or os.sep in value:
        try:
            validate_repo_id(value)
        except HFValidationError:
            return True
    return False


def cached_snapshot(model: str) -> str | None:
    """The Hugging Face cache snapshot of hub id ``model``, or None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except HFValidationError:
        return None
    return str(Path(cached).parent) if isinstance(cached, str) else None


def pretrained_on_disk(weights: str) -> str | None:
    """Where ``weights`` (a directory or hub id) are on this machine, or None; never downloads."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return str(path)
    return None if looks_like_path(weights) else cached_snapshot(weights)


def locate_pretrained(model: str, download: bool, *, display: str, example: str, hint: str) -> WeightsSource:
    """Where ``model`` (a directory or a hub id) loads from (see the module docstring).

    ``display`` names the model in messages ("OWLv2"), ``example`` is a hub id to suggest and
    ``hint`` says what to set when the weights are nowhere (the backend's variable or option).
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    where = f"cannot load {display} from {model!r}"
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise ModelLoadError(
                f"{where}: the directory does not exist (give a directory written by save_pretrained, "
                f"or a hub id such as {example})"
            )
        if not path.is_dir():
            raise ModelLoadError(f"{where}: not a directory (a folder written by save_pretrained is expected)")
        return WeightsSource(str(path), f"{display} from {model}")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ModelLoadError(f"{where}: neither an existing directory nor a hub id OWNER/NAME") from None
    snapshot = cached_snapshot(model)
    if constants.is_offline_mode() or not download:
        if snapshot is None:
            why = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "downloads are off"
            raise ModelLoadError(f"{where}: not in the Hugging Face cache and {why}; {hint}")
        return WeightsSource(model, f"{display} {model} from the hub cache")
    problem = url_problem(constants.ENDPOINT)
    if problem is None:
        return WeightsSource(model, f"{display} {model} from the hub" + (" cache" if snapshot else ""))
    if snapshot is not None:
        return WeightsSource(snapshot, f"{display} {model} from the hub cache (hub unreachable)")
    raise ModelLoadError(
        f"{where}: not in the Hugging Face cache and the hub {constants.ENDPOINT} cannot be reached "
        f"({problem}); {hint}"
    )


def load_error(display: str, model: str, err: BaseException) -> ModelLoadError:
    """A `ModelLoadError` in one line for a ``from_pretrained`` failure (``raise ... from err``)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelLoadError(f"cannot load {display} from {model!r}: {first}")


def checked_config(model_id: str, model_type: str) -> Any:
    """The ``AutoConfig`` of ``model_id``, refused (ValueError, for `load_error`) unless its
    ``model_type`` is ``model_type``. A named transformers class "loads" another model's
    checkpoint with only a warning, leaving the weights it lacks random; so the checkpoint's own
    type is checked before any weights are read, and the config is passed on to the model."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_id)
    if config.model_type != model_type:
        raise ValueError(f"it holds a {config.model_type!r} model, not {model_type!r}")
    return config
