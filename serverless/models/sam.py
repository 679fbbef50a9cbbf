"""SAM through segment-anything: embed a frame once, then prompt it many times.

``SamSegmenter.embed`` runs the costly image encoder and caches the result by image content
hash; ``embed_many`` encodes several frames in one forward pass (SAM resizes each frame's long
side to 1024 and pads it to 1024x1024, so every frame has one input size and a batch gives
each frame the embedding it gets alone, up to float noise); ``segment_boxes`` decodes all
boxes of a frame in one batched ``predict_torch`` call; ``segment_points`` serves interactive
clicks from a cached embedding.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serverless.models.downloads import PublicCheckpoint, download_once, locate_public
from serverless.models.embedding_cache import EmbeddingCache, image_hash
from serverless.models.base import frames_per_pass
from serverless.models.registry import (
    ModelLoadError,
    SegmenterBackend,
    WeightsSource,
    inference_context,
    load_once,
    select_device,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKEND",
    "BROWSER_DECODER",
    "CPU_ENCODER_BATCH",
    "ENCODER_BATCH",
    "SAM_CHECKPOINTS",
    "SamEmbedding",
    "SamSegmenter",
    "build_sam_model",
    "image_hash",
    "locate_weights",
    "resolve_sam_checkpoint",
    "sam_cache_path",
    "split_weights",
]

#: Public checkpoints (URL, MD5) used when no checkpoint path is configured.
SAM_CHECKPOINTS = {
    "vit_h": ("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6"),
    "vit_l": ("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c"),
    "vit_b": ("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8"),
}
BROWSER_DECODER = "sam-vit-h"
"""The browser-side decoder CVAT's SAM plugin ships: it reads SAM vit_h embeddings."""
ENCODER_BATCH = 4
"""Frames per image-encoder pass of `SamSegmenter.embed_many` on a GPU (bounds its activations:
the global attention layers hold a 4096x4096 map per head and frame)."""
CPU_ENCODER_BATCH = 1
"""The same on a CPU: one frame per pass. A CPU is busy with one frame already (two vit_b frames
in one pass took 2.2x one frame's time here), and the attention maps cost about 2.5 GB per
vit_b frame in float32."""
_CACHE_FOLDER = "sam"
_CONFIG_KEYS = {"encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes"}


