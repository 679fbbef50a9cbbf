"""Export the store's labels of a dataset as a YOLO dataset folder (the layout ultralytics trains on).

::

    OUT/data.yaml                 path: <absolute OUT>, train: images/train, val: images/val,
                                  names: {0: label, ...} (sorted label names, as the COCO export)
    OUT/images/{train,val}/NAME   hard links to the sample files (copies across file systems)
    OUT/labels/{train,val}/STEM.txt
    OUT/autolabel_export.json     the choice of runs (choice.counts: chosen samples per source;
                                  exported_counts: exported ones), per sample its run, kind, split
                                  and files, the skipped samples with reasons, dropped annotations

Label lines (coordinates normalized by the sample's width and height, clipped to 0..1):

- boxes: ``cls cx cy w h``; a box empty inside the image is dropped (counted);
- with ``segments=True``: ``cls x1 y1 x2 y2 ...``, one polygon per instance: the stored polygon
  (its largest ring when it has several, counted), else the largest outer contour of the stored
  mask (`serverless.convert.polygons.mask_to_polygons`, which names boundary pixels, so it is
  about half a pixel inside the mask's edge), else the box's four corners (ultralytics refuses
  files that mix box and segment lines).

Crowd regions (attribute ``iscrowd``, from COCO imports) are not written (YOLO has no crowd
concept; counted). Tags (rows of shape type ``tag``: image-level labels) are not written either:
a YOLO detection dataset has no image-level labels (counted as "tags (image-level labels)"
among the dropped annotations; a tag's label is a class only if some box uses it).

Only local files are exported: a chosen sample whose URI is not an absolute path of an existing
file, whose format ultralytics does not read, or whose content no longer matches its stored
sha256 is skipped and listed with the reason.

Images keep their file name unless its stem (case-insensitively: the label file is
``STEM.txt``) is taken by an earlier sample (ascending sample id), in which case the name
becomes ``STEM-<sample id>.ext``: images with the same stem from different folders never
overwrite each other. The train/val split is `split_of` unless the caller gives one (``autolabel train`` splits the
whole dataset once, so every training run of a dataset shares it). The metadata also counts the
label lines per split and class (``instances``). The folder is built beside OUT and
moved into place at the end, so a failure leaves no half export.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sync.crowd import crowd_column
from sync.export.choice import ExportChoice, ExportError, ExportSummary, SampleChoice, choose_runs, iter_labels
from sync.store import Store
from sync.store.convert import split_tags

__all__ = [
    "METADATA_FILE",
    "SCORED_SOURCES",
    "YOLO_SUFFIXES",
    "export_yolo",
    "label_lines",
    "local_file",
    "split_of",
]

METADATA_FILE = "autolabel_export.json"
YOLO_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
"""Image formats both ultralytics and the pre-label pipeline read."""
_OWN_ENTRIES = ("images", "labels", "data.yaml", METADATA_FILE)
"""What an export writes into OUT (what ``overwrite`` replaces)."""


# ----------------------------------------------------------------------------- split
def _unit(uri: str, seed: int) -> float:
    """A number in [0, 1) from the sha256 of the seed and the URI."""
    digest = hashlib.sha256(f"{seed}\n{uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(uris: Sequence[str], val: float, seed: int = 0) -> dict[str, str]:
    """``{uri: "train" | "val"}``, deterministic in (URI, seed) and independent of order.

    A URI goes to ``val`` when a number drawn from ``sha256(seed, uri)`` in [0, 1) is below
    ``val``, so about a fraction ``val`` of the URIs does, and a URI keeps its split when others
    are added. Then, so that the result trains: at least one URI is in ``train`` (the one
    drawn highest moves), and when ``val > 0`` and there are two URIs or more, at least one is in
    ``val`` (the one drawn lowest moves).
    """
    if not 0.0 <= val < 1.0:
        raise ExportError(f"the validation fraction must lie in [0, 1), got {val}")
    drawn = {uri: _unit(uri, seed) for uri in uris}
    split = {uri: "val" if u < val else "train" for uri, u in drawn.items()}
    if drawn and "train" not in split.values():
        split[max(drawn, key=lambda k: (drawn[k], k))] = "train"
    if val > 0 and len(drawn) >= 2 and "val" not in split.values():
        split[min(drawn, key=lambda k: (drawn[k], k))] = "val"
    return split


# ----------------------------------------------------------------------------- label lines
def _box_ring(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _ring_of(det: Any, i: int, dropped: Counter) -> np.ndarray:
    """The one polygon (K, 2 pixels) of detection ``i`` (see the module docstring)."""
    from serverless.convert.polygons import largest_ring, mask_to_polygons

    rings = det.polygons[i] if det.polygons is not None else ()
    if rings:
        if len(rings) > 1:
            dropped["polygon parts other than the largest"] += len(rings) - 1
        return np.asarray(largest_ring(rings), dtype=np.float64)
    if det.masks is not None and str(det.data["shape_type"][i]) == "mask":
        contours = mask_to_polygons(det.masks[i])
        if contours:
            if len(contours) > 1:
                dropped["mask parts other than the largest"] += len(contours) - 1
            return np.asarray(contours[0], dtype=np.float64)
    return _box_ring(det.xyxy[i])


def label_lines(
    det: Any, width: int, height: int, *, segments: bool = False
) -> tuple[list[tuple[str, list[float]]], Counter]:
    """``([(label, normalized coordinates)], dropped counts)`` of one sample's `Detections`:
    ``cx cy w h`` boxes, or ``x y`` polygon vertices with ``segments=True`` (module docstring)."""
    lines: list[tuple[str, list[float]]] = []
    dropped: Counter = Counter()
    crowd = crowd_column(det.data.get("attributes"), len(det))
    scale = np.array([width, height], dtype=np.float64)
    for i in range(len(det)):
        label = str(det.labels[i])
        if crowd[i]:
            dropped["crowd regions"] += 1
            continue
        if segments:
            ring = np.clip(_ring_of(det, i, dropped) / scale, 0.0, 1.0)
            span = ring.max(axis=0) - ring.min(axis=0)
            if span.min() <= 0:
                dropped["shapes empty inside the image"] += 1
                continue
            lines.append((label, ring.reshape(-1).tolist()))
        else:
            x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            if x2 <= x1 or y2 <= y1:
                dropped["boxes empty inside the image"] += 1
                continue
            lines.append(
                (label, [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height])
            )
    return lines, dropped


# ----------------------------------------------------------------------------- files
def local_file(
    sample: Any, suffixes: Collection[str] = YOLO_SUFFIXES, reader: str = "ultralytics"
) -> tuple[Path | None, str | None]:
    """``(path, None)`` for a sample that is a usable local file, else ``(None, reason)``: an
    absolute path of an existing file with one of ``suffixes`` (what ``reader`` decodes), whose
    sha256 is still the stored ``content_hash`` when one is stored. The one rule for every
    command that reads a stored sample's image (the YOLO export, ``autolabel embed``)."""
    from sync.prelabel_store import file_sha256

    uri = sample.uri
    if "://" in uri:
        return None, "not a local file (a URL)"
    path = Path(uri)
    if not path.is_absolute():
        return None, "not an absolute local path"
    if not path.is_file():
        return None, "no such file"
    if path.suffix.lower() not in suffixes:
        return None, f"{reader} does not read {path.suffix or 'suffix-less'} images"
    if sample.content_hash and sample.content_hash.startswith("sha256:"):
        try:
            digest = file_sha256(path)
        except OSError as err:
            return None, f"cannot read: {err.strerror or err}"
        if digest != sample.content_hash:
            return None, "the file changed since it was stored (sha256 differs)"
    return path, None


