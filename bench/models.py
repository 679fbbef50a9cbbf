"""Model architectures side by side, to choose an auto-labeller: size, FLOPs, CPU speed, H100 estimate.

Every model is built at full size from its transformers config, ultralytics yaml or
segment-anything registry entry, with **random weights** (no weights are downloaded), and run
on one random image at its standard input size on this machine's CPU. For each model:

- **params**: parameters of the modules that run for one image (found with forward hooks),
  next to the whole model's count where they differ (a text tower that runs once per ontology,
  a prompt decoder that runs per click);
- **GFLOPs/image**: counted by ``torch.utils.flop_counter.FlopCounterMode`` over everything the
  model does for one image (all caption passes for Grounding DINO), 2 FLOPs per multiply-add.
  It counts matrix multiplies, convolutions and attention (CPU attention kernels included, see
  `flop_mapping`); element-wise work, normalisation and deformable-attention sampling
  (``grid_sample``) are not counted. The counted run is also the warm-up;
- **CPU s/image**: the median of ``--runs`` timed runs after it, and images/s from it;
- **H100 img/s**: ``0.40 x 989 TFLOPS / FLOPs per image``, i.e. 40 % of an H100 SXM's dense
  bf16 peak (989 TFLOPS). A compute-bound estimate: memory-bound work, pre/post-processing
  and batching effects are not in it.

Per image, each model does what serving it does for one frame:

- Grounding DINO-T / MM-Grounding-DINO-T (800x1333): the 80 COCO class names as captions
  of at most 256 tokens (`serverless.ontology.chunk_prompts`, counted with the bert-base-uncased
  tokenizer from ``--gdino-tokenizer``); one full forward pass per caption, since
  transformers' Grounding DINO cannot reuse image features across captions.
- YOLO-World-S/L (640x640, ultralytics ``yolov8{s,l}-worldv2.yaml``, Conv+BN fused as
  ultralytics predicts) and OWLv2-B/16 (960x960): 80 class embeddings computed once per
  ontology by their CLIP text tower, so the text tower is not part of the per-image cost; the
  benchmark feeds random 512-d embeddings.
- SAM 3 (1008x1008): one text prompt, the whole ``Sam3Model`` forward (vision encoder, text
  encoder, DETR encoder/decoder, mask head); what each further prompt adds on the same image
  (everything but the vision encoder) is reported in the notes.
- SAM vit_b / vit_h (segment-anything) and SAM 2.1 hiera tiny / small / large (transformers
  ``Sam2Model.get_image_embeddings``) at 1024x1024: the image encoder, run once per image; the
  prompt encoder and mask decoder then cost little per click or box.
- CLIP ViT-B/32 (224x224): the image tower and projection (``get_image_features``); the label
  prompts' text embeddings are computed once.

``--tiny`` builds scaled-down configs of the same classes (seconds in all): it checks the
script, its numbers mean nothing. Full size, each model runs in its own spawned process (its
peak RSS is reported, and a model that cannot be built or run here becomes a row saying why).

    python bench/models.py --tiny                           # the whole table, scaled down
    nice -n 10 python bench/models.py --runs 2 --json out.json --markdown out.md
    python bench/models.py --models yolo-world-s,clip-b32 --runs 5
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_model
from arguments import at_least
from tables import write_outputs

if TYPE_CHECKING:
    import torch

__all__ = [
    "H100_BF16_DENSE_TFLOPS",
    "MODELS",
    "UTILISATION",
    "Built",
    "ModelSpec",
    "Prompts",
    "flop_mapping",
    "grounding_dino_t",
    "machine_info",
    "main",
    "measure",
    "projected_images_per_s",
    "write_grounding_dino_t",
]

#: Dense bf16 peak of one H100 SXM (NVIDIA's datasheet figure without sparsity), TFLOPS.
H100_BF16_DENSE_TFLOPS = 989.0
#: The share of that peak the projection assumes a real serving stack sustains.
UTILISATION = 0.40
COCO_ONTOLOGY = ROOT / "serverless" / "functions" / "ontology.yaml"
DEFAULT_GDINO_TOKENIZER = "IDEA-Research/grounding-dino-tiny"
#: Text embedding size of YOLO-World v2 (CLIP ViT-B/32's text tower).
TEXT_EMBED_DIM = 512
BERT_VOCAB_SIZE = 30522
#: Token count assumed per caption when no bert-base-uncased tokenizer is on this machine.
FALLBACK_CAPTION_TOKENS = 256

COLUMNS = (
    "model",
    "task",
    "input (WxH)",
    "prompts per image",
    "passes",
    "params (M)",
    "GFLOPs/image",
    "CPU s/image",
    "CPU img/s",
    "H100 img/s (proj.)",
    "peak RSS GB",
    "notes",
)


# --------------------------------------------------------------------------- model records


@dataclass(frozen=True)
class Prompts:
    """What the detectors are prompted with: COCO's 80 class names."""

    names: tuple[str, ...]
    """The class names, in COCO order (from `COCO_ONTOLOGY`)."""
    caption_ids: tuple[tuple[int, ...], ...]
    """Grounding DINO's captions as bert-base-uncased token ids, special tokens included."""
    tokenizer: str
    """Where the caption token counts come from (or that they are assumed)."""


