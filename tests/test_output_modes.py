"""Every file autolabel writes gets the mode a plain ``open(path, "w")`` would give it (the
umask for a new file, the old mode for a replaced one): rendered functions used to be forced
to 0644, and COCO files written through ``mkstemp`` were 0600."""

from __future__ import annotations

import os
import stat

import pytest

from serverless.files import write_text_atomic


def plain_mode(path) -> int:
    with open(path, "w"):
        pass
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "new.txt", "x")
        expected = plain_mode(tmp_path / "plain.txt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == expected == 0o666 & ~umask
    os.chmod(tmp_path / "new.txt", 0o640)
    write_text_atomic(tmp_path / "new.txt", "y")
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o640
    assert (tmp_path / "new.txt").read_text() == "y"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_rendered_functions_follow_the_umask(tmp_path):
    from serverless.ontology import load_ontology
    from serverless.render import render_functions
    from tests.conftest import SAMPLES

    previous = os.umask(0o027)
    try:
        (directory, *_) = render_functions(load_ontology(SAMPLES / "ontology.yaml"), tmp_path)
    finally:
        os.umask(previous)
    modes = {stat.S_IMODE(os.stat(p).st_mode) for p in directory.iterdir() if p.is_file()}
    assert modes == {0o640}
