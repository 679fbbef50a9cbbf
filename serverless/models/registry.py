"""Load each model once per process, on the right device, with the right precision.

Models are never loaded at import: callers ask `load_once(key, factory)` and the factory
runs on the first request only. Keys name what was loaded (kind, id/path, device).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["ModelLoadError", "select_device", "inference_context", "load_once", "loaded_keys", "clear"]

T = TypeVar("T")

_CACHE: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


class ModelLoadError(RuntimeError):
    """Weights could not be found or loaded; the message names the location and the cause."""


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