@dataclass
class Built:
    """One model, built and ready to do for one image what serving it does for one frame."""

    model: torch.nn.Module
    """The whole model as it would be loaded."""
    run: Callable[[], object]
    """Everything the model does for one image (all caption passes, one prompt, ...)."""
    input_size: str
    """The network input, ``WxH``."""
    prompts: str
    """What the model is prompted with per image."""
    passes: int = 1
    """Full forward passes per image."""
    shared: str | None = None
    """A submodule (attribute path) whose output further prompts on the same image reuse; the
    row then reports what each further prompt costs (the FLOPs outside it)."""
    further_prompts: int = 0
    """Prompts the ontology needs beyond the one measured (with `shared`): the row also reports
    the cost of the image with all of them."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelSpec:
    """One row of the table: a name for ``--models`` and how to build the model."""

    name: str
    title: str
    task: str
    build: Callable[[bool, Prompts], Built]
    """``build(tiny, prompts)``: the full-size architecture, or a scaled-down one when tiny."""


# --------------------------------------------------------------------------- measuring


def flop_mapping() -> dict[Any, Callable[..., int]]:
    """FLOP formulas FlopCounterMode lacks: torch's CPU attention kernel.

    On the CPU ``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``,
    which torch's FLOP registry does not list (it would count attention as zero); it does the
    same work as the GPU kernels, so it gets their formula.
    """
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}


def projected_images_per_s(flops_per_image: float) -> float:
    """Images/s on one H100 at `UTILISATION` of its dense bf16 peak."""
    if flops_per_image <= 0:
        raise ValueError(f"flops_per_image must be positive, got {flops_per_image}")
    return UTILISATION * H100_BF16_DENSE_TFLOPS * 1e12 / flops_per_image


def _count(built: Built) -> tuple[int, dict[str, int], int]:
    """One counted run of ``built.run``: total FLOPs, FLOPs per module, parameters that ran."""
    from torch.utils.flop_counter import FlopCounterMode

    called: set[int] = set()
    modules = list(built.model.modules())
    hooks = [m.register_forward_pre_hook(lambda m, _args: called.add(id(m))) for m in modules]
    try:
        with FlopCounterMode(display=False, custom_mapping=flop_mapping()) as counter:
            built.run()
    finally:
        for hook in hooks:
            hook.remove()
    # Tied weights (Grounding DINO's shared box heads) belong to several modules: count each once.
    used = {id(p): p.numel() for m in modules if id(m) in called for p in m.parameters(recurse=False)}
    params = sum(used.values())
    per_module = {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module, params


def _shared_flops(built: Built, per_module: dict[str, int]) -> int:
    """FLOPs of ``built.shared`` in a counted run (FlopCounterMode names modules from the root's class)."""
    key = f"{type(built.model).__name__}.{built.shared}"
    if key not in per_module:
        raise RuntimeError(f"no FLOPs recorded for {key!r}; recorded: {sorted(per_module)[:8]}")
    return per_module[key]


def measure(spec: ModelSpec, *, tiny: bool, runs: int, prompts: Prompts) -> dict[str, Any]:
    """Build ``spec`` and measure it: one FLOP-counted run (the warm-up), then ``runs`` timed runs."""
    import torch

    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    torch.manual_seed(0)
    started = time.perf_counter()
    built = spec.build(tiny, prompts)
    build_s = time.perf_counter() - started
    with torch.inference_mode():
        flops, per_module, params = _count(built)
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            built.run()
            seconds.append(time.perf_counter() - start)
    if flops <= 0:
        raise RuntimeError(f"{spec.name}: FlopCounterMode counted no FLOPs")
    notes = list(built.notes)
    if built.shared:
        further = flops - _shared_flops(built, per_module)
        notes.append(f"each further prompt on the same image: {further / 1e9:.1f} GFLOPs")
        if built.further_prompts:
            whole = flops + built.further_prompts * further
            notes.append(f"all {built.further_prompts + 1} prompts: {whole / 1e9:.0f} GFLOPs/image, "
                         f"H100 {projected_images_per_s(whole):.0f} img/s")
    total = sum(p.numel() for p in built.model.parameters())
    if abs(total - params) > 0.005 * total:
        notes.append(f"whole model {total / 1e6:.1f} M params")
    median = statistics.median(seconds)
    return {
        "name": spec.name,
        "title": spec.title,
        "task": spec.task,
        "input": built.input_size,
        "prompts": built.prompts,
        "passes": built.passes,
        "params_m": round(params / 1e6, 2),
        "total_params_m": round(total / 1e6, 2),
        "flops": flops,
        "gflops": round(flops / 1e9, 2),
        "cpu_runs_s": [round(s, 3) for s in seconds],
        "cpu_s": round(median, 3),
        "cpu_images_per_s": round(1.0 / median, 3),
        "h100_images_per_s": round(projected_images_per_s(flops), 1),
        "build_s": round(build_s, 1),
        "notes": notes,
    }


# --------------------------------------------------------------------------- prompts


def load_prompts(tokenizer_source: str | None, *, required: bool) -> Prompts:
    """COCO's class names, and Grounding DINO's captions for them as token ids.

    The captions are made by the product's own `chunk_prompts` (phrases joined by ``" . "``, at
    most 256 tokens each), counted with the bert-base-uncased tokenizer found at
    ``tokenizer_source`` (a directory, or a hub id already in the Hugging Face cache; nothing is
    downloaded). Without one, one caption of `FALLBACK_CAPTION_TOKENS` tokens is assumed (the most a
    pass reads); ``required`` makes a missing tokenizer an error instead.
    """
    from serverless.ontology import MAX_PROMPT_TOKENS, Label, Ontology, chunk_prompts, load_ontology

    names = load_ontology(COCO_ONTOLOGY).label_names
    where = _tokenizer_dir(tokenizer_source) if tokenizer_source else None
    if where is None:
        if required:
            raise SystemExit(
                f"--gdino-tokenizer {tokenizer_source!r}: no tokenizer there (give a directory holding "
                "bert-base-uncased's vocab.txt, or a hub id in the Hugging Face cache)"
            )
        ids = (101, *([1012] * (FALLBACK_CAPTION_TOKENS - 2)), 102)
        return Prompts(names, (ids,), f"no bert-base-uncased tokenizer here: assumed 1 caption of {len(ids)} tokens")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
    if tokenizer.cls_token_id != 101 or tokenizer.convert_tokens_to_ids(".") != 1012:
        raise SystemExit(f"--gdino-tokenizer {tokenizer_source!r} is not bert-base-uncased's vocabulary")
    ontology = Ontology(labels=tuple(Label(name, (name,)) for name in names))
    chunks = chunk_prompts(ontology, lambda text: len(tokenizer(text).input_ids), MAX_PROMPT_TOKENS)
    captions = tuple(tuple(tokenizer(chunk.text).input_ids) for chunk in chunks)
    return Prompts(names, captions, f"bert-base-uncased tokenizer from {tokenizer_source}")


def _tokenizer_dir(source: str) -> str | None:
    from serverless.models.hub import pretrained_on_disk

    where = pretrained_on_disk(source)
    if where is None or not any((Path(where) / f).is_file() for f in ("vocab.txt", "tokenizer.json")):
        return None
    return where


# --------------------------------------------------------------------------- builders


def _pixels(height: int, width: int) -> torch.Tensor:
    import torch

    return torch.randn(1, 3, height, width)


def _size(height: int, width: int) -> str:
    return f"{width}x{height}"


def grounding_dino_t(*, tiny: bool, mm: bool = False) -> tuple[torch.nn.Module, tuple[int, int]]:
    """Grounding DINO-T (``mm``: MM-Grounding-DINO-T) with random weights, in eval mode, and
    its standard input ``(height, width)``: full size (Swin-T, bert-base-uncased text) or, with
    ``tiny``, a scaled-down config of the same classes."""
    from transformers import BertConfig, SwinConfig

    if mm:
        from transformers import MMGroundingDinoConfig as Config
        from transformers import MMGroundingDinoForObjectDetection as Model
    else:
        from transformers import GroundingDinoConfig as Config
        from transformers import GroundingDinoForObjectDetection as Model

    if tiny:
        swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
                          out_features=["stage2", "stage3", "stage4"])
        bert = BertConfig(vocab_size=BERT_VOCAB_SIZE, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=37)
        config = Config(backbone_config=swin, text_config=bert, d_model=32, num_queries=30,
                        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_n_points=2, decoder_n_points=2)
        return Model(config).eval(), (160, 224)
    # Swin-T as in transformers' conversion scripts for grounding-dino-tiny and
    # mm_grounding_dino_tiny_*: the config defaults, spelled out; text: bert-base-uncased.
    swin = SwinConfig(image_size=224, window_size=7, embed_dim=96, depths=[2, 2, 6, 2],
                      num_heads=[3, 6, 12, 24], out_features=["stage2", "stage3", "stage4"])
    config = Config(backbone_config=swin, text_config=BertConfig(), num_feature_levels=4)
    return Model(config).eval(), (800, 1333)


