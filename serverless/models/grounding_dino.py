"""Grounding DINO through transformers: open-vocabulary boxes for an ontology.

The ontology's prompts are split into captions of at most 256 tokens (the model's text
limit); each caption runs on the same preprocessed images and the results are merged with
class-wise NMS. Labels come from the token spans of each phrase, not from decoded strings:
a box's score for a phrase is the highest token probability inside that phrase's span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serverless.detections import Detections
from serverless.models.base import BoundDetector, check_threshold
from serverless.models.hub import checked_config, load_error, locate_pretrained, pretrained_on_disk
from serverless.models.registry import (
    DetectorBackend,
    WeightsSource,
    inference_context,
    load_once,
    select_device,
)
from serverless.ontology import MAX_PROMPT_TOKENS, Ontology, PromptChunk, chunk_prompts

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKEND",
    "DEFAULT_GDINO_MODEL",
    "GROUNDING_DINO",
    "GroundingArchitecture",
    "GroundingDino",
    "GroundingDinoDetector",
    "decode_grounding",
    "grounded_detections",
    "locate_weights",
    "token_phrase_index",
]

DEFAULT_GDINO_MODEL = "IDEA-Research/grounding-dino-tiny"


def token_phrase_index(offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each token (by its character offsets in the caption), the index of the phrase it
    belongs to, or -1 (special tokens, the " . " separators)."""
    index = np.full(len(offsets), -1, dtype=np.int64)
    for t, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        for p, (p_start, p_end) in enumerate(char_spans):
            if start >= p_start and end <= p_end:
                index[t] = p
                break
    return index


