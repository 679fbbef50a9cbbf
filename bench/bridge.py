"""CVAT bridge benchmark: push 1,000 images with 20 pre-labels each, pull them back.

Run: ``.venv/bin/python bench/bridge.py [--images N] [--shapes K] [--segment-size S]
[--write docs/benchmarks.md]`` (``PYTHONPATH=.cache/sdk-2.17`` for cvat-sdk 2.17
against a fake CVAT 2.17). Against the in-process fake CVAT (``instant_requests=True``, so
the server's own processing time is near zero and what is measured is the bridge, the SDK,
HTTP on loopback and the store): small PNGs (64x48) and synthetic detections are written into
a finished pre-label run in a temporary SQLite store (no models), then

- ``push``: task creation, data upload, labels, pre-labels of every job, two assignees;
- ``push again``: the idempotent rerun (nothing to do);
- ``pull``: every job into a human revision;
- ``pull again``: the incremental rerun (nothing changed).

For each phase: wall time, requests sent (by method) and annotation requests. The fake server
runs in the same process, so its CPU time is included (both share 2 cores here).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.table import Table

from cvat_bridge.client import connect
from sync.pull import pull_jobs
from sync.push import push_run
from sync.store import open_store
from machine import cpu_model
from tests.bridge_support import FAKE_VERSION, settings_for, start_fake, synthetic_run, write_images

DATE = "2026-11-22"
SECTION = "## Bridge (issue 4)"


def machine() -> str:
    import cvat_sdk

    cpu = cpu_model()
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, cvat-sdk {cvat_sdk.__version__} "
        f"against the fake CVAT {FAKE_VERSION}; store: SQLite file"
    )


def measure(fake, label: str, fn):
    fake.clear_log()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    log = list(fake.request_log)
    methods = Counter(r.method for r in log)
    annotation = sum(1 for r in log if "/annotations" in r.path)
    return result, {
        "phase": label,
        "seconds": seconds,
        "requests": len(log),
        "by method": ", ".join(f"{m} {n}" for m, n in sorted(methods.items())),
        "annotation requests": annotation,
    }


def run(images: int, shapes: int, segment_size: int) -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        paths = write_images(root / "images", images)
        store = open_store(f"sqlite:///{root / 'store.db'}")
        run_info = synthetic_run(store, paths, dataset="bench", run="prelabel-1", shapes_per_image=shapes, masks=True)
        total = store.count_annotations(run_info)
        setup = time.perf_counter() - start
        fake = start_fake()
        try:
            client = connect(settings_for(fake))

            def push():
                return push_run(store, client, dataset="bench", run_name="prelabel-1", task_name="bench",
                                segment_size=segment_size, assignees=["alice", "bob"])

            def pull():
                return pull_jobs(store, client, task_id=fake_task(fake))

            rows = []
            result, row = measure(fake, "push", push)
            assert result.shapes == total and not result.skipped_jobs, result
            rows.append(row)
            result, row = measure(fake, "push again (nothing to do)", push)
            assert result.annotation_requests == 0, result
            rows.append(row)
            result, row = measure(fake, "pull", pull)
            assert result.shapes == total and len(result.pulled) == len(fake.db.jobs), result
            rows.append(row)
            result, row = measure(fake, "pull again (nothing changed)", pull)
            assert result.pulled == (), result
            rows.append(row)
            info = {"images": images, "shapes": total, "jobs": len(fake.db.jobs), "setup": setup,
                    "segment": segment_size}
        finally:
            fake.stop()
        fake.raise_errors()
        return rows, info


def fake_task(fake) -> int:
    (task_id,) = fake.db.tasks
    return task_id


def table(rows: list[dict], info: dict) -> Table:
    t = Table(title=f"Bridge: {info['images']} images, {info['shapes']} pre-labels, {info['jobs']} jobs")
    for column in ("phase", "seconds", "requests", "by method", "annotation requests"):
        t.add_column(column, justify="left" if column in ("phase", "by method") else "right")
    for row in rows:
        t.add_row(row["phase"], f"{row['seconds']:.2f}", str(row["requests"]), row["by method"],
                  str(row["annotation requests"]))
    return t


INTRO = (
    "Push and pull of {images} images (64x48 PNG) with {per_image} pre-labels each ({shapes} in all: boxes, and "
    "CVAT-RLE masks for the `cup` label), {jobs} jobs of {segment} frames, two assignees, against the in-process "
    "fake CVAT (`instant_requests=True`), measured by `bench/bridge.py` on {date}. Command (add "
    "`PYTHONPATH=.cache/sdk-2.17` for cvat-sdk 2.17 against the fake CVAT 2.17):\n\n"
    "```\nHF_HUB_OFFLINE=1 .venv/bin/python bench/bridge.py --write docs/benchmarks.md\n```\n\n"
    "The fake server runs in the benchmark's process, so its CPU time is included; a real CVAT adds its own "
    "processing (frame extraction, chunks) and network latency per request. Per job, the push reads the job's "
    "annotations once (to tell an untouched job from a human-edited one) and writes them with one `PUT` (chunks "
    "of at most 16 MiB of JSON: one here); the images go in one multipart request (up to 64 MiB; larger sets use "
    "the SDK's chunked upload). A rerun of the push writes nothing; a pull reads one annotation set per changed "
    "job, and nothing but the job list when no job changed.\n"
)


def subsection(rows: list[dict], info: dict) -> tuple[str, str]:
    """The ``### cvat-sdk …`` heading of this run and its Markdown body."""
    import cvat_sdk

    heading = f"### cvat-sdk {cvat_sdk.__version__} against the fake CVAT {FAKE_VERSION}"
    lines = [
        "",
        f"- Machine: {machine()}.",
        f"- Setup (images, samples, pre-label run written to the store; not in the table): {info['setup']:.1f} s.",
        "",
        "| phase | seconds | requests | by method | annotation requests |",
        "|---|---:|---:|---|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['phase']} | {row['seconds']:.2f} | {row['requests']} | {row['by method']} | "
                     f"{row['annotation requests']} |")
    return heading, "\n".join(lines) + "\n"


