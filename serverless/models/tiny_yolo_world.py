"""A tiny random-init YOLO-World in the real on-disk formats the ``yolo-world`` backend loads
(`serverless.models.yolo_world`), written offline.

`write_tiny_yolo_world(directory)` writes:

- ``yolo-world-tiny.yaml``: an ultralytics model yaml, yolov8-worldv2's layer list with a few
  channels per layer, one repeat per block and ``reg_max: 4`` (the box branch's width follows
  it), so a 640x640 input costs about 0.8 GFLOPs instead of yolov8s-worldv2's 51;
- ``yolo-world-tiny.pt``: a checkpoint in the layout ultralytics writes (``model`` is the
  pickled half-precision `WorldModel`, ``train_args`` holds ``imgsz``), which
  ``ultralytics.YOLOWorld(path)`` and the backend's restricted loader read;
- ``clip/``: the tiny transformers CLIP of `serverless.models.tiny_clip.write_tiny_clip`, with
  whole-word tokens for the prompts of its tests (`_WORDS`). Its projection is 512 wide, the text embedding width
  of the yaml's ``C2fAttn`` guides and ``WorldDetect`` head (ultralytics' `WorldModel` also
  builds with a 512-wide placeholder text embedding, so any other width fails when the model
  is built).

Their outputs are meaningless: they exist so tests and offline demos run the real code path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from serverless.models.tiny import TINY_MARKER
from serverless.models.tiny_clip import write_tiny_clip

if TYPE_CHECKING:
    import torch
    from ultralytics.nn.tasks import WorldModel

__all__ = ["CHECKPOINT_NAME", "CLIP_DIR", "TEXT_DIM", "TINY_YAML", "calibrate_norms", "write_tiny_yolo_world"]

CHECKPOINT_NAME = "yolo-world-tiny.pt"
CLIP_DIR = "clip"
TEXT_DIM = 512
"""Text embedding width: the tiny CLIP's ``projection_dim`` and the yaml's guide/embed width."""
IMGSZ = 640

TINY_BACKBONE = """\
backbone:
  - [-1, 1, Conv, [8, 3, 2]] # 0-P1/2
  - [-1, 1, Conv, [16, 3, 2]] # 1-P2/4
  - [-1, 1, C2f, [16, True]]
  - [-1, 1, Conv, [16, 3, 2]] # 3-P3/8
  - [-1, 1, C2f, [16, True]]
  - [-1, 1, Conv, [32, 3, 2]] # 5-P4/16
  - [-1, 1, C2f, [32, True]]
  - [-1, 1, Conv, [32, 3, 2]] # 7-P5/32
  - [-1, 1, C2f, [32, True]]
  - [-1, 1, SPPF, [32, 5]] # 9
