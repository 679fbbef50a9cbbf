"""OWLv2 through transformers: open-vocabulary boxes for an ontology.

OWLv2 scores every patch of an image against text query embeddings, one query per prompt.
Every prompt of every ontology label is a query; a label's score for a box is the highest
score over its prompts (`label_scores`). The text embeddings are computed once per ontology,
when the detector is bound, in batches of `TEXT_BATCH` prompts; the image features are
computed once per image and scored against all of them. OWL's CLIP text encoder reads at most
16 tokens (``max_position_embeddings``), start and end tokens included: a longer prompt is
refused when binding (`serverless.ontology.OntologyError`), never truncated.

OWLv2's processor pads each image at the bottom or right to a square, then resizes it to the
model's input size; the predicted boxes are relative to that square. `decode_owl` scales them
by the longer side, clips them to the image and drops those left with no area (boxes in the
padding). Every image becomes one input size, so images of any sizes share a forward pass and
the results do not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serverless.detections import Detections
from serverless.models.base import BoundDetector, check_threshold
from serverless.models.hub import checked_config, load_error, locate_pretrained, pretrained_on_disk
from serverless.models.registry import DetectorBackend, WeightsSource, inference_context, load_once, select_device
from serverless.models.tiny import TINY_MARKER
from serverless.models.tiny_tokenizers import tiny_clip_tokenizer
from serverless.ontology import Ontology, OntologyError, prompt_phrases

if TYPE_CHECKING:
    import torch
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

__all__ = [
    "BACKEND",
    "DEFAULT_OWLV2_MODEL",
    "SCORE_BATCH",
    "TEXT_BATCH",
    "Owlv2",
    "Owlv2Detector",
    "decode_owl",
    "label_scores",
    "locate_weights",
    "owl_detections",
    "write_tiny",
]

DEFAULT_OWLV2_MODEL = "google/owlv2-base-patch16-ensemble"
TEXT_BATCH = 256
"""Prompts per pass of the text encoder when an ontology is bound."""
SCORE_BATCH = 1024
"""Queries scored against the image features at once (bounds the (images, patches, queries)
logits of a large ontology; the image features are computed once regardless)."""


def label_scores(
    query_scores: torch.Tensor, query_label: torch.Tensor, n_labels: int, *, dim: int = -1
) -> torch.Tensor:
    """Scores of Q queries (prompts) along ``dim`` → scores of ``n_labels`` labels along it:
    each label's highest score over its queries (``query_label[q]`` is the label of query q; a
    label with no query gets -inf). Runs on the scores' device, so a forward pass reduces its
    outputs before they leave the GPU. The one place of this rule: OWLv2's queries and
    YOLO-World's prompts (`serverless.models.yolo_world`) both go through it."""
    import torch

    dim = dim % query_scores.ndim
    shape = list(query_scores.shape)
    shape[dim] = n_labels
    out = torch.full(shape, float("-inf"), dtype=query_scores.dtype, device=query_scores.device)
    along = [1] * query_scores.ndim
    along[dim] = -1
    index = query_label.to(query_scores.device).view(along).expand(query_scores.shape)
    return out.scatter_reduce(dim, index, query_scores, reduce="amax")


def decode_owl(
    probs: np.ndarray, boxes_cxcywh: np.ndarray, *, image_size: tuple[int, int], thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn one image's outputs into (xyxy pixels, scores, label ids).

    ``probs`` (P, L): each predicted box's probability for each label (`label_scores` of the
    sigmoid of the logits); ``boxes_cxcywh`` (P, 4) relative to the padded square;
    ``image_size`` = (width, height) of the original image; ``thresholds`` (L,) per label.
    A box takes its best label and is kept when it scores at least that label's threshold and
    keeps some area once clipped to the image.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    best = probs.argmax(axis=1)
    scores = probs[np.arange(len(probs)), best]
    width, height = image_size
    cx, cy, w, h = np.asarray(boxes_cxcywh, dtype=np.float32).T
    side = float(max(width, height))  # the square the image was padded to
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * side
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    keep = (scores >= np.asarray(thresholds, np.float32)[best]) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return xyxy[keep].astype(np.float32), scores[keep].astype(np.float32), best[keep].astype(np.int64)


@dataclass(frozen=True)
class _Queries:
    """An ontology's text queries: normalised embeddings (Q, D) and each one's label id (Q,)."""

    embeds: torch.Tensor
    label_ids: torch.Tensor
    n_labels: int


