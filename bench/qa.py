"""QA by embeddings at scale: FAISS index build and k-NN throughput, duplicates and mistakenness.

Everything runs on seeded random float32 unit vectors (512-d by default) through the project's
own functions (`sync.qa.vectors`, `sync.qa.duplicates`, `sync.qa.mistakes`), each measurement
in its own spawned process, so its **peak RSS** (``ru_maxrss``) is its own; ``data GB`` is the
vectors alone (N x D x 4 bytes). FAISS uses its default OpenMP threads (all cores).

Table 1, per index kind and size N (default: flat and ivf at 100k and 1M, hnsw up to 100k):

- **build s**: `build_index` (the norm check; flat: the copy into FAISS; ivf: k-means training
  on at most 64 points per list, then the assignment of every vector; hnsw: the graph);
- **queries/s**: `VectorIndex.search` of ``--queries`` fresh random unit queries (default
  10,000), k = 10. A sample, not every vector: 1M flat queries against 1M would take hours on
  two cores (the flat cost is linear in the number of queries, so the rate carries over);
- **recall@10**: the share of the flat index's 10 neighbours of the same queries that the
  approximate index returns (flat: 1 by definition). Uniform random vectors are the hard case
  for IVF and HNSW (no clusters to exploit, every neighbour almost as far as the next):
  real embeddings give higher recall;
- **copy top-1**: the share of 1,000 noisy copies of indexed vectors (cosine 0.90 to their
  source, far above any other vector) whose nearest is their source: what finding a near
  duplicate asks of an index.

Table 2, the QA functions over ``--qa-size`` annotations (default 100k):

- **duplicate_groups**: 1 % of the vectors overwritten with near copies of other rows (cosine
  about 0.995) and 0.5 % with exact copies (same vector and content hash); the time of
  `duplicate_groups` (exact range search over all pairs, union-find, each group's lowest
  similarity) and whether it found exactly the planted pairs (no false group);
- **k-NN mistakenness**: 10 random labels; the one exact k-NN search over every annotation
  (`knn`, k = 10), then `knn_mistakenness`, `uniqueness`, `knn_reasons` and `combine` on those
  shared neighbours. ``knn_mistakenness(vectors, labels)`` alone costs the first two rows.

``--quick`` uses 2,000 vectors everywhere and 200 queries (seconds): it checks the script,
its numbers mean little.

    python bench/qa.py --quick
    nice -n 10 python bench/qa.py --json out.json --markdown out.md
    python bench/qa.py --sizes 100000 --hnsw-max 0 --qa-size 20000
"""

from __future__ import annotations

import argparse
import datetime as _dt
import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import cpu_model
from arguments import at_least, sizes
from tables import markdown_table, rich_table, write_outputs

__all__ = ["main", "random_units"]

K = 10
COPIES = 1000
COPY_NOISE = 0.484  # a unit vector plus an orthogonal-ish 0.484 one: cosine 1 / sqrt(1 + 0.484**2) = 0.90
INDEX_COLUMNS = ("index", "N", "D", "data GB", "build s", "queries", "query s", "queries/s", "recall@10",
                 "copy top-1", "peak RSS GB")
QA_COLUMNS = ("step", "N", "D", "s", "annotations/s", "result", "peak RSS GB")


