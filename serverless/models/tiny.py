"""Tiny random-init models written in the exact on-disk formats the real loaders read.

`make_tiny_models(directory)` writes:

- ``grounding-dino/``: a transformers ``save_pretrained`` directory (config, safetensors
  weights, tokenizer files with a bert-base-uncased-shaped vocabulary, image processor config)
  that ``AutoModelForZeroShotObjectDetection.from_pretrained`` / ``AutoProcessor.from_pretrained``
  load like ``IDEA-Research/grounding-dino-tiny``.
- ``sam/sam_tiny.pth``: a segment-anything state dict, and ``sam/sam_tiny.json``: the ViT
  sizes the checkpoint was built with (the value of ``AUTOLABEL_SAM_MODEL_TYPE``), read by
  :func:`serverless.models.sam.build_sam_model`.

Their outputs are meaningless: they exist so tests and offline demos run the real code path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TINY_MARKER", "TinyModels", "make_tiny_models", "is_tiny"]

#: A file present in every tiny model directory, so the CLI can warn loudly.
TINY_MARKER = "AUTOLABEL_TINY_MODEL"

# Grounding DINO hard-codes bert-base-uncased ids: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102,
# [MASK]=103, "."=1012, "?"=1029. The vocabulary keeps that layout.
_WORDS = (
    "person astronaut worker people man woman cat dog cup coffee rocket ladder car truck bus "
    "bicycle chair table bottle helmet hat hard vest tree sky road building window door bird "
    "horse sheep cow boat plane train a an the of and with on in"
).split()
_SAM_TINY = {
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
}


def _vocabulary() -> list[str]:
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(_WORDS)
    pieces += list("abcdefghijklmnopqrstuvwxyz0123456789")
    pieces += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += list(",;:!'\"()-/&+")
    for piece in pieces:
        if piece not in vocab:
            vocab.append(piece)
    while len(vocab) < 1012:
        vocab.append(f"[unused{len(vocab)}]")
    vocab.append(".")  # 1012
    while len(vocab) < 1029:
        vocab.append(f"[unused{len(vocab)}]")
    vocab.append("?")  # 1029
    return vocab


def _write_grounding_dino(directory: Path, seed: int) -> None:
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    directory.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # BertTokenizerFast(vocab_file=...) silently ignores the file in transformers 5.x;
    # from_pretrained on a directory holding vocab.txt reads it.
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 256}),
        encoding="utf-8",
    )
    tokenizer = BertTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    if tokenizer.convert_tokens_to_ids(".") != 1012 or tokenizer.cls_token_id != 101:
        raise RuntimeError("tiny tokenizer does not keep bert-base-uncased special ids")

    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            window_size=7,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=512,
        ),
        d_model=32,
        num_queries=30,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=256,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    model.save_pretrained(str(directory))
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 320, "longest_edge": 512})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        str(directory)
    )
    (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")


def _write_sam(directory: Path, seed: int) -> tuple[Path, Path]:
    import torch

    from serverless.models.sam import build_sam_model

    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "sam_tiny.json"
    config_path.write_text(json.dumps(_SAM_TINY, indent=2) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    model = build_sam_model(str(config_path), checkpoint=None)
    checkpoint = directory / "sam_tiny.pth"
    torch.save(model.state_dict(), checkpoint)
    (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")
    return checkpoint, config_path


@dataclass(frozen=True)
class TinyModels:
    gdino_dir: Path
    sam_checkpoint: Path
    sam_model_type: Path

    def environment(self) -> dict[str, str]:
        """The variables that point the CLI and the functions at these models."""
        return {
            "AUTOLABEL_GDINO_MODEL": str(self.gdino_dir),
            "AUTOLABEL_SAM_CHECKPOINT": str(self.sam_checkpoint),
            "AUTOLABEL_SAM_MODEL_TYPE": str(self.sam_model_type),
        }


def make_tiny_models(directory: str | Path, *, seed: int = 0) -> TinyModels:
    """Write tiny Grounding DINO and SAM models under ``directory`` (idempotent)."""
    root = Path(directory).resolve()
    gdino_dir = root / "grounding-dino"
    sam_dir = root / "sam"
    if not (gdino_dir / TINY_MARKER).exists():
        _write_grounding_dino(gdino_dir, seed)
    if not (sam_dir / TINY_MARKER).exists():
        _write_sam(sam_dir, seed)
    return TinyModels(gdino_dir, sam_dir / "sam_tiny.pth", sam_dir / "sam_tiny.json")


def is_tiny(location: str | Path | None) -> bool:
    """True when a model directory or checkpoint was written by :func:`make_tiny_models`."""
    if not location:
        return False
    path = Path(location)
    folder = path if path.is_dir() else path.parent
    return (folder / TINY_MARKER).exists()
