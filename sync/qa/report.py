"""The QA pages of ``autolabel qa mistakes --html`` (and ``qa duplicates --html``): each one
self-contained HTML page.

**Content.** The counts (annotations scored, whose, the model, k, the signals), two maps of the
scored annotations' crop embeddings (`sync.qa.projection.project_2d`, t-SNE), one coloured by
label (`MAP_LABEL_ID`) and one by mistakenness with a colour bar (`MAP_SCORE_ID`), then the
``top`` most suspect annotations: a table (rank, sample, annotation, label, score, reason) and a
grid of their thumbnails (`THUMBNAIL_PX` on the long side, JPEG), each with its label, score and
reason. A thumbnail is the annotation's crop (`sync.qa.embed.crop_box`, the crop that was
embedded) from its image file, read by the rule of every command that reads a stored sample
(`sync.export.yolo.local_file`); an image that cannot be read, or whose size is not the stored
one, is a sentence saying why in place of the thumbnail, never an error. When more annotations
were scored than a map draws (`sync.qa.projection.DEFAULT_MAX_POINTS`), the page says how many
of them the maps show.

**Duplicates.** ``autolabel qa duplicates --html`` writes a page of the same kind
(`duplicates_page`): the counts, then each duplicate group (the first `SHOWN_GROUPS`) with its
kind, lowest similarity and a thumbnail of each member's whole image.

**Self-contained.** The page is built from `sync.evaluate.html`'s pieces (its CSS, escaping,
tables and ``<figure>`` with a PNG as a ``data:`` URI drawn by its `Plotter`): no scripts, no
links, no external resources; every text from the store (labels, uris, reasons) is escaped.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sync.evaluate.html import (
    Plotter,
    escape_html,
    figure_html,
    html_table,
    mpl_text,
    page_head,
    summary_html,
)
from sync.qa.embed import crop_box, require_embeddings
from sync.qa.projection import DEFAULT_MAX_POINTS, DEFAULT_SEED, project_2d

if TYPE_CHECKING:
    from sync.qa.scores import AnnotationScore, DatasetDuplicates, Mistakes
    from sync.store import SampleInfo, Store

__all__ = [
    "MAP_LABEL_ID", "MAP_SCORE_ID", "SHOWN_GROUPS", "THUMBNAIL_PX", "Thumbnail", "duplicates_page",
    "mistakes_page", "render_mistakes_page", "suspect_thumbnails", "write_duplicates_page", "write_mistakes_page",
]

MAP_LABEL_ID = "map-label"
"""The id of the map coloured by label."""
MAP_SCORE_ID = "map-mistakenness"
"""The id of the map coloured by mistakenness."""
THUMBNAIL_PX = 96
"""A thumbnail's longer side in pixels at most (smaller crops are not enlarged)."""
SHOWN_GROUPS = 200
"""Duplicate groups shown with thumbnails on the duplicates page at most (the first ones)."""
LEGEND_LABELS = 20
"""Labels named in the map's legend at most (the most frequent); the rest are drawn grey."""

_PAGE_CSS = """
.thumbs { display: flex; flex-wrap: wrap; gap: 0.8em; } .thumbs figure { margin: 0; width: 150px; }
.thumbs img { display: block; max-width: 150px; border: 1px solid #ccc; }
.thumbs figcaption { font-size: 0.8em; word-wrap: break-word; } p.note { color: #a33; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class Thumbnail:
    """One suspect's crop as JPEG bytes, or why there is none."""

    item: AnnotationScore
    uri: str
    jpeg: bytes | None
    note: str | None = None
    """Why the crop could not be made (None when ``jpeg`` is set)."""


# --------------------------------------------------------------------------- thumbnails


def _read(sample: SampleInfo) -> tuple[np.ndarray | None, str | None]:
    """``(RGB pixels, None)`` of a sample's image (`sync.qa.embed.read_sample`) at its stored
    size, or ``(None, why not)``."""
    from sync.qa.embed import read_sample

    image, reason = read_sample(sample)
    if image is None:
        return None, reason
    height, width = image.shape[:2]
    if (width, height) != (sample.width, sample.height):
        return None, f"the image is {width}x{height}, stored as {sample.width}x{sample.height}"
    return image, None


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _boxes(
    store: Store, items: Sequence[AnnotationScore], runs: dict[tuple[int, int], int]
) -> dict[tuple[int, int], Any]:
    """``{(sample_id, annotation_id): xyxy}`` of ``items``, read from the run each was cropped from."""
    by_run: dict[int, set[int]] = {}
    for item in items:
        by_run.setdefault(runs[(item.sample_id, item.annotation_id)], set()).add(item.sample_id)
    boxes: dict[tuple[int, int], Any] = {}
    for run_id, sample_ids in sorted(by_run.items()):
        for sample_id, det in store.annotations_of(store.run_by_id(run_id), sample_ids=sorted(sample_ids)).items():
            if len(det):
                for annotation_id, box in zip(det.data["annotation_id"].tolist(), np.asarray(det.xyxy), strict=True):
                    boxes[(sample_id, int(annotation_id))] = box
    return boxes


