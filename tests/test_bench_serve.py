"""bench/serve.py: the micro-batching comparison (table 4) runs against two real servers with
a tiny Grounding DINO and reports both settings, and its options are checked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from serverless.serve import FunctionHost, ServeOptions
from tests.test_serve import FUNCTIONS

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "serve.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_serve"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_serve", None)


def test_micro_batching_table_compares_off_and_on(bench, tiny_models, monkeypatch):
    for name, value in tiny_models.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTOLABEL_DEVICE", "cpu")
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    dirs = [FUNCTIONS / "grounding-dino"]
    batching = ServeOptions(port=0, function_ports="ephemeral", micro_batch=4, batch_window_ms=200)
    with FunctionHost(dirs, ServeOptions(port=0, function_ports="ephemeral")) as plain, \
            FunctionHost(dirs, batching) as batched:
        part = bench.bench_micro_batch(plain, batched, frame, repeats=1, each=1)
    off, on = part["rows"]
    assert "micro-batching off" in off["path"] and "--micro-batch 4 --batch-window-ms 200" in on["path"]
    assert off["median_ms"] > 0 and on["median_ms"] > 0 and on["overhead_ms"] is not None
    assert set(part["requests_per_s"]) == {"off", "on"}
    assert part["frames_per_call"] >= 1  # every request of the "on" host went through the batcher
    assert bench.PARTS[-1][0] == "micro_batch"  # rendered with the other tables

def test_a_bad_micro_batch_option_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--micro-batch", "0", "--no-docs"])
    assert stopped.value.code == 2
    assert "micro_batch must lie in 1..256" in capsys.readouterr().err