def write_grounding_dino_t(directory: Path, tokenizer_from: str) -> Path:
    """Full-size Grounding DINO-T with random weights (`grounding_dino_t`) as a
    ``save_pretrained`` directory the ``grounding-dino`` backend loads: its weights and config,
    the tokenizer found at ``tokenizer_from`` and the default image processor."""
    import torch
    from transformers import AutoTokenizer, GroundingDinoImageProcessor, GroundingDinoProcessor

    torch.manual_seed(0)
    model, _ = grounding_dino_t(tiny=False)
    model.save_pretrained(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from, local_files_only=True)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer).save_pretrained(
        str(directory))
    return directory


def _grounding_dino(mm: bool) -> Callable[[bool, Prompts], Built]:
    def build(tiny: bool, prompts: Prompts) -> Built:
        import torch

        model, (height, width) = grounding_dino_t(tiny=tiny, mm=mm)
        pixels = _pixels(height, width)
        captions = [torch.tensor([ids]) for ids in prompts.caption_ids]

        def run() -> None:
            for ids in captions:
                model(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids),
                      token_type_ids=torch.zeros_like(ids))

        lengths = "+".join(str(len(ids)) for ids in prompts.caption_ids)
        return Built(model, run, _size(height, width),
                     f"{len(prompts.names)} names in {len(captions)} caption(s) of {lengths} tokens",
                     passes=len(captions), notes=[f"caption tokens: {prompts.tokenizer}"])

    return build