def suspect_thumbnails(
    store: Store, dataset: str, items: Sequence[AnnotationScore], runs: dict[tuple[int, int], int]
) -> list[Thumbnail]:
    """The crop of each of ``items`` (in order) from its image; ``runs``: the run id each
    annotation was cropped from, by ``(sample_id, annotation_id)``. An image that cannot be
    read, or a box no longer stored, is a `Thumbnail` with a note."""
    samples = {s.id: s for s in store.samples(dataset, ids=sorted({i.sample_id for i in items}))}
    boxes = _boxes(store, items, runs)
    images: dict[int, tuple[np.ndarray | None, str | None]] = {}
    found = []
    for item in items:
        sample = samples[item.sample_id]
        if item.sample_id not in images:
            images[item.sample_id] = _read(sample)
        image, reason = images[item.sample_id]
        box = boxes.get((item.sample_id, item.annotation_id))
        if image is None or box is None:
            note = reason if image is None else "the annotation is no longer stored"
            found.append(Thumbnail(item, sample.uri, None, f"no thumbnail: {note}"))
            continue
        x1, y1, x2, y2 = crop_box(box, image.shape[1], image.shape[0])
        found.append(Thumbnail(item, sample.uri, _jpeg(image[y1:y2, x1:x2])))
    return found


# --------------------------------------------------------------------------- maps


def _label_map(plotter: Plotter, xy: np.ndarray, labels: Sequence[str]) -> bytes:
    """The points coloured by label: the `LEGEND_LABELS` most frequent named, the rest grey."""
    from matplotlib import colormaps

    names, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    named = [str(n) for n in names[np.lexsort((names, -counts))][:LEGEND_LABELS]]
    with plotter.style():
        fig = plotter.new(7.0, 5.0)
        ax = fig.add_subplot()
        codes = np.asarray(labels, dtype=object).astype(str)
        rest = ~np.isin(codes, named)
        if rest.any():
            ax.scatter(xy[rest, 0], xy[rest, 1], s=8, c="0.75", label="other labels")
        palette = colormaps["tab20"]
        for n, name in enumerate(named):
            mask = codes == name
            ax.scatter(xy[mask, 0], xy[mask, 1], s=10, color=palette(n % 20), label=mpl_text(name))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=1.5)
        return plotter.png(fig)


def _score_map(plotter: Plotter, xy: np.ndarray, scores: np.ndarray) -> bytes:
    """The points coloured by mistakenness (0 to 1) with a colour bar, the most suspect on top."""
    order = np.argsort(np.nan_to_num(scores, nan=0.0), kind="stable")
    with plotter.style():
        fig = plotter.new(7.0, 5.0)
        ax = fig.add_subplot()
        points = ax.scatter(xy[order, 0], xy[order, 1], s=10, c=scores[order], cmap="viridis", vmin=0.0, vmax=1.0)
        fig.colorbar(points, ax=ax, shrink=0.8, label="mistakenness")
        ax.set_xticks([])
        ax.set_yticks([])
        return plotter.png(fig)


# --------------------------------------------------------------------------- page


def _image_figure(element_id: str, jpeg: bytes | None, note: str | None, alt: str, caption: str, uri: str) -> str:
    """A thumbnail (or its note) with its caption and uri; every text escaped."""
    if jpeg is None:
        body = f'<p class="note">{escape_html(note)}</p>'
    else:
        data = base64.b64encode(jpeg).decode("ascii")
        body = f'<img alt="{escape_html(alt)}" src="data:image/jpeg;base64,{data}">'
    return (f'<figure id="{escape_html(element_id)}">{body}<figcaption>{escape_html(caption)}<br>'
            f'<span class="muted">{escape_html(uri)}</span></figcaption></figure>')


def _thumbnail_html(rank: int, thumb: Thumbnail) -> str:
    item = thumb.item
    return _image_figure(f"suspect-{rank}", thumb.jpeg, thumb.note, f"crop of {item.label}",
                         f"#{rank} {item.label} ({item.score:.3f}): {item.reason}", thumb.uri)


