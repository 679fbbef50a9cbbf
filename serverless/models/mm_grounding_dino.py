"""MM-Grounding-DINO (OpenMMLab's retrained Grounding DINO) through transformers.

The model is `MMGroundingDinoForObjectDetection` behind Grounding DINO's processor: the same
BERT captions (phrases joined by ``" . "``, at most 256 tokens, split by
`serverless.ontology.chunk_prompts`), the same hard-coded bert-base-uncased ids in the model
([CLS]=101, [SEP]=102, "."=1012, "?"=1029: ``SPECIAL_TOKENS`` in its modeling file) and the
same outputs. So it runs on `serverless.models.grounding_dino.GroundingDino`, loaded with
`MM_GROUNDING_DINO`; this module adds only the backend: its default weights, where they are,
and a tiny random model in the real on-disk format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from serverless.models.grounding_dino import GroundingArchitecture, GroundingDino, GroundingDinoDetector
from serverless.models.hub import locate_pretrained, pretrained_on_disk
from serverless.models.registry import DetectorBackend, WeightsSource
from serverless.models.tiny import TINY_MARKER, _vocabulary
from serverless.ontology import Ontology

__all__ = ["BACKEND", "DEFAULT_MM_GDINO_MODEL", "MM_GROUNDING_DINO", "locate_weights", "write_tiny"]

DEFAULT_MM_GDINO_MODEL = "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"

MM_GROUNDING_DINO = GroundingArchitecture("mm-grounding-dino", "MMGroundingDinoForObjectDetection", "MM-Grounding-DINO")

_HINT = (
    "set AUTOLABEL_MM_GDINO_MODEL (or give mm-grounding-dino:DIR) to a local directory written by "
    "save_pretrained, or go online"
)


def locate_weights(model: str, download: bool = True) -> WeightsSource:
    """Where MM-Grounding-DINO ``model`` (a directory or a hub id) loads from, checked in
    seconds (`serverless.models.hub.locate_pretrained`)."""
    return locate_pretrained(model, download, display="MM-Grounding-DINO", example=DEFAULT_MM_GDINO_MODEL, hint=_HINT)


def write_tiny(directory: Path, seed: int = 0) -> Path:
    """A tiny random MM-Grounding-DINO as ``save_pretrained`` writes it (config, safetensors,
    a BERT tokenizer with bert-base-uncased's special ids, Grounding DINO's processor) in
    ``directory`` (reused when already there). Its outputs are meaningless."""
    if (directory / TINY_MARKER).exists():
        return directory
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )
    from transformers.models.mm_grounding_dino.modeling_mm_grounding_dino import MMGroundingDinoContrastiveEmbedding

    directory.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary()  # the model hard-codes bert-base-uncased ids, as Grounding DINO does
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 256}),
        encoding="utf-8",
    )
    tokenizer = BertTokenizerFast.from_pretrained(str(directory), local_files_only=True)  # reads vocab.txt
    config = MMGroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=37, max_position_embeddings=512,
        ),
        d_model=32, num_queries=30, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2,
        decoder_n_points=2, max_text_len=256,
    )
    torch.manual_seed(seed)
    model = MMGroundingDinoForObjectDetection(config).eval()
    # transformers starts the contrastive head's bias at the 1 % prior (-4.6): every random
    # score then stays under ~0.07. At 0 they spread over 0..1, so thresholds have work to do.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MMGroundingDinoContrastiveEmbedding):
                module.bias.zero_()
    model.save_pretrained(str(directory))
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 320, "longest_edge": 512})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(directory))
    (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")
    return directory


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    return weights.strip() or environ.get("AUTOLABEL_MM_GDINO_MODEL") or DEFAULT_MM_GDINO_MODEL


def _tiny(directory: Path, seed: int = 0) -> str:
    return str(write_tiny(Path(directory).resolve() / BACKEND.name, seed))


def _build(weights: str, source: WeightsSource, ontology: Ontology, device: str | None) -> GroundingDinoDetector:
    return GroundingDino.load(source.load_from or weights, device=device, architecture=MM_GROUNDING_DINO).bind(ontology)


BACKEND = DetectorBackend(
    name="mm-grounding-dino",
    summary="MM-Grounding-DINO (transformers): open-vocabulary boxes from the ontology's prompts",
    parse=_parse,
    locate=locate_weights,
    on_disk=pretrained_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``mm-grounding-dino[:HUB_ID | :DIRECTORY]``; default ``AUTOLABEL_MM_GDINO_MODEL``, else
`DEFAULT_MM_GDINO_MODEL`."""
