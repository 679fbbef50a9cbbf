"""Small tokenizers for the tiny random-init models, built offline in the real classes.

Real checkpoints ship tokenizers of tens of thousands of tokens that cannot be downloaded here;
a tiny model carries one of the same class and algorithm with a vocabulary of a few hundred
tokens: every byte (so any text tokenizes), plus merges that make each of a few given words one
token (so tests can count tokens), anything else spelled symbol by symbol.

- `tiny_clip_tokenizer`: a byte-level BPE `CLIPTokenizer` as openai/clip-vit-base-patch32 lays
  it out: the 256 byte symbols with and without ``</w>``, the merged words, then
  ``<|startoftext|>`` and ``<|endoftext|>``. The end token is the highest id, which OWL-ViT's
  and OWLv2's text encoders rely on (they pool at ``argmax(input_ids)``); the CLIP text models
  of CLIP, YOLO-World's text tower and SAM 3 find it by ``eos_token_id``.
- `tiny_siglip_tokenizer`: a `Siglip2Tokenizer` (the Gemma-style BPE of SigLIP 2 checkpoints,
  with byte fallback), which `SiglipProcessor` also accepts.

Used by `serverless.models.tiny_clip`, `serverless.models.tiny_yolo_world`,
`serverless.models.owlv2` and `serverless.models.sam3`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, Siglip2Tokenizer

__all__ = ["CLIP_END", "CLIP_START", "tiny_clip_tokenizer", "tiny_siglip_tokenizer"]

CLIP_START = "<|startoftext|>"
CLIP_END = "<|endoftext|>"


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
    """Token → id: ``base``, then each merge's result, then ``specials``, each once, in that order."""
    tokens = list(dict.fromkeys([*base, *(a + b for a, b in merges), *specials]))
    return {token: i for i, token in enumerate(tokens)}


def tiny_clip_tokenizer(words: Iterable[str], *, model_max_length: int, pad_token: str = CLIP_END) -> CLIPTokenizer:
    """A byte-level BPE `CLIPTokenizer` in which each of ``words`` is one token (module
    docstring). ``model_max_length`` is the text encoder's context (77 for CLIP, 16 for OWLv2,
    32 for SAM 3); ``pad_token`` is CLIP's end token unless a model pads with another (OWLv2's
    checkpoints pad with ``"!"``, id 0)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    merges = _chain_merges([*word[:-1], word[-1] + "</w>"] for word in words)
    vocab = _vocabulary([*alphabet, *(c + "</w>" for c in alphabet)], merges, [CLIP_START, CLIP_END])
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=model_max_length)


def tiny_siglip_tokenizer(words: Iterable[str], *, model_max_length: int) -> Siglip2Tokenizer:
    """A `Siglip2Tokenizer` (specials, 256 byte-fallback tokens, a few characters, then the
    merges) in which each of ``words`` is one token."""
    from transformers import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_fallback = [f"<0x{i:02X}>" for i in range(256)]
    characters = sorted(set("▁abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-/&+{}"))
    merges = _chain_merges(["▁", *word] for word in words)
    vocab = _vocabulary([*specials, *byte_fallback, *characters], merges, [])
    return Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