def render_mistakes_page(found: Mistakes, xy: np.ndarray, chosen: np.ndarray, thumbnails: Sequence[Thumbnail]) -> str:
    """The page (module docstring) of ``found`` with the map positions ``xy`` of its annotations
    ``chosen`` (indices into ``found.annotations``) and the top suspects' ``thumbnails``."""
    plotter = Plotter()
    drawn = [found.annotations[i] for i in chosen.tolist()]
    total = len(found.annotations)
    title = f"Label QA of {found.dataset}: {len(thumbnails)} most suspect annotations"
    summary = [("dataset", found.dataset), ("annotations", found.source), ("scored", str(total)),
               ("model", found.model), ("k (neighbours)", str(found.k)), ("signals", ", ".join(found.signals))]
    parts = [page_head(title, _PAGE_CSS), f"<h1>{escape_html(title)}</h1>",
             summary_html(summary), "<h2>Map of the crop embeddings</h2>"]
    shown = (f"{len(drawn)} of the {total} annotations, chosen at random" if len(drawn) < total
             else f"all {total} annotations")
    parts.append(f'<p class="muted" id="map-points">t-SNE of the crop embeddings: {escape_html(shown)}.</p>')
    labels = [a.label for a in drawn]
    scores = np.array([a.score for a in drawn], dtype=np.float64)
    parts.append(figure_html(_label_map(plotter, xy, labels), MAP_LABEL_ID, "Map of the annotations by label",
                             "Each point an annotation's crop; nearby points look alike to the model.", ""))
    parts.append(figure_html(_score_map(plotter, xy, scores), MAP_SCORE_ID, "Map of the annotations by mistakenness",
                             "The same map coloured by mistakenness (1: its label disagrees most).", ""))
    parts.append("<h2>Most suspect annotations</h2>")
    rows = [[str(rank), t.uri, str(t.item.annotation_id), t.item.label, t.item.reason, f"{t.item.score:.3f}"]
            for rank, t in enumerate(thumbnails, 1)]
    parts.append(html_table(("rank", "sample", "annotation", "label", "reason", "score"), rows, numeric_from=5))
    parts.append('<div class="thumbs">' + "".join(_thumbnail_html(rank, t) for rank, t in enumerate(thumbnails, 1))
                 + "</div></body></html>\n")
    return "".join(parts)


def mistakes_page(
    store: Store, found: Mistakes, *, top: int, max_points: int = DEFAULT_MAX_POINTS, seed: int = DEFAULT_SEED
) -> str:
    """The page of ``found`` (from `sync.qa.scores.annotation_mistakes` on ``store``) with its
    ``top`` most suspect annotations; the map reads the stored crop embeddings again."""
    embedded = require_embeddings(store, found.dataset, found.model, "object")
    keys = list(zip(embedded.sample_ids.tolist(), embedded.annotation_ids.tolist(), strict=True))
    row_of = {key: row for row, key in enumerate(keys)}
    runs = {key: int(run) for key, run in zip(keys, embedded.source_run_ids.tolist(), strict=True)}
    rows = [row_of[(a.sample_id, a.annotation_id)] for a in found.annotations]
    xy, chosen = project_2d(embedded.vectors[rows], max_points=max_points, seed=seed)
    ranked = sorted(found.annotations, key=lambda a: (-a.score, a.sample_id, a.annotation_id))[:top]
    return render_mistakes_page(found, xy, chosen, suspect_thumbnails(store, found.dataset, ranked, runs))


def _write(page: str, path: str | Path) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")


def write_mistakes_page(store: Store, found: Mistakes, path: str | Path, *, top: int) -> None:
    """Write `mistakes_page` to ``path`` (UTF-8, parent folders created); OSError passes through."""
    _write(mistakes_page(store, found, top=top), path)


# --------------------------------------------------------------------------- duplicates


def duplicates_page(found: DatasetDuplicates) -> str:
    """The page of ``qa duplicates --html``: the counts, then per group (the first
    `SHOWN_GROUPS`) its kind, lowest similarity and a thumbnail of each member's whole image
    (``group-N-M``: member ``M`` of group ``N``; an unreadable image is a note)."""
    title = f"Duplicates in {found.dataset}: {len(found.groups)} groups"
    summary = [("dataset", found.dataset), ("embedded samples", str(len(found.samples))),
               ("groups", str(len(found.groups))), ("model", found.model), ("threshold", f"{found.threshold:g}")]
    parts = [page_head(title, _PAGE_CSS), f"<h1>{escape_html(title)}</h1>",
             summary_html(summary)]
    if len(found.groups) > SHOWN_GROUPS:
        parts.append(f'<p class="muted">The first {SHOWN_GROUPS} groups are shown.</p>')
    for number, group in enumerate(found.groups[:SHOWN_GROUPS], 1):
        parts.append(f'<h2 id="group-{number}">Group {number}: {escape_html(group.kind)}, lowest similarity '
                     f"{group.min_similarity:.3f}</h2><div class=\"thumbs\">")
        for position, member in enumerate(group.members, 1):
            sample = found.samples[member]
            image, note = _read(sample)
            jpeg = None if image is None else _jpeg(image)
            parts.append(_image_figure(f"group-{number}-{position}", jpeg, f"no thumbnail: {note}",
                                       f"sample {member}", f"sample {member}", sample.uri))
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_duplicates_page(found: DatasetDuplicates, path: str | Path) -> None:
    """Write `duplicates_page` to ``path`` (UTF-8, parent folders created); OSError passes through."""
    _write(duplicates_page(found), path)
