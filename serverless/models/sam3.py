"""SAM 3 through transformers: text prompts → instance masks, boxes and scores, one model.

SAM 3 (`Sam3Model`) answers a text query with DETR-style instances: per query slot a score, a
box and a mask. For an ontology, every prompt of every label is a query. The prompts' text
encodings are computed once per ontology, when the detector is bound; a frame's vision features
are computed once, and the prompts run against them in batches of `PROMPT_BATCH` (the features
expanded along the batch, never recomputed). The vision encoder takes `VISION_BATCH` frames per
forward pass: the processor resizes every frame to one square input (1008x1008 for
``facebook/sam3``, no padding), so a frame's features, and its result, do not depend on the
frames batched with it (up to float noise); the prompts then run frame by frame.

Post-processing (`decode_instances`, a pure function of the model outputs): instance scores and
pixel boxes by the processor's rule (query score x presence score; boxes scaled to the frame),
each prompt's instances labelled with its label and kept at that label's threshold, merged by
NMS (class-wise unless the ontology says otherwise: a label's prompts that find the same object
collapse to one), cut to ``defaults.max_detections``; only the survivors' masks are resized to
the frame, with the processor's bilinear resize and mask threshold.

The text encoder reads at most ``text_config.max_position_embeddings`` tokens (32 for
``facebook/sam3``): a longer prompt is an `OntologyError` when the detector is bound, never
truncated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serverless.detections import Detections
from serverless.models.base import BoundDetector, check_threshold, frames_per_pass
from serverless.models.hub import load_error, locate_pretrained, pretrained_on_disk
from serverless.models.registry import (
    DetectorBackend,
    WeightsSource,
    inference_context,
    load_once,
    select_device,
)
from serverless.models.tiny_tokenizers import tiny_clip_tokenizer
from serverless.ontology import Defaults, Ontology, OntologyError, prompt_phrases

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTokenizer, Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor
    from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput, Sam3VisionEncoderOutput

__all__ = [
    "BACKEND",
    "DEFAULT_SAM3_MODEL",
    "MASK_CHUNK",
    "PROMPT_BATCH",
    "CPU_VISION_BATCH",
    "VISION_BATCH",
    "Sam3",
    "Sam3Detector",
    "decode_instances",
    "frame_masks",
    "locate_weights",
    "write_tiny_sam3",
]

DEFAULT_SAM3_MODEL = "facebook/sam3"

PROMPT_BATCH = 16
"""Prompts run together against one frame's features (bounds the memory of one forward pass:
each prompt decodes 200 masks of 288x288 with ``facebook/sam3``)."""

VISION_BATCH = 4
"""Frames per vision-encoder pass on a GPU (bounds its activations and the batch's feature maps)."""
CPU_VISION_BATCH = 1
"""The same on a CPU (`serverless.models.base.frames_per_pass`)."""

MASK_CHUNK = 8
"""Masks resized to the frame together (bounds the float buffers of a large frame)."""


# --------------------------------------------------------------------------- post-processing


def _select(
    image_processor: Sam3ImageProcessor,
    outputs: Sam3ImageSegmentationOutput,
    label_ids: np.ndarray,
    thresholds: np.ndarray,
    names: np.ndarray,
    frame_size: tuple[int, int],
) -> tuple[Detections, torch.Tensor]:
    """One batch of prompts on one frame: the instances at or above their label's threshold
    (boxes in frame pixels, clipped) and their low-resolution mask logits, in the same order."""
    import torch
    from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

    height, width = frame_size
    n_prompts = outputs.pred_logits.shape[0]
    if label_ids.shape != (n_prompts,):
        raise ValueError(f"label_ids must have shape ({n_prompts},), got {label_ids.shape}")
    scored = Sam3ImageSegmentationOutput(
        pred_logits=outputs.pred_logits.float(),
        pred_boxes=outputs.pred_boxes.float(),
        presence_logits=None if outputs.presence_logits is None else outputs.presence_logits.float(),
    )
    # threshold -1 keeps every query (the processor keeps scores > threshold): our rule is
    # "at or above the label's own threshold", applied below.
    found = image_processor.post_process_object_detection(
        scored, threshold=-1.0, target_sizes=[(height, width)] * n_prompts
    )
    scores = torch.stack([r["scores"] for r in found]).cpu().numpy()  # (P, Q)
    boxes = torch.stack([r["boxes"] for r in found]).cpu().numpy()  # (P, Q, 4) pixels
    class_ids = np.repeat(label_ids.astype(np.int64)[:, None], scores.shape[1], axis=1)
    keep = scores >= thresholds[class_ids]
    prompt_index, query_index = np.nonzero(keep)
    kept = class_ids[keep]
    detections = Detections(xyxy=boxes[keep], scores=scores[keep], class_ids=kept, labels=names[kept])
    device = outputs.pred_masks.device
    masks = outputs.pred_masks[torch.from_numpy(prompt_index).to(device), torch.from_numpy(query_index).to(device)]
    return detections.clip(width, height), masks


def frame_masks(
    image_processor: Sam3ImageProcessor, mask_logits: torch.Tensor, frame_size: tuple[int, int]
) -> np.ndarray:
    """(K, H, W) bool masks at the frame size from (K, h, w) low-resolution mask logits: the
    processor's ``post_process_instance_segmentation`` resize and mask threshold, `MASK_CHUNK`
    masks at a time."""
    import torch
    from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

    height, width = frame_size
    masks = np.zeros((len(mask_logits), height, width), dtype=bool)
    for start in range(0, len(mask_logits), MASK_CHUNK):
        chunk = mask_logits[start : start + MASK_CHUNK].float()
        n = len(chunk)
        only_masks = Sam3ImageSegmentationOutput(
            pred_logits=torch.zeros(1, n, device=chunk.device),
            pred_boxes=torch.zeros(1, n, 4, device=chunk.device),
            pred_masks=chunk[None],
        )
        (result,) = image_processor.post_process_instance_segmentation(
            only_masks, threshold=-1.0, target_sizes=[(height, width)]
        )
        masks[start : start + n] = result["masks"].bool().cpu().numpy()
    return masks


def decode_instances(
    image_processor: Sam3ImageProcessor,
    batches: Iterable[tuple[Sam3ImageSegmentationOutput, np.ndarray]],
    *,
    frame_size: tuple[int, int],
    thresholds: np.ndarray,
    names: Sequence[str],
    defaults: Defaults,
) -> Detections:
    """One frame's detections from its model outputs, with full-frame masks.

    ``batches``: for each batch of prompts, the model outputs on this frame (batch = prompts)
    and the label id of each prompt; it may be a generator (each batch's full outputs are
    dropped once its instances are selected). ``frame_size`` = (H, W); ``thresholds`` (L,)
    the score threshold of each label; ``names`` the label names. Instances at or above their
    label's threshold, NMS at ``defaults.nms_iou`` (class-wise unless
    ``defaults.class_agnostic_nms``), at most ``defaults.max_detections``, in descending
    score order.
    """
    import torch

    thresholds = np.asarray(thresholds, dtype=np.float32)
    label_names = np.asarray(names, dtype=str)
    parts: list[Detections] = []
    logits: list[torch.Tensor] = []
    rows = 0
    for outputs, label_ids in batches:
        found, masks = _select(
            image_processor, outputs, np.asarray(label_ids), thresholds, label_names, frame_size
        )
        parts.append(found.with_columns(data={"row": np.arange(rows, rows + len(found))}))
        logits.append(masks)
        rows += len(found)
    if not rows:
        return Detections.empty(with_masks_shape=frame_size)
    kept = Detections.concatenate(parts).suppressed(defaults)
    stacked = torch.cat(logits)
    chosen = stacked[torch.tensor(kept.data["row"], dtype=torch.long, device=stacked.device)]
    return kept.with_columns(masks=frame_masks(image_processor, chosen, frame_size), data={})


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class _EncodedPrompts:
    """An ontology's prompts as SAM 3 reads them (computed once per ontology)."""

    prompts: tuple[str, ...]
    label_ids: np.ndarray
    """int64 (P,): the label id of each prompt."""
    embeds: torch.Tensor
    """(P, T, D): the projected text features (``get_text_features(...).pooler_output``)."""
    attention_mask: torch.Tensor
    """(P, T)."""

    def batches(self) -> Iterator[slice]:
        for start in range(0, len(self.prompts), PROMPT_BATCH):
            yield slice(start, min(start + PROMPT_BATCH, len(self.prompts)))


class Sam3:
    """A loaded SAM 3 (open vocabulary: the weights serve any ontology).

    ``detect(images, ontology)`` prompts it with an ontology; `bind` gives the `Detector`
    for one ontology, which is what every door holds.
    """

    def __init__(self, model: Sam3Model, processor: Sam3Processor, *, device: str, model_id: str) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.model_id = model_id
        self._prompts: dict[str, _EncodedPrompts] = {}

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The vision encoder (`serverless.models.base.Compilable`): a fixed 1008x1008 input;
        the text prompts are encoded once per ontology."""
        return {"SAM 3 vision encoder": self.model.vision_encoder}

    @classmethod
    def load(cls, model_id: str, *, device: str | None = None) -> Sam3:
        """Load from a hub id or a local ``save_pretrained`` directory, once per process."""
        device = select_device(device)
        return load_once(("sam3", model_id, device), lambda: cls._from_pretrained(model_id, device))

    @classmethod
    def _from_pretrained(cls, model_id: str, device: str) -> Sam3:
        from transformers import Sam3Model, Sam3Processor

        try:
            processor = Sam3Processor.from_pretrained(model_id)
            model = Sam3Model.from_pretrained(model_id)
        except (OSError, ValueError) as err:
            raise load_error("SAM 3", model_id, err) from err
        return cls(model, processor, device=device, model_id=model_id)

    def bind(self, ontology: Ontology) -> Sam3Detector:
        """This model as the `Detector` of ``ontology``'s labels (prompts encoded now, so a
        prompt too long for the text encoder is an `OntologyError` here, not at the first frame)."""
        self.encode_ontology(ontology)
        return Sam3Detector(self, ontology)

    # ----------------------------------------------------------------- text
    @property
    def max_prompt_tokens(self) -> int:
        """The most tokens the text encoder reads (its position embeddings), special tokens included."""
        return int(self.model.config.text_config.max_position_embeddings)

    def count_tokens(self, text: str) -> int:
        """Tokens the text encoder sees for a prompt, special tokens included."""
        return len(self.processor.tokenizer(text, add_special_tokens=True)["input_ids"])

    def check_prompts(self, ontology: Ontology) -> None:
        """`OntologyError` naming the first prompt longer than `max_prompt_tokens`."""
        limit = self.max_prompt_tokens
        for phrase, label_id in prompt_phrases(ontology):
            needed = self.count_tokens(phrase)
            if needed > limit:
                raise OntologyError(
                    f"label {ontology.labels[label_id].name!r} (labels[{label_id}]): prompt {phrase!r} needs "
                    f"{needed} tokens, more than SAM 3's text encoder reads ({limit}); shorten the prompt"
                )

    def encode_ontology(self, ontology: Ontology) -> _EncodedPrompts:
        """Every prompt's text features, computed once per ontology (by content)."""
        key = ontology.content_hash
        if key not in self._prompts:
            self.check_prompts(ontology)
            pairs = prompt_phrases(ontology)
            prompts = tuple(phrase for phrase, _ in pairs)
            tokens = self.processor(text=list(prompts), return_tensors="pt")
            input_ids = tokens["input_ids"].to(self.device)
            attention_mask = tokens["attention_mask"].to(self.device)
            with inference_context(self.device):
                embeds = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            label_ids = np.array([label_id for _, label_id in pairs], dtype=np.int64)
            self._prompts[key] = _EncodedPrompts(prompts, label_ids, embeds, attention_mask)
        return self._prompts[key]

    # ----------------------------------------------------------------- stages
    def vision_features(self, images: Sequence[np.ndarray]) -> list[Sam3VisionEncoderOutput]:
        """RGB uint8 (H, W, 3) frames through the vision encoder in one pass (the costly part,
        once per frame): each frame's feature maps, batch dimension 1."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        # Frames are always (H, W, 3); without the hint, 1- or 3-pixel-high frames are misread.
        pixels = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last"
        )["pixel_values"].to(self.device)
        with inference_context(self.device):
            out = self.model.get_vision_features(pixel_values=pixels)
        return [
            Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(h[row : row + 1] for h in out.fpn_hidden_states),
                fpn_position_encoding=tuple(p[row : row + 1] for p in out.fpn_position_encoding),
            )
            for row in range(len(pixels))
        ]

    def forward(
        self, vision: Sam3VisionEncoderOutput, encoded: _EncodedPrompts, prompts: slice
    ) -> Sam3ImageSegmentationOutput:
        """A batch of prompts against one frame's vision features (expanded, not recomputed)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        n = len(encoded.prompts[prompts])
        expanded = Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(h.expand(n, *h.shape[1:]) for h in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(p.expand(n, *p.shape[1:]) for p in vision.fpn_position_encoding),
        )
        with inference_context(self.device):
            return self.model(
                vision_embeds=expanded,
                text_embeds=BaseModelOutputWithPooling(pooler_output=encoded.embeds[prompts]),
                attention_mask=encoded.attention_mask[prompts],
            )

    def detect(
        self, images: Sequence[np.ndarray], ontology: Ontology, *, threshold: float | None = None
    ) -> list[Detections]:
        """Instances with full-frame masks for each RGB uint8 (H, W, 3) image.

        ``threshold`` overrides every label's threshold; otherwise each label's own threshold
        (or the ontology default) applies. See `decode_instances` for the rest.
        """
        threshold = check_threshold(threshold)
        if not images:
            return []
        encoded = self.encode_ontology(ontology)
        per_label = ontology.thresholds_or(threshold)
        results = []
        with inference_context(self.device):
            step = frames_per_pass(self.device, VISION_BATCH, CPU_VISION_BATCH)
            for start in range(0, len(images), step):
                chunk = images[start : start + step]
                for image, vision in zip(chunk, self.vision_features(chunk), strict=True):
                    batches = ((self.forward(vision, encoded, s), encoded.label_ids[s]) for s in encoded.batches())
                    results.append(
                        decode_instances(
                            self.processor.image_processor,
                            batches,
                            frame_size=(image.shape[0], image.shape[1]),
                            thresholds=per_label,
                            names=ontology.label_names,
                            defaults=ontology.defaults,
                        )
                    )
        return results


