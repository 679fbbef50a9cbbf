"""Writing output files: one rule for every file autolabel writes.

`write_text_atomic` (text) and `copy_file_atomic` (the bytes of another file, e.g. a checkpoint
copied into a rendered function) write a temporary file beside the target and rename it over
the target, so a reader never sees half a file and a crash leaves the old one. The file gets
the mode a plain ``open(path, "w")`` would give it: an existing file keeps its mode, a new one
gets ``0o666`` less the umask (the temporary file is created with ``open(..., "x")``;
``tempfile.mkstemp`` would make it ``0o600``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["copy_file_atomic", "write_text_atomic"]


@contextlib.contextmanager
def _replacing(path: Path, mode: str, **options: Any) -> Iterator[IO[Any]]:
    """A new temporary file beside ``path``, opened with ``mode`` (``"x"`` or ``"xb"``) and
    ``options``, that replaces ``path`` once the block ends without an error (and is removed
    otherwise)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, mode, **options) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, newline: str | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8; ``newline`` as for `open`) atomically."""
    with _replacing(Path(path), "x", encoding="utf-8", newline=newline) as stream:
        stream.write(text)


def copy_file_atomic(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Replace ``path`` with a copy of the bytes of the file ``source`` atomically (the file
    ``source`` is opened first: a missing one leaves nothing behind)."""
    with open(source, "rb") as src, _replacing(Path(path), "xb") as stream:
        shutil.copyfileobj(src, stream, 1 << 20)