def _yolo_world(scale: str) -> Callable[[bool, Prompts], Built]:
    def build(tiny: bool, prompts: Prompts) -> Built:
        import torch
        from ultralytics.nn.tasks import WorldModel

        classes = len(prompts.names)
        cfg = "yolov8n-worldv2.yaml" if tiny else f"yolov8{scale}-worldv2.yaml"
        model = WorldModel(cfg, nc=classes, verbose=False)
        # What set_classes() leaves behind, with random vectors instead of CLIP's text features.
        model.txt_feats = torch.nn.functional.normalize(torch.randn(1, classes, TEXT_EMBED_DIM), dim=-1)
        model.model[-1].nc = classes
        model = model.fuse(verbose=False).eval()
        side = 128 if tiny else 640
        pixels = torch.rand(1, 3, side, side)
        return Built(model, lambda: model(pixels), _size(side, side),
                     f"{classes} class embeddings ({TEXT_EMBED_DIM}-d), cached",
                     notes=[f"{cfg}; CLIP text tower not per image"])

    return build


def _owlv2(tiny: bool, prompts: Prompts) -> Built:
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    if tiny:
        text = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
        vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "image_size": 64, "patch_size": 16}
        config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    else:
        # google/owlv2-base-patch16*: the config defaults (ViT-B/16, CLIP text) at 960.
        config = Owlv2Config(vision_config={"image_size": 960, "patch_size": 16})
    model = Owlv2ForObjectDetection(config).eval()
    side = config.vision_config.image_size
    pixels = _pixels(side, side)
    classes = len(prompts.names)
    queries = torch.nn.functional.normalize(torch.randn(1, classes, config.text_config.hidden_size), dim=-1)
    query_mask = torch.ones(1, classes, dtype=torch.bool)

    def run() -> None:
        # Owlv2ForObjectDetection.forward without its text tower: the query embeddings are cached.
        feature_map = model.image_embedder(pixel_values=pixels)[0]
        batch, rows, cols, dim = feature_map.shape
        image_feats = feature_map.reshape(batch, rows * cols, dim)
        model.class_predictor(image_feats, queries, query_mask)
        model.objectness_predictor(image_feats)
        model.box_predictor(image_feats, feature_map)

    return Built(model, run, _size(side, side), f"{classes} query embeddings, cached",
                 notes=["CLIP text tower not per image"])