"""
"""The tiny YOLOv8 backbone both tiny ultralytics models share (YOLO-World's and the trained YOLO's)."""

TINY_YAML = f"""\
# yolov8-worldv2 (ultralytics/cfg/models/v8/yolov8-worldv2.yaml) scaled down for tests
nc: 4
reg_max: 4
depth_multiple: 1.0
width_multiple: 1.0
{TINY_BACKBONE}head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C2fAttn, [32, 16, 1, {TEXT_DIM}]] # 12: [c2, embed (set to c2/2), heads, text width]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 1, C2fAttn, [16, 8, 1, {TEXT_DIM}]] # 15 (P3/8)
  - [15, 1, Conv, [16, 3, 2]]
  - [[-1, 12], 1, Concat, [1]]
  - [-1, 1, C2fAttn, [32, 16, 1, {TEXT_DIM}]] # 18 (P4/16)
  - [-1, 1, Conv, [32, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]
  - [-1, 1, C2fAttn, [32, 16, 1, {TEXT_DIM}]] # 21 (P5/32)
  - [[15, 18, 21], 1, WorldDetect, [nc, {TEXT_DIM}, True]] # WorldDetect(P3, P4, P5)
"""
"""The tiny architecture (ultralytics model yaml); ``nc`` is only the class count the model
is built with: the backend gives the head one class per ontology prompt."""

# Whole-word tokens of the tiny CLIP's tokenizer (anything else is spelled byte by byte).
_WORDS = (
    "a an the of with on in person worker people man woman cat dog cup coffee mug car truck bus "
    "bicycle chair table bottle hard hat helmet vest tree sky road rocket astronaut sunny day"
).split()


def calibrate_norms(
    model: torch.nn.Module, forward: Callable[[torch.Tensor], object], generator: torch.Generator
) -> None:
    """Give a random-init network's BatchNorm layers the running statistics of one training-mode
    pass of ``forward`` over four smooth random 256x256 images drawn from ``generator``, as a
    trained model's reflect its data (at random init every layer shrinks its input and the head
    sees a constant). The model is left in eval mode. Shared by the tiny ultralytics writers
    (`serverless.models.tiny_yolo`)."""
    import torch

    blobs = torch.rand(4, 3, 8, 8, generator=generator)
    smooth = torch.nn.functional.interpolate(blobs, size=(256, 256), mode="bilinear")
    images = 0.8 * smooth + 0.2 * torch.rand(4, 3, 256, 256, generator=generator)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momentum = [m.momentum for m in norms]
    for norm in norms:
        norm.momentum = 1.0  # running statistics := this batch's
    model.train()
    with torch.no_grad():
        forward(images)
    for norm, value in zip(norms, momentum, strict=True):
        norm.momentum = value
    model.eval()


def _calibrate(model: WorldModel, seed: int) -> None:
    """Make a random `WorldModel`'s scores vary with the image: its BatchNorm statistics from
    smooth random images (`calibrate_norms`); the contrastive heads, which start at a bias of
    -10 (every score about 0), start at bias 0 and logit scale e^-2: scores then spread over
    0..1 without saturating."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def forward(images: torch.Tensor) -> object:
        text = torch.nn.functional.normalize(torch.randn(1, 4, TEXT_DIM, generator=generator), dim=-1)
        return model.predict(images, txt_feats=text)

    calibrate_norms(model, forward, generator)
    for head in model.model[-1].cv4:
        head.bias.data.zero_()
        head.logit_scale.data.fill_(-2.0)


def _write_checkpoint(directory: Path, seed: int) -> Path:
    import torch
    import ultralytics
    from ultralytics.nn.tasks import WorldModel

    config = directory / "yolo-world-tiny.yaml"
    config.write_text(TINY_YAML, encoding="utf-8")
    torch.manual_seed(seed)
    # nc is passed as well as written in the yaml: WorldModel sizes its placeholder text
    # embedding from the argument (80 when None) and runs it through the head while building.
    model = WorldModel(str(config), nc=4, verbose=False)
    _calibrate(model, seed)
    checkpoint = directory / CHECKPOINT_NAME
    # The keys and half precision of ultralytics' Model.save, which builds from a yaml only
    # with nc 80 (a head four times the cost here).
    torch.save(
        {
            "model": model.half(),
            "ema": None,
            "train_args": {"imgsz": IMGSZ, "task": "detect", "model": config.name},
            "date": datetime.now(timezone.utc).isoformat(),
            "version": ultralytics.__version__,
        },
        checkpoint,
    )
    return checkpoint


def write_tiny_yolo_world(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """``(checkpoint, CLIP directory)`` of a tiny YOLO-World written under ``directory``
    (reused when already there)."""
    from serverless.models.yolo_world import ultralytics_environment

    clip = write_tiny_clip(directory / CLIP_DIR, seed=seed, projection_dim=TEXT_DIM, words=_WORDS)
    checkpoint = directory / CHECKPOINT_NAME
    if not (directory / TINY_MARKER).exists():
        directory.mkdir(parents=True, exist_ok=True)
        ultralytics_environment()
        _write_checkpoint(directory, seed)
        (directory / TINY_MARKER).write_text("random weights: outputs are meaningless\n")
    return checkpoint, clip
