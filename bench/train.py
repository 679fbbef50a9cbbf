"""Distillation benchmark: how fast yolo11n trains on this CPU, and how much faster the trained
detector labels an image than Grounding DINO-T, side by side in one run.

**Training.** A synthetic YOLO dataset is written to disk (`write_dataset`: ``--images`` JPEG
photos of 640x480 noise with 1 to 4 filled rectangles each, red ones class ``cat``, blue ones
``dog``, plus a quarter as many validation photos). yolo11n is built from ``yolo11n.yaml``
(random init, nothing downloaded) and trained by ultralytics for ``--epochs`` epochs at each
``--imgsz`` on the CPU, with the arguments ``autolabel train`` passes
(`sync.train.run.TrainOptions.settings`: epochs, imgsz, batch, workers 0, plots off, seed 0)
plus ``val=False`` (ultralytics then validates after the last epoch only) and
``close_mosaic=0``: every timed epoch loads mosaics, as all but the last 10 epochs of a
training do (with fewer than 10 epochs ultralytics would close mosaic from the first one).
**Timed**: each epoch from ultralytics' ``on_train_epoch_start`` callback to its
``on_train_epoch_end`` callback, i.e. the LR-scheduler step, loading, augmenting (mosaic) and collating every
training image, forward, loss, backward, optimizer step and EMA update of every batch. Not
timed: building the model and data loaders, the validation after the last epoch, saving
checkpoints and ultralytics' final validation of ``best.pt``. **images/s** of an epoch is the
training images ultralytics iterated (its train dataset's length) / that epoch's seconds; the
run's images/s is images x epochs / the epochs' summed seconds. ultralytics trains on the CPU
with ``workers=0`` (it forces 0 on a CPU) and sets torch's threads to its own
``NUM_THREADS`` (``min(8, cores - 1)``): the threads the epochs ran with are recorded.

**Inference.** Each trained ``best.pt`` through the ``yolo`` backend and Grounding DINO-T
(Swin-T, bert-base-uncased text; full size, **random weights**, built by
`bench/models.py`'s `grounding_dino_t` and written as a ``save_pretrained`` directory with the
default ``GroundingDinoImageProcessor``: shortest side 800, longest at most 1333) through the
``grounding-dino`` backend: the real door, ``Detector.detect([image])`` of the detector
`serverless.models.registry.load_detector` gives for the ontology ``cat``, ``dog`` (one caption
of 6 tokens for Grounding DINO), on the CPU at batch 1, with ``--threads`` torch threads (by
default the threads the training ran with; on a small shared machine more threads than free
cores make small models' latencies swing by 100x, threads waiting on a descheduled peer),
with denormal floats flushed to zero (random weights make them), on the sample photos
(``serverless/samples/*.jpg``) decoded once beforehand. First one pass over every photo per
detector under ``FlopCounterMode`` (the warm-up; it gives GFLOPs/image, counted as
`bench/models.py` counts them), then ``--repeats`` passes, round-robin (photo i on every
detector, then photo i + 1), so load from other processes spreads over the detectors alike.
**ms/image** is the median of the timed ``detect`` calls (photos x repeats); images/s is
1000 / that median; the speed-up is Grounding DINO-T's median / the detector's. The
Grounding DINO tokenizer is the product's tiny bert-base-uncased-shaped vocabulary
(``registry.backend("grounding-dino").tiny``): ``cat`` and ``dog`` are one token each there as
in bert-base-uncased, so the caption is the same 6 tokens. The **H100 img/s** column is a
projection from the counted FLOPs (`bench/models.py`'s `projected_images_per_s`), not a
measurement.

``--tiny``: imgsz 64, 1 epoch, 8 small training photos, Grounding DINO from the backend's tiny
writer; the trained yolo11n checkpoints are served as in a full run. It checks the script in
seconds; its numbers mean nothing.

    python bench/train.py --tiny
    nice -n 10 python bench/train.py --json out.json --markdown out.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# bench/models.py sets the offline switches (HF_HUB_OFFLINE, YOLO_OFFLINE, YOLO_AUTOINSTALL,
# YOLO_CONFIG_DIR) and puts the repository on sys.path when imported.
from models import (
    H100_BF16_DENSE_TFLOPS,
    UTILISATION,
    flop_mapping,
    machine_info,
    projected_images_per_s,
    write_grounding_dino_t,
)
from arguments import at_least, sizes  # noqa: E402
from tables import markdown_table, rich_table, write_outputs  # noqa: E402

import numpy as np

if TYPE_CHECKING:
    from serverless.models.base import Detector

__all__ = [
    "CLASSES",
    "INFERENCE_COLUMNS",
    "TRAINING_COLUMNS",
    "Setup",
    "main",
    "markdown",
    "measure_inference",
    "train_once",
    "write_dataset",
]

CLASSES = ("cat", "dog")
"""The synthetic dataset's classes, the trained detectors' classes and the ontology's labels."""
COLOURS = ((220, 40, 40), (40, 40, 220))
"""The fill colour of each class's rectangles."""
SAMPLES = ROOT / "serverless" / "samples"
BASE_MODEL = "yolo11n.yaml"
GDINO_TITLE = "Grounding DINO-T (Swin-T), random weights"