class Sam3Detector(BoundDetector):
    """SAM 3 bound to an ontology: a `serverless.models.base.Detector` whose detections carry
    full-frame masks."""


_TINY_IMAGE = 168  # 12x12 patches of 14 (facebook/sam3: 1008, 72x72)
_TINY_WORDS = (
    "person worker people man woman astronaut cat dog bird horse cup coffee bottle chair table car "
    "truck bus bicycle boat plane train rocket ladder helmet hat hard vest tree road building window "
    "door sky sunny day room inside indoors a an the of and with on in"
).split()


def _tiny_config(tokenizer: CLIPTokenizer) -> Sam3Config:
    """SAM 3's structure at toy sizes: 4 FPN scales, windowed + global ViT layers, 20 queries.
    ``initializer_range`` 0.02 everywhere (random weights must not be denormal floats)."""
    from transformers import (
        Sam3Config,
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    patches = _TINY_IMAGE // 14
    small = {"hidden_size": 32, "num_attention_heads": 2, "initializer_range": 0.02}
    backbone = Sam3ViTConfig(
        **small, intermediate_size=64, num_hidden_layers=2, image_size=_TINY_IMAGE, patch_size=14,
        window_size=patches // 2, global_attn_indexes=[1], pretrain_image_size=_TINY_IMAGE,
    )
    vision = Sam3VisionConfig(
        backbone_config=backbone, fpn_hidden_size=32, scale_factors=[4.0, 2.0, 1.0, 0.5],
        backbone_feature_sizes=[[patches * 4] * 2, [patches * 2] * 2, [patches] * 2], initializer_range=0.02,
    )
    text = {
        **small, "vocab_size": len(tokenizer), "intermediate_size": 64, "projection_dim": 32, "num_hidden_layers": 1,
        "max_position_embeddings": 32, "hidden_act": "gelu", "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }
    return Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(**small, num_layers=1, intermediate_size=64),
        detr_encoder_config=Sam3DETREncoderConfig(**small, num_layers=1, intermediate_size=64),
        detr_decoder_config=Sam3DETRDecoderConfig(**small, num_layers=2, num_queries=20, intermediate_size=64),
        mask_decoder_config=Sam3MaskDecoderConfig(**small, num_upsampling_stages=2),
        initializer_range=0.02,
    )


def write_tiny_sam3(directory: str | Path, seed: int = 0) -> Path:
    """A tiny random-init SAM 3 (model, processor, tokenizer) written with ``save_pretrained``
    to ``directory`` (idempotent), loadable by `Sam3.load` like ``facebook/sam3``. Offline."""
    import torch
    from transformers import Sam3ImageProcessor, Sam3Model, Sam3Processor

    from serverless.models.tiny import TINY_MARKER

    directory = Path(directory).resolve()
    if (directory / TINY_MARKER).exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    # facebook/sam3 reads CLIP's tokenizer (49,408 tokens); this one has a few whole words.
    tokenizer = tiny_clip_tokenizer(_TINY_WORDS, model_max_length=32)
    torch.manual_seed(seed)
    Sam3Model(_tiny_config(tokenizer)).eval().save_pretrained(str(directory))
    side = _TINY_IMAGE // 14 * 4
    image_processor = Sam3ImageProcessor(
        size={"height": _TINY_IMAGE, "width": _TINY_IMAGE}, mask_size={"height": side, "width": side}
    )
    Sam3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(directory))
    (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")
    return directory


# --------------------------------------------------------------------------- weights

_HINT = (
    "set AUTOLABEL_SAM3_MODEL (or --detector sam3:DIR) to a local directory written by save_pretrained, "
    "or go online (facebook/sam3 is gated: accept its terms on the hub and set HF_TOKEN)"
)


def locate_weights(model: str, download: bool = True) -> WeightsSource:
    """Where SAM 3 ``model`` (a directory or a hub id) loads from, checked in seconds
    (`serverless.models.hub.locate_pretrained`)."""
    return locate_pretrained(model, download, display="SAM 3", example=DEFAULT_SAM3_MODEL, hint=_HINT)


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    return weights.strip() or environ.get("AUTOLABEL_SAM3_MODEL") or DEFAULT_SAM3_MODEL


def _tiny(directory: Path, seed: int = 0) -> str:
    return str(write_tiny_sam3(Path(directory) / "sam3", seed))


def _build(weights: str, source: WeightsSource, ontology: Ontology, device: str | None) -> Sam3Detector:
    return Sam3.load(source.load_from or weights, device=device).bind(ontology)


BACKEND = DetectorBackend(
    name="sam3",
    summary="SAM 3 (transformers): instance masks, boxes and scores from the ontology's prompts, one model",
    parse=_parse,
    locate=locate_weights,
    on_disk=pretrained_on_disk,
    tiny=_tiny,
    build=_build,
    masks=True,
)
"""``sam3[:HUB_ID | :DIRECTORY]``; default ``AUTOLABEL_SAM3_MODEL``, else `DEFAULT_SAM3_MODEL`."""
