"""Writing output files: one rule for every file autolabel writes.

`write_text_atomic` writes a temporary file beside the target and renames it over the target,
so a reader never sees half a file and a crash leaves the old one. The file gets the mode a plain
``open(path, "w")`` would give it: an existing file keeps its mode, a new one gets ``0o666`` less
the umask (the temporary file is created with ``open(..., "x")``; ``tempfile.mkstemp`` would
make it ``0o600``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_text_atomic"]


def write_text_atomic(path: str | os.PathLike[str], text: str, *, newline: str | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8; ``newline`` as for `open`) atomically."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline=newline) as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
