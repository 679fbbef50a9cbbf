"""Scale benchmark: images/s of bulk pre-labelling with Grounding DINO + SAM masks, side by side
in one run: the per-image reference loop, our pipelined single process, and the Ray Data engine
with 1 and 2 workers.

**Inputs.** ``--images`` JPEG photos of ``--size`` (default 640x480), made from the bundled
sample photos (``serverless/samples/*.jpg``, resized, with a little seeded noise so no two files
are the same), written to a work folder. Ontology: the samples' (``serverless/samples/ontology.yaml``).
Every mode labels the same files with the same weights from disk, one mode at a time, each in a
fresh spawned process (own model loading, own memory; the first mode does not warm the next).

**Models.** ``--models tiny``: the random-init tiny Grounding DINO and SAM (`make_tiny_models`),
seconds per run; ``--models full``: Grounding DINO-T (Swin-T + bert-base-uncased-shaped text
encoder, default image processor: shortest side 800) and SAM ``vit_b``, full size with **random
weights** (none can be downloaded here), written to disk as a ``save_pretrained`` directory and a
segment-anything state dict. Random weights give meaningless boxes: every mode uses one box
threshold (``--threshold``, default 0.35 as in transformers' Grounding DINO example), and the
boxes per image each mode found are printed, since the SAM decoder's work follows them.

**Modes** (each timed from before loading the models to the last image's result, loading
included; ``load s`` is shown apart where the mode can tell it):

- ``reference``: transformers' and segment-anything's documented per-image usage — per file
  ``PIL.Image.open(...).convert("RGB")``, ``processor(images=image, text=..., return_tensors="pt")``,
  ``model(**inputs)`` under ``torch.no_grad()`` (fp32, no autocast),
  ``post_process_grounded_object_detection(..., threshold, text_threshold=0.25)``, the
  ontology's ``max_detections`` (100) best boxes kept — the cap the product applies: random
  full-size weights put most of the 900 queries over any threshold, and SAM's decoder on 900
  boxes of one frame exhausts 24 GB —, then ``SamPredictor.set_image`` and one
  ``predict_torch`` call with the image's boxes. Nothing is stored.
- ``pipelined``: ``autolabel prelabel --masks --dataset D --workers W --batch-size B`` as a
  function call: `serverless.pipeline.prelabel_files` (images decoded by ``--workers`` processes
  ahead of the models, same-size frames in one detector pass, SAM's encoder over the batch's
  frames, bf16 autocast on CUDA) and each batch written to the store in one go
  (`sync.prelabel_store.RunRecorder.record_many`).
- ``pipelined+compile`` (``--compile``): the same with ``--compile`` (torch.compile of the
  Grounding DINO network and the SAM image encoder; compiling is inside the time).
- ``ray-N``: ``autolabel prelabel --engine ray --ray-workers N`` as a function call
  (`sync.ray_prelabel.prelabel_with_ray`) on a local Ray cluster started beforehand (its start-up
  is not timed; each worker actor loads the models, which is timed): decoding in Ray tasks, N
  model actors, each writing its batches to the store.

The store is a SQLite file in the work folder unless ``--store URL`` (PostgreSQL) is given; the
pipelined and Ray modes must store the same annotation count (checked and printed).

**On a GPU** (``--device cuda``, the default when CUDA is there) the script runs unchanged;
it records the card, and samples GPU utilisation (``nvidia-smi`` every 0.2 s) during each mode:
``GPU busy`` is the mean of the samples. Targets of the issue: pipelined ≥ 3x the reference
images/s and the GPU ≥ 80 % busy on a GPU; on a CPU, pipelined no slower than the reference.

    python bench/scale.py --models tiny                        # a minute or two
    nice python bench/scale.py --models tiny,full --json out.json --markdown out.md
    python bench/scale.py --models full --images 64 --batch-size 8 --workers 4   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

# bench/models.py sets the offline switches and puts the repository on sys.path when imported.
from models import machine_info, write_grounding_dino_t  # noqa: E402
from arguments import at_least  # noqa: E402
from tables import markdown_table, rich_table, write_outputs  # noqa: E402

ROOT = BENCH.parent
SAMPLES = ROOT / "serverless" / "samples"
TEXT_THRESHOLD = 0.25
COLUMNS = ("models", "mode", "device", "images", "batch", "decode workers", "load s", "total s", "images/s",
           "vs reference", "boxes/image", "GPU busy")


@dataclass(frozen=True)
class Setup:
    """What one run measures."""

    models: tuple[str, ...]
    images: int
    size: tuple[int, int]
    """(width, height) of every photo."""
    batch_size: int
    workers: int
    """Decoding processes of the pipelined mode."""
    ray_workers: tuple[int, ...]
    threshold: float
    device: str
    store: str | None
    """A store URL (PostgreSQL) for the pipelined and Ray modes; None: a SQLite file per mode."""
    compile: bool = False
    """Also run the pipelined mode with ``--compile`` (``pipelined+compile``)."""


@dataclass(frozen=True)
class Weights:
    """Where one model set's files are, and what the product calls them."""

    gdino_dir: str
    sam_model_type: str
    sam_checkpoint: str

    def settings(self, device: str, compile: bool = False) -> Any:  # noqa: A002 - the option's name
        from serverless.pipeline import ModelSettings

        return ModelSettings(gdino_model=self.gdino_dir, sam_model_type=self.sam_model_type,
                             sam_checkpoint=self.sam_checkpoint, device=device, compile=compile)


