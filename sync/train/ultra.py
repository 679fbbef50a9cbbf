"""ultralytics, the trainer: base models, a training, a resumed training, the final metrics.

Nothing here reads the store; `sync.train.run` records what these return. ultralytics is
imported inside the functions, after `serverless.models.yolo_world.ultralytics_environment`
(no pip installs, no network probes, PIL's opener kept).

**Base models** (``--model``): a checkpoint path (``.pt``), a model yaml (a path, or a name
ultralytics ships such as ``yolo11n.yaml``: random init), or a public YOLO11 checkpoint name
(`PUBLIC`: ``yolo11n.pt`` … ``yolo11x.pt``), downloaded once into the autolabel cache by
`serverless.models.downloads` — never by ultralytics, which would fetch any name it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sync.train.plan import TrainingError

__all__ = ["PUBLIC", "check_device", "metrics_of", "resolve_base_model", "resume", "train", "versions"]

_RELEASE = "https://github.com/ultralytics/assets/releases/download/v8.3.0"
PUBLIC = {f"yolo11{size}.pt": f"{_RELEASE}/yolo11{size}.pt" for size in "nsmlx"}
"""Public COCO-pretrained YOLO11 detection checkpoints (ultralytics' assets release)."""
_CACHE_FOLDER = "yolo"
_METRICS = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall",
            "metrics/mAP50(B)": "map50", "metrics/mAP50-95(B)": "map", "fitness": "fitness"}


def _ultralytics() -> None:
    from serverless.models.yolo_world import ultralytics_environment

    ultralytics_environment()


def resolve_base_model(model: str) -> str:
    """What ultralytics is given for ``--model`` (module docstring): an existing file, a yaml
    it ships, or the cached public checkpoint (downloaded once). `TrainingError` in one line."""
    text = str(model).strip()
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")):
        if path.is_file():
            return str(path.resolve())
        _ultralytics()
        from ultralytics.nn.tasks import yaml_model_load

        try:
            yaml_model_load(text)  # what YOLO(text) reads: yolo11n.yaml is yolo11.yaml at scale n
            return text
        except (FileNotFoundError, OSError):
            raise TrainingError(f"--model {text}: no such model yaml (a path, or one ultralytics ships such as "
                                "yolo11n.yaml)") from None
    if not text.endswith(".pt"):
        raise TrainingError(f"--model must be a .pt checkpoint or a .yaml model, got {text!r}")
    if path.is_file():
        return str(path.resolve())
    if text not in PUBLIC:
        raise TrainingError(f"--model {text}: no such checkpoint (public ones: {', '.join(PUBLIC)})")
    from serverless.models.downloads import PublicCheckpoint, download_once
    from serverless.models.registry import ModelLoadError

    public = PublicCheckpoint(PUBLIC[text], sha256=None)
    try:
        return str(download_once(public, public.cache_path(_CACHE_FOLDER), display=f"YOLO {text}",
                                 hint="give --model a local .pt or .yaml"))
    except ModelLoadError as err:
        raise TrainingError(f"--model {text}: {err}") from None


def check_device(device: str | None) -> None:
    """`TrainingError` when ultralytics cannot train on ``device`` (checked by its own
    ``select_device``, before anything is written); None lets ultralytics choose."""
    if not device:
        return
    _ultralytics()
    from ultralytics.utils.torch_utils import select_device

    try:
        select_device(device, verbose=False)
    except ValueError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingError(f"--device {device}: {first}") from None


def metrics_of(results: Any) -> dict[str, float]:
    """``{precision, recall, map50, map, fitness}`` of ultralytics' final validation."""
    found: Mapping[str, Any] = getattr(results, "results_dict", None) or {}
    return {ours: round(float(found[theirs]), 6) for theirs, ours in _METRICS.items() if theirs in found}


def _best_of(trainer: Any) -> Path:
    best = Path(trainer.best)
    if not best.is_file():
        last = Path(trainer.last)
        if not last.is_file():
            raise TrainingError(f"training wrote no weights under {Path(trainer.save_dir)}")
        return last
    return best


def train(data_yaml: Path, base_model: str, out: Path, settings: Mapping[str, Any]) -> tuple[Path, dict[str, float]]:
    """Train ``base_model`` on ``data_yaml`` into ``out/train`` (ultralytics' project ``out``,
    run name ``train``); returns the best weights and the final validation metrics."""
    _ultralytics()
    from ultralytics import YOLO

    model = YOLO(base_model, task="detect")
    results = model.train(data=str(data_yaml), project=str(out), name="train", exist_ok=True, **dict(settings))
    return _best_of(model.trainer), metrics_of(results)


def resume(last: Path) -> tuple[Path, dict[str, float]]:
    """Carry on an interrupted training from its ``last.pt`` (ultralytics' own resume: same
    arguments, optimizer state and epoch)."""
    _ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(last), task="detect")
    results = model.train(resume=True)
    return _best_of(model.trainer), metrics_of(results)


def versions() -> dict[str, str]:
    """The versions a training run records: ultralytics, torch, autolabel."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("ultralytics", "torch", "autolabel-cvat"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return found