def write_section(path: Path, rows: list[dict], info: dict) -> None:
    """Write this run's subsection into the bridge section of ``path``, keeping the other
    subsections (other SDK versions, notes) and the rest of the file."""
    existing = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    before, found, after = existing.partition(SECTION)
    rest = ""
    subsections: dict[str, str] = {}
    if found:
        body, sep, rest = after.partition("\n## ")
        rest = sep.lstrip("\n") + rest if sep else ""
        for chunk in body.split("\n### ")[1:]:
            title, _, text = chunk.partition("\n")
            subsections["### " + title.strip()] = text
    heading, text = subsection(rows, info)
    subsections[heading] = text
    intro = INTRO.format(images=info["images"], per_image=info["shapes"] // info["images"], shapes=info["shapes"],
                         jobs=info["jobs"], segment=info["segment"], date=DATE)
    generated = sorted(h for h in subsections if h.startswith("### cvat-sdk"))
    notes = [h for h in subsections if not h.startswith("### cvat-sdk")]
    parts = [before.rstrip("\n") + "\n\n" + SECTION + "\n\n" + intro]
    parts += [f"\n{h}\n\n{subsections[h].strip(chr(10))}\n" for h in [*generated, *notes]]
    text = "".join(parts) + (("\n## " + rest) if rest else "")
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--shapes", type=int, default=20, help="pre-labels per image")
    parser.add_argument("--segment-size", type=int, default=100, help="frames per CVAT job")
    parser.add_argument("--write", type=Path, help="write the table into this Markdown file")
    args = parser.parse_args()
    rows, info = run(args.images, args.shapes, args.segment_size)
    Console().print(table(rows, info))
    if args.write:
        write_section(args.write, rows, info)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