# --------------------------------------------------------------------------- inputs


def write_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``count`` JPEG photos of ``size`` from the sample photos, each with its own seeded noise."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p).convert("RGB").resize(size) for p in sorted(SAMPLES.glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        pixels = np.asarray(photos[i % len(photos)], dtype=np.int16) + rng.integers(-6, 7, (size[1], size[0], 3))
        path = folder / f"photo-{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        files.append(path)
    return files


def write_weights(kind: str, work: Path) -> Weights:
    """The model files of ``kind`` (``tiny`` or ``full``), written under ``work``."""
    from serverless.models.tiny import make_tiny_models

    tiny = make_tiny_models(work / "tiny")
    if kind == "tiny":
        return Weights(str(tiny.gdino_dir), str(tiny.sam_model_type), str(tiny.sam_checkpoint))
    import torch

    from serverless.models.sam import build_sam_model

    gdino = work / "grounding-dino-t-random"
    if not (gdino / "config.json").exists():
        write_grounding_dino_t(gdino, str(tiny.gdino_dir))
    sam = work / "sam_vit_b_random.pth"
    if not sam.exists():
        torch.manual_seed(0)
        torch.save(build_sam_model("vit_b", None).state_dict(), sam)
    return Weights(str(gdino), "vit_b", str(sam))


# --------------------------------------------------------------------------- GPU utilisation


class GpuSampler:
    """Mean GPU utilisation while the ``with`` block runs (``nvidia-smi`` every ``period`` s);
    None off CUDA or without nvidia-smi."""

    def __init__(self, device: str, period: float = 0.2) -> None:
        self.enabled = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self.index = device.partition(":")[2] or "0"
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        command = ["nvidia-smi", "-i", self.index, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(self.period):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            with contextlib.suppress(ValueError):
                self.samples.append(float(done.stdout.strip().splitlines()[0]))

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self.samples), 1) if self.samples else None


def card(device: str) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from machine import cpu_model

    return cpu_model()


# --------------------------------------------------------------------------- modes (one process each)


def _prompt(ontology: Any) -> str:
    """transformers' documented text input: lower-case phrases, each ending with a period."""
    return " ".join(f"{prompt.lower().rstrip('.')}." for label in ontology.labels for prompt in label.prompts)


