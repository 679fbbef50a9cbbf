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
