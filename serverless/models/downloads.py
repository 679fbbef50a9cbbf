"""Public checkpoints downloaded once into the autolabel cache, checked against their digests.

A backend whose default weights are a single file at a public URL (SAM's checkpoints,
YOLO-World's ultralytics release assets) keeps it at ``$AUTOLABEL_CACHE/<backend>/<file>``
(default ``~/.cache/autolabel``). `locate_public` finds it before anything loads (the cached
file, else the URL when a bounded probe reaches it); `download_once` fetches it. Offline mode
(``HF_HUB_OFFLINE`` as huggingface_hub reads it, or ``AUTOLABEL_OFFLINE=1``) forbids the
download; a file not yet cached is then a `ModelLoadError` saying what to set. The download
goes to a ``.partial`` file that is renamed into place only once complete and only when it
matches every digest recorded for it (SHA-256, MD5).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from serverless.models.registry import ModelLoadError, WeightsSource, url_problem

__all__ = ["PublicCheckpoint", "cache_root", "download_once", "downloads_off", "locate_public"]

_DIGEST_NAMES = {"sha256": "SHA-256", "md5": "MD5"}


@dataclass(frozen=True)
class PublicCheckpoint:
    """One published weights file."""

    url: str
    sha256: str | None = None
    """Hex SHA-256 of the file; None when none was recorded."""
    md5: str | None = None
    """Hex MD5 of the file (what SAM's publishers give); None when none was recorded. With
    neither digest the file is taken as served."""

    @property
    def digests(self) -> dict[str, str]:
        """The recorded digests by ``hashlib`` name."""
        return {name: value for name, value in (("sha256", self.sha256), ("md5", self.md5)) if value is not None}

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


def _file_digests(path: Path, names: list[str]) -> dict[str, str]:
    """The ``hashlib`` digests ``names`` of a file, in one streamed read."""
    hashes = {name: hashlib.new(name) for name in names}
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            for digest in hashes.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in hashes.items()}


def locate_public(
    checkpoint: PublicCheckpoint, folder: str, *, display: str, download: bool, hint: str
) -> WeightsSource:
    """Where ``checkpoint`` loads from, checked in seconds: the file cached under ``folder``,
    else (``load_from`` None) its URL, when downloads are allowed and it answers a bounded
    probe. `ModelLoadError` in one line otherwise; ``display`` names the weights ("SAM vit_h"),
    ``hint`` says what to set instead."""
    cached = checkpoint.cache_path(folder)
    if cached.is_file():
        return WeightsSource(str(cached), f"{display} from {cached}")
    missing = f"{display} weights are not cached at {cached}"
    if not download:
        raise ModelLoadError(f"{missing} and downloads are off; {hint}")
    if downloads_off():
        raise ModelLoadError(f"{missing} and downloads are off (offline mode); {hint}")
    problem = url_problem(checkpoint.url)
    if problem is not None:
        raise ModelLoadError(f"{missing} and {checkpoint.url} cannot be reached ({problem}); {hint}")
    return WeightsSource(None, f"{display} (downloading {checkpoint.url} once)")


def download_once(checkpoint: PublicCheckpoint, target: Path, *, display: str, hint: str) -> Path:
    """``target`` when it exists, else ``checkpoint`` downloaded there (checked against each
    digest recorded for it). `ModelLoadError` in one line when downloads are off, the download
    fails or a digest differs; ``hint`` says what to set instead."""
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
    expected = checkpoint.digests
    found = _file_digests(partial, list(expected)) if expected else {}
    for name, value in expected.items():
        if found[name] != value:
            partial.unlink(missing_ok=True)
            raise ModelLoadError(
                f"{display} download from {checkpoint.url} has {_DIGEST_NAMES[name]} {found[name]}, expected {value}"
            )
    partial.replace(target)
    return target