class Owlv2:
    """A loaded OWLv2 (open vocabulary: the weights serve any ontology).

    ``detect(images, ontology)`` prompts it with an ontology; `bind` gives the `Detector` for
    one ontology, which is what every door holds.
    """

    def __init__(
        self, model: Owlv2ForObjectDetection, processor: Owlv2Processor, *, device: str, model_id: str
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.model_id = model_id
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        self._queries: dict[str, _Queries] = {}

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The vision transformer (`serverless.models.base.Compilable`): every frame is padded and
        resized to one square size, so it compiles once; the text queries are encoded once per
        ontology and the heads are small."""
        return {"OWLv2 vision model": self.model.owlv2.vision_model}

    @classmethod
    def load(cls, model_id: str, *, device: str | None = None) -> Owlv2:
        """Load from a hub id or a local ``save_pretrained`` directory, once per process."""
        device = select_device(device)
        return load_once(("owlv2", model_id, device), lambda: cls._from_pretrained(model_id, device))

    @classmethod
    def _from_pretrained(cls, model_id: str, device: str) -> Owlv2:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        try:
            config = checked_config(model_id, "owlv2")
            processor = Owlv2Processor.from_pretrained(model_id)
            model = Owlv2ForObjectDetection.from_pretrained(model_id, config=config)
        except (OSError, ValueError) as err:
            raise load_error("OWLv2", model_id, err) from err
        return cls(model, processor, device=device, model_id=model_id)

    def bind(self, ontology: Ontology) -> Owlv2Detector:
        """This model as the `Detector` of ``ontology``'s labels (the prompts are encoded now,
        so a prompt too long for the text encoder is an `OntologyError` here)."""
        self.encode_ontology(ontology)
        return Owlv2Detector(self, ontology)

    # ----------------------------------------------------------------- text
    def check_prompts(self, ontology: Ontology) -> list[tuple[str, int]]:
        """Every prompt with its label id; `OntologyError` naming the first prompt that has more
        tokens than the text encoder reads."""
        phrases = prompt_phrases(ontology)
        lengths = [len(ids) for ids in self.tokenizer([p for p, _ in phrases], verbose=False)["input_ids"]]
        for (phrase, label_id), n in zip(phrases, lengths, strict=True):
            if n > self.max_text_tokens:
                raise OntologyError(
                    f"label {ontology.labels[label_id].name!r} (labels[{label_id}]): prompt {phrase!r} is {n} tokens "
                    f"for OWLv2's text encoder, more than the {self.max_text_tokens} it reads; shorten the prompt"
                )
        return phrases

    def encode_ontology(self, ontology: Ontology) -> _Queries:
        """The ontology's query embeddings, one per prompt (cached per ontology)."""
        import torch

        key = ontology.content_hash
        if key not in self._queries:
            phrases = self.check_prompts(ontology)
            tokens = self.tokenizer(
                [p for p, _ in phrases], padding="max_length", max_length=self.max_text_tokens, return_tensors="pt"
            )
            parts = []
            with inference_context(self.device):
                for start in range(0, len(phrases), TEXT_BATCH):
                    ids = tokens["input_ids"][start : start + TEXT_BATCH].to(self.device)
                    mask = tokens["attention_mask"][start : start + TEXT_BATCH].to(self.device)
                    embeds = self.model.owlv2.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
                    parts.append(embeds.float())
                embeds = torch.cat(parts)
                embeds = embeds / torch.linalg.norm(embeds, dim=-1, keepdim=True)  # as Owlv2Model.forward
            label_ids = torch.tensor([i for _, i in phrases], dtype=torch.int64, device=self.device)
            self._queries[key] = _Queries(embeds, label_ids, len(ontology.labels))
        return self._queries[key]

    # ----------------------------------------------------------------- stages
    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Pad to a square, resize and normalise RGB uint8 images: (B, 3, S, S) pixels."""
        # Frames are always (H, W, 3); without the hint, 1- or 3-pixel-high frames are misread.
        batch = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last"
        )
        return batch["pixel_values"].to(self.device)

    def forward(self, pixels: torch.Tensor, queries: _Queries) -> tuple[np.ndarray, np.ndarray]:
        """The image features once, scored against every query: (probs (B, P, L) per label,
        boxes (B, P, 4) cxcywh relative to the padded square)."""
        import torch

        with inference_context(self.device):
            feature_map, _ = self.model.image_embedder(pixel_values=pixels)
            batch, rows, cols, width = feature_map.shape
            features = feature_map.reshape(batch, rows * cols, width)
            boxes = self.model.box_predictor(features, feature_map)
            best = torch.full((batch, rows * cols, queries.n_labels), float("-inf"), device=features.device)
            for start in range(0, len(queries.label_ids), SCORE_BATCH):
                embeds = queries.embeds[start : start + SCORE_BATCH]
                logits, _ = self.model.class_predictor(features, embeds.expand(batch, *embeds.shape))
                block = label_scores(logits.float(), queries.label_ids[start : start + SCORE_BATCH], queries.n_labels)
                best = torch.maximum(best, block)
            probs = torch.sigmoid(best)
        return probs.cpu().numpy(), boxes.float().cpu().numpy()

    def detect(
        self,
        images: Sequence[np.ndarray],
        ontology: Ontology,
        *,
        threshold: float | None = None,
    ) -> list[Detections]:
        """Boxes for each RGB uint8 (H, W, 3) image.

        ``threshold`` overrides every label's threshold; otherwise each label's own threshold
        (or the ontology default) applies. Results go through NMS (class-wise unless
        ``defaults.class_agnostic_nms``), in descending score order, cut to the ontology's
        ``defaults.max_detections`` per image.
        """
        threshold = check_threshold(threshold)
        if not images:
            return []
        probs, boxes = self.forward(self.preprocess(images), self.encode_ontology(ontology))
        return [
            owl_detections(probs[i], boxes[i], ontology, image_size=(im.shape[1], im.shape[0]), threshold=threshold)
            for i, im in enumerate(images)
        ]


def owl_detections(
    probs: np.ndarray,
    boxes_cxcywh: np.ndarray,
    ontology: Ontology,
    *,
    image_size: tuple[int, int],
    threshold: float | None = None,
) -> Detections:
    """One image's detections from the model's outputs (pure: no model): ``probs`` (P, L) and
    ``boxes_cxcywh`` (P, 4) as `Owlv2.forward` gives them, ``image_size`` = (width, height).
    Each label's own threshold applies, or ``threshold`` for every label when given (`decode_owl`);
    then NMS (class-wise unless ``defaults.class_agnostic_nms``), in descending score order,
    cut to ``defaults.max_detections``."""
    per_label = ontology.thresholds_or(threshold)
    xyxy, scores, class_ids = decode_owl(probs, boxes_cxcywh, image_size=image_size, thresholds=per_label)
    names = np.asarray(ontology.label_names, dtype=str)
    found = Detections(xyxy=xyxy, scores=scores, class_ids=class_ids, labels=names[class_ids])
    defaults = ontology.defaults
    return found.suppressed(defaults)


class Owlv2Detector(BoundDetector):
    """OWLv2 bound to an ontology: a `serverless.models.base.Detector`."""


_HINT = (
    "set AUTOLABEL_OWLV2_MODEL (or give owlv2:DIR) to a local directory written by save_pretrained, or go online"
)
# A few whole words for the tiny tokenizer's merges (anything else is spelled letter by letter).
_TINY_WORDS = ("person", "worker", "cat", "cup", "dog", "photo", "of", "the")


def locate_weights(model: str, download: bool = True) -> WeightsSource:
    """Where OWLv2 ``model`` (a directory or a hub id) loads from, checked in seconds
    (`serverless.models.hub.locate_pretrained`)."""
    return locate_pretrained(model, download, display="OWLv2", example=DEFAULT_OWLV2_MODEL, hint=_HINT)


def write_tiny(directory: Path, seed: int = 0) -> Path:
    """A tiny random OWLv2 as ``save_pretrained`` writes it (config, safetensors, a CLIP
    tokenizer, OWLv2's processor at a 96-pixel input) in ``directory`` (reused when already
    there). Its outputs are meaningless."""
    if (directory / TINY_MARKER).exists():
        return directory
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    directory.mkdir(parents=True, exist_ok=True)
    # OWL's text encoder pools at the highest id (the end token, last in this vocabulary) and
    # its checkpoints pad with "!" (id 0), as openai's CLIP tokenizer lays them out.
    tokenizer = tiny_clip_tokenizer(_TINY_WORDS, model_max_length=16, pad_token="!")
    size = 96  # the processor's output size must be the vision config's image_size
    config = Owlv2Config(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
            "image_size": size, "patch_size": 16,
        },
        projection_dim=32,  # the class head compares projected text with text_config.hidden_size features
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    # transformers leaves the box head's layers at std ~1, which saturates every random box
    # into a line or the whole square; at std 0.2 the boxes spread around their patches.
    with torch.no_grad():
        for layer in (model.box_head.dense0, model.box_head.dense1, model.box_head.dense2):
            torch.nn.init.normal_(layer.weight, std=0.2)
            torch.nn.init.zeros_(layer.bias)
    model.save_pretrained(str(directory))
    image_processor = Owlv2ImageProcessor(size={"height": size, "width": size})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(directory))
    (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")
    return directory


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    return weights.strip() or environ.get("AUTOLABEL_OWLV2_MODEL") or DEFAULT_OWLV2_MODEL


def _tiny(directory: Path, seed: int = 0) -> str:
    return str(write_tiny(Path(directory).resolve() / BACKEND.name, seed))


def _build(weights: str, source: WeightsSource, ontology: Ontology, device: str | None) -> Owlv2Detector:
    return Owlv2.load(source.load_from or weights, device=device).bind(ontology)


BACKEND = DetectorBackend(
    name="owlv2",
    summary="OWLv2 (transformers): open-vocabulary boxes, one text query per ontology prompt",
    parse=_parse,
    locate=locate_weights,
    on_disk=pretrained_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``owlv2[:HUB_ID | :DIRECTORY]``; default ``AUTOLABEL_OWLV2_MODEL``, else `DEFAULT_OWLV2_MODEL`."""
