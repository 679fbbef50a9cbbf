"""Choosing weights for the demo: real ones when present or reachable, tiny ones otherwise."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from serverless.pipeline import ModelSettings

__all__ = ["DemoSettings", "resolve_demo_settings", "sample_dir"]


def sample_dir() -> Path:
    """The bundled sample photographs (``AUTOLABEL_SAMPLES`` overrides)."""
    configured = os.environ.get("AUTOLABEL_SAMPLES")
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "samples"


@dataclass(frozen=True)
class DemoSettings:
    settings: ModelSettings
    masks: bool
    notes: tuple[str, ...]


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """A bounded DNS + TCP probe (name resolution alone can stall ~25 s offline)."""
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome and outcome[0])


def _gdino_available(model: str) -> tuple[bool, str]:
    if Path(model).is_dir():
        return True, f"Grounding DINO from {model}"
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return True, f"Grounding DINO {model} from the hub cache"
    except ImportError:
        return False, "huggingface_hub is not installed"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False, f"{model} is not in the hub cache and HF_HUB_OFFLINE=1"
    if not _host_reachable("huggingface.co"):
        return False, f"{model} is not in the hub cache and the hub is unreachable"
    return True, f"Grounding DINO {model} (downloading from the hub on first use)"


def _sam_available(settings: ModelSettings) -> tuple[bool, str]:
    from serverless.models.sam import SAM_CHECKPOINTS

    if settings.sam_checkpoint:
        ok = Path(settings.sam_checkpoint).is_file()
        return ok, f"SAM checkpoint {settings.sam_checkpoint}" + ("" if ok else " does not exist")
    url = SAM_CHECKPOINTS.get(settings.sam_model_type, ("", ""))[0]
    cache = Path(os.environ.get("AUTOLABEL_CACHE", Path.home() / ".cache" / "autolabel")) / "sam"
    cached = cache / url.rsplit("/", 1)[-1] if url else None
    if cached is not None and cached.is_file():
        return True, f"SAM {settings.sam_model_type} from {cached}"
    return False, "no SAM checkpoint (set AUTOLABEL_SAM_CHECKPOINT): boxes only, no masks"


def resolve_demo_settings(tiny_dir: Path) -> DemoSettings:
    """Real Grounding DINO (and SAM, when its checkpoint is on disk) if possible, else tiny models."""
    settings = ModelSettings.from_env()
    gdino_ok, gdino_note = _gdino_available(settings.gdino_model)
    if gdino_ok:
        sam_ok, sam_note = _sam_available(settings)
        return DemoSettings(settings, masks=sam_ok, notes=(f"using {gdino_note}", sam_note))
    from serverless.models.tiny import make_tiny_models

    tiny = make_tiny_models(tiny_dir)
    tiny_settings = ModelSettings(
        gdino_model=str(tiny.gdino_dir),
        sam_checkpoint=str(tiny.sam_checkpoint),
        sam_model_type=str(tiny.sam_model_type),
        device=settings.device,
    )
    return DemoSettings(
        tiny_settings,
        masks=True,
        notes=(f"[bold red]real weights unavailable ({gdino_note}): falling back to tiny random models[/]",),
    )
