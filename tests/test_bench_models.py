"""bench/models.py: its --tiny table has every column, FLOPs are counted (CPU attention too)
and the H100 projection is derived from them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "models.py"


@pytest.fixture(scope="module")
def bench():
    """The script as a module. Its in-process (--tiny) runs set process-wide torch state (flush
    denormals to zero, thread count) and transformers' verbosity: put back afterwards, or every
    later test in this process computes with denormal floats flushed (float32 property tests
    then fail)."""
    import torch
    import transformers

    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    spec = importlib.util.spec_from_file_location("bench_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_models"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_models", None)
    torch.set_flush_denormal(False)  # torch's default; it has no getter
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-models")
    argv = ["--tiny", "--models", "clip-b32,yolo-world-s", "--runs", "1",
            "--json", str(out / "report.json"), "--markdown", str(out / "table.md")]
    assert bench.main(argv) == 0
    return json.loads((out / "report.json").read_text()), (out / "table.md").read_text()


def test_tiny_table_has_every_column_and_row(bench, tiny_run):
    report, table = tiny_run
    header = table.splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == list(bench.COLUMNS)
    assert "H100 img/s (proj.)" in header and "GFLOPs/image" in header
    assert [row["name"] for row in report["rows"]] == ["clip-b32", "yolo-world-s"]
    body = table.splitlines()[2:4]
    assert body[0].startswith("| CLIP ViT-B/32") and body[1].startswith("| YOLO-World-S")
    assert all(len(line.strip("|").split("|")) == len(bench.COLUMNS) for line in body)
    assert "TINY configs" in table and "989 TFLOPS" in table
    assert report["tiny"] is True and report["machine"]["torch"]


def test_tiny_figures_follow_from_the_counts(bench, tiny_run):
    report, _ = tiny_run
    for row in report["rows"]:
        assert "error" not in row
        assert row["flops"] > 0 and row["params_m"] > 0 and row["passes"] == 1
        projected = 0.40 * 989e12 / row["flops"]
        assert row["h100_images_per_s"] == pytest.approx(projected, abs=0.05)
        assert row["gflops"] == pytest.approx(row["flops"] / 1e9, abs=0.005)
        # both derive from one median; cpu_s is rounded to the millisecond, which for a tiny
        # model of a few milliseconds moves 1/cpu_s by several percent
        assert 1 / row["cpu_images_per_s"] == pytest.approx(row["cpu_s"], abs=0.0005 + 1e-6)
    clip, yolo = report["rows"]
    # CLIP's text tower is built but does not run per image: fewer params than the whole model.
    assert clip["params_m"] < clip["total_params_m"]
    assert "80 class embeddings" in yolo["prompts"]


def test_cpu_attention_is_counted(bench):
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, k, v)
    with FlopCounterMode(display=False, custom_mapping=bench.flop_mapping()) as mapped:
        F.scaled_dot_product_attention(q, k, v)
    assert plain.get_total_flops() == 0  # torch's registry misses the CPU kernel
    assert mapped.get_total_flops() == 2 * (2 * 2 * 16 * 16 * 8)  # QK^T and AV


def test_projection_refuses_no_flops(bench):
    assert bench.projected_images_per_s(989e12) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="flops_per_image must be positive"):
        bench.projected_images_per_s(0)


def test_missing_tokenizer_assumes_one_full_caption_or_fails_when_named(bench, tmp_path):
    prompts = bench.load_prompts(str(tmp_path / "nowhere"), required=False)
    assert len(prompts.names) == 80 and prompts.names[0] == "person"
    assert [len(ids) for ids in prompts.caption_ids] == [256]
    assert "assumed" in prompts.tokenizer
    with pytest.raises(SystemExit, match="no tokenizer there"):
        bench.load_prompts(str(tmp_path / "nowhere"), required=True)


def test_captions_are_counted_with_the_tokenizer(bench, tmp_path):
    names = bench.load_prompts(None, required=False).names
    words = sorted({word for name in names for word in name.split()})
    # bert-base-uncased's layout: [UNK]=100, [CLS]=101, [SEP]=102, "."=1012; every COCO word one token.
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"[unused{i}]" for i in range(len(vocab), 1012)] + ["."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    prompts = bench.load_prompts(str(tmp_path), required=True)
    (caption,) = prompts.caption_ids  # 80 names fit one caption of at most 256 tokens
    word_count = sum(len(name.split()) for name in names)
    assert len(caption) == word_count + len(names) + 2  # words, one "." per name, [CLS] and [SEP]
    assert caption[0] == 101 and caption[-1] == 102 and caption.count(1012) == len(names)
    assert 100 not in caption  # no [UNK]
    assert str(tmp_path) in prompts.tokenizer