def _sam3(tiny: bool, prompts: Prompts) -> Built:
    import torch
    from transformers import Sam3Config, Sam3Model

    if tiny:
        small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
        backbone = {"model_type": "sam3_vit_model", "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 2, "num_attention_heads": 2,
                    "image_size": 112, "window_size": 4, "global_attn_indexes": [1], "pretrain_image_size": 56}
        config = Sam3Config(
            vision_config={"backbone_config": backbone, "fpn_hidden_size": 32,
                           "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]]},
            text_config={"hidden_size": 32, "intermediate_size": 64, "projection_dim": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "max_position_embeddings": 32, "vocab_size": 49408},
            geometry_encoder_config={**small, "num_layers": 1},
            detr_encoder_config={**small, "num_layers": 1},
            detr_decoder_config={**small, "num_layers": 1, "num_queries": 10},
            mask_decoder_config={"hidden_size": 32, "num_attention_heads": 2},
        )
    else:
        config = Sam3Config()  # facebook/sam3
    model = Sam3Model(config).eval()
    side = config.vision_config.image_size
    pixels = _pixels(side, side)
    # One noun phrase, padded to the text encoder's 32 positions as Sam3Processor does.
    length = config.text_config.max_position_embeddings
    ids = torch.randint(1, 49400, (1, length))
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :4] = 1
    return Built(model, lambda: model(pixel_values=pixels, input_ids=ids, attention_mask=mask),
                 _size(side, side), "1 text prompt (noun phrase)", shared="vision_encoder",
                 further_prompts=len(prompts.names) - 1,
                 notes=[f"{len(prompts.names)} classes = {len(prompts.names)} prompts"])


