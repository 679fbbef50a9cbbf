"""A small dataset a detector can learn from, in the store as a team would have it: photos
(red squares are cats, blue ones dogs), human truth (an import with role revision, as
``autolabel import --as-revision`` writes it) and scored pre-labels (role prediction) whose
false boxes all score below 0.5 and whose true boxes score 0.55-0.95."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 128, 96
CLASSES = ("cat", "dog")
COLOURS = {"cat": (220, 30, 30), "dog": (30, 30, 220)}


def boxes_of(i: int) -> list[tuple[str, list[float]]]:
    """The true boxes of image ``i`` (one cat and one dog, placed by ``i``)."""
    rng = np.random.default_rng(i)
    x1, y1 = int(rng.integers(4, 40)), int(rng.integers(4, 30))
    x2, y2 = int(rng.integers(70, 100)), int(rng.integers(40, 60))
    return [("cat", [x1, y1, 24, 24]), ("dog", [x2, y2, 22, 28])]


def write_dataset(root: Path, n: int = 10) -> tuple[Path, Path, Path]:
    """Images under ``root/images`` plus ``truth.json`` and ``prelabels.json`` (COCO)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    cats = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    truth = {"images": [], "annotations": [], "categories": cats}
    pred = {"images": [], "annotations": [], "categories": cats}
    scores = (0.95, 0.85, 0.75, 0.65, 0.55)
    for i in range(n):
        pixels = np.full((H, W, 3), 200, np.uint8)
        name = f"photo{i:02d}.png"
        for k, (label, (x, y, w, h)) in enumerate(boxes_of(i)):
            pixels[y : y + h, x : x + w] = COLOURS[label]
            for coco in (truth, pred):
                ann = {"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": CLASSES.index(label) + 1,
                       "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
                if coco is pred:
                    ann["score"] = scores[(i + k) % len(scores)]
                coco["annotations"].append(ann)
        # a false pre-label on the background, scored 0.25 or 0.45
        pred["annotations"].append({"id": len(pred["annotations"]) + 1, "image_id": i + 1, "category_id": 1 + i % 2,
                                    "bbox": [50, 70, 20, 20], "area": 400, "iscrowd": 0, "score": 0.25 + 0.2 * (i % 2)})
        Image.fromarray(pixels).save(images / name)
        for coco in (truth, pred):
            coco["images"].append({"id": i + 1, "file_name": name, "width": W, "height": H})
    (root / "truth.json").write_text(json.dumps(truth))
    (root / "prelabels.json").write_text(json.dumps(pred))
    return images, root / "truth.json", root / "prelabels.json"


def fill_store(store, root: Path, dataset: str = "pets", n: int = 10, truth: bool = True) -> None:
    """The dataset in ``store``: pre-label run ``auto`` and, with ``truth``, revision ``fixed``."""
    from sync.coco_import import import_coco

    images, truth_file, pred_file = write_dataset(root, n)
    import_coco(store, dataset, pred_file, images, name="auto", role="prediction")
    if truth:
        import_coco(store, dataset, truth_file, images, name="fixed", role="revision")
