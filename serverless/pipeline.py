"""The bulk pre-labeler: model settings, model loading and batched runs over image files.

One model object (`GroundingDino` or `GroundedSam`) serves this pipeline, the Nuclio
functions and the cvat-sdk function modules alike.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from serverless.detections import Detections
from serverless.images import ImageError, read_image
from serverless.ontology import Ontology

__all__ = [
    "Detector",
    "FrameResult",
    "ModelSettings",
    "WeightsSource",
    "gdino_source",
    "load_detector",
    "prelabel_files",
    "sam_source",
    "url_problem",
]


class Detector(Protocol):
    def detect(
        self, images: Sequence[np.ndarray], ontology: Ontology, *, threshold: float | None = None
    ) -> list[Detections]: ...


@dataclass(frozen=True)
class ModelSettings:
    """Where the weights are. Resolution: explicit value → environment → public default."""

    gdino_model: str
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_h"
    device: str | None = None

    @classmethod
    def from_env(
        cls,
        *,
        gdino_model: str | None = None,
        sam_checkpoint: str | None = None,
        sam_model_type: str | None = None,
        device: str | None = None,
    ) -> ModelSettings:
        from serverless.models.grounding_dino import DEFAULT_GDINO_MODEL

        return cls(
            gdino_model=gdino_model or os.environ.get("AUTOLABEL_GDINO_MODEL") or DEFAULT_GDINO_MODEL,
            sam_checkpoint=sam_checkpoint or os.environ.get("AUTOLABEL_SAM_CHECKPOINT") or None,
            sam_model_type=sam_model_type or os.environ.get("AUTOLABEL_SAM_MODEL_TYPE") or "vit_h",
            device=device or os.environ.get("AUTOLABEL_DEVICE") or None,
        )

    @property
    def tiny(self) -> bool:
        """True when any configured model is a random-init tiny model."""
        from serverless.models.tiny import is_tiny

        return is_tiny(self.gdino_model) or is_tiny(self.sam_checkpoint)


@dataclass(frozen=True)
class WeightsSource:
    """Where a model will load from, decided before anything is loaded or downloaded."""

    load_from: str | None
    """A directory, a hub id or a checkpoint file; None: the public SAM checkpoint (downloaded)."""
    note: str
    """Where the weights come from, in words for the user."""


_PROBE_SECONDS = 3.0
_GDINO_HINT = (
    "set AUTOLABEL_GDINO_MODEL (or --gdino-model) to a local directory written by save_pretrained "
    "(python -m serverless.weights fetch), or go online"
)
_SAM_HINT = (
    "set AUTOLABEL_SAM_CHECKPOINT (or --sam-checkpoint) to a local .pth file "
    "(python -m serverless.weights fetch --sam TYPE), or go online"
)


def url_problem(url: str, timeout: float = _PROBE_SECONDS) -> str | None:
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


def _looks_like_path(value: str) -> bool:
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


def gdino_source(model: str) -> WeightsSource:
    """Where Grounding DINO ``model`` (a directory or a hub id) loads from, checked in seconds.

    A path must be an existing directory. A hub id is looked up in the Hugging Face cache;
    when the hub is off (``HF_HUB_OFFLINE``) or does not answer a bounded probe, a cached
    snapshot is used and a missing one is a `ModelLoadError` saying what to set: never the
    hub client's minutes of retries.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from serverless.models.registry import ModelLoadError

    where = f"cannot load Grounding DINO from {model!r}"
    if _looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise ModelLoadError(
                f"{where}: the directory does not exist (give a directory written by save_pretrained, "
                "or a hub id such as IDEA-Research/grounding-dino-tiny)"
            )
        if not path.is_dir():
            raise ModelLoadError(f"{where}: not a directory (a folder written by save_pretrained is expected)")
        return WeightsSource(str(path), f"Grounding DINO from {model}")
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ModelLoadError(f"{where}: neither an existing directory nor a hub id OWNER/NAME") from None
    cached = try_to_load_from_cache(model, "config.json")
    snapshot = str(Path(cached).parent) if isinstance(cached, str) else None
    if constants.is_offline_mode():
        if snapshot is None:
            raise ModelLoadError(f"{where}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; {_GDINO_HINT}")
        return WeightsSource(model, f"Grounding DINO {model} from the hub cache")
    problem = url_problem(constants.ENDPOINT)
    if problem is None:
        return WeightsSource(model, f"Grounding DINO {model} from the hub" + (" cache" if snapshot else ""))
    if snapshot is not None:
        return WeightsSource(snapshot, f"Grounding DINO {model} from the hub cache (hub unreachable)")
    raise ModelLoadError(
        f"{where}: not in the Hugging Face cache and the hub {constants.ENDPOINT} cannot be reached "
        f"({problem}); {_GDINO_HINT}"
    )


