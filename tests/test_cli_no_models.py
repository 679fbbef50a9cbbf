"""Without the ``models`` extra a command that runs models ends with one line saying what to
install, not a traceback (found when the wheel was installed without extras)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("missing", ["huggingface_hub", "torch", "transformers"])
def test_demo_without_the_models_extra_is_one_line_saying_what_to_install(tmp_path, missing):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    # a module that is not installed, as Python reports it: importing it raises ModuleNotFoundError
    (blocker / f"{missing}.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {missing!r}'!r}, name={missing!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOLABEL_")}
    env.update(PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "sync.cli", "demo", "--out", str(tmp_path / "o.json"), "--tiny-dir", str(tmp_path / "t")],
        check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{missing} is not installed: pip install 'autolabel-cvat[models]'" in " ".join(result.stderr.split())


def test_qa_without_the_qa_extra_is_one_line_saying_what_to_install(tmp_path):
    """FAISS comes with the qa extra: ``autolabel qa duplicates`` without it says so."""
    from sync.store import SampleIn, open_store

    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "faiss.py").write_text("raise ModuleNotFoundError(\"No module named 'faiss'\", name='faiss')\n")
    db = tmp_path / "s.db"
    with open_store(db) as store:  # two embedded images, so the command gets as far as the search
        store.get_or_create_dataset("d")
        ids = store.add_samples("d", [SampleIn(f"/img/{i}.png", 4, 4) for i in range(2)])
        store.add_embeddings("d", "clip:m", "image", [(i, None, None, [1.0, 0.0]) for i in ids])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOLABEL_")}
    env.update(PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]), AUTOLABEL_DB=str(db))
    result = subprocess.run([sys.executable, "-m", "sync.cli", "qa", "duplicates", "--dataset", "d", "--model", "clip:m"],
                            check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = " ".join(result.stderr.split())
    assert "faiss" in line and "not installed: pip install 'autolabel-cvat[qa]'" in line
