"""SAM 2.1 through transformers (`Sam2Model` + `Sam2Processor`): embed a frame once, then
prompt it many times.

``Sam2Segmenter.embed`` runs the Hiera image encoder once per frame (its three feature maps
are the embedding) and keeps the result in an LRU keyed by image content
(`serverless.models.embedding_cache`), so an interactor's clicks after the first on a frame
cost only the prompt encoder and mask decoder. ``embed_many`` encodes several frames in one
forward pass: the processor resizes every frame to one square input (1024x1024 for the public
checkpoints, without padding), so a batch gives each frame the embedding it gets alone, up to
float noise. ``segment_boxes`` decodes every box of a frame
in one batched call; ``segment_points`` serves clicks. The decoder's 256x256 mask logits are
resized straight to the frame (`frame_masks`), as SAM 2's own predictor does.

Weights are a transformers ``save_pretrained`` directory or a hub id; the sizes ``tiny``,
``small``, ``base-plus`` and ``large`` stand for ``facebook/sam2.1-hiera-<size>`` (those repos
hold ``sam2_video`` checkpoints, which `Sam2Model` reads: the image model is a subset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serverless.models.embedding_cache import EmbeddingCache
from serverless.models.hub import load_error, locate_pretrained, pretrained_on_disk
from serverless.models.base import frames_per_pass
from serverless.models.registry import (
    SegmenterBackend,
    WeightsSource,
    inference_context,
    load_once,
    select_device,
)

if TYPE_CHECKING:
    import torch
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor

__all__ = [
    "BACKEND",
    "DEFAULT_SAM2_MODEL",
    "CPU_ENCODER_BATCH",
    "ENCODER_BATCH",
    "SAM2_SIZES",
    "Sam2Embedding",
    "Sam2Segmenter",
    "best_mask",
    "frame_masks",
    "locate_weights",
    "parse_weights",
    "write_tiny_sam2",
]

SAM2_SIZES: dict[str, str] = {size: f"facebook/sam2.1-hiera-{size}" for size in ("tiny", "small", "base-plus", "large")}
"""The public SAM 2.1 checkpoints by size, fastest first."""
DEFAULT_SAM2_MODEL = SAM2_SIZES["large"]
"""The most accurate size: masks are what a segmenter is for, and Hiera-L (224 M parameters)
is still about a third of SAM 1 vit_h, the ``sam`` backend's default. ``sam2:tiny`` (39 M) is
the fast one."""
ENCODER_BATCH = 4
"""Frames per image-encoder pass of `Sam2Segmenter.embed_many` on a GPU (bounds its activations)."""
CPU_ENCODER_BATCH = 1
"""The same on a CPU (`serverless.models.base.frames_per_pass`)."""
ENV_VAR = "AUTOLABEL_SAM2_MODEL"
_DISPLAY = "SAM 2.1"


# --------------------------------------------------------------------------- decoding (pure)


def frame_masks(
    image_processor: Sam2ImageProcessor, low_res_logits: torch.Tensor, original_size: tuple[int, int]
) -> np.ndarray:
    """(N, M, H, W) bool masks at the frame size from the decoder's (N, M, h, w) mask logits:
    bilinear resize to (H, W), then logits > 0 (``Sam2ImageProcessor.post_process_masks``)."""
    (masks,) = image_processor.post_process_masks([low_res_logits.float()], [list(original_size)], mask_threshold=0.0)
    return masks.cpu().numpy().astype(bool, copy=False)


def best_mask(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The (H, W) mask of the highest predicted IoU among (M, H, W) candidates."""
    return masks[int(np.argmax(np.asarray(scores, dtype=np.float32).reshape(-1)))]


# --------------------------------------------------------------------------- segmenter


@dataclass(frozen=True, eq=False)
class Sam2Embedding:
    """One frame's SAM 2 image embedding: the encoder's feature maps, finest first (the two
    high-resolution maps the decoder upsamples with, then the 64x64 image embedding)."""

    features: tuple[torch.Tensor, ...]
    original_size: tuple[int, int]
    """(H, W) of the frame."""
    image_hash: str


