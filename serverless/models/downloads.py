"""Public checkpoints downloaded once into the autolabel cache, checked against a digest.

A backend whose default weights are a single file at a public URL (YOLO-World's ultralytics
release assets) keeps it at ``$AUTOLABEL_CACHE/<backend>/<file>`` (default
``~/.cache/autolabel``). Offline mode (``HF_HUB_OFFLINE`` as huggingface_hub reads it, or
``AUTOLABEL_OFFLINE=1``) forbids the download; a file not yet cached is then a `ModelLoadError`
saying what to set. The download goes to a ``.partial`` file that is renamed into place only
once complete and, when a SHA-256 is pinned, only when it matches.

These are the rules `serverless.models.sam` applies to SAM's checkpoints (with MD5 there).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from serverless.models.registry import ModelLoadError

__all__ = ["PublicCheckpoint", "cache_root", "download_once", "downloads_off"]


@dataclass(frozen=True)
class PublicCheckpoint:
    """One published weights file."""

    url: str
    sha256: str | None
    """Hex digest of the file; None when none was recorded (the file is then taken as served)."""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]

    def cache_path(self, folder: str) -> Path:
        """Where it is kept once downloaded: ``$AUTOLABEL_CACHE/<folder>/<file>``."""
        return cache_root() / folder / self.filename


def cache_root() -> Path:
    """``$AUTOLABEL_CACHE``, default ``~/.cache/autolabel``."""
    return Path(os.environ.get("AUTOLABEL_CACHE") or Path.home() / ".cache" / "autolabel")


def downloads_off() -> bool:
    """Offline mode: ``HF_HUB_OFFLINE`` as huggingface_hub reads it, or ``AUTOLABEL_OFFLINE=1``."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("AUTOLABEL_OFFLINE") == "1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_once(checkpoint: PublicCheckpoint, target: Path, *, display: str, hint: str) -> Path:
    """``target`` when it exists, else ``checkpoint`` downloaded there (checked against its
    SHA-256 when one is pinned). `ModelLoadError` in one line when downloads are off, the
    download fails or the digest differs; ``hint`` says what to set instead."""
    if target.is_file():
        return target
    if downloads_off():
        raise ModelLoadError(
            f"{display} weights are not cached at {target} and downloads are off (offline mode); {hint}"
        )
    import torch.hub

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        torch.hub.download_url_to_file(checkpoint.url, str(partial), progress=True)
    except OSError as err:  # urllib's URLError and HTTPError are OSErrors
        partial.unlink(missing_ok=True)
        raise ModelLoadError(f"cannot download {display} weights from {checkpoint.url}: {err}") from err
    if checkpoint.sha256 is not None:
        digest = _sha256(partial)
        if digest != checkpoint.sha256:
            partial.unlink(missing_ok=True)
            raise ModelLoadError(
                f"{display} download from {checkpoint.url} has SHA-256 {digest}, expected {checkpoint.sha256}"
            )
    partial.replace(target)
    return target
