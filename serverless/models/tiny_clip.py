"""Tiny random-init CLIP and SigLIP models in the ``save_pretrained`` format the ``clip``
backend loads (`serverless.models.clip`): config, safetensors weights, image processor and a
tokenizer, all written offline.

- ``clip``: a `CLIPModel` with a byte-level BPE `CLIPTokenizer` whose vocabulary and merges are
  built here (the 512 byte symbols with and without ``</w>``, merges for a few words, then
  ``<|startoftext|>`` and ``<|endoftext|>``, as in openai/clip-vit-base-patch32's layout); text
  context 77 tokens as the real one.
- ``siglip``: a `SiglipModel`. Real SigLIP checkpoints ship a sentencepiece ``spiece.model`` read
  by `SiglipTokenizer`, which needs the ``sentencepiece`` package (not a dependency here, and a
  model file cannot be written without it); this one carries a `Siglip2Tokenizer` instead (the
  Gemma-style BPE of SigLIP 2 checkpoints, a ``tokenizer.json`` written with ``tokenizers``),
  which `SiglipProcessor` accepts. Text context 64 tokens as the real one; ``logit_scale`` and
  ``logit_bias`` are set to SigLIP-like values (random init zeroes them).

Their outputs are meaningless: they exist so tests and offline demos run the real code path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from serverless.models.tiny import TINY_MARKER

__all__ = ["TINY_FAMILIES", "TinyFamily", "make_tiny_clip"]

TinyFamily = Literal["clip", "siglip"]
TINY_FAMILIES: tuple[TinyFamily, ...] = ("clip", "siglip")

_WORDS = (
    "a an the of photo picture image close up cropped bright dark good small large one this is "
    "person cat dog cup coffee car truck sky road indoors inside room sunny day night outdoor scene "
    "kitchen street astronaut rocket"
).split()
_IMAGE_SIZE = 32
_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
_VISION = {**_TEXT, "image_size": _IMAGE_SIZE, "patch_size": 8}


def _chain_merges(words: Iterable[Sequence[str]]) -> list[tuple[str, str]]:
    """BPE merges that join each word's symbols left to right (``c a``, ``ca t</w>``), no repeats."""
    merges: dict[tuple[str, str], None] = {}
    for symbols in words:
        joined = symbols[0]
        for symbol in symbols[1:]:
            merges.setdefault((joined, symbol), None)
            joined += symbol
    return list(merges)


def _vocabulary(base: Iterable[str], merges: Sequence[tuple[str, str]], specials: Sequence[str]) -> dict[str, int]:
    tokens = list(dict.fromkeys([*base, *(a + b for a, b in merges), *specials]))
    return {token: i for i, token in enumerate(tokens)}


def _clip_tokenizer(directory: Path):  # -> CLIPTokenizer
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    merges = _chain_merges([*word[:-1], word[-1] + "</w>"] for word in _WORDS)
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = _vocabulary([*alphabet, *(c + "</w>" for c in alphabet)], merges, specials)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def _siglip_tokenizer(directory: Path):  # -> Siglip2Tokenizer
    from transformers import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_fallback = [f"<0x{i:02X}>" for i in range(256)]
    characters = sorted(set("▁abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-/&+{}"))
    merges = _chain_merges(["▁", *word] for word in _WORDS)
    vocab = _vocabulary([*specials, *byte_fallback, *characters], merges, [])
    tokenizer = Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=64)
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def _write(directory: Path, family: TinyFamily, seed: int) -> None:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    if family == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

        tokenizer = _clip_tokenizer(directory)
        ids = {k: getattr(tokenizer, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
        text = {**_TEXT, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 77}
        config = CLIPConfig(text_config=text, vision_config=_VISION, projection_dim=16)
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
        size = {"shortest_edge": _IMAGE_SIZE}
        crop = {"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
        processor = CLIPProcessor(image_processor=CLIPImageProcessor(size=size, crop_size=crop), tokenizer=tokenizer)
    else:
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

        tokenizer = _siglip_tokenizer(directory)
        ids = {k: getattr(tokenizer, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
        text = {**_TEXT, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 64, "projection_size": 16}
        vision = {**_VISION, "hidden_size": 16, "intermediate_size": 24}
        config = SiglipConfig(text_config=text, vision_config=vision)
        torch.manual_seed(seed)
        model = SiglipModel(config).eval()
        with torch.no_grad():  # random init zeroes them; real SigLIP has ~log(118) and ~-13
            model.logit_scale.fill_(2.0)
            model.logit_bias.fill_(-1.0)
        image_processor = SiglipImageProcessor(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE})
        processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")


def make_tiny_clip(directory: str | Path, *, seed: int = 0, family: TinyFamily = "clip") -> Path:
    """Write (once; an existing one is reused) a tiny ``family`` model under
    ``directory/clip/<family>-tiny/`` and return that directory, a ``clip`` backend weights value."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(TINY_FAMILIES)}, got {family!r}")
    target = Path(directory).resolve() / "clip" / f"{family}-tiny"
    if not (target / TINY_MARKER).exists():
        _write(target, family, seed)
    return target
