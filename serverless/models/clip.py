"""Zero-shot image tags with CLIP or SigLIP through transformers: a `Classifier` for an
ontology's ``tag`` labels.

**Spec.** ``clip[:HUB_ID | :DIRECTORY]``; a bare ``clip`` takes ``AUTOLABEL_CLIP_MODEL``, else
`DEFAULT_CLIP_MODEL` (``openai/clip-vit-base-patch32``). One backend serves CLIP (`CLIPModel`),
SigLIP (`SiglipModel`) and SigLIP 2 (`Siglip2Model`) checkpoints alike: ``AutoModel`` and
``AutoProcessor`` load them, and the checkpoint's ``model_type`` decides the scoring below
(``clip:google/siglip-base-patch16-224`` is a SigLIP). Weights are loaded once per process
(`load_once`) and shared by every ontology, and by the image embeddings of `load_image_encoder`
(``autolabel embed``: `ClipModel.image_embeddings`, the image tower's L2-normalised output).

**Prompts → one text embedding per label**, computed once per ontology when the classifier is
bound (`ClipModel.bind`), never per call. Each of a label's prompts is put in every template of
`TEMPLATES` (``"a photo of a {}."``, ``"a photo of the {}."``, ...), except a prompt that holds
``{}``: it is a template of its own, ``{}`` is replaced by the label's name and the text is used
as written (``{name: night, prompts: ["a photo taken at {}", "a dark street"]}`` reads
``"a photo taken at night"`` once and ``"a dark street"`` in every template). Each text
embedding is L2-normalised, averaged over the templates of its prompt, the prompt means are
averaged over the label's prompts (each prompt weighs the same) and the result renormalised
(`label_embeddings`). Texts are padded to the model's context length (SigLIP was trained so;
CLIP's causal text encoder is unaffected). A text longer than that context (77 tokens for CLIP,
64 for SigLIP) is refused when the classifier is bound, with an `OntologyError` naming the label
and the prompt: nothing is truncated.

**Scores** (`label_scores`), from the cosine between the image embedding and each label's:

- CLIP: softmax over the ontology's tag labels of ``logit_scale × cosine``: a single-label
  problem, the label probabilities of an image sum to 1 (they depend on which labels are in
  the ontology);
- SigLIP / SigLIP 2: ``sigmoid(logit_scale × cosine + logit_bias)`` per label: multi-label,
  each label scored on its own.

A tag is kept when its score is at least its label's threshold (the label's ``threshold``, else
``defaults.threshold``; the ``threshold`` argument replaces them all), then at most
``defaults.max_detections`` tags per image are kept, the highest first (the top-k), in
descending score order (`select_tags`). So:

- **top-1** (one tag per image, the most likely label): a CLIP checkpoint with
  ``defaults: {max_detections: 1, threshold: 0}``;
- **multi-label** (every label that applies, any number): a SigLIP checkpoint with a threshold
  per label (``labels[i].threshold``, tuned with ``autolabel eval``) and ``max_detections`` as a cap.

**Images** are preprocessed and embedded as one batch (``processor`` on the batch; CLIP and
SigLIP resize every image to one size, SigLIP 2 masks its patch padding), once per image per
call; results do not depend on how images are batched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from serverless.models.base import BoundClassifier, Tags, check_threshold
from serverless.models.hub import load_error, locate_pretrained, pretrained_on_disk
from serverless.models.registry import (
    ClassifierBackend,
    ModelLoadError,
    ModelSpec,
    ModelSpecError,
    WeightsSource,
    inference_context,
    load_once,
    select_device,
)
from serverless.ontology import Ontology, OntologyError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKEND",
    "DEFAULT_CLIP_MODEL",
    "FAMILIES",
    "TEMPLATES",
    "ClipClassifier",
    "ClipModel",
    "PromptText",
    "label_embeddings",
    "label_scores",
    "load_image_encoder",
    "locate_weights",
    "prompt_texts",
    "select_tags",
]

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"

Scoring = Literal["softmax", "sigmoid"]

FAMILIES: dict[str, Scoring] = {"clip": "softmax", "siglip": "sigmoid", "siglip2": "sigmoid"}
"""Checkpoint ``model_type`` → how its logits become scores."""

TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of {}.",
    "a close-up photo of a {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
)
"""The prompt ensemble: every prompt without ``{}`` is read in each of these."""

_TEXT_BATCH = 256  # texts per text-encoder pass at bind time (bounds memory for big ontologies)


# --------------------------------------------------------------------------- pure stages


@dataclass(frozen=True)
class PromptText:
    """One text the text encoder reads: a prompt in a template."""

    text: str
    label_id: int
    """Index of the label in the ontology."""
    prompt: int
    """Index of the prompt in the label's ``prompts``."""