def decode_grounding(
    probs: np.ndarray,
    boxes_cxcywh: np.ndarray,
    token_phrase: np.ndarray,
    *,
    image_size: tuple[int, int],
    box_threshold: float,
    text_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn one image's raw outputs into (xyxy pixels, scores, phrase index).

    ``probs`` (Q, T): sigmoid token probabilities for each query over the caption's T tokens;
    ``boxes_cxcywh`` (Q, 4) normalised to the image; ``token_phrase`` (T,) from
    :func:`token_phrase_index`; ``image_size`` = (width, height). A query is kept when its best
    phrase scores at least ``box_threshold`` and ``text_threshold``.
    """
    probs = np.asarray(probs, dtype=np.float32)
    n_queries = probs.shape[0]
    n_phrases = int(token_phrase.max()) + 1 if token_phrase.size and token_phrase.max() >= 0 else 0
    if n_phrases == 0 or n_queries == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    phrase_scores = np.zeros((n_queries, n_phrases), dtype=np.float32)
    for p in range(n_phrases):
        tokens = np.flatnonzero(token_phrase[: probs.shape[1]] == p)
        if tokens.size:
            phrase_scores[:, p] = probs[:, tokens].max(axis=1)
    best = phrase_scores.argmax(axis=1)
    scores = phrase_scores[np.arange(n_queries), best]
    keep = (scores >= box_threshold) & (scores >= text_threshold)
    width, height = image_size
    cx, cy, w, h = np.asarray(boxes_cxcywh, dtype=np.float32)[keep].T
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * np.array(
        [width, height, width, height], dtype=np.float32
    )
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    return xyxy.astype(np.float32), scores[keep].astype(np.float32), best[keep].astype(np.int64)


@dataclass(frozen=True)
class _EncodedChunk:
    chunk: PromptChunk
    input_ids: Any
    attention_mask: Any
    token_type_ids: Any
    token_phrase: np.ndarray


@dataclass(frozen=True)
class GroundingArchitecture:
    """A model of the Grounding DINO family: the same processor (BERT captions of phrases
    joined by " . ", DETR-style images) and the same outputs (token logits, cxcywh boxes), so
    one `GroundingDino` runs any of them; only the transformers model class differs."""

    model_type: str
    """The ``model_type`` of its ``config.json`` (``grounding-dino``); also its load key."""
    model_class: str
    """The transformers class that loads it (``GroundingDinoForObjectDetection``)."""
    display: str
    """Its name in messages (``Grounding DINO``)."""


GROUNDING_DINO = GroundingArchitecture("grounding-dino", "GroundingDinoForObjectDetection", "Grounding DINO")


class GroundingDino:
    """A loaded Grounding DINO or a sibling (`GroundingArchitecture`; open vocabulary: the
    weights serve any ontology).

    ``detect(images, ontology)`` prompts it with an ontology; `bind` gives the `Detector`
    for one ontology, which is what every door holds.
    """

    def __init__(self, model: Any, processor: Any, *, device: str, model_id: str) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.model_id = model_id
        self._chunks: dict[str, list[_EncodedChunk]] = {}

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The whole network (`serverless.models.base.Compilable`), called once per caption and
        batch: a batch of a new frame size compiles again (bulk runs of one size compile once)."""
        return {type(self.model).__name__: self.model}

    @classmethod
    def load(
        cls, model_id: str, *, device: str | None = None, architecture: GroundingArchitecture = GROUNDING_DINO
    ) -> GroundingDino:
        """Load ``architecture`` from a hub id or a local ``save_pretrained`` directory, once
        per process (which weights a spec or the environment means is the registry's business:
        `BACKEND`)."""
        device = select_device(device)
        return load_once(
            (architecture.model_type, model_id, device), lambda: cls._from_pretrained(model_id, device, architecture)
        )

    @classmethod
    def _from_pretrained(cls, model_id: str, device: str, architecture: GroundingArchitecture) -> GroundingDino:
        import transformers

        try:
            config = checked_config(model_id, architecture.model_type)
            processor = transformers.AutoProcessor.from_pretrained(model_id)
            model = getattr(transformers, architecture.model_class).from_pretrained(model_id, config=config)
        except (OSError, ValueError) as err:
            raise load_error(architecture.display, model_id, err) from err
        return cls(model, processor, device=device, model_id=model_id)

    def bind(self, ontology: Ontology) -> GroundingDinoDetector:
        """This model as the `Detector` of ``ontology``'s labels (captions encoded now, so a
        prompt that cannot fit a caption is an `OntologyError` here, not at the first frame)."""
        self.encode_ontology(ontology)
        return GroundingDinoDetector(self, ontology)

    # ----------------------------------------------------------------- text
    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for a caption, special tokens included."""
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_ontology(self, ontology: Ontology) -> list[_EncodedChunk]:
        """Captions of at most 256 tokens with their token → phrase maps (cached per ontology)."""
        key = ontology.content_hash
        if key not in self._chunks:
            encoded = []
            for chunk in chunk_prompts(ontology, self.count_tokens, MAX_PROMPT_TOKENS):
                tokens = self.tokenizer(
                    chunk.text, return_offsets_mapping=True, return_tensors="pt", truncation=False
                )
                offsets = [tuple(map(int, pair)) for pair in tokens.pop("offset_mapping")[0].tolist()]
                encoded.append(
                    _EncodedChunk(
                        chunk=chunk,
                        input_ids=tokens["input_ids"],
                        attention_mask=tokens["attention_mask"],
                        token_type_ids=tokens.get("token_type_ids"),
                        token_phrase=token_phrase_index(offsets, chunk.char_spans),
                    )
                )
            self._chunks[key] = encoded
        return self._chunks[key]

    # ----------------------------------------------------------------- stages
    def preprocess(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """Resize/normalise/pad a batch of RGB uint8 images (done once for all captions)."""
        # Frames are always (H, W, 3); without the hint, 1- or 3-pixel-high frames are misread.
        batch = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, pixels: dict[str, Any], encoded: _EncodedChunk) -> tuple[np.ndarray, np.ndarray]:
        """One caption over the batch: (probs (B, Q, T), boxes (B, Q, 4) cxcywh normalised)."""
        import torch

        batch_size = pixels["pixel_values"].shape[0]
        text = {
            "input_ids": encoded.input_ids.repeat(batch_size, 1).to(self.device),
            "attention_mask": encoded.attention_mask.repeat(batch_size, 1).to(self.device),
        }
        if encoded.token_type_ids is not None:
            text["token_type_ids"] = encoded.token_type_ids.repeat(batch_size, 1).to(self.device)
        with inference_context(self.device):
            outputs = self.model(**pixels, **text)
        n_tokens = encoded.input_ids.shape[1]
        probs = torch.sigmoid(outputs.logits[..., :n_tokens].float()).cpu().numpy()
        boxes = outputs.pred_boxes.float().cpu().numpy()
        return probs, boxes

    def detect(
        self,
        images: Sequence[np.ndarray],
        ontology: Ontology,
        *,
        threshold: float | None = None,
    ) -> list[Detections]:
        """Boxes for each RGB uint8 (H, W, 3) image.

        ``threshold`` overrides every label's threshold; otherwise each label's own threshold
        (or the ontology default) applies. Results are NMS-merged across captions, in
        descending score order, and cut to the ontology's ``defaults.max_detections`` per image.
        """
        threshold = check_threshold(threshold)
        if not images:
            return []
        encoded_chunks = self.encode_ontology(ontology)
        outputs: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in images]
        # Padding a batch to its largest image changes a DETR backbone's features, so only
        # images of one size share a forward pass: results never depend on the batch size.
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape, []).append(i)
        for members in by_size.values():
            pixels = self.preprocess([images[i] for i in members])
            for encoded in encoded_chunks:
                probs, boxes = self.forward(pixels, encoded)
                for row, i in enumerate(members):
                    outputs[i].append((probs[row], boxes[row]))
        sizes = [(image.shape[1], image.shape[0]) for image in images]
        return [
            grounded_detections(found, encoded_chunks, ontology, image_size=size, threshold=threshold)
            for found, size in zip(outputs, sizes, strict=True)
        ]


def grounded_detections(
    outputs: Sequence[tuple[np.ndarray, np.ndarray]],
    chunks: Sequence[_EncodedChunk],
    ontology: Ontology,
    *,
    image_size: tuple[int, int],
    threshold: float | None = None,
) -> Detections:
    """One image's detections from the model's outputs for each caption (pure: no model).

    ``outputs[k]`` is (probs (Q, T), boxes (Q, 4) cxcywh relative to the image) under
    ``chunks[k]`` (`GroundingDino.encode_ontology`); ``image_size`` = (width, height). A box
    takes the label of its best phrase (`decode_grounding`) and is kept at or above that
    label's threshold, or ``threshold`` for every label when given. The captions' boxes are
    merged by NMS (class-wise unless ``defaults.class_agnostic_nms``), in descending score
    order, cut to ``defaults.max_detections``.
    """
    per_label = ontology.thresholds_or(threshold)
    names = np.asarray(ontology.label_names, dtype=str)
    parts = []
    for (probs, boxes), encoded in zip(outputs, chunks, strict=True):
        xyxy, scores, phrase = decode_grounding(
            probs,
            boxes,
            encoded.token_phrase,
            image_size=image_size,
            box_threshold=float(per_label.min()),
            text_threshold=ontology.defaults.text_threshold,
        )
        class_ids = np.asarray(encoded.chunk.label_ids, dtype=np.int64)[phrase]
        keep = scores >= per_label[class_ids]
        kept = class_ids[keep]
        parts.append(Detections(xyxy=xyxy[keep], scores=scores[keep], class_ids=kept, labels=names[kept]))
    defaults = ontology.defaults
    return Detections.concatenate(parts).suppressed(defaults)


class GroundingDinoDetector(BoundDetector):
    """Grounding DINO (or MM-Grounding-DINO) bound to an ontology: a `serverless.models.base.Detector`."""


_HINT = (
    "set AUTOLABEL_GDINO_MODEL (or --gdino-model) to a local directory written by save_pretrained "
    "(python -m serverless.weights fetch), or go online"
)


def locate_weights(model: str, download: bool = True) -> WeightsSource:
    """Where Grounding DINO ``model`` (a directory or a hub id) loads from, checked in seconds
    (`serverless.models.hub.locate_pretrained`)."""
    return locate_pretrained(
        model, download, display="Grounding DINO", example="IDEA-Research/grounding-dino-tiny", hint=_HINT
    )


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    return weights.strip() or environ.get("AUTOLABEL_GDINO_MODEL") or DEFAULT_GDINO_MODEL


def _tiny(directory: Path, seed: int = 0) -> str:
    from serverless.models.tiny import make_tiny_models

    return str(make_tiny_models(directory, seed=seed).gdino_dir)


def _build(weights: str, source: WeightsSource, ontology: Ontology, device: str | None) -> GroundingDinoDetector:
    return GroundingDino.load(source.load_from or weights, device=device).bind(ontology)


BACKEND = DetectorBackend(
    name="grounding-dino",
    summary="Grounding DINO (transformers): open-vocabulary boxes from the ontology's prompts",
    parse=_parse,
    locate=locate_weights,
    on_disk=pretrained_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``grounding-dino[:HUB_ID | :DIRECTORY]``; default ``AUTOLABEL_GDINO_MODEL``, else
`DEFAULT_GDINO_MODEL`."""