TRAINING_COLUMNS = ("model", "imgsz", "train images", "batch", "epochs", "torch threads", "workers",
                    "s per epoch", "images/s per epoch", "images/s (all epochs)")
INFERENCE_COLUMNS = ("model", "backend", "params (M)", "input (WxH)", "GFLOPs/image", "ms/image (median)",
                     "images/s", "speed-up vs Grounding DINO-T", "H100 img/s (proj.)")


@dataclass(frozen=True)
class Setup:
    """What one run trains and measures."""

    tiny: bool
    sizes: tuple[int, ...]
    """The training sizes (``imgsz``), one trained yolo11n each."""
    epochs: int
    images: int
    """Training photos; validation photos are a quarter as many (at least 2)."""
    photo: tuple[int, int]
    """Each synthetic photo's (width, height)."""
    batch: int
    repeats: int
    """Timed passes over the sample photos per detector, after the warm-up pass."""

    @classmethod
    def of(cls, args: argparse.Namespace) -> Setup:
        if args.tiny:
            return cls(True, args.imgsz or (64,), args.epochs or 1, args.images or 8, (128, 96), args.batch or 4,
                       args.repeats or 1)
        return cls(False, args.imgsz or (320, 640), args.epochs or 2, args.images or 64, (640, 480),
                   args.batch or 16, args.repeats or 2)


# --------------------------------------------------------------------------- training