def reference(files: Sequence[str], weights: Weights, setup: Setup) -> dict[str, Any]:
    """The per-image loop of transformers' Grounding DINO example and segment-anything's predictor."""
    import numpy as np
    import torch
    from PIL import Image
    from segment_anything import SamPredictor
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    from serverless.models.sam import build_sam_model
    from serverless.ontology import load_ontology

    ontology = load_ontology(SAMPLES / "ontology.yaml")
    text, most = _prompt(ontology), ontology.defaults.max_detections
    began = time.perf_counter()
    processor = AutoProcessor.from_pretrained(weights.gdino_dir)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(weights.gdino_dir).to(setup.device).eval()
    predictor = SamPredictor(build_sam_model(weights.sam_model_type, weights.sam_checkpoint).to(setup.device).eval())
    load_s = time.perf_counter() - began
    boxes_found = 0
    for path in files:
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, text=text, return_tensors="pt").to(setup.device)
        with torch.no_grad():
            outputs = model(**inputs)
        found = processor.post_process_grounded_object_detection(
            outputs, inputs.input_ids, threshold=setup.threshold, text_threshold=TEXT_THRESHOLD,
            target_sizes=[image.size[::-1]],
        )[0]
        boxes = found["boxes"][found["scores"].argsort(descending=True)[:most]]
        boxes_found += len(boxes)
        if len(boxes):
            predictor.set_image(np.asarray(image))
            prompts = predictor.transform.apply_boxes_torch(boxes.to(setup.device), (image.height, image.width))
            with torch.no_grad():
                masks, _, _ = predictor.predict_torch(None, None, boxes=prompts, multimask_output=False)
            masks.cpu()
    return {"load_s": load_s, "boxes": boxes_found, "seconds": time.perf_counter() - began}


def _store_url(setup: Setup, work: Path, mode: str) -> str:
    return setup.store or f"sqlite:///{work / f'{mode}.db'}"


def pipelined(
    files: Sequence[str], weights: Weights, setup: Setup, store_url: str, compile: bool = False  # noqa: A002
) -> dict[str, Any]:
    """``autolabel prelabel --masks --dataset D --workers W [--compile]`` as a call: decode ahead,
    batch, record. Compiling happens during the first batches, so it is inside ``total s``."""
    from serverless.ontology import load_ontology
    from serverless.pipeline import load_detector, prelabel_files
    from sync.prelabel_store import RunRecorder
    from sync.store import open_store

    ontology = load_ontology(SAMPLES / "ontology.yaml")
    settings = weights.settings(setup.device, compile)
    store = open_store(store_url)
    dataset = f"scale-pipelined-{time.time_ns()}"
    began = time.perf_counter()
    detector = load_detector(settings, ontology, masks=True)
    load_s = time.perf_counter() - began
    recorder = RunRecorder(store, dataset, "pipelined", ontology, settings, {"threshold": setup.threshold})
    rows, boxes_found = [], 0
    paths = [Path(f) for f in files]
    for result in prelabel_files(paths, detector, threshold=setup.threshold, batch_size=setup.batch_size,
                                 workers=setup.workers):
        boxes_found += len(result.detections)
        rows.append((result.path, result.width, result.height, result.detections, result.tags))
        if len(rows) == setup.batch_size:
            recorder.record_many(rows)
            rows = []
    recorder.record_many(rows)
    run = recorder.finish()
    seconds = time.perf_counter() - began
    return {"load_s": load_s, "boxes": boxes_found, "seconds": seconds,
            "annotations": store.count_annotations(run), "covered": len(store.covered_samples(run))}