def _sam(model_type: str) -> Callable[[bool, Prompts], Built]:
    def build(tiny: bool, prompts: Prompts) -> Built:
        if tiny:
            from functools import partial

            import torch
            from segment_anything.modeling import ImageEncoderViT

            side = 256
            model = ImageEncoderViT(img_size=side, patch_size=16, embed_dim=32, depth=2, num_heads=2,
                                    global_attn_indexes=(1,), window_size=14, out_chans=256, qkv_bias=True,
                                    use_rel_pos=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)).eval()
            encoder = model
        else:
            from serverless.models.sam import build_sam_model

            side = 1024
            model = build_sam_model(model_type, None)
            encoder = model.image_encoder
        pixels = _pixels(side, side)
        return Built(model, lambda: encoder(pixels), _size(side, side), "none (encoder once per image)",
                     notes=["prompt encoder + mask decoder per click/box"])

    return build


# facebook/sam2.1-hiera-*: the Hiera sizes of transformers' convert_sam2_to_hf.py (tiny is the default).
_HIERA = {
    "tiny": ({}, [768, 384, 192, 96]),
    "small": ({"blocks_per_stage": [1, 2, 11, 2], "global_attention_blocks": [7, 10, 13]}, [768, 384, 192, 96]),
    "large": (
        {"hidden_size": 144, "embed_dim_per_stage": [144, 288, 576, 1152],
         "num_attention_heads_per_stage": [2, 4, 8, 16], "blocks_per_stage": [2, 6, 36, 4],
         "global_attention_blocks": [23, 33, 43],
         "window_positional_embedding_background_size": [7, 7], "window_size_per_stage": [8, 4, 16, 8]},
        [1152, 576, 288, 144],
    ),
}


def _sam2(size: str) -> Callable[[bool, Prompts], Built]:
    def build(tiny: bool, prompts: Prompts) -> Built:
        from transformers import Sam2Config, Sam2Model

        if tiny:
            side = 256
            # A global-attention block may not open a stage (transformers' Hiera then divides by 0).
            hiera = {"hidden_size": 16, "embed_dim_per_stage": [16, 32, 64, 128],
                     "num_attention_heads_per_stage": [1, 1, 2, 2], "blocks_per_stage": [1, 1, 2, 1],
                     "global_attention_blocks": [3], "window_size_per_stage": [8, 4, 4, 4],
                     "window_positional_embedding_background_size": [4, 4], "image_size": [side, side]}
            channels = [128, 64, 32, 16]
        else:
            side = 1024
            hiera, channels = _HIERA[size]
        grid = side // 4
        config = Sam2Config(
            vision_config={"backbone_config": {"model_type": "sam2_hiera_det_model", **hiera},
                           "backbone_channel_list": channels,
                           "backbone_feature_sizes": [[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]]},
            prompt_encoder_config={"image_size": side},
        )
        model = Sam2Model(config).eval()
        pixels = _pixels(side, side)
        return Built(model, lambda: model.get_image_embeddings(pixels), _size(side, side),
                     "none (encoder once per image)", notes=["prompt encoder + mask decoder per click/box"])

    return build


