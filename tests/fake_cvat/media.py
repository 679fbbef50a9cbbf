"""Uploaded media → frames, compressed JPEGs, previews and zip chunks."""

from __future__ import annotations

import io
import mimetypes
import re
import zipfile
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from tests.fake_cvat.state import Frame

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MAX_CHUNK_SIZE = 72


class MediaError(ValueError):
    """An uploaded file the fake cannot turn into frames; the message names the file."""


def expand_archives(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Replace zip archives by the image files they hold (as CVAT does)."""
    result: list[tuple[str, bytes]] = []
    for name, content in files:
        if name.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(io.BytesIO(content)) as archive:
                    for info in archive.infolist():
                        if not info.is_dir() and PurePosixPath(info.filename).suffix.lower() in IMAGE_EXTENSIONS:
                            result.append((info.filename, archive.read(info)))
            except zipfile.BadZipFile as err:
                raise MediaError(f"{name}: not a valid zip archive") from err
        else:
            result.append((name, content))
    return result


def natural_key(name: str) -> list:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def make_frame(name: str, content: bytes) -> Frame:
    """Decode an uploaded image just enough to know its size and type."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
            image_format = image.format or ""
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(f"{name}: unsupported media (not an image the fake can decode)") from err
    extension = PurePosixPath(name).suffix.lower() or f".{image_format.lower()}"
    mime = Image.MIME.get(image_format) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Frame(name=name, width=width, height=height, original=content, mime=mime, extension=extension)


def default_chunk_size(frames: list[Frame]) -> int:
    """CVAT's rule for image tasks: ``max(2, min(72, 36*1920*1080 // mean area))``."""
    if not frames:
        return MAX_CHUNK_SIZE
    mean_area = sum(f.width * f.height for f in frames) / len(frames)
    return max(2, min(MAX_CHUNK_SIZE, int(36 * 1920 * 1080 // max(mean_area, 1))))


def compressed(frame: Frame, quality: int) -> bytes:
    """The frame as the JPEG CVAT serves for ``quality=compressed`` (cached on the frame)."""
    if frame.compressed is None:
        with Image.open(io.BytesIO(frame.original)) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=max(1, min(quality, 95)))
        frame.compressed = buffer.getvalue()
    return frame.compressed


def preview(frame: Frame) -> bytes:
    """A JPEG thumbnail no larger than 256x256."""
    with Image.open(io.BytesIO(frame.original)) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((256, 256))
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG")
    return buffer.getvalue()


def chunk_zip(frames: list[Frame], *, original: bool, quality: int) -> bytes:
    """A zip chunk: ``000000.png…`` (original bytes) or ``000000.jpeg…`` (compressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, frame in enumerate(frames):
            if original:
                archive.writestr(f"{index:06d}{frame.extension}", frame.original)
            else:
                archive.writestr(f"{index:06d}.jpeg", compressed(frame, quality))
    return buffer.getvalue()