def sam_source(model_type: str, checkpoint: str | None, *, download: bool = True) -> WeightsSource:
    """Where SAM loads from: the configured checkpoint (which must exist), else the public
    checkpoint for ``model_type`` from the autolabel cache, else (``download``) from its URL when
    a bounded probe reaches it. `ModelLoadError` in one line otherwise, before anything loads."""
    from serverless.models.registry import ModelLoadError
    from serverless.models.sam import SAM_CHECKPOINTS

    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ModelLoadError(
                f"SAM checkpoint {checkpoint!r} does not exist "
                "(AUTOLABEL_SAM_CHECKPOINT / --sam-checkpoint must name a .pth file)"
            )
        return WeightsSource(str(path), f"SAM checkpoint {checkpoint}")
    if model_type not in SAM_CHECKPOINTS:
        raise ModelLoadError(
            f"no SAM checkpoint configured for model type {model_type!r} (set AUTOLABEL_SAM_CHECKPOINT)"
        )
    url = SAM_CHECKPOINTS[model_type][0]
    cache = Path(os.environ.get("AUTOLABEL_CACHE", Path.home() / ".cache" / "autolabel")) / "sam"
    cached = cache / url.rsplit("/", 1)[1]
    if cached.is_file():
        return WeightsSource(str(cached), f"SAM {model_type} from {cached}")
    missing = f"SAM {model_type} weights are not cached at {cached}"
    if not download:
        raise ModelLoadError(f"{missing}; set AUTOLABEL_SAM_CHECKPOINT for masks")
    from huggingface_hub import constants

    if constants.is_offline_mode() or os.environ.get("AUTOLABEL_OFFLINE") == "1":
        raise ModelLoadError(f"{missing} and downloads are off (offline mode); {_SAM_HINT}")
    problem = url_problem(url)
    if problem is not None:
        raise ModelLoadError(f"{missing} and {url} cannot be reached ({problem}); {_SAM_HINT}")
    return WeightsSource(None, f"SAM {model_type} (downloading {url} once)")


def load_detector(settings: ModelSettings, *, masks: bool) -> Detector:
    """Grounding DINO alone, or Grounded-SAM when ``masks`` is asked for.

    Where every model comes from is settled first (`gdino_source`, `sam_source`), so missing
    weights fail in seconds with one line, before anything heavy is loaded.
    """
    gdino = gdino_source(settings.gdino_model)
    sam = sam_source(settings.sam_model_type, settings.sam_checkpoint) if masks else None

    from serverless.models.grounded_sam import GroundedSam
    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.sam import SamSegmenter

    detector = GroundingDino.load(gdino.load_from, device=settings.device)
    if sam is None:
        return detector
    segmenter = SamSegmenter.load(settings.sam_model_type, sam.load_from, device=settings.device)
    return GroundedSam(detector, segmenter)


@dataclass(frozen=True)
class FrameResult:
    """One input file: its detections, or the reason it was skipped."""

    path: Path
    width: int = 0
    height: int = 0
    detections: Detections | None = None
    error: str | None = None
    seconds: float = field(default=0.0, compare=False)


def prelabel_files(
    files: Sequence[Path],
    detector: Detector,
    ontology: Ontology,
    *,
    threshold: float | None = None,
    batch_size: int = 4,
    on_result: Callable[[FrameResult], None] | None = None,
) -> Iterator[FrameResult]:
    """Run ``detector`` over ``files`` in batches; unreadable files are reported, not fatal."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        images: list[np.ndarray] = []
        readable: list[Path] = []
        for path in batch:
            try:
                images.append(read_image(path))
                readable.append(path)
            except ImageError as err:
                result = FrameResult(path=path, error=str(err))
                if on_result:
                    on_result(result)
                yield result
        if not images:
            continue
        began = time.perf_counter()
        outputs = detector.detect(images, ontology, threshold=threshold)
        per_image = (time.perf_counter() - began) / len(images)
        for path, image, det in zip(readable, images, outputs, strict=True):
            result = FrameResult(path, image.shape[1], image.shape[0], det, seconds=per_image)
            if on_result:
                on_result(result)
            yield result