def with_ray(files: Sequence[str], weights: Weights, setup: Setup, store_url: str, workers: int) -> dict[str, Any]:
    """``autolabel prelabel --masks --engine ray --ray-workers N`` as a call, on a local cluster."""
    import ray

    from serverless.ontology import load_ontology
    from sync.ray_prelabel import prelabel_with_ray
    from sync.store import open_store

    ontology = load_ontology(SAMPLES / "ontology.yaml")
    settings = weights.settings(setup.device)
    import torch

    # On CUDA the workers share the machine's GPUs: one each when there are enough, else a
    # fraction (two workers on one card: 0.5 each, as --gpus-per-worker 0.5 would give).
    cards = torch.cuda.device_count() if setup.device.startswith("cuda") else 0
    gpus = min(1.0, cards / workers) if cards else 0
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        dataset = f"scale-ray-{workers}-{time.time_ns()}"
        began = time.perf_counter()
        outcome = prelabel_with_ray(
            [Path(f) for f in files], ontology, settings, store_url=store_url, dataset=dataset,
            run_name=f"ray-{workers}", masks=True, threshold=setup.threshold, batch_size=setup.batch_size,
            workers=workers, gpus_per_worker=gpus, address=None, params={"threshold": setup.threshold},
        )
        seconds = time.perf_counter() - began
    finally:
        ray.shutdown()
    store = open_store(store_url)
    run = store.get_run(dataset, outcome.run)
    return {"load_s": None, "boxes": None, "seconds": seconds,
            "annotations": store.count_annotations(run), "covered": len(store.covered_samples(run))}


def _job(mode: str, files: Sequence[str], weights: Weights, setup: Setup, work: str) -> dict[str, Any]:
    """One mode in this (spawned) process, with GPU utilisation sampled around it."""
    import torch

    torch.set_flush_denormal(True)  # random weights make denormal floats, very slow on x86
    with GpuSampler(setup.device) as gpu:
        if mode == "reference":
            row = reference(files, weights, setup)
        elif mode.startswith("pipelined"):
            row = pipelined(files, weights, setup, _store_url(setup, Path(work), mode), mode.endswith("compile"))
        else:
            row = with_ray(files, weights, setup, _store_url(setup, Path(work), mode), int(mode.split("-")[1]))
    return {**row, "gpu_busy": gpu.mean, "gpu_samples": len(gpu.samples)}


def run_isolated(mode: str, files: Sequence[str], weights: Weights, setup: Setup, work: Path) -> dict[str, Any]:
    """`_job` in a fresh spawned process."""
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_job, mode, list(files), weights, setup, str(work)).result()


# --------------------------------------------------------------------------- the run


def modes(setup: Setup) -> list[str]:
    return ["reference", "pipelined", *(["pipelined+compile"] if setup.compile else []),
            *(f"ray-{n}" for n in setup.ray_workers)]


def measure(setup: Setup, work: Path) -> list[dict[str, Any]]:
    """Every model set through every mode: one row each."""
    files = [str(p) for p in write_images(work / "images", setup.images, setup.size)]
    rows = []
    for kind in setup.models:
        weights = write_weights(kind, work / "weights")
        for mode in modes(setup):
            found = run_isolated(mode, files, weights, setup, work)
            rows.append({"models": kind, "mode": mode, "images": len(files), **found,
                         "images_per_s": len(files) / found["seconds"]})
    _compare(rows)
    return rows


def _compare(rows: list[dict[str, Any]]) -> None:
    """Speed-ups against each model set's reference; the stored modes' annotation counts checked equal."""
    for kind in {row["models"] for row in rows}:
        mine = [row for row in rows if row["models"] == kind]
        base = next(row["images_per_s"] for row in mine if row["mode"] == "reference")
        stored = {row["annotations"] for row in mine if "annotations" in row}
        for row in mine:
            row["vs_reference"] = row["images_per_s"] / base
            row["same_annotations"] = len(stored) <= 1
    different = [row["models"] for row in rows if not row["same_annotations"]]
    if different:
        raise SystemExit(f"the stored modes disagree on the annotation count for {sorted(set(different))}")


# --------------------------------------------------------------------------- output