def _clip(tiny: bool, prompts: Prompts) -> Built:
    from transformers import CLIPConfig, CLIPModel

    if tiny:
        small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
        config = CLIPConfig(text_config=small, vision_config={**small, "image_size": 64, "patch_size": 32},
                            projection_dim=32)
    else:
        config = CLIPConfig()  # openai/clip-vit-base-patch32
    model = CLIPModel(config).eval()
    side = config.vision_config.image_size
    pixels = _pixels(side, side)
    return Built(model, lambda: model.get_image_features(pixel_values=pixels), _size(side, side),
                 f"{len(prompts.names)} label embeddings, cached", notes=["text tower not per image"])


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("grounding-dino-t", "Grounding DINO-T (Swin-T)", "detector, open vocab.", _grounding_dino(mm=False)),
    ModelSpec("mm-grounding-dino-t", "MM-Grounding-DINO-T (Swin-T)", "detector, open vocab.", _grounding_dino(mm=True)),
    ModelSpec("yolo-world-s", "YOLO-World-S v2", "detector, open vocab.", _yolo_world("s")),
    ModelSpec("yolo-world-l", "YOLO-World-L v2", "detector, open vocab.", _yolo_world("l")),
    ModelSpec("owlv2-b16", "OWLv2-B/16", "detector, open vocab.", _owlv2),
    ModelSpec("sam3", "SAM 3", "detector + masks, open vocab.", _sam3),
    ModelSpec("sam-vit-b", "SAM vit_b encoder", "segmenter (boxes/clicks)", _sam("vit_b")),
    ModelSpec("sam-vit-h", "SAM vit_h encoder", "segmenter (boxes/clicks)", _sam("vit_h")),
    ModelSpec("sam2.1-hiera-t", "SAM 2.1 hiera-tiny encoder", "segmenter (boxes/clicks)", _sam2("tiny")),
    ModelSpec("sam2.1-hiera-s", "SAM 2.1 hiera-small encoder", "segmenter (boxes/clicks)", _sam2("small")),
    ModelSpec("sam2.1-hiera-l", "SAM 2.1 hiera-large encoder", "segmenter (boxes/clicks)", _sam2("large")),
    ModelSpec("clip-b32", "CLIP ViT-B/32 image tower", "classifier (tags)", _clip),
)


# --------------------------------------------------------------------------- running


def _setup_torch(threads: int | None) -> None:
    import torch

    # Random weights can produce denormal floats, which are very slow on x86 CPUs.
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()


def _spec(name: str) -> ModelSpec:
    for spec in MODELS:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown model {name!r}; known: {', '.join(s.name for s in MODELS)}")


def _failed(spec: ModelSpec, why: str) -> dict[str, Any]:
    return {"name": spec.name, "title": spec.title, "task": spec.task, "error": why}


