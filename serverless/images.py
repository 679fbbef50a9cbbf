"""Decoding images safely: RGB uint8 arrays, EXIF orientation applied, bombs refused.

Limits, checked from the image header before any pixel is decoded:

- at most `max_pixels` pixels (``AUTOLABEL_MAX_IMAGE_PIXELS``, default 100 million);
- the longer side at most `MAX_ASPECT_RATIO` (500) times the shorter: the models shrink a
  frame to a fixed size (Grounding DINO to at most 1333 pixels, SAM to 1024 on the longer
  side), and a more elongated frame loses its shorter side (1x1333 already fails in Grounding
  DINO's resize, 1x2049 in SAM's).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_ASPECT_RATIO",
    "ImageError",
    "decode_image",
    "find_images",
    "max_pixels",
    "read_image",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
_DEFAULT_MAX_PIXELS = 100_000_000
MAX_ASPECT_RATIO = 500
"""The longer side of an image may be at most this many times its shorter side."""


class ImageError(ValueError):
    """An image could not be decoded or is too large; the message says which and why."""


def max_pixels() -> int:
    """The largest image accepted, in pixels (``AUTOLABEL_MAX_IMAGE_PIXELS``, default 100 MP)."""
    return int(os.environ.get("AUTOLABEL_MAX_IMAGE_PIXELS", _DEFAULT_MAX_PIXELS))


def decode_image(data: bytes, *, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 RGB array.

    The size is checked from the header before any pixel is decoded, so a decompression bomb
    (e.g. a 30000x30000 PNG of a few kB) is refused without allocating it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = max_pixels()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > limit:
                raise ImageError(f"{name}: {width}x{height} pixels exceeds the limit of {limit} pixels")
            if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)) or min(width, height) < 1:
                raise ImageError(
                    f"{name}: {width}x{height} pixels is too elongated: the longer side may be at most "
                    f"{MAX_ASPECT_RATIO} times the shorter (the models shrink frames to about 1000 pixels)"
                )
            img = ImageOps.exif_transpose(img)
            rgb = img.convert("RGB")
            rgb.load()
    except UnidentifiedImageError as err:
        raise ImageError(f"{name}: not a recognised image format") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: {err}") from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"{name}: cannot decode image: {err}") from err
    return np.array(rgb, dtype=np.uint8)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read: {err.strerror or err}") from err
    return decode_image(data, name=str(path))


def find_images(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    """Files named directly plus image files found (recursively, sorted) in folders.

    Returns the files and a list of problems (paths that do not exist).
    """
    files: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems
