"""YOLO-World through ultralytics, its text encoder through transformers' CLIP: open-vocabulary
boxes for an ontology.

**Spec.** ``yolo-world[:CHECKPOINT[:CLIP]]``:

- CHECKPOINT is the name of a public checkpoint (`YOLO_WORLD_CHECKPOINTS`: ``yolov8s-worldv2``,
  the default, and the m/l/x sizes), downloaded once from ultralytics' assets release into
  ``$AUTOLABEL_CACHE/yolo-world/``, or the path of an ultralytics checkpoint, which must end in
  ``.pt`` (ultralytics' own rule). A name is never handed to ultralytics, which would
  download it.
- CLIP is the text encoder: a transformers CLIP hub id or ``save_pretrained`` directory
  (`serverless.models.hub.locate_pretrained`), default ``openai/clip-vit-base-patch32``, the
  OpenAI ViT-B/32 text tower the public checkpoints were trained with. Its projection width must
  be the checkpoint's text width (512 for the public ones).
- A bare ``yolo-world`` takes ``AUTOLABEL_YOLO_WORLD_MODEL`` (``CHECKPOINT[:CLIP]``), else
  ``yolov8s-worldv2``. The canonical weights always spell both parts, e.g.
  ``yolov8s-worldv2:openai/clip-vit-base-patch32`` or ``/w/world.pt:/w/clip``: the CLIP part
  starts after the first ``.pt:`` of a path, or after the name.

**Text.** Every prompt of every label is one class. ultralytics would fetch its own CLIP at run
time (a pip install from git, then weights from the internet); here the prompts' embeddings
come from transformers' CLIP instead, computed as ultralytics' ``WorldModel.get_text_pe`` does
(the projected end-of-text features, ``get_text_features``, divided by their L2 norm), once per
ontology when the detector is bound. A prompt longer than CLIP's context (77 tokens) is refused
then (`serverless.ontology.OntologyError`), never truncated.

**No shared state.** ``WorldModel.set_classes`` writes the model's text features and its head's
class count (``WorldDetect.nc``, read in every forward), and the head caches its anchors on
itself: swapping them per request would race between ontologies. A bound detector holds its
own text features (passed to ``WorldModel.predict`` as ``txt_feats`` on every call) and its own
network view (`bound_network`): a shallow copy of the head with the ontology's class count and
its own anchor cache, in a shell that shares every layer and parameter with the loaded model.
Nothing of the loaded model is written after it is loaded; the weights are loaded once per
process.

**Images.** Each image is letterboxed (ultralytics' ``LetterBox``, no minimum-rectangle mode)
to the checkpoint's square input size (``imgsz`` of its ``train_args``, 640 by default), so
every image gives the same input shape and results do not depend on batching. Frames arrive
RGB, the channel order the network reads (ultralytics flips the BGR it reads from files).
The forward pass reduces the prompts' scores to the labels' before they leave the device (a
label's score is its best prompt's: `serverless.models.owlv2.label_scores`, the one owner of
that rule). `decode_world` maps the head's output back: each box takes its best label and is
kept at that label's threshold, boxes are scaled back to pixels (ultralytics'
``scale_boxes``), clipped, and dropped when nothing of them is left in the image; then
class-wise NMS on labels at ``defaults.nms_iou``, descending scores, at most
``defaults.max_detections``.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serverless.detections import Detections
from serverless.models.base import check_threshold
from serverless.models.downloads import PublicCheckpoint, download_once, locate_public
from serverless.models.hub import load_error, locate_pretrained, pretrained_on_disk
from serverless.models.owlv2 import label_scores
from serverless.models.registry import (
    DetectorBackend,
    ModelLoadError,
    WeightsSource,
    inference_context,
    load_once,
    select_device,
)
from serverless.ontology import Ontology, OntologyError, prompt_phrases

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModelWithProjection, PreTrainedTokenizerBase
    from ultralytics.data.augment import LetterBox
    from ultralytics.nn.tasks import WorldModel

__all__ = [
    "BACKEND",
    "BATCH",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_CLIP",
    "TEXT_BATCH",
    "YOLO_WORLD_CHECKPOINTS",
    "ClipText",
    "YoloWorld",
    "YoloWorldDetector",
    "bound_network",
    "decode_world",
    "letterbox_pixels",
    "letterboxed_detections",
    "load_ultralytics_checkpoint",
    "load_world_checkpoint",
    "locate_weights",
    "split_weights",
    "ultralytics_environment",
    "world_detections",
]

_RELEASE = "https://github.com/ultralytics/assets/releases/download/v8.1.0"
YOLO_WORLD_CHECKPOINTS = {
    f"yolov8{size}-worldv2": PublicCheckpoint(f"{_RELEASE}/yolov8{size}-worldv2.pt", sha256=None) for size in "smlx"
}
"""Public YOLO-World v2 checkpoints (the URLs ultralytics' documentation links). No SHA-256 is
recorded: none could be read where this was written. The files are loaded with ultralytics'
restricted unpickler (known model classes only), so an unverified download cannot run code."""
DEFAULT_CHECKPOINT = "yolov8s-worldv2"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
ENV = "AUTOLABEL_YOLO_WORLD_MODEL"
BATCH = 8
"""Images per forward pass (all letterboxed to one size)."""
TEXT_BATCH = 256
"""Prompts per pass of the text encoder when an ontology is bound."""
_CACHE_FOLDER = "yolo-world"
_HINT = (
    f"set {ENV} (or the spec) to CHECKPOINT.pt:CLIP with a local .pt file and a CLIP directory written by "
    "save_pretrained, or go online"
)


def ultralytics_environment() -> None:
    """Defaults for ultralytics' switches, set before it is imported (it reads them then): no
    pip installs (``YOLO_AUTOINSTALL``) and no network probe or telemetry (``YOLO_OFFLINE``).
    autolabel uses ultralytics to build and run the network only; every download is its own.
    A value already in the environment is kept.

    Importing ultralytics replaces ``PIL.Image.open`` for the whole process with a wrapper that,
    on a file PIL cannot identify, imports ``pi_heif`` (not installed): every other model and
    door in the process (``autolabel serve`` hosts several functions) would then answer a
    request with bytes that are not an image with a 500 instead of a 422. PIL's own opener is
    put back after ultralytics is first imported here; autolabel never opens files through
    ultralytics."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "ultralytics" not in sys.modules:
        from PIL import Image

        opener = Image.open
        import ultralytics  # noqa: F401 - imported here, once, to undo its patch of PIL

        Image.open = opener


# --------------------------------------------------------------------------- decoding


def decode_world(
    pred: np.ndarray,
    thresholds: np.ndarray,
    *,
    input_shape: tuple[int, int],
    image_shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn one image's head output into (xyxy pixels, scores, label ids).

    ``pred`` (4 + L, A), as `YoloWorld.forward` gives it: ultralytics' decoded ``WorldDetect``
    output for A anchors, ``cx, cy, w, h`` in pixels of the letterboxed input of
    ``input_shape`` (h, w), then the L labels' scores (each its best prompt's sigmoid score);
    ``thresholds`` (L,) per label; ``image_shape`` (h, w) of the original image. A box takes
    its best label and is kept when it scores at least that label's threshold and keeps some
    area once mapped back to the image and clipped to it.
    """
    ultralytics_environment()
    from ultralytics.utils.ops import scale_boxes, xywh2xyxy

    pred = np.asarray(pred, dtype=np.float32)
    thresholds = np.asarray(thresholds, dtype=np.float32)
    scores = pred[4:]
    if scores.shape[0] != len(thresholds):
        raise ValueError(f"pred must have 4 + {len(thresholds)} rows (boxes, then one per label), got {len(pred)}")
    if scores.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    best = scores.argmax(axis=0)
    best_score = scores[best, np.arange(scores.shape[1])]
    keep = best_score >= thresholds[best]
    xyxy = scale_boxes(tuple(input_shape), xywh2xyxy(pred[:4, keep].T.copy()), tuple(image_shape))
    area = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return xyxy[area].astype(np.float32), best_score[keep][area], best[keep][area].astype(np.int64)


def world_detections(
    pred: np.ndarray,
    ontology: Ontology,
    thresholds: np.ndarray,
    *,
    input_shape: tuple[int, int],
    image_shape: tuple[int, int],
) -> Detections:
    """One image's `Detections` from its head output (`decode_world`): class-wise NMS on
    labels at ``defaults.nms_iou`` (class-agnostic when the ontology says so), descending
    scores, at most ``defaults.max_detections``."""
    xyxy, scores, ids = decode_world(pred, thresholds, input_shape=input_shape, image_shape=image_shape)
    names = np.asarray(ontology.label_names, dtype=str)
    boxes = Detections(xyxy=xyxy, scores=scores, class_ids=ids, labels=names[ids])
    defaults = ontology.defaults
    return boxes.suppressed(defaults)


def letterbox_pixels(letterbox: LetterBox, images: Sequence[np.ndarray], device: str) -> torch.Tensor:
    """RGB uint8 (H, W, 3) images → (B, 3, S, S) float 0..1 on ``device``, each through
    ultralytics' ``LetterBox`` ``letterbox`` (one square size, so every image gives one shape)."""
    import torch

    frames = np.stack([letterbox(image=np.ascontiguousarray(image)) for image in images])
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def letterboxed_detections(
    images: Sequence[np.ndarray],
    ontology: Ontology,
    threshold: float | None,
    *,
    imgsz: int,
    forward: Callable[[Sequence[np.ndarray]], np.ndarray],
) -> list[Detections]:
    """`Detector.detect` of the ultralytics detectors (``yolo-world``, ``yolo``): ``threshold``
    is checked and overrides every label's own (`Ontology.thresholds_or`); the images go through
    ``forward`` in chunks of `BATCH` (a chunk of RGB images → its (B, 4 + L, A) head output over
    the ontology's L labels, for their letterboxed ``imgsz`` square input) and each image's
    output becomes its `Detections` (`world_detections`)."""
    threshold = check_threshold(threshold)
    if not images:
        return []
    per_label = ontology.thresholds_or(threshold)
    size = (imgsz, imgsz)
    found: list[Detections] = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        for pred, image in zip(forward(chunk), chunk, strict=True):
            found.append(world_detections(pred, ontology, per_label, input_shape=size, image_shape=image.shape[:2]))
    return found


# --------------------------------------------------------------------------- text encoder


@functools.cache
def _text_tower() -> type[CLIPTextModelWithProjection]:
    """transformers' ``CLIPTextModelWithProjection``, told that a ``CLIPModel`` checkpoint's
    vision weights are expected to be left unread (not a load report of every one of them)."""
    from transformers import CLIPTextModelWithProjection

    class ClipTextTower(CLIPTextModelWithProjection):
        _keys_to_ignore_on_load_unexpected = [r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$"]

    return ClipTextTower


class ClipText:
    """The text tower of a transformers CLIP (``CLIPTextModelWithProjection``, which loads the
    text half of a ``CLIPModel`` checkpoint): L2-normalised prompt embeddings."""

    def __init__(
        self, model: CLIPTextModelWithProjection, tokenizer: PreTrainedTokenizerBase, *, device: str, model_id: str
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.model_id = model_id
        self.max_tokens = int(model.config.max_position_embeddings)
        self.dim = int(model.config.projection_dim)

    @classmethod
    def load(cls, model_id: str, *, device: str) -> ClipText:
        """Load from a hub id or a ``save_pretrained`` directory, once per process."""
        return load_once(("clip-text", model_id, device), lambda: cls._from_pretrained(model_id, device))

    @classmethod
    def _from_pretrained(cls, model_id: str, device: str) -> ClipText:
        from transformers import AutoConfig, AutoTokenizer

        try:
            # from_pretrained would fill a checkpoint of another kind with random weights (a
            # warning only): the checkpoint's own model type is checked first.
            config = AutoConfig.from_pretrained(model_id)
            if config.model_type not in ("clip", "clip_text_model"):
                raise ValueError(f"it holds a {config.model_type!r} model, not a CLIP")
            if config.model_type == "clip":  # the text half of a CLIPModel, projected as get_text_features
                text_config = config.text_config
                text_config.projection_dim = config.projection_dim
                config = text_config
            tokenizer = AutoTokenizer.from_pretrained(model_id)
            model = _text_tower().from_pretrained(model_id, config=config)
        except (OSError, ValueError) as err:
            raise load_error("the CLIP text encoder", model_id, err) from err
        return cls(model, tokenizer, device=device, model_id=model_id)

    def count_tokens(self, text: str) -> int:
        """Tokens CLIP reads for ``text``, start and end tokens included."""
        return len(self.tokenizer(text)["input_ids"])

    def check_prompts(self, ontology: Ontology) -> None:
        """`OntologyError` naming the first prompt longer than CLIP's context."""
        for label in ontology.labels:
            for phrase in label.prompts:
                n = self.count_tokens(phrase)
                if n > self.max_tokens:
                    raise OntologyError(
                        f"label {label.name!r}: prompt {phrase!r} is {n} tokens, more than the "
                        f"{self.max_tokens} of {self.model_id}'s text encoder"
                    )

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, dim)`` float32 embeddings on the device, each divided by its L2 norm (as
        ultralytics' CLIP ``encode_text``), in batches of `TEXT_BATCH`."""
        import torch

        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), TEXT_BATCH):
                tokens = self.tokenizer(list(texts[start : start + TEXT_BATCH]), padding=True, return_tensors="pt")
                out = self.model(input_ids=tokens["input_ids"].to(self.device),
                                 attention_mask=tokens["attention_mask"].to(self.device))  # fmt: skip
                parts.append(out.text_embeds.float())
        features = torch.cat(parts)
        return features / features.norm(p=2, dim=-1, keepdim=True)


# --------------------------------------------------------------------------- network


def load_ultralytics_checkpoint(
    path: str, *, display: str, accepts: Callable[[Any], bool], expected: str
) -> tuple[Any, int]:
    """``(model in eval mode, fused, float32 on the CPU, input size)`` from the ultralytics
    checkpoint file ``path``, read with ultralytics' restricted unpickler (``weights_only`` with
    an allow-list of its model classes), never downloaded. The model (``ema``, else ``model``)
    must satisfy ``accepts``; the input size is ``imgsz`` of its ``train_args`` when that is a
    multiple of the network's stride, else 640. `ModelLoadError` in one line otherwise, naming
    ``display`` (``YOLO-World checkpoint``), the file and, for a model of another kind, what the
    file holds and ``expected``. The one reader of the ``yolo-world`` and ``yolo`` backends."""
    ultralytics_environment()
    from ultralytics.nn.tasks import torch_safe_load

    file = Path(path).expanduser().resolve()
    if not file.is_file():  # ultralytics would download a missing file named like one of its assets
        raise ModelLoadError(f"{display} {path} does not exist")
    try:
        ckpt, _ = torch_safe_load(str(file), safe_only=True)
    except (TypeError, ValueError, RuntimeError, OSError, EOFError, ImportError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"cannot load {display} {path}: {first}") from err
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not accepts(model):
        found = type(model).__name__ if model is not None else "no model"
        task = (ckpt.get("train_args") or {}).get("task") if isinstance(ckpt, dict) else None
        what = f"{found} (task {task!r})" if isinstance(task, str) and model is not None else found
        raise ModelLoadError(f"{path} holds {what}, not {expected}")
    imgsz = (ckpt.get("train_args") or {}).get("imgsz", 640)
    stride = int(max(model.stride))
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < stride or imgsz % stride:
        imgsz = 640
    return model.float().eval().fuse(verbose=False), imgsz


def load_world_checkpoint(path: str) -> tuple[WorldModel, int]:
    """``(WorldModel in eval mode, fused, float32 on the CPU, input size)`` from an
    ultralytics checkpoint (`load_ultralytics_checkpoint`); `ModelLoadError` in one line
    otherwise."""
    ultralytics_environment()
    from ultralytics.nn.tasks import WorldModel

    return load_ultralytics_checkpoint(
        path,
        display="YOLO-World checkpoint",
        accepts=lambda model: isinstance(model, WorldModel),
        expected="a YOLO-World model (ultralytics WorldModel)",
    )


def _text_widths(model: WorldModel) -> set[int]:
    """The text embedding widths the network reads: the ``C2fAttn`` guides and the head."""
    from ultralytics.nn.modules.block import MaxSigmoidAttnBlock

    widths = {m.gl.in_features for m in model.modules() if isinstance(m, MaxSigmoidAttnBlock)}
    return widths | {int(model.model[-1].cv3[0][-1].out_channels)}


def bound_network(model: WorldModel, n_classes: int) -> WorldModel:
    """A view of ``model`` (a `WorldModel`) for ``n_classes`` text classes: a shallow copy of
    its ``WorldDetect`` head with its own ``nc``/``no`` and anchor cache, in a shallow copy of
    the model whose layer list ends with that head. Every layer, parameter and buffer is the
    model's own (nothing is copied but attribute tables); writing the view's head leaves the
    model untouched."""
    import torch

    head = copy.copy(model.model[-1])
    head.nc = n_classes
    head.no = n_classes + head.reg_max * 4
    head.shape = None  # anchors are computed for this view on its first forward
    network = copy.copy(model)
    object.__setattr__(network, "_modules", {**model._modules, "model": torch.nn.Sequential(*model.model[:-1], head)})
    return network


class YoloWorld:
    """A loaded YOLO-World checkpoint with its CLIP text encoder (open vocabulary: the weights
    serve any ontology). `bind` gives the `Detector` for one ontology, which is what every
    door holds; nothing here changes once loaded."""

    def __init__(self, model: WorldModel, clip: ClipText, *, device: str, checkpoint: str, imgsz: int = 640) -> None:
        ultralytics_environment()
        from ultralytics.data.augment import LetterBox

        widths = _text_widths(model)
        if widths != {clip.dim}:
            raise ModelLoadError(
                f"CLIP {clip.model_id} gives {clip.dim}-wide text embeddings, the YOLO-World checkpoint "
                f"{checkpoint} reads {'/'.join(map(str, sorted(widths)))}-wide ones"
            )
        self.model = model.to(device)
        self.clip = clip
        self.device = device
        self.checkpoint = checkpoint
        self.imgsz = imgsz
        self._letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=int(max(model.stride)))

    @classmethod
    def load(cls, checkpoint: str, clip: str, *, device: str | None = None) -> YoloWorld:
        """Load ``checkpoint`` (an existing .pt file) and ``clip`` (a hub id or directory), once
        per process."""
        device = select_device(device)
        key = ("yolo-world", str(Path(checkpoint).resolve()), clip, device)

        def build() -> YoloWorld:
            model, imgsz = load_world_checkpoint(checkpoint)
            return cls(model, ClipText.load(clip, device=device), device=device, checkpoint=checkpoint, imgsz=imgsz)

        return load_once(key, build)

    def bind(self, ontology: Ontology) -> YoloWorldDetector:
        """This model as the `Detector` of ``ontology``'s labels: its prompts are embedded now
        (a prompt CLIP cannot read whole is an `OntologyError` here, not at the first frame)."""
        import torch

        self.clip.check_prompts(ontology)
        phrases = prompt_phrases(ontology)
        text = self.clip.encode([phrase for phrase, _ in phrases])[None]  # (1, P, D), as get_text_pe
        prompt_label = torch.tensor([label for _, label in phrases], dtype=torch.int64, device=self.device)
        return YoloWorldDetector(self, ontology, text, prompt_label, bound_network(self.model, len(phrases)))

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 (H, W, 3) images → (B, 3, S, S) float 0..1 on the device, letterboxed."""
        return letterbox_pixels(self._letterbox, images, self.device)

    def forward(
        self, pixels: torch.Tensor, network: WorldModel, text: torch.Tensor, prompt_label: torch.Tensor, n_labels: int
    ) -> np.ndarray:
        """(B, 4 + L, A) float32: the decoded head output of ``network`` (a `bound_network`)
        for text features ``text`` (1, P, D), boxes then the scores of the ``n_labels`` labels
        (``prompt_label`` (P,) is each prompt's label; a label scores its best prompt's score,
        `label_scores`, reduced on the device before the output leaves it)."""
        import torch

        with inference_context(self.device):
            out = network.predict(pixels, txt_feats=text)
            out = (out[0] if isinstance(out, tuple) else out).float()
            labels = label_scores(out[:, 4:], prompt_label, n_labels, dim=1)
            return torch.cat([out[:, :4], labels], dim=1).cpu().numpy()


class YoloWorldDetector:
    """YOLO-World bound to an ontology: a `serverless.models.base.Detector`. Holds the
    ontology's text features (1, P, D), each prompt's label id (P,) on the device and its own
    network view; shares the weights."""

    def __init__(
        self, model: YoloWorld, ontology: Ontology, text: torch.Tensor, prompt_label: torch.Tensor, network: WorldModel
    ) -> None:
        self.model = model
        self.ontology = ontology
        self.text = text
        self.prompt_label = prompt_label
        self._network = network

    @property
    def labels(self) -> tuple[str, ...]:
        return self.ontology.label_names

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Detections]:
        """Boxes for each RGB uint8 (H, W, 3) image: ``threshold`` overrides every label's own;
        class-wise (or, per the ontology, class-agnostic) NMS on labels, descending scores, at
        most ``defaults.max_detections`` per image."""
        model = self.model
        n_labels = len(self.ontology.labels)

        def forward(chunk: Sequence[np.ndarray]) -> np.ndarray:
            return model.forward(model.preprocess(chunk), self._network, self.text, self.prompt_label, n_labels)

        return letterboxed_detections(images, self.ontology, threshold, imgsz=model.imgsz, forward=forward)


# --------------------------------------------------------------------------- weights


def split_weights(weights: str) -> tuple[str, str]:
    """``(checkpoint, CLIP)`` of canonical weights ``CHECKPOINT:CLIP`` (module docstring);
    ValueError when the checkpoint is neither a public name nor a path ending in ``.pt``."""
    for name in YOLO_WORLD_CHECKPOINTS:
        if weights == name or weights.startswith(name + ":"):
            return name, weights[len(name) + 1 :]
    end = weights.find(".pt:")
    if end >= 0:
        return weights[: end + 3], weights[end + 4 :]
    if weights.endswith(".pt"):
        return weights, ""
    raise ValueError(
        f"the checkpoint must be one of {', '.join(YOLO_WORLD_CHECKPOINTS)} or a path ending in .pt, "
        f"as in yolo-world:{DEFAULT_CHECKPOINT} or yolo-world:/weights/world.pt:/models/clip (got {weights!r})"
    )


def _parse(weights: str, environ: Mapping[str, str]) -> str:
    """``CHECKPOINT:CLIP`` with the defaults filled in (a bare spec reads `ENV`)."""
    written = weights.strip()
    weights = written or environ.get(ENV, "").strip() or DEFAULT_CHECKPOINT
    checkpoint, clip = split_weights(weights)
    if ":" in weights[len(checkpoint) :] and not clip.strip():
        raise ValueError("the CLIP text encoder after the checkpoint is empty")
    if not checkpoint.removesuffix(".pt").strip():
        raise ValueError("the checkpoint path is empty")
    return f"{checkpoint}:{clip.strip() or DEFAULT_CLIP}"


def _locate_checkpoint(checkpoint: str, download: bool) -> WeightsSource:
    """Where the checkpoint loads from: an existing path, else the public file in the cache or
    (None) its URL (`serverless.models.downloads.locate_public`)."""
    public = YOLO_WORLD_CHECKPOINTS.get(checkpoint)
    if public is None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            named = Path(checkpoint).stem if Path(checkpoint).stem in YOLO_WORLD_CHECKPOINTS else None
            also = f" (for the public checkpoint write yolo-world:{named})" if named else ""
            raise ModelLoadError(f"YOLO-World checkpoint {checkpoint!r} does not exist{also}; {_HINT}")
        return WeightsSource(str(path), f"YOLO-World checkpoint {checkpoint}")
    return locate_public(public, _CACHE_FOLDER, display=f"YOLO-World {checkpoint}", download=download, hint=_HINT)


def _locate_clip(clip: str, download: bool) -> WeightsSource:
    return locate_pretrained(clip, download, display="the CLIP text encoder", example=DEFAULT_CLIP, hint=_HINT)


def locate_weights(weights: str, download: bool = True) -> WeightsSource:
    """Where ``CHECKPOINT:CLIP`` loads from, both parts checked in seconds before anything
    loads: ``load_from`` is the checkpoint file (None: the public one, to be downloaded); the
    CLIP part is found again at build time (`_build`) without a second probe."""
    checkpoint, clip = split_weights(weights)
    found = _locate_checkpoint(checkpoint, download)
    text = _locate_clip(clip, download)
    return WeightsSource(found.load_from, f"{found.note}; {text.note}")


def _on_disk(weights: str) -> str | None:
    """``CHECKPOINT_FILE:CLIP_DIRECTORY`` when both are on this machine, else None."""
    checkpoint, clip = split_weights(weights)
    try:
        found = _locate_checkpoint(checkpoint, download=False).load_from
    except ModelLoadError:
        return None
    text = pretrained_on_disk(clip)
    return f"{found}:{text}" if found and text else None


def _tiny(directory: Path, seed: int = 0) -> str:
    from serverless.models.tiny_yolo_world import write_tiny_yolo_world

    checkpoint, clip = write_tiny_yolo_world(Path(directory).resolve() / BACKEND.name, seed)
    return f"{checkpoint}:{clip}"


def _build(weights: str, source: WeightsSource, ontology: Ontology, device: str | None) -> YoloWorldDetector:
    name, clip = split_weights(weights)
    checkpoint = source.load_from
    if checkpoint is None:
        public = YOLO_WORLD_CHECKPOINTS[name]
        target = public.cache_path(_CACHE_FOLDER)
        checkpoint = str(download_once(public, target, display=f"YOLO-World {name}", hint=_HINT))
    # located already: a directory or cached snapshot loads from disk, else the hub id downloads
    return YoloWorld.load(checkpoint, pretrained_on_disk(clip) or clip, device=device).bind(ontology)


BACKEND = DetectorBackend(
    name="yolo-world",
    summary="YOLO-World (ultralytics, text from transformers' CLIP): open-vocabulary boxes, one class per prompt",
    parse=_parse,
    locate=locate_weights,
    on_disk=_on_disk,
    tiny=_tiny,
    build=_build,
)
"""``yolo-world[:CHECKPOINT[:CLIP]]``; default ``AUTOLABEL_YOLO_WORLD_MODEL``, else
``yolov8s-worldv2:openai/clip-vit-base-patch32``."""