def _job(name: str, tiny: bool, runs: int, prompts: Prompts, threads: int | None) -> dict[str, Any]:
    """One model in a spawned process: its row, with this process's peak RSS."""
    _setup_torch(threads)
    spec = _spec(name)
    try:
        row = measure(spec, tiny=tiny, runs=runs, prompts=prompts)
    except (MemoryError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        row = _failed(spec, f"could not be run here: {type(err).__name__}: {first[:200]}")
    # ru_maxrss is in kilobytes on Linux.
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return row


def run_isolated(spec: ModelSpec, tiny: bool, runs: int, prompts: Prompts, threads: int | None) -> dict[str, Any]:
    """`_job` in a fresh spawned process; a process that dies (out of memory) becomes a failed row."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            row = pool.submit(_job, spec.name, tiny, runs, prompts, threads).result()
    except BrokenProcessPool:
        row = _failed(spec, "could not be run here: its process died (out of memory?)")
    row["job_s"] = round(time.perf_counter() - started, 1)
    return row


def machine_info(threads: int | None) -> dict[str, Any]:
    """The machine and library versions the figures were measured with."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads or torch.get_num_threads(),
        "transformers": installed("transformers"),
        "ultralytics": installed("ultralytics"),
        "segment_anything": installed("segment-anything"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- output


def _cells(row: dict[str, Any]) -> list[str]:
    """One table row as text, in `COLUMNS` order."""
    rss = f"{row['peak_rss_gb']:.1f}" if row.get("peak_rss_gb") is not None else "-"
    if "error" in row:
        return [row["title"], row["task"], "-", "-", "-", "-", "-", "-", "-", "-", rss, row["error"]]
    return [
        row["title"],
        row["task"],
        row["input"],
        row["prompts"],
        str(row["passes"]),
        f"{row['params_m']:.1f}",
        f"{row['gflops']:.1f}",
        f"{row['cpu_s']:.2f}",
        _rate(row["cpu_images_per_s"]),
        f"{row['h100_images_per_s']:.0f}",
        rss,
        "; ".join(row["notes"]),
    ]


def _rate(per_s: float) -> str:
    """Images/s with two significant digits below 1 (a slow CPU's 0.0043 is not 0.00)."""
    return f"{per_s:.2f}" if per_s >= 1 else f"{per_s:.2g}"


def _caption(report: dict[str, Any]) -> str:
    m = report["machine"]
    mode = "TINY configs: the numbers check the script, they mean nothing. " if report["tiny"] else ""
    return (
        f"{mode}{m['date']}, {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads); "
        f"torch {m['torch']}, transformers {m['transformers']}, ultralytics {m['ultralytics']}, "
        f"segment-anything {m['segment_anything']}. CPU s/image: median of {report['runs']} after a "
        f"FLOP-counted warm-up run. H100 img/s = {UTILISATION:.0%} x {H100_BF16_DENSE_TFLOPS:.0f} TFLOPS "
        f"(H100 SXM dense bf16 peak) / FLOPs per image. Load average {m['load_average_start']} -> "
        f"{m.get('load_average_end')}."
    )


def render(report: dict[str, Any], console: Any) -> None:
    """The table, with rich."""
    from rich.table import Table

    table = Table(title=f"Model architectures, random weights, one image each (H100 column: "
                        f"{UTILISATION:.0%} of {H100_BF16_DENSE_TFLOPS:.0f} TFLOPS dense bf16)")
    for column in COLUMNS:
        numeric = column not in ("model", "task", "input (WxH)", "prompts per image", "notes")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in report["rows"]:
        table.add_row(*_cells(row))
    table.caption = _caption(report)
    console.print(table)


def markdown(report: dict[str, Any]) -> str:
    """The table as Markdown, with the caption as a paragraph under it."""
    numeric = [c not in ("model", "task", "input (WxH)", "prompts per image", "notes") for c in COLUMNS]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for row in report["rows"]:
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in _cells(row)) + " |")
    return "\n".join(lines) + "\n\n" + _caption(report) + "\n"


def _names(value: str) -> list[ModelSpec]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one model name")
    try:
        return [_spec(n) for n in names]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=_names, default=list(MODELS), metavar="NAME,...",
                        help=f"models to run, in this order (default: all): {', '.join(s.name for s in MODELS)}")
    parser.add_argument("--runs", type=at_least(1), default=3, help="timed runs per model after the warm-up (default 3)")
    parser.add_argument("--tiny", action="store_true", help="scaled-down configs: checks the script in seconds")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each model in its own spawned process (default: on, off with --tiny)")
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--gdino-tokenizer", default=None, metavar="DIR_OR_ID",
                        help="bert-base-uncased tokenizer to count Grounding DINO's caption tokens: a directory or "
                        f"a cached hub id (default: {DEFAULT_GDINO_TOKENIZER} if cached, else one 256-token caption "
                        "is assumed)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    isolate = (not args.tiny) if args.isolate is None else args.isolate

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 240)
    _setup_torch(args.threads)
    prompts = load_prompts(args.gdino_tokenizer or DEFAULT_GDINO_TOKENIZER, required=args.gdino_tokenizer is not None)
    command = " ".join(["python bench/models.py", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {"command": command, "tiny": args.tiny, "runs": args.runs,
                              "machine": machine_info(args.threads), "rows": []}
    for spec in args.models:
        console.log(f"{spec.name}: building and measuring (load average {os.getloadavg()[0]:.2f})")
        if isolate:
            row = run_isolated(spec, args.tiny, args.runs, prompts, args.threads)
        else:
            row = measure(spec, tiny=args.tiny, runs=args.runs, prompts=prompts)
        report["rows"].append(row)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    render(report, console)
    write_outputs(report, args.json, args.markdown, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
