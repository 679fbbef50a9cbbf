"""Label store benchmark: bulk ingest and read-back of 100k annotations.

Run: ``.venv/bin/python bench/store.py [--postgres URL] [--annotations N]``. Measures, on a
temporary SQLite file and (when reachable) on PostgreSQL (``AUTOLABEL_TEST_POSTGRES_URL`` or
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``, in a throw-away schema):

- ``add_samples`` of N/100 samples,
- ``add_detections`` of N boxes (100 per sample) into one pre-label run,
- ``add_detections`` of N/10 masks (480x640, 10 per sample on N/1000 samples),
- ``annotations_of`` of the box run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serverless.detections import Detections
from sync.store import SampleIn, StoreError, open_store

DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def boxes(rng: np.random.Generator, n: int) -> Detections:
    xy = rng.uniform(0, 400, (n, 2))
    wh = rng.uniform(1, 200, (n, 2))
    return Detections(
        xyxy=np.hstack([xy, xy + wh]),
        scores=rng.uniform(0, 1, n),
        class_ids=np.zeros(n, np.int64),
        labels=["person"] * n,
    )


def masks(rng: np.random.Generator, n: int, height: int, width: int) -> Detections:
    det = boxes(rng, n).clip(width, height)
    stack = np.zeros((n, height, width), dtype=bool)
    for i, (x1, y1, x2, y2) in enumerate(det.xyxy.astype(int)):
        stack[i, y1:y2, x1:x2] = True
    return det.with_columns(masks=stack)


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"  {label:<44} {time.perf_counter() - start:7.2f} s")
    return result


def run(url: str, n: int) -> None:
    store = open_store(url)
    print(f"{store.url}")
    rng = np.random.default_rng(0)
    ds = store.get_or_create_dataset(f"bench-{uuid.uuid4().hex[:8]}")
    n_samples = max(1, n // 100)
    ids = timed(
        f"add_samples ({n_samples} samples)",
        lambda: store.add_samples(
            ds, [SampleIn(f"img/{i:06d}.jpg", 640, 480, f"sha256:{i}") for i in range(n_samples)]
        ),
    )
    dets = {sid: boxes(rng, 100) for sid in ids}
    run_ = store.create_run(ds, "prelabel")
    count = timed(f"add_detections ({n} boxes)", lambda: store.add_detections(run_, dets))
    assert count == n_samples * 100
    mask_run = store.create_run(ds, "prelabel")
    mask_dets = {sid: masks(rng, 10, 480, 640) for sid in ids[: max(1, n // 1000)]}
    timed(f"add_detections ({10 * len(mask_dets)} masks 480x640)", lambda: store.add_detections(mask_run, mask_dets))
    out = timed(f"annotations_of ({n} boxes)", lambda: store.annotations_of(run_))
    assert sum(len(d) for d in out.values()) == count
    timed(f"annotations_of ({10 * len(mask_dets)} masks, decoded)", lambda: store.annotations_of(mask_run, masks=True))
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("AUTOLABEL_TEST_POSTGRES_URL", DEFAULT_PG))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(str(Path(tmp) / "bench.db"), args.annotations)
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(args.postgres)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:  # noqa: BLE001 (report any connection problem and skip PostgreSQL)
        print(f"PostgreSQL not benchmarked: {type(err).__name__}")
        return
    sep = "&" if "?" in args.postgres else "?"
    try:
        run(f"{args.postgres}{sep}options=-csearch_path%3D{schema}", args.annotations)
    except StoreError as err:
        print(f"PostgreSQL failed: {err}")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