def write_dataset(root: Path, *, train: int, val: int, size: tuple[int, int], seed: int = 0) -> Path:
    """A YOLO dataset under ``root``: ``images/{train,val}/*.jpg`` (noise with 1 to 4 filled
    rectangles of `CLASSES`' colours), ``labels/{train,val}/*.txt`` and ``data.yaml``; returns
    the yaml's path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 5))):
                cls = int(rng.integers(len(CLASSES)))
                w, h = (int(rng.integers(max(4, side // 10), side // 3)) for side in (width, height))
                x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
                pixels[y : y + h, x : x + w] = COLOURS[cls]
                box = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
                lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in box))
            Image.fromarray(pixels).save(root / "images" / split / f"{i:04d}.jpg", quality=90)
            (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    names = "".join(f"  {k}: {name}\n" for k, name in enumerate(CLASSES))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data


def train_once(data: Path, imgsz: int, setup: Setup, out: Path) -> dict[str, Any]:
    """Train yolo11n from `BASE_MODEL` at ``imgsz`` (module docstring): the row of the training
    table, with the epochs' seconds and the trained ``best.pt``."""
    import torch

    from serverless.models.yolo_world import ultralytics_environment
    from sync.train.run import TrainOptions
    from sync.train.ultra import resolve_base_model

    ultralytics_environment()
    from ultralytics import YOLO

    settings = TrainOptions(model=BASE_MODEL, epochs=setup.epochs, imgsz=imgsz, batch=setup.batch, workers=0,
                            plots=False, seed=0, device="cpu").settings()
    seen: dict[str, Any] = {"seconds": []}

    def epoch_start(trainer: Any) -> None:
        seen.update(images=len(trainer.train_loader.dataset), threads=torch.get_num_threads(),
                    workers=trainer.train_loader.num_workers, started=time.perf_counter())

    def epoch_end(trainer: Any) -> None:
        seen["seconds"].append(time.perf_counter() - seen["started"])

    model = YOLO(resolve_base_model(BASE_MODEL), task="detect")
    model.add_callback("on_train_epoch_start", epoch_start)
    model.add_callback("on_train_epoch_end", epoch_end)
    extra = {"val": False, "close_mosaic": 0}
    model.train(data=str(data), project=str(out), name=f"imgsz{imgsz}", exist_ok=True, verbose=False,
                **extra, **settings)
    best = Path(model.trainer.best)
    if not best.is_file() or len(seen["seconds"]) != setup.epochs:
        raise RuntimeError(f"training at imgsz {imgsz} left no {best} or timed {len(seen['seconds'])} epochs")
    seconds = [round(s, 3) for s in seen["seconds"]]
    return {
        "model": "yolo11n", "base": BASE_MODEL, "imgsz": imgsz, "images": seen["images"], "batch": setup.batch,
        "epochs": setup.epochs, "torch_threads": seen["threads"], "workers": seen["workers"],
        "epoch_s": seconds, "images_per_s": [round(seen["images"] / s, 3) for s in seconds],
        "total_images_per_s": round(seen["images"] * setup.epochs / sum(seconds), 3),
        "settings": {**settings, **extra}, "checkpoint": str(best),
    }


# --------------------------------------------------------------------------- inference


def _network_input(detector: Detector, image: np.ndarray) -> str:
    """``WxH`` of what the detector's network gets for ``image`` (its own ``preprocess``)."""
    pixels = detector.model.preprocess([image])
    pixels = pixels["pixel_values"] if isinstance(pixels, dict) else pixels
    return f"{pixels.shape[-1]}x{pixels.shape[-2]}"


