"""Image paths in the COCO files that ``autolabel prelabel`` and ``demo`` write: one rule.

Each image's COCO ``file_name`` is its path relative to the *images root*: the deepest folder
that holds every image argument of the command, where a folder argument counts as itself and
a file argument as the folder it is in. One folder argument: names are relative to that folder.
Files given directly from one folder: their bare names. Arguments from several places: paths
from their common folder (``a/x.jpg``, ``b/x.jpg``). The root is written to the COCO ``info``
as ``images_root``, and ``autolabel import --coco FILE --images ROOT`` finds every image again.
Names use ``/`` and never start with ``/`` or ``..``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["coco_file_name", "images_root"]


def images_root(arguments: Iterable[str | os.PathLike[str]]) -> Path:
    """The deepest folder holding every argument (a folder: itself, a file: its folder), as
    an absolute path with ``..`` folded and symbolic links kept. Arguments that do not exist
    are left out; with none left, the current folder."""
    folders = []
    for raw in arguments:
        path = Path(os.path.abspath(raw))
        if path.is_dir():
            folders.append(str(path))
        elif path.exists():
            folders.append(str(path.parent))
    return Path(os.path.commonpath(folders)) if folders else Path(os.path.abspath(os.curdir))


def coco_file_name(path: str | os.PathLike[str], root: Path) -> str:
    """``path`` relative to ``root`` (from `images_root`), with ``/`` separators."""
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()