def build_sam_model(model_type: str, checkpoint: str | os.PathLike[str] | None) -> Any:
    """Build a SAM of ``model_type`` and load ``checkpoint`` (a segment-anything state dict).

    ``model_type`` is a key of ``segment_anything.sam_model_registry`` (``vit_h``, ``vit_l``,
    ``vit_b``) or the path of a JSON file giving the ViT sizes (``encoder_embed_dim``,
    ``encoder_depth``, ``encoder_num_heads``, ``encoder_global_attn_indexes``), as written for
    the tiny model.
    """
    import torch
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    if model_type in sam_model_registry:
        model = sam_model_registry[model_type](checkpoint=None)
    else:
        config_path = Path(model_type)
        if not config_path.is_file():
            raise ModelLoadError(
                f"SAM model type {model_type!r} is neither one of {sorted(sam_model_registry)} "
                "nor a JSON file describing the encoder"
            )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ModelLoadError(f"{config_path}: cannot read SAM config: {err}") from err
        if not isinstance(config, dict) or set(config) != _CONFIG_KEYS:
            raise ModelLoadError(f"{config_path}: SAM config must have exactly the keys {sorted(_CONFIG_KEYS)}")
        model = _build_sam(**config, checkpoint=None)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise ModelLoadError(f"SAM checkpoint not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(f"SAM checkpoint {path} does not load as {model_type}: {first}") from err
    return model.eval()


def _public(model_type: str) -> PublicCheckpoint:
    url, md5 = SAM_CHECKPOINTS[model_type]
    return PublicCheckpoint(url, md5=md5)


def sam_cache_path(model_type: str) -> Path:
    """Where the public checkpoint of ``model_type`` is kept once downloaded:
    ``$AUTOLABEL_CACHE/sam/<file>`` (default ``~/.cache/autolabel``)."""
    return _public(model_type).cache_path(_CACHE_FOLDER)


def resolve_sam_checkpoint(model_type: str, checkpoint: str | None) -> str:
    """The configured checkpoint, else the public one for ``model_type``, downloaded once and
    MD5-checked (`serverless.models.downloads.download_once`)."""
    if checkpoint:
        return checkpoint
    if model_type not in SAM_CHECKPOINTS:
        raise ModelLoadError(f"no SAM checkpoint configured for model type {model_type!r} (set AUTOLABEL_SAM_CHECKPOINT)")
    target = sam_cache_path(model_type)
    return str(download_once(_public(model_type), target, display=f"SAM {model_type}", hint=_HINT))


@dataclass(frozen=True, eq=False)
class SamEmbedding:
    """One frame's image embedding and the sizes needed to map prompts onto it."""

    features: Any  # torch.Tensor (1, 256, 64, 64)
    original_size: tuple[int, int]  # (H, W) of the frame
    input_size: tuple[int, int]  # (H, W) after resizing the longest side to 1024
    image_hash: str

    def to_numpy(self) -> np.ndarray:
        """float32 ``[1, 256, 64, 64]``, as CVAT's browser decoder expects."""
        return self.features.detach().float().cpu().numpy().astype(np.float32, copy=False)


class SamSegmenter:
    """A loaded SAM with an LRU cache of frame embeddings keyed by image content hash: a
    `serverless.models.base.Segmenter` and `~serverless.models.base.EmbeddingExporter`."""

    def __init__(
        self, model: Any, *, device: str, model_id: str, cache_size: int = 32, model_type: str | None = None
    ) -> None:
        from segment_anything import SamPredictor

        self.model = model.to(device)
        self.device = device
        self.model_id = model_id
        self.model_type = model_type
        self._predictor = SamPredictor(self.model)
        self._cache: EmbeddingCache[SamEmbedding] = EmbeddingCache(cache_size)
        self._lock = threading.RLock()  # the predictor holds one frame's state at a time

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The image encoder (`serverless.models.base.Compilable`): a fixed 1024x1024 input, the
        costly part; the prompt encoder and mask decoder see a new box count per frame."""
        return {f"SAM {self.model_type} image encoder": self.model.image_encoder}

    @classmethod
    def load(cls, model_type: str, checkpoint: str | None, *, device: str | None = None) -> SamSegmenter:
        """Load once per process; ``checkpoint`` None means the public checkpoint for ``model_type``."""
        device = select_device(device)
        resolved = resolve_sam_checkpoint(model_type, checkpoint)
        key = ("sam", model_type, str(Path(resolved).resolve()), device)
        return load_once(
            key,
            lambda: cls(build_sam_model(model_type, resolved), device=device, model_id=resolved, model_type=model_type),
        )

    @property
    def browser_decoder(self) -> str | None:
        """`BROWSER_DECODER` for SAM vit_h (the encoder CVAT's browser decoder was exported
        with), else None: other sizes give embeddings that decoder misreads."""
        return BROWSER_DECODER if self.model_type == "vit_h" else None

    def export_embedding(self, embedding: SamEmbedding) -> np.ndarray:
        """float32 ``[1, 256, 64, 64]``, as CVAT's browser decoder reads it."""
        return embedding.to_numpy()

    # ----------------------------------------------------------------- encoder
    def embed(self, image: np.ndarray) -> SamEmbedding:
        """Embed an RGB uint8 (H, W, 3) frame; a frame seen before costs a dictionary look-up."""
        return self.embed_many([image])[0]

    def embed_many(self, images: Sequence[np.ndarray]) -> list[SamEmbedding]:
        """`embed` of each frame, the frames not in the cache encoded together, `ENCODER_BATCH`
        per forward pass on a GPU, `CPU_ENCODER_BATCH` on a CPU
        (`serverless.models.base.BatchEmbedder`)."""
        return self._cache.get_many(images, self._encode_many)

    def _encode_many(self, images: list[np.ndarray], keys: list[str]) -> list[SamEmbedding]:
        """What `SamPredictor.set_image` does for one frame, for a batch: resize the long side,
        normalise and pad each frame (`Sam.preprocess`), then one encoder pass per chunk."""
        import torch

        found: list[SamEmbedding] = []
        with self._lock, inference_context(self.device):
            step = frames_per_pass(self.device, ENCODER_BATCH, CPU_ENCODER_BATCH)
            for start in range(0, len(images), step):
                chunk = images[start : start + step]
                resized = [self._predictor.transform.apply_image(np.ascontiguousarray(image)) for image in chunk]
                pixels = torch.cat(
                    [
                        self.model.preprocess(torch.as_tensor(r, device=self.device).permute(2, 0, 1)[None])
                        for r in resized
                    ]
                )
                features = self.model.image_encoder(pixels)
                for row, (image, small, key) in enumerate(zip(chunk, resized, keys[start:], strict=False)):
                    found.append(
                        SamEmbedding(
                            features=features[row : row + 1].clone(),  # a frame's own memory, freed with it
                            original_size=(int(image.shape[0]), int(image.shape[1])),
                            input_size=(int(small.shape[0]), int(small.shape[1])),
                            image_hash=key,
                        )
                    )
        return found

    def cached(self, image: np.ndarray) -> bool:
        return image in self._cache

    def _use(self, embedding: SamEmbedding) -> Any:
        predictor = self._predictor
        predictor.features = embedding.features
        predictor.original_size = embedding.original_size
        predictor.input_size = embedding.input_size
        predictor.is_image_set = True
        return predictor

    # ----------------------------------------------------------------- decoder
    def segment_boxes(self, embedding: SamEmbedding, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Masks (N, H, W) bool for N boxes, decoded in **one** batched call."""
        import torch

        boxes = np.array(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        height, width = embedding.original_size
        if len(boxes) == 0:
            return np.zeros((0, height, width), dtype=bool)
        with self._lock, inference_context(self.device):
            predictor = self._use(embedding)
            tensor = torch.as_tensor(boxes, device=self.device)
            tensor = predictor.transform.apply_boxes_torch(tensor, embedding.original_size)
            masks, _, _ = predictor.predict_torch(
                point_coords=None, point_labels=None, boxes=tensor, multimask_output=False
            )
        return masks[:, 0].cpu().numpy().astype(bool)

    def segment_points(
        self,
        embedding: SamEmbedding,
        positive: np.ndarray,
        negative: np.ndarray | None = None,
        box_xyxy: np.ndarray | None = None,
    ) -> np.ndarray:
        """One (H, W) bool mask from clicks (and an optional box); the best-scored of SAM's
        three candidates when the prompt is a single click, the single output otherwise."""
        pos = np.asarray(positive, dtype=np.float32).reshape(-1, 2)
        neg = np.zeros((0, 2), np.float32) if negative is None else np.asarray(negative, dtype=np.float32).reshape(-1, 2)
        coords = np.concatenate([pos, neg])
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64)
        box = None if box_xyxy is None else np.asarray(box_xyxy, dtype=np.float32).reshape(4)
        if len(coords) == 0 and box is None:
            raise ValueError("segment_points needs at least one point or a box")
        multimask = len(coords) == 1 and box is None
        with self._lock, inference_context(self.device):
            predictor = self._use(embedding)
            masks, scores, _ = predictor.predict(
                point_coords=coords if len(coords) else None,
                point_labels=labels if len(coords) else None,
                box=box,
                multimask_output=multimask,
            )
        return masks[int(np.argmax(scores))].astype(bool)


# --------------------------------------------------------------------------- weights

_HINT = (
    "set AUTOLABEL_SAM_CHECKPOINT (or --sam-checkpoint) to a local .pth file "
    "(python -m serverless.weights fetch --sam TYPE), or go online"
)


def split_weights(weights: str) -> tuple[str, str | None]:
    """``(model type, checkpoint or None)`` of SAM weights ``TYPE[:CHECKPOINT]``, where TYPE is
    a SAM size or a path ending in ``.json``; ValueError otherwise."""
    for model_type in SAM_CHECKPOINTS:
        if weights == model_type or weights.startswith(model_type + ":"):
            return model_type, weights[len(model_type) + 1 :] or None
    end = weights.find(".json:")
    if end >= 0:
        return weights[: end + 5], weights[end + 6 :] or None
    if weights.endswith(".json"):
        return weights, None
    raise ValueError(
        f"the model type must be one of {', '.join(SAM_CHECKPOINTS)} or a .json file of encoder sizes, "
        f"as in sam:vit_b or sam:vit_b:/path/sam_vit_b.pth (got {weights!r})"
    )


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    """A bare ``sam`` takes ``AUTOLABEL_SAM_MODEL_TYPE`` (default vit_h) and
    ``AUTOLABEL_SAM_CHECKPOINT``; ``sam:TYPE`` the public checkpoint of that type."""
    weights = weights.strip()
    if not weights:
        model_type = environ.get("AUTOLABEL_SAM_MODEL_TYPE") or "vit_h"
        checkpoint = environ.get("AUTOLABEL_SAM_CHECKPOINT") or ""
        weights = f"{model_type}:{checkpoint}" if checkpoint else model_type
    model_type, checkpoint = split_weights(weights)
    if ":" in weights and not (checkpoint or "").strip():
        raise ValueError("the checkpoint after the model type is empty")
    return f"{model_type}:{checkpoint}" if checkpoint else model_type


def locate_weights(weights: str, download: bool = True) -> WeightsSource:
    """Where SAM ``TYPE[:CHECKPOINT]`` loads from: the checkpoint (which must exist), else the
    public checkpoint for the type from the autolabel cache, else (``download``) from its URL
    when a bounded probe reaches it (`serverless.models.downloads.locate_public`).
    `ModelLoadError` in one line otherwise, before anything loads."""
    model_type, checkpoint = split_weights(weights)
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ModelLoadError(
                f"SAM checkpoint {checkpoint!r} does not exist "
                "(AUTOLABEL_SAM_CHECKPOINT / --sam-checkpoint must name a .pth file)"
            )
        return WeightsSource(str(path), f"SAM checkpoint {checkpoint}")
    if model_type not in SAM_CHECKPOINTS:
        raise ModelLoadError(
            f"no SAM checkpoint configured for model type {model_type!r} (set AUTOLABEL_SAM_CHECKPOINT)"
        )
    return locate_public(_public(model_type), _CACHE_FOLDER, display=f"SAM {model_type}", download=download, hint=_HINT)


def _on_disk(weights: str) -> str | None:
    try:
        return locate_weights(weights, download=False).load_from
    except ModelLoadError:
        return None


def _tiny(directory: Path, seed: int = 0) -> str:
    from serverless.models.tiny import make_tiny_models

    tiny = make_tiny_models(directory, seed=seed)
    return f"{tiny.sam_model_type}:{tiny.sam_checkpoint}"


def _build(weights: str, source: WeightsSource, device: str | None) -> SamSegmenter:
    model_type, _ = split_weights(weights)
    return SamSegmenter.load(model_type, source.load_from, device=device)


BACKEND = SegmenterBackend(
    name="sam",
    summary="Segment Anything (segment-anything): masks from boxes and clicks; vit_h embeddings for CVAT's browser",
    parse=_parse,
    locate=locate_weights,
    on_disk=_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``sam[:TYPE[:CHECKPOINT]]``: TYPE is vit_h, vit_l, vit_b or a JSON file of encoder sizes."""