def random_units(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` seeded random unit vectors, float32, normalised in place (no float64 copy)."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    vectors /= np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)).astype(np.float32)[:, None]
    return vectors


def _peak_rss_gb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


# --------------------------------------------------------------------------- measurements (child processes)


def index_task(kind: str, n: int, dim: int, queries: int, truth: np.ndarray | None) -> dict[str, Any]:
    """Build one index over ``n`` vectors, search ``queries`` random queries: one row of table 1
    (with the neighbours found, for the approximate indexes' recall)."""
    import faiss

    from sync.qa.vectors import build_index

    vectors, probe = random_units(n, dim, seed=0), random_units(queries, dim, seed=1)
    index, build_s = _timed(lambda: build_index(vectors, kind=kind))
    (_, found), query_s = _timed(lambda: index.search(probe, K))
    recall = 1.0 if truth is None else float(np.mean([len(set(a) & set(b)) / K for a, b in
                                                      zip(found.tolist(), truth.tolist(), strict=True)]))
    sources, copies = noisy_copies(vectors, min(COPIES, n))
    _, top = index.search(copies, 1)
    return {"index": kind, "n": n, "dim": dim, "data_gb": round(n * dim * 4 / 1e9, 2), "build_s": build_s,
            "queries": queries, "query_s": query_s, "queries_per_s": queries / query_s, "recall_at_10": recall,
            "copies": len(sources), "copy_top1": float(np.mean(top[:, 0] == sources)), "peak_rss_gb": _peak_rss_gb(), "faiss_threads": faiss.omp_get_max_threads(), "neighbours": found}


def noisy_copies(vectors: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random rows of ``vectors`` (their indices) and a copy of each at cosine 0.9 to it."""
    sources = np.random.default_rng(5).choice(len(vectors), count, replace=False)
    noise = random_units(count, vectors.shape[1], seed=6) * np.float32(COPY_NOISE)
    return sources, vectors[sources] + noise


def planted(n: int, dim: int) -> tuple[np.ndarray, list[str], set[tuple[int, int]], int]:
    """Random vectors with 1 % near copies and 0.5 % exact copies of other rows: the vectors,
    content hashes, the planted (source, copy) pairs (sorted) and how many are exact."""
    vectors = random_units(n, dim, seed=0)
    rng = np.random.default_rng(2)
    near, exact = max(1, n // 100), max(1, n // 200)
    order = rng.permutation(n)
    sources, copies = order[: near + exact], order[near + exact: 2 * (near + exact)]
    hashes = [f"sha256:{i}" for i in range(n)]
    noise = random_units(near, dim, seed=3) * np.float32(0.1)  # cosine 1 / sqrt(1.01) = 0.995
    vectors[copies[:near]] = vectors[sources[:near]] + noise
    vectors[copies[:near]] /= np.linalg.norm(vectors[copies[:near]], axis=1, keepdims=True)
    vectors[copies[near:]] = vectors[sources[near:]]
    for source, copy in zip(sources[near:].tolist(), copies[near:].tolist(), strict=True):
        hashes[copy] = hashes[source]
    pairs = {tuple(sorted(p)) for p in zip(sources.tolist(), copies.tolist(), strict=True)}
    return vectors, hashes, pairs, exact


def duplicates_task(n: int, dim: int) -> dict[str, Any]:
    """`duplicate_groups` over ``n`` vectors with planted copies: one row of table 2."""
    from sync.qa.duplicates import duplicate_groups

    vectors, hashes, pairs, exact = planted(n, dim)
    groups, seconds = _timed(lambda: duplicate_groups(vectors, list(range(n)), threshold=0.95, content_hashes=hashes))
    found = {g.members for g in groups}
    kinds = sum(g.kind == "exact" for g in groups)
    ok = found == pairs and kinds == exact
    result = (f"{len(groups)} groups ({kinds} exact) of {len(pairs)} planted ({exact} exact): "
              + ("all found, no false group" if ok else "MISMATCH"))
    return {"step": "duplicate_groups (threshold 0.95, content hashes)", "n": n, "dim": dim, "s": seconds,
            "per_s": n / seconds, "result": result, "ok": ok, "peak_rss_gb": _peak_rss_gb()}


def mistakes_task(n: int, dim: int) -> list[dict[str, Any]]:
    """The k-NN scores over ``n`` annotations with random labels, step by step: rows of table 2."""
    from sync.qa.mistakes import combine, knn_mistakenness, knn_reasons, uniqueness
    from sync.qa.vectors import knn

    vectors = random_units(n, dim, seed=0)
    labels = np.array([f"class-{c}" for c in range(10)])[np.random.default_rng(4).integers(0, 10, n)]
    rows = []

    def step(name: str, fn: Callable[[], Any], result: Callable[[Any], str]) -> Any:
        value, seconds = _timed(fn)
        rows.append({"step": name, "n": n, "dim": dim, "s": seconds, "per_s": n / seconds, "result": result(value)})
        return value

    shared = step(f"knn (exact, k={K}, every annotation)", lambda: knn(vectors, K),
                  lambda nb: f"{nb[1].shape[0]} x {nb[1].shape[1]} neighbours")
    scores = step("knn_mistakenness on those neighbours", lambda: knn_mistakenness(vectors, labels, k=K,
                  neighbours=shared), lambda s: f"mean {s.mean():.3f} (random labels: about 0.9)")
    step("uniqueness on those neighbours", lambda: uniqueness(vectors, k=K, neighbours=shared),
         lambda u: f"mean {u.mean():.3f}")
    reasons = step("knn_reasons (texts)", lambda: knn_reasons(labels, shared, k=K), lambda r: repr(r[0]))
    step("combine (max, with reasons)", lambda: combine({"knn": scores}, reasons={"knn": reasons}),
         lambda c: f"top score {c[0].max():.2f}")
    peak = _peak_rss_gb()
    return [{**row, "peak_rss_gb": peak} for row in rows]


# --------------------------------------------------------------------------- running


def _in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process (its own peak RSS)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def machine_info() -> dict[str, Any]:
    """The machine and library versions the figures were measured with."""
    from importlib.metadata import version

    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {"date": _dt.date.today().isoformat(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "memory_gib": memory_gib, "python": platform.python_version(), "numpy": np.__version__,
            "faiss": version("faiss-cpu"), "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def run(args: argparse.Namespace, command: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement, one child process each: the report."""
    report: dict[str, Any] = {"command": command, "quick": args.quick, "machine": machine_info(), "index": [],
                              "qa": []}
    for n in args.sizes:
        kinds = ["flat", "ivf"] + (["hnsw"] if n <= args.hnsw_max else [])
        truth = None
        for kind in kinds:
            log(f"{kind} index over {n} x {args.dim}")
            row = _in_child(index_task, kind, n, args.dim, args.queries, truth)
            truth = row.pop("neighbours") if kind == "flat" else truth
            row.pop("neighbours", None)
            report["index"].append(row)
    log(f"duplicate_groups over {args.qa_size}")
    report["qa"].append(_in_child(duplicates_task, args.qa_size, args.dim))
    log(f"k-NN mistakenness over {args.qa_size}")
    report["qa"].extend(_in_child(mistakes_task, args.qa_size, args.dim))
    report["machine"]["faiss_threads"] = report["index"][0]["faiss_threads"] if report["index"] else None
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


# --------------------------------------------------------------------------- output


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.3g}"


def _index_cells(row: dict[str, Any]) -> list[str]:
    return [row["index"], f"{row['n']:,}", str(row["dim"]), f"{row['data_gb']:.2f}", f"{row['build_s']:.2f}",
            f"{row['queries']:,}", f"{row['query_s']:.2f}", _rate(row["queries_per_s"]), f"{row['recall_at_10']:.3f}",
            f"{row['copy_top1']:.3f}", f"{row['peak_rss_gb']:.2f}"]


def _qa_cells(row: dict[str, Any]) -> list[str]:
    return [row["step"], f"{row['n']:,}", str(row["dim"]), f"{row['s']:.2f}", _rate(row["per_s"]), row["result"],
            f"{row['peak_rss_gb']:.2f}"]


def _captions(report: dict[str, Any]) -> tuple[str, str]:
    m = report["machine"]
    quick = "QUICK run: the numbers check the script, they mean little. " if report["quick"] else ""
    where = (f"{m['date']}, {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), FAISS {m['faiss']} "
             f"({m.get('faiss_threads')} OpenMP threads), numpy {m['numpy']}, Python {m['python']}; load average "
             f"{m['load_average_start']} -> {m.get('load_average_end')}.")
    index = (f"{quick}Random float32 unit vectors; build = build_index; queries = random unit vectors searched "
             f"for their {K} nearest (a sample: the flat rate is linear in the query count); recall@10 against the "
             f"flat index's neighbours of the same queries (uniform random data has no clusters: the hard case for ivf "
             f"and hnsw); copy top-1 = share of {COPIES:,} noisy copies (cosine 0.90 to a random indexed vector) whose "
             f"nearest is that vector; peak RSS of the measuring process. {where}")
    qa = (f"{quick}duplicate_groups on random vectors with 1 % near and 0.5 % exact planted copies; the k-NN rows "
          f"share one exact search (knn_mistakenness(vectors, labels) alone = its first two rows); peak RSS of the "
          f"measuring process (one for all k-NN rows). {where}")
    return index, qa


def render(report: dict[str, Any], console: Any) -> None:
    """Both tables, with rich."""
    index_caption, qa_caption = _captions(report)
    for title, columns, cells, rows, caption in (
        ("FAISS index build and k-NN queries", INDEX_COLUMNS, _index_cells, report["index"], index_caption),
        ("QA functions over annotations", QA_COLUMNS, _qa_cells, report["qa"], qa_caption),
    ):
        console.print(rich_table(title, columns, [cells(row) for row in rows], caption, TEXT_COLUMNS))


TEXT_COLUMNS = ("result",)
"""Left-aligned columns besides the first (text, not numbers)."""


def markdown(report: dict[str, Any]) -> str:
    """Both tables as Markdown, each with its caption as a paragraph under it."""
    index_caption, qa_caption = _captions(report)
    return (markdown_table(INDEX_COLUMNS, [_index_cells(row) for row in report["index"]], TEXT_COLUMNS) + "\n\n"
            + index_caption + "\n\n"
            + markdown_table(QA_COLUMNS, [_qa_cells(row) for row in report["qa"]], TEXT_COLUMNS) + "\n\n"
            + qa_caption + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 vectors and 200 queries: checks the script")
    parser.add_argument("--sizes", type=sizes(100, "100000,1000000"), default=None, metavar="N,...",
                        help="index sizes (default 100000,1000000)")
    parser.add_argument("--hnsw-max", type=at_least(0), default=None, metavar="N",
                        help="build hnsw only up to this size (default 100000; 0: never)")
    parser.add_argument("--queries", type=at_least(1), default=None, help="random queries per index (default 10000)")
    parser.add_argument("--qa-size", type=at_least(100), default=None, metavar="N",
                        help="annotations for duplicates and mistakenness (default 100000)")
    parser.add_argument("--dim", type=at_least(2), default=512, help="vector dimension (default 512)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="also write the tables as Markdown")
    return parser


def _settle(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults of the full run or of ``--quick``."""
    full = {"sizes": (100_000, 1_000_000), "hnsw_max": 100_000, "queries": 10_000, "qa_size": 100_000}
    quick = {"sizes": (2_000,), "hnsw_max": 2_000, "queries": 200, "qa_size": 2_000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _settle(_parser().parse_args(argv))
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 240)
    command = " ".join(["python bench/qa.py", *(sys.argv[1:] if argv is None else argv)])
    report = run(args, command, lambda text: console.print(f"[dim]{text}[/dim]"))
    render(report, console)
    write_outputs(report, args.json, args.markdown, markdown)
    return 0 if all(row.get("ok", True) for row in report["qa"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