def prompt_texts(ontology: Ontology, templates: Sequence[str] = TEMPLATES) -> list[PromptText]:
    """Every text to embed for ``ontology``, in label then prompt then template order: a prompt
    holding ``{}`` is one text with ``{}`` replaced by the label's name, any other prompt is
    put in each template."""
    texts = []
    for label_id, label in enumerate(ontology.labels):
        for k, prompt in enumerate(label.prompts):
            if "{}" in prompt:
                texts.append(PromptText(prompt.replace("{}", label.name), label_id, k))
            else:
                texts.extend(PromptText(template.format(prompt), label_id, k) for template in templates)
    return texts


def _normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def label_embeddings(text_embeds: np.ndarray, texts: Sequence[PromptText], n_labels: int) -> np.ndarray:
    """(L, D) unit label embeddings from (N, D) text embeddings, ``texts[i]`` saying whose
    ``text_embeds[i]`` is: normalise each, average per prompt, average a label's prompt means,
    renormalise. ValueError when the counts disagree or a label has no text."""
    text_embeds = _normalized(text_embeds)
    if text_embeds.ndim != 2 or len(text_embeds) != len(texts):
        raise ValueError(f"text_embeds must be (N, D) with N = {len(texts)} texts, got shape {text_embeds.shape}")
    prompts: dict[tuple[int, int], list[int]] = {}
    for i, text in enumerate(texts):
        prompts.setdefault((text.label_id, text.prompt), []).append(i)
    per_label: list[list[np.ndarray]] = [[] for _ in range(n_labels)]
    for (label_id, _), rows in prompts.items():
        per_label[label_id].append(text_embeds[rows].mean(axis=0))
    missing = [i for i, means in enumerate(per_label) if not means]
    if missing:
        raise ValueError(f"labels {missing} have no text embedding")
    return _normalized(np.stack([np.mean(means, axis=0) for means in per_label]))


def label_scores(
    image_embeds: np.ndarray,
    label_embeds: np.ndarray,
    *,
    scoring: Scoring,
    logit_scale: float,
    logit_bias: float = 0.0,
) -> np.ndarray:
    """(B, L) float32 scores in 0..1 of B images for L labels from their embeddings (normalised
    here): ``logits = logit_scale × cosine + logit_bias``, then a softmax over the labels
    (``"softmax"``, CLIP: each row sums to 1) or a sigmoid per label (``"sigmoid"``, SigLIP)."""
    logits = logit_scale * (_normalized(image_embeds) @ _normalized(label_embeds).T) + logit_bias
    logits = logits.astype(np.float64)
    if scoring == "softmax":
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = exp / exp.sum(axis=1, keepdims=True)
    elif scoring == "sigmoid":
        scores = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the logistic function, without overflow
    else:
        raise ValueError(f"scoring must be 'softmax' or 'sigmoid', got {scoring!r}")
    return np.clip(scores, 0.0, 1.0).astype(np.float32)


def select_tags(scores: np.ndarray, thresholds: np.ndarray, names: Sequence[str], max_tags: int) -> Tags:
    """One image's `Tags`: the labels whose score (L,) is at least their threshold (L,), the
    ``max_tags`` highest, in descending score order (ties: lower class id first)."""
    scores = np.asarray(scores, dtype=np.float32)
    kept = np.flatnonzero(scores >= np.asarray(thresholds, dtype=np.float32))
    order = kept[np.argsort(-scores[kept], kind="stable")][:max_tags]
    return Tags(class_ids=order, scores=scores[order], labels=np.asarray(names, dtype=str)[order])


# --------------------------------------------------------------------------- the model