class Sam2Segmenter:
    """A loaded SAM 2.1 with an LRU cache of frame embeddings: a
    `serverless.models.base.Segmenter`. CVAT's browser decoder reads SAM 1 vit_h embeddings
    only, so this is not an `~serverless.models.base.EmbeddingExporter`."""

    def __init__(
        self, model: Sam2Model, processor: Sam2Processor, *, device: str, model_id: str, cache_size: int = 32
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.model_id = model_id
        self._cache: EmbeddingCache[Sam2Embedding] = EmbeddingCache(cache_size)

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The vision encoder (`serverless.models.base.Compilable`): a fixed 1024x1024 input;
        the prompt decoder sees a new box count per frame."""
        return {"SAM 2 vision encoder": self.model.vision_encoder}

    @classmethod
    def load(cls, model_id: str, *, device: str | None = None) -> Sam2Segmenter:
        """Load a hub id or a ``save_pretrained`` directory once per process."""
        device = select_device(device)
        return load_once(("sam2", model_id, device), lambda: cls._from_pretrained(model_id, device))

    @classmethod
    def _from_pretrained(cls, model_id: str, device: str) -> Sam2Segmenter:
        from transformers import Sam2Model, Sam2Processor

        try:
            processor = Sam2Processor.from_pretrained(model_id)
            model = Sam2Model.from_pretrained(model_id)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise load_error(_DISPLAY, model_id, err) from err
        return cls(model, processor, device=device, model_id=model_id)

    # ----------------------------------------------------------------- encoder
    def embed(self, image: np.ndarray) -> Sam2Embedding:
        """Embed an RGB uint8 (H, W, 3) frame; a frame seen before costs a dictionary look-up."""
        return self.embed_many([image])[0]

    def embed_many(self, images: Sequence[np.ndarray]) -> list[Sam2Embedding]:
        """`embed` of each frame, the frames not in the cache encoded together, `ENCODER_BATCH`
        per forward pass on a GPU, `CPU_ENCODER_BATCH` on a CPU
        (`serverless.models.base.BatchEmbedder`)."""
        return self._cache.get_many(images, self._encode_many)

    def _encode_many(self, images: list[np.ndarray], keys: list[str]) -> list[Sam2Embedding]:
        found: list[Sam2Embedding] = []
        step = frames_per_pass(self.device, ENCODER_BATCH, CPU_ENCODER_BATCH)
        for start in range(0, len(images), step):
            chunk = [np.ascontiguousarray(image) for image in images[start : start + step]]
            # Frames are always (H, W, 3); without the hint, 1- or 3-pixel-high frames are misread.
            inputs = self.processor(images=chunk, return_tensors="pt", input_data_format="channels_last")
            with inference_context(self.device):
                features = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
            for row, (image, key) in enumerate(zip(chunk, keys[start:], strict=False)):
                # A frame's own copy of each map, so evicting it from the cache frees it.
                maps = tuple(level[row : row + 1].clone() for level in features)
                found.append(Sam2Embedding(maps, (int(image.shape[0]), int(image.shape[1])), key))
        return found

    def cached(self, image: np.ndarray) -> bool:
        """Whether ``image``'s embedding is in the cache."""
        return image in self._cache

    # ----------------------------------------------------------------- decoder
    def _decode(self, embedding: Sam2Embedding, *, multimask: bool, **prompts: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(masks (N, M, H, W) bool, predicted IoU (N, M))`` for the processor's nested
        prompt lists (one image); M is 3 with ``multimask``, else 1."""
        size = [list(embedding.original_size)]
        encoded = self.processor(original_sizes=size, return_tensors="pt", **prompts)
        names = ("input_points", "input_labels", "input_boxes")
        tensors = {name: encoded[name].to(self.device) for name in names if name in encoded}
        with inference_context(self.device):
            out = self.model(image_embeddings=list(embedding.features), multimask_output=multimask, **tensors)
            masks = frame_masks(self.processor.image_processor, out.pred_masks[0], embedding.original_size)
        return masks, out.iou_scores[0].float().cpu().numpy()

    def segment_boxes(self, embedding: Sam2Embedding, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Masks (N, H, W) bool for N boxes, decoded in **one** batched call."""
        boxes = np.array(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, *embedding.original_size), dtype=bool)
        masks, _ = self._decode(embedding, multimask=False, input_boxes=[boxes.tolist()])
        return masks[:, 0]

    def segment_points(
        self,
        embedding: Sam2Embedding,
        positive: np.ndarray,
        negative: np.ndarray | None = None,
        box_xyxy: np.ndarray | None = None,
    ) -> np.ndarray:
        """One (H, W) bool mask from clicks (and an optional box); the best-scored of the three
        candidates when the prompt is a single click (ambiguous), the single output otherwise."""
        pos = np.asarray(positive, dtype=np.float32).reshape(-1, 2)
        neg = np.asarray(np.zeros((0, 2)) if negative is None else negative, dtype=np.float32).reshape(-1, 2)
        points = np.concatenate([pos, neg])
        box = None if box_xyxy is None else np.asarray(box_xyxy, dtype=np.float32).reshape(4)
        if len(points) == 0 and box is None:
            raise ValueError("segment_points needs at least one point or a box")
        prompts: dict[str, list[Any]] = {}
        if len(points):
            prompts["input_points"] = [[points.tolist()]]
            prompts["input_labels"] = [[[1] * len(pos) + [0] * len(neg)]]
        if box is not None:
            prompts["input_boxes"] = [[box.tolist()]]
        masks, scores = self._decode(embedding, multimask=len(points) == 1 and box is None, **prompts)
        return best_mask(masks[0], scores[0])


# --------------------------------------------------------------------------- weights

_HINT = f"set {ENV_VAR} (or --segmenter sam2:DIR) to a local directory written by save_pretrained, or go online"


def parse_weights(weights: str, environ: Mapping[str, str]) -> str:
    """Canonical SAM 2.1 weights: a size (``tiny``, ``small``, ``base-plus``, ``large``) becomes
    its hub id; a hub id ``OWNER/NAME`` or a directory (with a separator: ``./sam2``,
    ``/models/sam2``) stays as written; empty takes ``AUTOLABEL_SAM2_MODEL``, else
    `DEFAULT_SAM2_MODEL`. ValueError naming the sizes for a bare word that is none of them."""
    weights = weights.strip() or environ.get(ENV_VAR, "").strip() or DEFAULT_SAM2_MODEL
    if weights in SAM2_SIZES:
        return SAM2_SIZES[weights]
    if "/" in weights or "\\" in weights or weights.startswith(("~", ".")):
        return weights
    raise ValueError(
        f"unknown SAM 2.1 size {weights!r}: expected one of {', '.join(SAM2_SIZES)}, "
        "a hub id OWNER/NAME or a directory (./DIR or an absolute path)"
    )


def locate_weights(model: str, download: bool = True) -> WeightsSource:
    """Where SAM 2.1 ``model`` (a directory or a hub id) loads from, checked in seconds."""
    return locate_pretrained(model, download, display=_DISPLAY, example=DEFAULT_SAM2_MODEL, hint=_HINT)


def _tiny_config(image_size: int = 256) -> Any:
    """A SAM 2 of ~0.2 M parameters on 256x256 inputs (feature maps 64, 32, 16): the real
    architecture, every stage and decoder path present, small enough for a test.
    ``initializer_range`` 0.02 everywhere keeps random weights out of denormal floats."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    dims = [12, 24, 48, 96]
    backbone = Sam2HieraDetConfig(
        hidden_size=dims[0],
        image_size=[image_size, image_size],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 4],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
        initializer_range=0.02,
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=dims[::-1],
        backbone_feature_sizes=[[image_size // stride] * 2 for stride in (4, 8, 16)],
        fpn_hidden_size=32,
        initializer_range=0.02,
    )
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=image_size, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
        initializer_range=0.02,
    )


def write_tiny_sam2(directory: Path, seed: int = 0) -> Path:
    """A tiny random-init SAM 2 written by ``save_pretrained`` (model and processor) into
    ``directory``, marked as tiny; an existing one is reused."""
    from serverless.models.tiny import TINY_MARKER

    if (directory / TINY_MARKER).exists():
        return directory
    import torch
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor

    config = _tiny_config()
    size = config.prompt_encoder_config.image_size
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Sam2Model(config).eval().save_pretrained(str(directory))
    Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": size, "width": size})).save_pretrained(
        str(directory)
    )
    (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")
    return directory


def _tiny(directory: Path, seed: int = 0) -> str:
    return str(write_tiny_sam2(Path(directory).resolve() / "sam2", seed))


def _build(weights: str, source: WeightsSource, device: str | None) -> Sam2Segmenter:
    return Sam2Segmenter.load(source.load_from or weights, device=device)


BACKEND = SegmenterBackend(
    name="sam2",
    summary="SAM 2.1 (transformers): masks from boxes and clicks; sizes tiny, small, base-plus, large",
    parse=parse_weights,
    locate=locate_weights,
    on_disk=pretrained_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``sam2[:SIZE | :HUB_ID | :DIRECTORY]``; default ``AUTOLABEL_SAM2_MODEL``, else
`DEFAULT_SAM2_MODEL` (large)."""