def measure_inference(detectors: dict[str, Detector], images: Sequence[np.ndarray], repeats: int) -> dict[str, Any]:
    """Per detector (by title): a FLOP-counted warm-up pass over ``images``, then ``repeats``
    round-robin timed passes of ``detect([image])``; the median and every sample in ms, the mean
    FLOPs per image, the parameters and the network input sizes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    flops: dict[str, list[int]] = {title: [] for title in detectors}
    samples: dict[str, list[float]] = {title: [] for title in detectors}
    for title, detector in detectors.items():
        for image in images:
            with FlopCounterMode(display=False, custom_mapping=flop_mapping()) as counter:
                detector.detect([image])
            flops[title].append(counter.get_total_flops())
    for _ in range(repeats):
        for image in images:
            for title, detector in detectors.items():
                start = time.perf_counter()
                detector.detect([image])
                samples[title].append((time.perf_counter() - start) * 1000)
    found = {}
    for title, detector in detectors.items():
        median = statistics.median(samples[title])
        sizes = sorted({_network_input(detector, image) for image in images})
        mean_flops = statistics.mean(flops[title])
        found[title] = {
            "params_m": round(sum(p.numel() for p in detector.model.model.parameters()) / 1e6, 2),
            "input": ", ".join(sizes), "flops": round(mean_flops), "gflops": round(mean_flops / 1e9, 2),
            "ms": round(median, 2), "ms_samples": [round(ms, 2) for ms in samples[title]],
            "images_per_s": round(1000 / round(median, 2), 3),
            "h100_images_per_s": round(projected_images_per_s(mean_flops), 1),
            "torch_threads": torch.get_num_threads(),
        }
    return found


def _detectors(rows: list[dict[str, Any]], work: Path, tiny: bool) -> dict[str, tuple[str, Detector]]:
    """Title → (spec, detector bound to the `CLASSES` ontology) for every trained checkpoint and
    Grounding DINO-T (written under ``work``), through `registry.load_detector`."""
    from serverless.models import registry
    from serverless.ontology import Label, Ontology

    ontology = Ontology(labels=tuple(Label(name, (name,)) for name in CLASSES))
    tiny_gdino = registry.backend("grounding-dino").tiny(work / "tiny", 0)
    gdino = tiny_gdino if tiny else str(write_grounding_dino_t(work / "grounding-dino-t", tiny_gdino))
    specs = {f"yolo11n @{row['imgsz']} (trained here)": f"yolo:{row['checkpoint']}" for row in rows}
    specs[f"{GDINO_TITLE}{' (TINY)' if tiny else ''}"] = f"grounding-dino:{gdino}"
    return {title: (spec, registry.load_detector(registry.parse_spec(spec, "detector"), ontology, device="cpu"))
            for title, spec in specs.items()}


def inference_rows(training: list[dict[str, Any]], work: Path, setup: Setup) -> list[dict[str, Any]]:
    """The inference table: every trained yolo11n and Grounding DINO-T (last) on the sample photos."""
    from serverless.images import read_image

    images = [read_image(path) for path in sorted(SAMPLES.glob("*.jpg"))]
    if not images:
        raise SystemExit(f"no sample photos in {SAMPLES}")
    detectors = _detectors(training, work, setup.tiny)
    measured = measure_inference({title: d for title, (_, d) in detectors.items()}, images, setup.repeats)
    reference = measured[next(title for title in detectors if title.startswith(GDINO_TITLE))]["ms"]
    return [{"model": title, "backend": spec.partition(":")[0], "spec": spec, **measured[title],
             "photos": len(images), "repeats": setup.repeats, "speed_up": round(reference / measured[title]["ms"], 2)}
            for title, (spec, _) in detectors.items()]


# --------------------------------------------------------------------------- output


def _rate(per_s: float) -> str:
    return f"{per_s:.2f}" if per_s >= 1 else f"{per_s:.2g}"


def _training_cells(row: dict[str, Any]) -> list[str]:
    return [f"{row['model']} ({row['base']}, random init)", str(row["imgsz"]), str(row["images"]), str(row["batch"]),
            str(row["epochs"]), str(row["torch_threads"]), str(row["workers"]),
            " / ".join(f"{s:.3f}" for s in row["epoch_s"]), " / ".join(_rate(r) for r in row["images_per_s"]),
            _rate(row["total_images_per_s"])]


def _inference_cells(row: dict[str, Any]) -> list[str]:
    return [row["model"], row["backend"], f"{row['params_m']:.2f}", row["input"], f"{row['gflops']:.2f}",
            f"{row['ms']:.2f}", _rate(row["images_per_s"]), f"{row['speed_up']:.2f}x",
            f"{row['h100_images_per_s']:.0f}"]


def _captions(report: dict[str, Any]) -> tuple[str, str]:
    m, tiny = report["machine"], "TINY run: the numbers check the script, they mean nothing. " if report["tiny"] else ""
    where = (f"{m['date']}, {m['cpu']} ({m['cores']} cores), torch {m['torch']}, ultralytics {m['ultralytics']}, "
             f"transformers {m['transformers']}, Python {m['python']}; load average {m['load_average_start']} -> "
             f"{m.get('load_average_end')}.")
    training = (f"{tiny}Training: s per epoch = ultralytics on_train_epoch_start to on_train_epoch_end (loading, "
                "augmentation, forward, backward, optimizer; no validation, no checkpoint saving); images/s = train "
                f"images / epoch s, and images x epochs / summed s. {where}")
    row = report["inference"][0]
    inference = (f"{tiny}Inference: Detector.detect of one photo at a time (batch 1) on {row['photos']} sample "
                 f"photos, median of {row['photos'] * row['repeats']} timed calls ({row['repeats']} round-robin "
                 f"passes) after a FLOP-counted warm-up pass; torch threads {row['torch_threads']}; GPU not measured: "
                 f"the H100 column is a projection, {UTILISATION:.0%} x {H100_BF16_DENSE_TFLOPS:.0f} TFLOPS "
                 "(dense bf16) / counted FLOPs per image. " + where)
    return training, inference


def render(report: dict[str, Any], console: Any) -> None:
    """Both tables, with rich."""
    training_caption, inference_caption = _captions(report)
    for title, columns, cells, rows, caption in (
        ("Training yolo11n on the CPU", TRAINING_COLUMNS, _training_cells, report["training"], training_caption),
        ("Inference: trained yolo11n vs Grounding DINO-T, same photos, CPU", INFERENCE_COLUMNS, _inference_cells,
         report["inference"], inference_caption),
    ):
        console.print(rich_table(title, columns, [cells(row) for row in rows], caption, TEXT_COLUMNS))


TEXT_COLUMNS = ("backend", "input (WxH)")
"""Left-aligned columns besides the first (text, not numbers)."""


def markdown(report: dict[str, Any]) -> str:
    """Both tables as Markdown, each with its caption as a paragraph under it."""
    training_caption, inference_caption = _captions(report)
    training = markdown_table(TRAINING_COLUMNS, [_training_cells(row) for row in report["training"]], TEXT_COLUMNS)
    inference = markdown_table(INFERENCE_COLUMNS, [_inference_cells(row) for row in report["inference"]], TEXT_COLUMNS)
    return f"{training}\n\n{training_caption}\n\n{inference}\n\n{inference_caption}\n"


# --------------------------------------------------------------------------- running


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="imgsz 64, 1 epoch, tiny Grounding DINO: checks the script")
    parser.add_argument("--imgsz", type=sizes(32, "320,640"), default=None, metavar="N,...", help="training sizes (default 320,640)")
    parser.add_argument("--epochs", type=at_least(1), default=None, help="epochs per training (default 2)")
    parser.add_argument("--images", type=at_least(1), default=None, help="synthetic training photos (default 64)")
    parser.add_argument("--batch", type=at_least(1), default=None, help="training batch size (default 16)")
    parser.add_argument("--repeats", type=at_least(1), default=None,
                        help="timed passes over the sample photos per detector (default 2)")
    parser.add_argument("--threads", type=at_least(1), default=None,
                        help="torch threads for inference (default: the threads ultralytics trained with)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the dataset, runs and models go "
                        "(default: a temporary directory, removed afterwards)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="also write the tables as Markdown")
    return parser


def run(setup: Setup, work: Path, command: str, threads: int | None) -> dict[str, Any]:
    """Train at every size, then time every detector with ``threads`` torch threads (None: those
    of the training): the report."""
    import torch

    # Random weights can produce denormal floats, which are very slow on x86 CPUs (as bench/models.py).
    torch.set_flush_denormal(True)
    report: dict[str, Any] = {"command": command, "tiny": setup.tiny, "machine": machine_info(None),
                              "setup": {**setup.__dict__, "val_images": max(2, setup.images // 4)}}
    data = write_dataset(work / "data", train=setup.images, val=max(2, setup.images // 4), size=setup.photo)
    report["training"] = [train_once(data, imgsz, setup, work / "runs") for imgsz in setup.sizes]
    torch.set_num_threads(threads or report["training"][-1]["torch_threads"])
    report["inference"] = inference_rows(report["training"], work, setup)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup = Setup.of(args)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 240)
    command = " ".join(["python bench/train.py", *(sys.argv[1:] if argv is None else argv)])
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(setup, args.workdir.resolve(), command, args.threads)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
            report = run(setup, Path(work), command, args.threads)
    render(report, console)
    write_outputs(report, args.json, args.markdown, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