def _pooled(output: Any) -> Any:
    """The projected embedding of ``get_*_features``: a tensor (transformers 4) or the
    ``pooler_output`` of the output object (transformers 5)."""
    return output if hasattr(output, "ndim") else output.pooler_output


def _scoring(model_type: str, model_id: str) -> Scoring:
    """How a checkpoint of ``model_type`` scores; `ModelLoadError` for a model of another kind."""
    if model_type not in FAMILIES:
        raise ModelLoadError(
            f"cannot load CLIP from {model_id!r}: model_type {model_type!r} is not one of {', '.join(FAMILIES)} "
            "(a CLIP, SigLIP or SigLIP 2 checkpoint is expected)"
        )
    return FAMILIES[model_type]


class ClipModel:
    """A loaded CLIP / SigLIP / SigLIP 2 (open vocabulary: the weights serve any ontology).

    `bind` gives the `Classifier` for one ontology, which is what every door holds.
    """

    def __init__(self, model: Any, processor: Any, *, device: str, model_id: str) -> None:
        self.scoring: Scoring = _scoring(model.config.model_type, model_id)
        self.family: str = model.config.model_type
        self.model = model.to(device).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.model_id = model_id
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.logit_scale = float(model.logit_scale.detach().float().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().float().item()) if self.scoring == "sigmoid" and bias is not None else 0.0
        self._labels: dict[str, np.ndarray] = {}

    def compiled_networks(self) -> dict[str, torch.nn.Module]:
        """The image tower (`serverless.models.base.Compilable`): a fixed input size; the label
        texts are encoded once per ontology."""
        return {"CLIP vision model": self.model.vision_model}

    @classmethod
    def load(cls, model_id: str, *, device: str | None = None) -> ClipModel:
        """Load from a hub id or a local ``save_pretrained`` directory, once per process."""
        device = select_device(device)
        return load_once(("clip", model_id, device), lambda: cls._from_pretrained(model_id, device))

    @classmethod
    def _from_pretrained(cls, model_id: str, device: str) -> ClipModel:
        from transformers import AutoConfig, AutoModel, AutoProcessor

        try:
            config = AutoConfig.from_pretrained(model_id)
            _scoring(config.model_type, model_id)  # before loading the weights of some other model
            processor = AutoProcessor.from_pretrained(model_id)
            model = AutoModel.from_pretrained(model_id)
        except (OSError, ValueError) as err:
            raise load_error("CLIP", model_id, err) from err
        return cls(model, processor, device=device, model_id=model_id)

    def bind(self, ontology: Ontology) -> ClipClassifier:
        """This model as the `Classifier` of ``ontology``'s tag labels (`Ontology.part`); their
        text embeddings are computed now, so a prompt too long for the model is an
        `OntologyError` here, not at the first image."""
        tags = ontology.part("tags")
        self.label_embeddings(tags)
        return ClipClassifier(self, tags)

    # ----------------------------------------------------------------- text
    def check_lengths(self, ontology: Ontology, texts: Sequence[PromptText]) -> None:
        """`OntologyError` naming the label and prompt of the first text longer than the
        model's context (special tokens included)."""
        lengths = [len(ids) for ids in self.tokenizer([t.text for t in texts])["input_ids"]]
        for text, length in zip(texts, lengths, strict=True):
            if length > self.context_length:
                label = ontology.labels[text.label_id]
                raise OntologyError(
                    f"tag label {label.name!r}: prompt {label.prompts[text.prompt]!r} is {length} tokens as "
                    f"{text.text!r}, more than the {self.context_length} that {self.model_id} reads; "
                    "shorten the prompt"
                )

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 text embeddings (not normalised), texts padded to the context length."""
        parts = []
        for start in range(0, len(texts), _TEXT_BATCH):
            tokens = self.tokenizer(
                list(texts[start : start + _TEXT_BATCH]),
                padding="max_length",
                max_length=self.context_length,
                truncation=False,
                return_tensors="pt",
            )
            with inference_context(self.device):
                output = self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
            parts.append(_pooled(output).float().cpu().numpy())
        return np.concatenate(parts)

    def label_embeddings(self, ontology: Ontology) -> np.ndarray:
        """(L, D) unit embeddings of the ontology's labels, computed once per ontology content."""
        key = ontology.content_hash
        if key not in self._labels:
            texts = prompt_texts(ontology)
            self.check_lengths(ontology, texts)
            embeds = self.encode_texts([t.text for t in texts])
            self._labels[key] = label_embeddings(embeds, texts, len(ontology.labels))
        return self._labels[key]

    # ----------------------------------------------------------------- images
    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, D) float32 image embeddings (not normalised) of RGB uint8 (H, W, 3) images, one pass."""
        # Frames are always (H, W, 3); without the hint, 1- or 3-pixel-high frames are misread.
        batch = self.processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last"
        )
        with inference_context(self.device):
            output = self.model.get_image_features(**{k: v.to(self.device) for k, v in batch.items()})
        return _pooled(output).float().cpu().numpy()

    def image_embeddings(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(B, D) float32 unit (L2-normalised) image embeddings of RGB uint8 (H, W, 3) images,
        one pass: what `sync.qa.embed` stores and compares by cosine."""
        return _normalized(self.encode_images(images))

    def classify(self, images: Sequence[np.ndarray], ontology: Ontology, *, threshold: float | None = None) -> list[Tags]:
        """One `Tags` per image for ``ontology``'s labels (see the module docstring)."""
        threshold = check_threshold(threshold)
        if not images:
            return []
        labels = self.label_embeddings(ontology)
        scores = label_scores(
            self.encode_images(images),
            labels,
            scoring=self.scoring,
            logit_scale=self.logit_scale,
            logit_bias=self.logit_bias,
        )
        per_label = ontology.thresholds_or(threshold)
        cap = ontology.defaults.max_detections
        return [select_tags(row, per_label, ontology.label_names, cap) for row in scores]


