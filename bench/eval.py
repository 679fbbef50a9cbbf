"""Evaluation benchmark: COCO metrics of 5,000 images x 20 predictions, four ways.

Run: ``.venv/bin/python bench/eval.py [--images N] [--repeat R]``. Synthetic, seeded data
(10 classes, 640x480 frames): 5 to 20 truth boxes per image (2% crowd regions), 20
predictions per image (80% of the truth, jittered, 10% of those relabeled, the rest false
positives), scores uniform in 0..1. Measured, each from its own natural input:

- (a) plain pycocotools, from COCO dicts: ``COCO()`` + ``createIndex``, ``loadRes``,
  ``COCOeval`` evaluate/accumulate/summarize. Run once (it takes tens of seconds).
- (b) plain faster-coco-eval the way its README does it, from the same dicts: ``COCO(dict)``,
  ``loadRes``, ``COCOeval_faster(...).run()``.
- (c) ours, from the `EvalData`: ``evaluate_detections`` (builds the COCO objects, one
  faster-coco-eval run, matches at IoU 0.5, P/R/F1, per-class AP, PR curves).
- (d) ours, the whole report: ``sync.evaluate.report.evaluate_run`` (metrics + threshold
  sweep + edit breakdown) when that exists, else ``evaluate_detections`` + ``sweep_thresholds``.

And what (c) would cost done by faster-coco-eval alone, on (c)'s own COCO objects (area "all",
as (c) evaluates by default): (e) one ``COCOeval_faster`` evaluate + accumulate computing its
box IoUs itself, (f) the same given (c)'s vectorised box IoUs (what (c) runs), and (g) a
second evaluation at IoU 0.5 alone, the only way to get the matches at one IoU from
faster-coco-eval (its ``eval["matched"]`` mixes all thresholds), also given the box IoUs.

(b) to (g) report the median of ``--repeat`` runs. The COCO dicts of (a)/(b) are built
from the `EvalData` outside the timings (fresh copies per run: ``loadRes`` writes into them).
The script checks that the 12 COCO summary numbers of (b) and (c) equal pycocotools' (abs
diff <= 1e-9) and exits with status 1 if not.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402

from serverless.detections import Detections  # noqa: E402
from sync.evaluate.data import EvalData  # noqa: E402
from sync.evaluate.seconds import ActionSeconds  # noqa: E402

WIDTH, HEIGHT = 640, 480


def synthetic(images: int, *, predictions: int = 20, classes: int = 10, seed: int = 0) -> EvalData:
    """The benchmark data (see the module docstring)."""
    rng = np.random.default_rng(seed)
    labels = tuple(f"class{i}" for i in range(classes))
    names = np.asarray(labels)
    frame = np.array([WIDTH, HEIGHT], dtype=np.float64)
    truth, pred = [], []
    for _ in range(images):
        k = int(rng.integers(5, 21))
        xy = rng.uniform(0, frame - 20, (k, 2))
        tb = np.hstack([xy, np.minimum(xy + rng.uniform(8, 200, (k, 2)), frame)])
        tc = rng.integers(0, classes, k)
        crowd = rng.random(k) < 0.02
        truth.append(
            Detections(
                xyxy=tb, scores=np.ones(k), class_ids=tc, labels=names[tc],
                data={
                    "iscrowd": crowd,
                    "annotation_id": np.arange(k, dtype=np.int64),
                    "pre_annotation_id": np.full(k, -1, np.int64),
                },
            )
        )
        keep = rng.random(k) < 0.8
        hits, hit_classes = tb[keep][:predictions], tc[keep][:predictions].copy()
        m = len(hits)
        size = np.hstack([hits[:, 2:] - hits[:, :2]] * 2)
        boxes = hits + rng.normal(0, 0.08, (m, 4)) * size
        relabel = rng.random(m) < 0.1
        hit_classes[relabel] = rng.integers(0, classes, int(relabel.sum()))
        f = predictions - m
        fxy = rng.uniform(0, frame - 20, (f, 2))
        fb = np.hstack([fxy, np.minimum(fxy + rng.uniform(8, 150, (f, 2)), frame)])
        boxes = np.vstack([boxes, fb])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, WIDTH)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, HEIGHT)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        cls = np.concatenate([hit_classes, rng.integers(0, classes, f)])
        pred.append(
            Detections(
                xyxy=boxes, scores=rng.uniform(0, 1, predictions), class_ids=cls, labels=names[cls],
                data={"annotation_id": np.arange(predictions, dtype=np.int64)},
            )
        )
    return EvalData(
        labels=labels,
        sample_ids=np.arange(1, images + 1, dtype=np.int64),
        uris=tuple(f"img/{i:06d}.jpg" for i in range(images)),
        sizes=np.tile([WIDTH, HEIGHT], (images, 1)),
        truth=tuple(truth),
        pred=tuple(pred),
        truth_name="synthetic truth",
        pred_name="synthetic run",
    )


def coco_dicts(data: EvalData) -> tuple[dict, list[dict]]:
    """COCO truth dataset and results list of ``data`` (ids from 1; bbox = x, y, w, h)."""
    images = [{"id": i + 1, "width": WIDTH, "height": HEIGHT, "file_name": uri} for i, uri in enumerate(data.uris)]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(data.labels)]
    anns: list[dict] = []
    results: list[dict] = []
    for i, (t, p) in enumerate(zip(data.truth, data.pred)):
        for (x1, y1, x2, y2), c, crowd in zip(t.xyxy.tolist(), t.class_ids.tolist(), t.data["iscrowd"].tolist()):
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(crowd),
            })
        for (x1, y1, x2, y2), c, s in zip(p.xyxy.tolist(), p.class_ids.tolist(), p.scores.tolist()):
            results.append({"image_id": i + 1, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return {"images": images, "annotations": anns, "categories": categories}, results


def run_pycocotools(gt: dict, results: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' 12 summary numbers and per-class AP (IoU .50:.95, area all, 100 dets; -1 undefined)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dt = coco.loadRes(results)
        e = COCOeval(coco, dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    precision = e.eval["precision"][:, :, :, 0, -1]
    per_class = [float(p[p > -1].mean()) if (p > -1).any() else -1.0 for p in np.moveaxis(precision, 2, 0)]
    return np.asarray(e.stats), np.asarray(per_class)


def run_faster(gt: dict, results: list[dict]) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    coco = COCO(gt)
    dt = coco.loadRes(results)
    e = COCOeval_faster(coco, dt, "bbox", print_function=lambda *a, **k: None)
    e.run()
    return np.asarray(e.stats)


def faster_alone(data: EvalData) -> list[tuple[str, Callable[[], Any]]]:
    """(e), (f), (g) of the module docstring, on the COCO objects (c) builds."""
    from faster_coco_eval import COCOeval_faster

    from sync.evaluate import coco

    with coco.paused_gc():
        pair = coco.build_coco(data)
    groups = coco._groups(pair)

    def evaluation(given: bool, thresholds: list[float] | None = None) -> Any:
        with coco.paused_gc():
            if given:
                evaluator, _ = coco._evaluator(pair, groups)
            else:
                evaluator = COCOeval_faster(pair.gt, pair.dt, "bbox", print_function=coco._quiet)
            evaluator.params.areaRng, evaluator.params.areaRngLbl = [evaluator.params.areaRng[0]], ["all"]
            if thresholds is not None:
                evaluator.params.iouThrs = np.asarray(thresholds)
            evaluator.evaluate()
            evaluator.accumulate()
        return evaluator

    return [
        ("(e) faster-coco-eval alone on (c)'s COCO objects, its own box IoU", lambda: evaluation(False)),
        ("(f) the same given (c)'s vectorised box IoUs (what (c) runs)", lambda: evaluation(True)),
        ("(g) a second evaluation at IoU 0.5 alone (matches from faster-coco-eval)", lambda: evaluation(True, [0.5])),
    ]


def whole_report() -> tuple[str, Callable[[EvalData], Any]]:
    try:
        from sync.evaluate.report import evaluate_run
    except ImportError:
        from sync.evaluate.metrics import evaluate_detections
        from sync.evaluate.sweep import sweep_thresholds

        def fallback(data: EvalData) -> Any:
            metrics = evaluate_detections(data, iou=0.5)
            return sweep_thresholds(metrics, seconds=ActionSeconds(), floors=data.pred_thresholds)

        return "evaluate_detections + sweep_thresholds", fallback
    name = "evaluate_run (metrics + sweep + edit breakdown)"
    return name, lambda d: evaluate_run(d, iou=0.5, seconds=ActionSeconds())


def timed(fn: Callable[..., Any], repeat: int, setup: Callable[[], tuple] = tuple) -> tuple[float, list[float], Any]:
    """Median seconds of ``repeat`` calls ``fn(*setup())``; ``setup`` runs outside the timing."""
    times, result = [], None
    for _ in range(repeat):
        args = setup()
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="number of images (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of (b) to (g); the median is shown (default 3)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeat < 1:
        parser.error("--images and --repeat must be >= 1")

    from importlib.metadata import version

    from rich.console import Console
    from rich.table import Table

    import faster_coco_eval  # noqa: F401 (imported before any timing)
    import pycocotools.cocoeval  # noqa: F401

    from sync.evaluate.metrics import evaluate_detections

    console = Console()
    load_start = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    data = synthetic(args.images)
    made = time.perf_counter() - start
    gt, results = coco_dicts(data)
    n_truth, n_pred = len(gt["annotations"]), len(results)
    console.print(
        f"data: {args.images} images, {n_truth} truth boxes ({sum(a['iscrowd'] for a in gt['annotations'])} crowd), "
        f"{n_pred} predictions, {len(data.labels)} classes (made in {made:.1f} s)"
    )

    def fresh() -> tuple[dict, list[dict]]:
        return copy.deepcopy(gt), copy.deepcopy(results)

    rows: list[tuple[str, float, list[float]]] = []
    t_coco, _, (coco_stats, per_class_ap) = timed(run_pycocotools, 1, fresh)
    rows.append(("(a) pycocotools: COCO + loadRes + COCOeval", t_coco, [t_coco]))

    t_faster, times, faster_stats = timed(run_faster, args.repeat, fresh)
    rows.append(("(b) faster-coco-eval: COCO + loadRes + COCOeval_faster.run", t_faster, times))

    t_ours, times, metrics = timed(lambda: evaluate_detections(data, iou=0.5), args.repeat)
    rows.append(("(c) ours: evaluate_detections(EvalData)", t_ours, times))

    report_name, report = whole_report()
    t_report, times, _ = timed(lambda: report(data), args.repeat)
    rows.append((f"(d) ours: {report_name}", t_report, times))

    for name, fn in faster_alone(data):
        median, times, _ = timed(fn, args.repeat)
        rows.append((name, median, times))

    # ours evaluates area "all" only (the default): AP, AP50, AP75, AR1, AR10, AR100 and the
    # per-class APs; the small/medium/large numbers are NaN (evaluate_detections(area_ranges=True) has them)
    area_free = [0, 1, 2, 6, 7, 8]
    per_class_ours = np.array([m.map if m.map is not None else -1.0 for m in metrics.per_class.values()])
    diffs = {
        "12 COCO stats, faster-coco-eval": float(np.abs(faster_stats - coco_stats).max()),
        "AP/AP50/AP75/AR1/AR10/AR100, ours": float(np.abs(metrics.coco_stats[area_free] - coco_stats[area_free]).max()),
        "per-class AP, ours": float(np.abs(per_class_ours - per_class_ap).max()),
    }
    load_end = [round(x, 2) for x in os.getloadavg()]

    info = Table(title="Machine", show_header=False)
    info.add_column("key", style="bold")
    info.add_column("value")
    info.add_row("CPU", f"{cpu_model()} ({os.cpu_count()} cores)")
    info.add_row(
        "software",
        f"Python {platform.python_version()}, numpy {np.__version__}, pycocotools {version('pycocotools')}, "
        f"faster-coco-eval {version('faster-coco-eval')}",
    )
    info.add_row("load average (start → end)", f"{load_start} → {load_end}")
    info.add_row("command", " ".join([Path(sys.executable).name, *sys.argv]))
    console.print(info)

    table = Table(title=f"COCO bbox evaluation, {args.images} images, {n_pred} predictions, {n_truth} truth boxes")
    table.add_column("what")
    table.add_column("median s", justify="right")
    table.add_column("runs (s)", justify="right")
    for name, median, times in rows:
        table.add_row(name, f"{median:.2f}", ", ".join(f"{t:.2f}" for t in times))
    console.print(table)

    console.print(f"AP (IoU .50:.95) = {coco_stats[0]:.6f}, AP50 = {coco_stats[1]:.6f} (pycocotools)")
    console.print(
        f"P/R/F1 at IoU 0.5 (ours, all predictions): {metrics.overall.precision:.4f} / "
        f"{metrics.overall.recall:.4f} / {metrics.overall.f1:.4f}"
    )
    ok = True
    for name, diff in diffs.items():
        same = diff <= 1e-9
        ok &= same
        verdict = "equal (<= 1e-9)" if same else "DIFFERENT"
        console.print(f"{name} vs pycocotools: max abs diff {diff:.3g} → {verdict}")
    speedup = t_coco / t_ours
    ratio = t_report / t_faster
    console.print(f"ours (c) vs pycocotools (a): {speedup:.1f}x faster (target >= 10x)")
    console.print(f"whole report (d) vs one faster-coco-eval run (b): {ratio:.2f}x the time (target <= 2x)")
    t_own_iou, t_given_iou, t_second = (median for _, median, _ in rows[4:7])
    without = t_ours - t_given_iou + t_own_iou
    console.print(
        f"(c) with faster-coco-eval's own box IoU instead, (c) - (f) + (e): about {without:.2f} s "
        f"({t_coco / without:.1f}x faster than pycocotools); matches at IoU 0.5 from a second "
        f"faster-coco-eval evaluation (g) would add {t_second:.2f} s"
    )
    if not ok:
        console.print("[bold red]stats differ from pycocotools[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