def _unique_names(paths: Sequence[tuple[int, Path]]) -> dict[int, str]:
    """``{sample id: image file name in OUT}``, stems unique case-insensitively."""
    taken: set[str] = set()
    names: dict[int, str] = {}
    for sample_id, path in sorted(paths):
        stem, suffix = path.stem, path.suffix
        name, k = path.name, 1
        while name.rsplit(".", 1)[0].lower() in taken:
            name = f"{stem}-{sample_id}{suffix}" if k == 1 else f"{stem}-{sample_id}-{k}{suffix}"
            k += 1
        taken.add(name.rsplit(".", 1)[0].lower())
        names[sample_id] = name
    return names


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _check_out(out: Path, overwrite: bool) -> bool:
    """True when ``out`` holds a previous export to replace; `ExportError` when it may not be written."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file; the YOLO export is a folder")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not overwrite:
        raise ExportError(f"{out}: the folder is not empty; pass --overwrite to replace a previous export")
    if not (out / METADATA_FILE).is_file():
        raise ExportError(
            f"{out}: the folder is not empty and holds no {METADATA_FILE}; --overwrite only replaces a previous "
            "autolabel export (choose an empty or new folder)"
        )
    return True


def _data_yaml(out: Path, val_dir: str, names: Sequence[str]) -> str:
    """``data.yaml`` text. Every string is written as a JSON string, which is a YAML double-quoted
    scalar in both YAML 1.1 (PyYAML, what ultralytics reads with) and 1.2: a label such as
    ``yes``, ``null`` or ``1`` stays a string."""

    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    lines = [f"path: {q(str(out))}", f"train: {q('images/train')}", f"val: {q(val_dir)}", "names:"]
    lines += [f"  {i}: {q(name)}" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n" if names else "\n".join(lines[:-1]) + "\nnames: {}\n"


def _move_into(built: Path, out: Path, replacing: bool) -> None:
    """Put the folder ``built`` in place as ``out`` (replacing a previous export's entries)."""
    if not replacing:
        if out.exists():
            out.rmdir()  # empty (checked)
        os.rename(built, out)
        return
    for entry in _OWN_ENTRIES:
        old = out / entry
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for entry in _OWN_ENTRIES:
        os.rename(built / entry, out / entry)
    built.rmdir()


# ----------------------------------------------------------------------------- export
def _exportable(choice: ExportChoice) -> tuple[list[SampleChoice], dict[int, Path], list[tuple[str, str]]]:
    """The chosen samples that are local image files, their paths, and the others with why
    (`ExportError` when none is)."""
    exportable: list[SampleChoice] = []
    paths: dict[int, Path] = {}
    skipped: list[tuple[str, str]] = []
    for chosen in choice.chosen:
        path, reason = local_file(chosen.sample)
        if path is None:
            skipped.append((chosen.sample.uri, reason or ""))
        else:
            exportable.append(chosen)
            paths[chosen.sample.id] = path
    if not exportable:
        shown = "; ".join(f"{uri}: {reason}" for uri, reason in skipped[:3])
        raise ExportError(
            f"dataset {choice.dataset!r}: none of the {len(skipped)} chosen samples is a local image file ({shown})"
        )
    return exportable, paths, skipped


def _partial_folder(out: Path) -> Path:
    """A new, empty folder beside ``out`` to build the export in (moved into ``out`` at the end)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # a plain mkdir, so the umask decides its mode as for any output (mkdtemp would make it 0700)
        built = out.parent / f".{out.name}.partial-{secrets.token_hex(6)}"
        built.mkdir()
    except OSError as err:
        raise ExportError(f"{out}: cannot create the export folder: {err.strerror or err}") from err
    return built


SCORED_SOURCES = frozenset({"prelabel", "import-prediction"})
"""Sources whose labels are model output with scores (what ``min_score`` filters)."""


def _write_samples(
    built: Path,
    store: Store,
    choice: ExportChoice,
    paths: dict[int, Path],
    names: dict[int, str],
    splits: Mapping[str, str],
    *,
    segments: bool,
    min_score: float | None = None,
) -> tuple[list[dict[str, Any]], list[str], Counter, dict[str, Counter]]:
    """Images and label files of every sample of ``choice`` under ``built``: the per-sample
    records of the metadata, the class names (sorted), what was dropped, by reason, and the
    label lines per split and class."""
    for kind in ("images", "labels"):
        for part in ("train", "val"):
            (built / kind / part).mkdir(parents=True)
    lines_of: dict[int, list[tuple[str, list[float]]]] = {}
    labels: set[str] = set()
    dropped: Counter = Counter()
    instances: dict[str, Counter] = {"train": Counter(), "val": Counter()}
    for chosen, labelled in iter_labels(store, choice, masks=segments):
        det, tags = split_tags(labelled)
        if len(tags):
            dropped["tags (image-level labels)"] += len(tags)
        if min_score is not None and chosen.source in SCORED_SOURCES and len(det):
            low = det.scores < min_score
            if low.any():
                dropped[f"pre-labels scored below {min_score:g}"] += int(low.sum())
                det = det[~low]
        sample = chosen.sample
        lines, lost = label_lines(det, sample.width, sample.height, segments=segments)
        labels.update(det.labels.tolist())
        lines_of[sample.id] = lines
        instances[splits[sample.uri]].update(label for label, _ in lines)
        dropped.update(lost)
        _link_or_copy(paths[sample.id], built / "images" / splits[sample.uri] / names[sample.id])
    categories = sorted(labels)
    class_id = {name: i for i, name in enumerate(categories)}
    records = []
    for chosen in choice.chosen:
        sample = chosen.sample
        part, name = splits[sample.uri], names[sample.id]
        label_file = f"labels/{part}/{name.rsplit('.', 1)[0]}.txt"
        text = "".join(
            f"{class_id[label]} " + " ".join(f"{v:.6f}" for v in coords) + "\n"
            for label, coords in lines_of[sample.id]
        )
        (built / label_file).write_text(text, encoding="utf-8")
        records.append(
            {
                "sample_id": sample.id,
                "uri": sample.uri,
                "run": chosen.run.name,
                "run_id": chosen.run.id,
                "kind": chosen.run.kind,
                "source": chosen.source,
                "split": part,
                "image": f"images/{part}/{name}",
                "label": label_file,
                "lines": len(lines_of[sample.id]),
            }
        )
    return records, categories, dropped, instances


def export_yolo(
    store: Store,
    dataset: str,
    out: Path,
    *,
    revision: str | None = None,
    val: float = 0.2,
    seed: int = 0,
    segments: bool = False,
    overwrite: bool = False,
    choice: ExportChoice | None = None,
    splits: Mapping[str, str] | None = None,
    min_score: float | None = None,
) -> ExportSummary:
    """Write the labels of ``dataset`` (one run per sample, see `sync.export.choice`) as a YOLO
    dataset folder ``out``; returns what was written (see the module docstring).

    ``val`` is the validation fraction in [0, 1), ``seed`` the split's seed. A caller that
    decided already gives ``choice`` (which run each sample's labels come from; ``revision`` is
    then ignored) and ``splits`` (``{uri: "train" | "val"}`` covering every chosen sample;
    ``val`` and ``seed`` are then only recorded); ``min_score`` drops the pre-labels (sources
    `SCORED_SOURCES`) scored below it (counted). `ExportError` when ``out`` is not empty
    (unless ``overwrite`` and it is a previous export), the fraction is out of range or no
    chosen sample is a local file; `sync.store.StoreError` for a missing dataset or run.
    """
    out = Path(out).resolve()
    if not 0.0 <= val < 1.0:
        raise ExportError(f"the validation fraction must lie in [0, 1), got {val}")
    replacing = _check_out(out, overwrite)
    if choice is None:
        choice = choose_runs(store, dataset, revision=revision)
    choice.require_samples()

    exportable, paths, skipped = _exportable(choice)
    names = _unique_names(list(paths.items()))
    if splits is None:
        splits = split_of([c.sample.uri for c in exportable], val, seed)
    missing = [c.sample.uri for c in exportable if splits.get(c.sample.uri) not in ("train", "val")]
    if missing:
        raise ExportError(f"the given split has no train/val side for {len(missing)} samples, e.g. {missing[0]}")
    exported_at = datetime.now(UTC)
    sub_choice = replace(choice, chosen=tuple(exportable))
    built = _partial_folder(out)
    try:
        records, categories, dropped, instances = _write_samples(
            built, store, sub_choice, paths, names, splits, segments=segments, min_score=min_score
        )
        n_val = sum(1 for r in records if r["split"] == "val")
        val_dir = "images/val" if n_val else "images/train"
        (built / "data.yaml").write_text(_data_yaml(out, val_dir, categories), encoding="utf-8")
        metadata = {
            "format": "yolo",
            **choice.metadata(exported_at),
            "exported_counts": sub_choice.counts(),
            "names": categories,
            "segments": segments,
            "val_fraction": val,
            "seed": seed,
            "min_score": min_score,
            "val_is_train": not n_val,
            "instances": {part: dict(sorted(found.items())) for part, found in instances.items()},
            "skipped": [{"uri": uri, "reason": reason} for uri, reason in skipped],
            "dropped": dict(sorted(dropped.items())),
            "samples": records,
        }
        (built / METADATA_FILE).write_text(json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8")
        _move_into(built, out, replacing)
    except OSError as err:
        shutil.rmtree(built, ignore_errors=True)
        raise ExportError(f"{out}: cannot write the export: {err}") from err
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return ExportSummary(
        format="yolo",
        out=out,
        images=len(records),
        annotations=sum(r["lines"] for r in records),
        categories=tuple(categories),
        counts=sub_choice.counts(),
        left_out=len(choice.left_out),
        skipped=tuple(skipped),
        dropped=dict(sorted(dropped.items())),
        train=len(records) - n_val,
        val=n_val,
        metadata_file=out / METADATA_FILE,
    )
