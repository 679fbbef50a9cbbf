"""Tiny random-init CLIP and SigLIP models in the ``save_pretrained`` format the ``clip``
backend loads (`serverless.models.clip`): config, safetensors weights, image processor and a
tokenizer, all written offline.

- ``clip``: a `CLIPModel` with a byte-level BPE `CLIPTokenizer` in openai/clip-vit-base-patch32's
  layout (`serverless.models.tiny_tokenizers.tiny_clip_tokenizer`); text context 77 tokens as
  the real one.
- ``siglip``: a `SiglipModel`. Real SigLIP checkpoints ship a sentencepiece ``spiece.model`` read
  by `SiglipTokenizer`, which needs the ``sentencepiece`` package (not a dependency here, and a
  model file cannot be written without it); this one carries a `Siglip2Tokenizer` instead (the
  Gemma-style BPE of SigLIP 2 checkpoints, a ``tokenizer.json`` written with ``tokenizers``:
  `serverless.models.tiny_tokenizers.tiny_siglip_tokenizer`), which `SiglipProcessor` accepts.
  Text context 64 tokens as the real one; ``logit_scale`` and ``logit_bias`` are set to
  SigLIP-like values (random init zeroes them).

`write_tiny_clip` writes one in a given directory (YOLO-World's tiny text tower is one, with
512-wide embeddings); `make_tiny_clip` where the ``clip`` backend's tiny weights live.

Their outputs are meaningless: they exist so tests and offline demos run the real code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from serverless.models.tiny import TINY_MARKER
from serverless.models.tiny_tokenizers import tiny_clip_tokenizer, tiny_siglip_tokenizer

__all__ = ["TINY_FAMILIES", "TinyFamily", "make_tiny_clip", "write_tiny_clip"]

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


def write_tiny_clip(
    directory: Path,
    *,
    seed: int = 0,
    family: TinyFamily = "clip",
    projection_dim: int = 16,
    words: Sequence[str] = _WORDS,
) -> Path:
    """Write (once; an existing one is reused) a tiny ``family`` model in ``directory`` and
    return it: ``projection_dim`` is the width of its image and text embeddings, each of
    ``words`` is one token of its tokenizer (`serverless.models.tiny_tokenizers`)."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(TINY_FAMILIES)}, got {family!r}")
    if (directory / TINY_MARKER).exists():
        return directory
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    if family == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

        tokenizer = tiny_clip_tokenizer(words, model_max_length=77)
        ids = {k: getattr(tokenizer, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
        text = {**_TEXT, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 77}
        config = CLIPConfig(text_config=text, vision_config=_VISION, projection_dim=projection_dim)
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
        size = {"shortest_edge": _IMAGE_SIZE}
        crop = {"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
        processor = CLIPProcessor(image_processor=CLIPImageProcessor(size=size, crop_size=crop), tokenizer=tokenizer)
    else:
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

        tokenizer = tiny_siglip_tokenizer(words, model_max_length=64)
        ids = {k: getattr(tokenizer, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
        text = {**_TEXT, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 64,
                "projection_size": projection_dim}  # fmt: skip
        vision = {**_VISION, "hidden_size": projection_dim, "intermediate_size": 24}
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
    return directory


def make_tiny_clip(directory: str | Path, *, seed: int = 0, family: TinyFamily = "clip") -> Path:
    """Write (once; an existing one is reused) a tiny ``family`` model under
    ``directory/clip/<family>-tiny/`` and return that directory, a ``clip`` backend weights value."""
    return write_tiny_clip(Path(directory).resolve() / "clip" / f"{family}-tiny", seed=seed, family=family)