class ClipClassifier(BoundClassifier):
    """CLIP / SigLIP bound to an ontology's tag labels: a `serverless.models.base.Classifier`."""


_HINT = (
    "set AUTOLABEL_CLIP_MODEL (or give clip:DIRECTORY) to a local directory written by save_pretrained, "
    "or go online"
)


def locate_weights(model: str, download: bool = True) -> WeightsSource:
    """Where CLIP/SigLIP ``model`` (a directory or a hub id) loads from, checked in seconds
    (`serverless.models.hub.locate_pretrained`)."""
    return locate_pretrained(model, download, display="CLIP", example=DEFAULT_CLIP_MODEL, hint=_HINT)


def load_image_encoder(spec: ModelSpec, *, device: str | None = None, source: WeightsSource | None = None) -> ClipModel:
    """The loaded `ClipModel` of a ``clip`` spec, for its image tower (`ClipModel.image_embeddings`):
    once per process and device, the same weights the classifier of that spec uses
    (`ClipModel.load`). `ModelSpecError` for a spec of another backend; ``source``: where the
    weights are, when already located (else `locate_weights`)."""
    if spec.backend != BACKEND.name:
        raise ModelSpecError(
            f"{spec.text!r} is not an image-text model: image embeddings come from clip[:WEIGHTS] "
            f"(e.g. clip:{DEFAULT_CLIP_MODEL})"
        )
    where = source or locate_weights(spec.weights)
    return ClipModel.load(where.load_from or spec.weights, device=device)


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    return weights.strip() or environ.get("AUTOLABEL_CLIP_MODEL") or DEFAULT_CLIP_MODEL


def _tiny(directory: Path, seed: int = 0) -> str:
    from serverless.models.tiny_clip import make_tiny_clip

    return str(make_tiny_clip(directory, seed=seed, family="clip"))


def _build(weights: str, source: WeightsSource, ontology: Ontology, device: str | None) -> ClipClassifier:
    return ClipModel.load(source.load_from or weights, device=device).bind(ontology)


BACKEND = ClassifierBackend(
    name="clip",
    summary="CLIP / SigLIP (transformers): zero-shot image tags from the ontology's tag prompts",
    parse=_parse,
    locate=locate_weights,
    on_disk=pretrained_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``clip[:HUB_ID | :DIRECTORY]``; default ``AUTOLABEL_CLIP_MODEL``, else `DEFAULT_CLIP_MODEL`."""