def _cells(row: dict[str, Any], setup: dict[str, Any], device: str) -> list[str]:
    def number(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    boxes = None if row["boxes"] is None else row["boxes"] / row["images"]
    batch = "1" if row["mode"] == "reference" else str(setup["batch_size"])
    workers = "0" if row["mode"] == "reference" else "ray tasks"
    workers = str(setup["workers"]) if row["mode"].startswith("pipelined") else workers
    busy = "-" if row["gpu_busy"] is None else f"{row['gpu_busy']:.0f} %"
    return [row["models"], row["mode"], device, str(row["images"]), batch, workers, number(row["load_s"]),
            number(row["seconds"]), number(row["images_per_s"], 2), f"{row['vs_reference']:.2f}x",
            number(boxes), busy]


def _rows(report: dict[str, Any]) -> list[list[str]]:
    return [_cells(row, report["setup"], report["card"]) for row in report["rows"]]


def _caption(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["setup"]
    return (f"{report['card']} ({s['device']}), {m['cores']} cores, torch {m['torch']}; "
            f"{s['images']} photos {s['size'][0]}x{s['size'][1]}, threshold {s['threshold']}; {report['date']}")


def render(report: dict[str, Any], console: Any) -> None:
    console.print(rich_table("Bulk pre-labelling: Grounding DINO + SAM masks", COLUMNS, _rows(report),
                             _caption(report), text_columns=("models", "mode", "device")))


def markdown(report: dict[str, Any]) -> str:
    table = markdown_table(COLUMNS, _rows(report), text_columns=("models", "mode", "device"))
    return f"{table}\n\n{_caption(report)}\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,full", help="model sets: tiny, full or both (default tiny,full)")
    parser.add_argument("--images", type=at_least(1), default=None, help="photos (default 16 tiny only, else 6)")
    parser.add_argument("--size", default="640x480", help="each photo's WxH (default 640x480)")
    parser.add_argument("--batch-size", type=at_least(1), default=4, help="images per model call (default 4)")
    parser.add_argument("--workers", type=at_least(0), default=2, help="decoding processes of the pipelined mode")
    parser.add_argument("--ray", default="1,2", help="Ray worker counts, comma-separated; '' for none (default 1,2)")
    parser.add_argument("--threshold", type=float, default=0.35, help="box threshold of every mode (default 0.35)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    parser.add_argument("--compile", action="store_true", help="also run the pipelined mode with --compile")
    parser.add_argument("--store", default=None, help="store URL for the stored modes (default: SQLite files)")
    parser.add_argument("--workdir", type=Path, default=None, help="where photos, weights and stores go "
                        "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="also write the table as Markdown")
    return parser


def _setup(args: argparse.Namespace) -> Setup:
    kinds = tuple(k.strip() for k in args.models.split(",") if k.strip())
    if not kinds or set(kinds) - {"tiny", "full"}:
        raise SystemExit(f"--models must list tiny and/or full, got {args.models!r}")
    width, _, height = args.size.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) < 8 or int(height) < 8:
        raise SystemExit(f"--size must be WxH of at least 8x8, got {args.size!r}")
    try:
        ray_workers = tuple(int(n) for n in args.ray.split(",") if n.strip())
    except ValueError:
        raise SystemExit(f"--ray must be worker counts such as 1,2, got {args.ray!r}") from None
    if any(n < 1 for n in ray_workers):
        raise SystemExit(f"--ray worker counts must be at least 1, got {args.ray!r}")
    if not 0.0 <= args.threshold <= 1.0:
        raise SystemExit(f"--threshold must lie in 0..1, got {args.threshold}")
    from serverless.models.registry import select_device

    images = args.images or (16 if kinds == ("tiny",) else 6)
    return Setup(kinds, images, (int(width), int(height)), args.batch_size, args.workers, ray_workers,
                 args.threshold, select_device(args.device), args.store, args.compile)


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        yield Path(work)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup = _setup(args)
    from rich.console import Console

    command = " ".join(["python bench/scale.py", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {"command": command, "date": time.strftime("%Y-%m-%d"), "card": card(setup.device),
                              "machine": machine_info(None), "setup": asdict(setup)}
    with _workdir(args.workdir) as work:
        report["rows"] = measure(setup, work)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    render(report, Console(width=None if sys.stdout.isatty() else 240))
    write_outputs(report, args.json, args.markdown, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
