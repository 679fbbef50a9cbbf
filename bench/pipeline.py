"""Pipeline benchmark: per-stage latency of Grounding DINO + SAM on this machine's CPU.

Three parts, each printed as a rich table (and written to ``--json FILE`` when asked):

1. **Tiny models** (``make_tiny_models``) on the bundled sample photos, one frame per call as
   a CVAT request sends it: images/s end to end (``GroundedSam.detect``) and the median
   latency of each stage over ``--repeats`` runs after one warm-up run:

   - *preprocess*: ``GroundingDino.preprocess`` (resize/normalise/pad), timed inside ``detect()``;
   - *detector*: ``GroundingDino.forward`` summed over every prompt chunk, timed inside ``detect()``;
   - *post*: ``detect()`` wall time minus the two above, measured in the same call: decoding
     (token → phrase scores, thresholds, box conversion), building ``Detections`` and NMS,
     plus the ontology cache look-up (a sha256 of the ontology);
   - *SAM encoder*: ``SamSegmenter.embed`` on a segmenter with no embedding cache
     (``cache_size=0``), so every call runs the ViT (including SAM's resize to 1024);
   - *SAM decoder*: ``SamSegmenter.segment_boxes`` with that frame's boxes (one batched call,
     masks upsampled to the frame and copied to NumPy).

2. **Full-size architectures with random weights** (``--full``, on unless ``--quick``):
   Grounding DINO Swin-T + bert-base (transformers' default ``GroundingDinoConfig``), saved
   with ``save_pretrained`` and loaded back through ``GroundingDino.load`` at the default
   800x1333 processor size; SAM ``vit_b`` / ``vit_h`` encoders (``build_sam_model(type, None)``).
   Each model runs in its own spawned process so its peak RSS can be reported.

3. **SAM decoding of K boxes**: one batched ``segment_boxes`` call vs one call per box, on the
   tiny SAM and a 640x480 frame. SAM's prompt encoder and mask decoder have the same sizes in
   every variant (256-d, 2-layer two-way transformer), so these figures hold for real
   checkpoints; the full-size part repeats K=10 on vit_b/vit_h as a cross-check.

Random weights give meaningless detections: the tiny detector's box counts (and so the SAM
decoder's work per frame) are whatever the random model outputs; they are reported.

    python bench/pipeline.py                 # everything (the docs figures; 9-18 minutes on a 2-core CPU)
    python bench/pipeline.py --quick         # tiny models and K-box decoding only (a few minutes)
    python bench/pipeline.py --json out.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np
from machine import cpu_model

K_VALUES = (1, 10, 50)


# --------------------------------------------------------------------------- helpers


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _median_ms(samples: list[float]) -> float:
    return _ms(statistics.median(samples))


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _setup_torch(threads: int | None) -> None:
    import torch

    # Random weights can produce denormal floats, which are very slow on x86 CPUs.
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = cpu_model()
    from importlib.metadata import PackageNotFoundError, version

    try:
        sam_version = version("segment-anything")
    except PackageNotFoundError:
        sam_version = "unknown"
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "segment_anything": sam_version,
        "cuda_used": False,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def _load_samples() -> list[tuple[str, np.ndarray]]:
    from serverless.images import read_image

    return [(p.name, read_image(p)) for p in sorted(SAMPLES.glob("*.jpg"))]


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR), dtype=np.uint8)


def _random_boxes(k: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, width * 0.8, k)
    y0 = rng.uniform(0, height * 0.8, k)
    w = rng.uniform(width * 0.05, width * 0.4, k)
    h = rng.uniform(height * 0.05, height * 0.4, k)
    boxes = np.stack([x0, y0, np.minimum(x0 + w, width), np.minimum(y0 + h, height)], axis=1)
    return boxes.astype(np.float32)


def timed_detect(detector: Any, image: np.ndarray, ontology: Any) -> tuple[dict[str, float], Any]:
    """Run ``detector.detect([image])`` once, timing its preprocess and forward calls inside it.

    Returns seconds for ``preprocess``, ``detector`` (all chunks), ``post`` (the rest of
    ``detect()``: decode, thresholds, Detections, NMS, ontology cache look-up) and ``total``.
    """
    spent = {"preprocess": 0.0, "detector": 0.0, "chunks": 0}
    preprocess, forward = detector.preprocess, detector.forward

    def timed_preprocess(images: Any) -> Any:
        seconds, result = _time(lambda: preprocess(images))
        spent["preprocess"] += seconds
        return result

    def timed_forward(pixels: Any, encoded: Any) -> Any:
        seconds, result = _time(lambda: forward(pixels, encoded))
        spent["detector"] += seconds
        spent["chunks"] += 1
        return result

    detector.preprocess, detector.forward = timed_preprocess, timed_forward
    try:
        total, detections = _time(lambda: detector.detect([image], ontology))
    finally:  # instance attributes shadowed the methods; drop them
        del detector.preprocess
        del detector.forward
    spent["post"] = total - spent["preprocess"] - spent["detector"]
    spent["total"] = total
    return spent, detections[0]


# --------------------------------------------------------------------------- part 1: tiny


def bench_tiny(models: Any, repeats: int) -> dict[str, Any]:
    from serverless.models.grounded_sam import GroundedSam
    from serverless.models.grounding_dino import GroundingDino
    from serverless.models.sam import SamSegmenter, build_sam_model
    from serverless.ontology import load_ontology

    ontology = load_ontology(SAMPLES / "ontology.yaml")
    detector = GroundingDino.load(str(models.gdino_dir), device="cpu")
    segmenter = SamSegmenter(
        build_sam_model(str(models.sam_model_type), models.sam_checkpoint),
        device="cpu",
        model_id=str(models.sam_checkpoint),
        cache_size=0,  # every embed() runs the encoder
    )
    pipeline = GroundedSam(detector.bind(ontology), segmenter)
    samples = _load_samples()

    rows = []
    for name, image in samples:
        times: dict[str, list[float]] = {k: [] for k in ("preprocess", "detector", "post", "encoder", "decoder")}
        boxes = chunks = 0
        for run in range(repeats + 1):  # run 0 is a warm-up
            stage, dets = timed_detect(detector, image, ontology)
            enc, embedding = _time(lambda: segmenter.embed(image))
            dec, masks = _time(lambda: segmenter.segment_boxes(embedding, dets.xyxy))
            assert masks.shape == (len(dets), *image.shape[:2])
            if run == 0:
                boxes, chunks = len(dets), stage["chunks"]
                continue
            times["preprocess"].append(stage["preprocess"])
            times["detector"].append(stage["detector"])
            times["post"].append(stage["post"])
            times["encoder"].append(enc)
            times["decoder"].append(dec)
        medians = {k: _median_ms(v) for k, v in times.items()}
        rows.append(
            {
                "image": name,
                "size": f"{image.shape[1]}x{image.shape[0]}",
                "chunks": chunks,
                "boxes": boxes,
                **{f"{k}_ms": v for k, v in medians.items()},
                "sum_ms": round(sum(medians.values()), 2),
            }
        )

    # End to end: GroundedSam.detect one frame at a time over all samples.
    images = [image for _, image in samples]
    pipeline.detect(images[:1])  # warm-up
    totals = []
    for _ in range(repeats):
        seconds, _ = _time(lambda: [pipeline.detect([image]) for image in images])
        totals.append(seconds)
    median_total = statistics.median(totals)
    return {
        "repeats": repeats,
        "ontology_prompts": sum(len(label.prompts) for label in ontology.labels),
        "rows": rows,
        "end_to_end": {
            "images": len(images),
            "median_s": round(median_total, 4),
            "images_per_s": round(len(images) / median_total, 2),
            "ms_per_image": _ms(median_total / len(images)),
        },
        "gdino_input_sizes": _input_sizes(detector, images),
    }


def _input_sizes(detector: Any, images: list[np.ndarray]) -> list[str]:
    sizes = []
    for image in images:
        pixels = detector.preprocess([image])["pixel_values"]
        sizes.append(f"{pixels.shape[-1]}x{pixels.shape[-2]}")
    return sizes


# --------------------------------------------------------------------------- part 3: K boxes


def bench_k_boxes(models: Any, repeats: int) -> dict[str, Any]:
    from serverless.models.sam import SamSegmenter, build_sam_model

    segmenter = SamSegmenter(
        build_sam_model(str(models.sam_model_type), models.sam_checkpoint), device="cpu", model_id="tiny"
    )
    image = _resized(_load_samples()[2][1], 640, 480)
    embedding = segmenter.embed(image)
    rows = []
    for k in K_VALUES:
        boxes = _random_boxes(k, 640, 480, seed=k)

        def batched() -> np.ndarray:
            return segmenter.segment_boxes(embedding, boxes)

        def per_box() -> list[np.ndarray]:
            return [segmenter.segment_boxes(embedding, box[None]) for box in boxes]

        a, b = batched(), per_box()  # warm-up, and a check that both give the same masks
        same = bool(np.array_equal(a, np.concatenate(b)))
        t_batched, t_loop = [], []
        for _ in range(repeats):  # interleaved, so a busy neighbour slows both alike
            t_batched.append(_time(batched)[0])
            t_loop.append(_time(per_box)[0])
        mb, ml = statistics.median(t_batched), statistics.median(t_loop)
        rows.append(
            {
                "k": k,
                "batched_ms": _ms(mb),
                "batched_ms_per_box": _ms(mb / k),
                "per_box_ms": _ms(ml),
                "per_box_ms_per_box": _ms(ml / k),
                "speedup": round(ml / mb, 2),
                "same_masks": same,
            }
        )
    return {"image": "640x480", "repeats": repeats, "rows": rows}


# --------------------------------------------------------------------------- part 2: full size
# Each job runs in a spawned process (fresh memory, own peak RSS).


def _job_gdino_full(tiny_gdino_dir: str, work_dir: str, repeats: int, threads: int | None) -> dict[str, Any]:
    _setup_torch(threads)
    import torch
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    from serverless.models.grounding_dino import GroundingDino
    from serverless.ontology import load_ontology

    target = Path(work_dir) / "grounding-dino-swin-t-random"
    config = GroundingDinoConfig()  # Swin-T backbone + bert-base text encoder
    torch.manual_seed(0)
    build_s, model = _time(lambda: GroundingDinoForObjectDetection(config).eval())
    params = sum(p.numel() for p in model.parameters())
    backbone = type(config.backbone_config).__name__
    model.save_pretrained(str(target))
    del model
    # The tiny model's tokenizer keeps bert-base-uncased's special ids; the image processor
    # is the default one (shortest_edge 800, longest_edge 1333).
    tokenizer = BertTokenizerFast.from_pretrained(tiny_gdino_dir, local_files_only=True)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer).save_pretrained(
        str(target)
    )
    weights_mb = round(sum(f.stat().st_size for f in target.glob("*.safetensors")) / 2**20, 1)

    load_s, detector = _time(lambda: GroundingDino.load(str(target), device="cpu"))
    ontology = load_ontology(SAMPLES / "ontology.yaml")
    # A frame wide enough that the default processor yields exactly 800x1333.
    image = _resized(_load_samples()[3][1], 1333, 800)
    input_size = _input_sizes(detector, [image])[0]
    runs = []
    for _ in range(repeats):
        stage, dets = timed_detect(detector, image, ontology)
        runs.append({k: _ms(stage[k]) for k in ("preprocess", "detector", "post", "total")} | {"boxes": len(dets)})
    return {
        "model": "Grounding DINO Swin-T + bert-base (random)",
        "backbone": backbone,
        "params_m": round(params / 1e6, 1),
        "weights_mb": weights_mb,
        "build_s": round(build_s, 1),
        "load_s": round(load_s, 1),
        "input": input_size,
        "frame": f"{image.shape[1]}x{image.shape[0]}",
        "runs": runs,
        "detector_ms_median": round(statistics.median(r["detector"] for r in runs), 1),
        "total_ms_median": round(statistics.median(r["total"] for r in runs), 1),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _job_sam_full(model_type: str, repeats: int, threads: int | None) -> dict[str, Any]:
    _setup_torch(threads)
    from serverless.models.sam import SamSegmenter, build_sam_model

    build_s, model = _time(lambda: build_sam_model(model_type, None))
    params = sum(p.numel() for p in model.parameters())
    encoder_params = sum(p.numel() for p in model.image_encoder.parameters())
    decoder_params = sum(p.numel() for p in model.mask_decoder.parameters())
    segmenter = SamSegmenter(model, device="cpu", model_id=f"{model_type}-random", cache_size=0)
    image = _resized(_load_samples()[2][1], 640, 480)
    encoder = []
    embedding = None
    for _ in range(repeats):
        seconds, embedding = _time(lambda: segmenter.embed(image))
        encoder.append(seconds)
    boxes = _random_boxes(10, 640, 480, seed=10)
    segmenter.segment_boxes(embedding, boxes)  # warm-up
    decoder = [_time(lambda: segmenter.segment_boxes(embedding, boxes))[0] for _ in range(3)]
    return {
        "model": f"SAM {model_type} (random)",
        "params_m": round(params / 1e6, 1),
        "encoder_params_m": round(encoder_params / 1e6, 1),
        "decoder_params_m": round(decoder_params / 1e6, 2),
        "build_s": round(build_s, 1),
        "frame": "640x480",
        "encoder_runs_ms": [_ms(s) for s in encoder],
        "encoder_ms_median": _median_ms(encoder),
        "decoder_k10_batched_ms": _median_ms(decoder),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result = pool.submit(fn, *args).result()
    result["job_wall_s"] = round(time.perf_counter() - start, 1)
    return result


def tiny_decoder_params(models: Any) -> float:
    from serverless.models.sam import build_sam_model

    model = build_sam_model(str(models.sam_model_type), models.sam_checkpoint)
    return round(sum(p.numel() for p in model.mask_decoder.parameters()) / 1e6, 2)


# --------------------------------------------------------------------------- output


def render(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    m = report["machine"]
    info = Table(title="Machine", show_header=False)
    info.add_column("key", style="bold")
    info.add_column("value")
    info.add_row("CPU", f"{m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB)")
    info.add_row("torch / threads", f"{m['torch']} / {m['torch_threads']} threads (CPU only)")
    info.add_row("transformers / segment-anything", f"{m['transformers']} / {m['segment_anything']}")
    info.add_row("load average (start → end)", f"{m['load_average_start']} → {m.get('load_average_end')}")
    info.add_row("command", report["command"])
    console.print(info)

    tiny = report["tiny"]
    table = Table(
        title=f"1. Tiny models on the sample photos (median ms of {tiny['repeats']} runs after a warm-up; one frame per call)"
    )
    for col in ("image", "frame", "GDINO input", "chunks", "boxes", "preprocess", "detector", "post (decode+NMS)",
                "SAM encoder", "SAM decoder", "sum"):
        table.add_column(col, justify="left" if col in ("image",) else "right")
    for row, size in zip(tiny["rows"], tiny["gdino_input_sizes"], strict=True):
        table.add_row(
            row["image"], row["size"], size, str(row["chunks"]), str(row["boxes"]),
            *(f"{row[k]:.1f}" for k in ("preprocess_ms", "detector_ms", "post_ms", "encoder_ms", "decoder_ms", "sum_ms")),
        )
    e2e = tiny["end_to_end"]
    table.caption = (
        f"End to end (GroundedSam.detect, one frame per call, {e2e['images']} photos): "
        f"{e2e['images_per_s']} images/s, {e2e['ms_per_image']} ms/image (median of {tiny['repeats']})"
    )
    console.print(table)

    if report.get("full"):
        full = report["full"]
        if full.get("gdino"):
            g = full["gdino"]
            t = Table(title="2a. Grounding DINO Swin-T, random weights, loaded through GroundingDino.load (one frame)")
            for col in ("run", "input", "preprocess ms", "detector ms", "post ms", "detect() total ms", "boxes"):
                t.add_column(col, justify="right")
            for i, r in enumerate(g["runs"], 1):
                t.add_row(str(i), g["input"], f"{r['preprocess']:.0f}", f"{r['detector']:.0f}", f"{r['post']:.1f}",
                          f"{r['total']:.0f}", str(r["boxes"]))
            t.caption = (
                f"{g['params_m']} M parameters ({g['backbone']} backbone), weights {g['weights_mb']} MB; "
                f"random init {g['build_s']} s, load {g['load_s']} s; peak RSS {g['peak_rss_mb']} MB"
            )
            console.print(t)
        if full.get("sam"):
            t = Table(title="2b. SAM encoders, random weights (640x480 frame → 1024x1024 input)")
            for col in ("model", "params (M)", "encoder params (M)", "encoder ms", "decoder K=10 batched ms",
                        "random init s", "peak RSS MB"):
                t.add_column(col, justify="left" if col == "model" else "right")
            for s in full["sam"]:
                runs = ", ".join(f"{x:.0f}" for x in s["encoder_runs_ms"])
                t.add_row(s["model"], f"{s['params_m']}", f"{s['encoder_params_m']}", runs,
                          f"{s['decoder_k10_batched_ms']:.1f}", f"{s['build_s']}", f"{s['peak_rss_mb']}")
            console.print(t)

    k = report["k_boxes"]
    t = Table(
        title=f"3. SAM decoding of K boxes, tiny SAM, {k['image']} frame (median of {k['repeats']} after a warm-up)"
    )
    for col in ("K", "batched ms", "batched ms/box", "per-box loop ms", "loop ms/box", "speedup", "same masks"):
        t.add_column(col, justify="right")
    for r in k["rows"]:
        t.add_row(str(r["k"]), f"{r['batched_ms']:.1f}", f"{r['batched_ms_per_box']:.2f}", f"{r['per_box_ms']:.1f}",
                  f"{r['per_box_ms_per_box']:.2f}", f"{r['speedup']:.2f}x", "yes" if r["same_masks"] else "NO")
    t.caption = (
        f"mask decoder: {k['decoder_params_m']} M parameters in the tiny SAM, the same module as in vit_b/vit_l/vit_h"
    )
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-stage CPU latency of the Grounding DINO + SAM pipeline (tiny models, "
        "full-size architectures with random weights, batched vs per-box SAM decoding).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny models and K-box decoding only (skips --full)")
    parser.add_argument(
        "--full",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="full-size architectures with random weights (minutes; default: on unless --quick)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per tiny measurement (default 3, 2 with --quick)")
    parser.add_argument("--full-repeats", type=int, default=2, help="Grounding DINO Swin-T runs (default 2)")
    parser.add_argument("--sam-types", default="vit_b,vit_h", help="full-size SAM encoders (default vit_b,vit_h)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the tiny models and the full-size Grounding DINO are written (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    full = (not args.quick) if args.full is None else args.full
    repeats = args.repeats or (2 if args.quick else 3)

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    _setup_torch(args.threads)
    from serverless.models.tiny import make_tiny_models

    command = " ".join(["python bench/pipeline.py", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "command": command,
        "machine": machine_info(),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        root = args.cache_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        models = make_tiny_models(root / "tiny")

        loads = report["machine"]["load_average_by_part"] = {}

        def part(name: str, message: str) -> None:
            loads[name] = [round(x, 2) for x in os.getloadavg()]
            console.log(f"{message} (load average {loads[name][0]})")

        part("tiny", "part 1: tiny models on the sample photos")
        report["tiny"] = bench_tiny(models, repeats)
        part("k_boxes", "part 3: SAM decoding of K boxes (tiny SAM)")
        report["k_boxes"] = bench_k_boxes(models, 3)
        report["k_boxes"]["decoder_params_m"] = tiny_decoder_params(models)

        if full:
            report["full"] = {"sam": []}
            part("gdino_full", "part 2: Grounding DINO Swin-T, random weights (build, save, load, 800x1333)…")
            report["full"]["gdino"] = _run_isolated(
                _job_gdino_full, str(models.gdino_dir), str(root), args.full_repeats, args.threads
            )
            for model_type in [t.strip() for t in args.sam_types.split(",") if t.strip()]:
                part(f"sam_{model_type}", f"part 2: SAM {model_type} encoder, random weights…")
                report["full"]["sam"].append(_run_isolated(_job_sam_full, model_type, 1, args.threads))
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = round(time.perf_counter() - started, 1)

    render(report, console)
    console.print(f"total wall time {report['wall_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
