"""`autolabel import` under hostile COCO files: only files inside ``--images`` are read,
malformed polygons and numbers that do not fit are refused, and the command answers each with
one line and exit 2 (never a traceback), writing nothing."""

from __future__ import annotations

import json
import re

import pytest

from sync.coco_import import CocoImportError, import_coco
from tests.test_import import autolabel, boxes_coco, one_line, store, write_image, write_json  # noqa: F401


def refused(store, coco_file, images_dir, match: str) -> None:
    with pytest.raises(CocoImportError, match=match):
        import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert store.list_datasets() == []  # nothing written, not even the dataset


@pytest.mark.parametrize("how", ["dot-dot", "absolute", "symlink"])
def test_a_file_outside_the_images_folder_is_refused(store, boxes_coco, tmp_path, how):
    coco_file, images_dir, data = boxes_coco
    outside = write_image(tmp_path / "private" / "secret.png", 40, 30, seed=7)  # a readable image of the right size
    if how == "symlink":
        (images_dir / "link.png").symlink_to(outside)
    name = {"dot-dot": "../private/secret.png", "absolute": str(outside), "symlink": "link.png"}[how]
    data["images"][0]["file_name"] = name
    write_json(coco_file, data)
    refused(
        store, coco_file, images_dir,
        re.escape(f"images[0] ({name!r}): {outside.resolve()} is outside the images folder {images_dir.resolve()}"),
    )


def test_files_inside_the_images_folder_are_read_however_they_are_named(store, boxes_coco):
    coco_file, images_dir, data = boxes_coco
    (images_dir / "sub" / "alias.png").symlink_to(images_dir / "c.png")  # a symlink that stays inside
    data["images"][0]["file_name"] = str((images_dir / "a.png").resolve())  # absolute, inside
    data["images"][1]["file_name"] = "sub/../sub/b.jpg"  # subfolder, '..' that stays inside
    data["images"][2]["file_name"] = "sub/alias.png"
    write_json(coco_file, data)
    run = import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert run.params["images"] == 3
    assert sorted(s.uri for s in store.samples("site")) == sorted(
        str((images_dir / name).resolve()) for name in ("a.png", "sub/b.jpg", "c.png")
    )


def test_an_empty_polygon_list_is_refused_and_named(store, boxes_coco):
    coco_file, images_dir, data = boxes_coco
    data["annotations"][2]["segmentation"] = [[]]  # file annotation 2, the second of its image
    write_json(coco_file, data)
    refused(store, coco_file, images_dir, r"annotations\[2\]\.segmentation\[0\]: expected an even number >= 6")
    data["annotations"][2]["segmentation"] = [[1, 1, 5, 1]]  # two points
    write_json(coco_file, data)
    refused(store, coco_file, images_dir, r"annotations\[2\]\.segmentation\[0\]: .* got 4")
    data["annotations"][2]["segmentation"] = []  # no segmentation: a plain box, as CVAT writes it
    write_json(coco_file, data)
    run = import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert run.params["annotations"] == 3


HOSTILE = {
    "huge bbox": (lambda d: d["annotations"][1].update(bbox=[1e308, 0, 1e308, 5]),
                  r"boxes\.json: annotations\[1\]\.bbox: expected pixel coordinates within ±16777216"),
    "float32 overflow": (lambda d: d["annotations"][0].update(bbox=[1, 1, 3.5e38, 5]),
                         r"annotations\[0\]\.bbox: expected pixel coordinates"),
    "outside --images": (lambda d: d["images"][0].update(file_name="../../../../../../../../etc/passwd"),
                         r"images\[0\] \('\.\./.*etc/passwd'\): /etc/passwd is outside the images folder"),
    "empty polygon": (lambda d: d["annotations"][0].update(segmentation=[[]]),
                      r"annotations\[0\]\.segmentation\[0\]: expected an even number"),
}


@pytest.mark.parametrize("case", [*HOSTILE, "deep nesting", "5000 digits"])
def test_the_command_answers_hostile_files_with_one_line(boxes_coco, tmp_path, case):
    coco_file, images_dir, data = boxes_coco
    if case == "deep nesting":
        coco_file.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
        expected = r"boxes\.json: invalid JSON: arrays or objects nested too deeply"
    elif case == "5000 digits":
        coco_file.write_text(json.dumps(data)[:-1] + ', "x": ' + "9" * 5000 + "}", encoding="utf-8")
        expected = r"boxes\.json: invalid JSON: an integer of 5000 digits"
    else:
        change, expected = HOSTILE[case]
        change(data)
        write_json(coco_file, data)
    db = tmp_path / "cli.db"
    result = autolabel(["import", "--dataset", "site", "--coco", coco_file, "--images", images_dir,
                        "--as-revision", "gt"], db)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(expected, one_line(result.stderr)), result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "message"),
    [("a\x00.png", "not a usable file name: embedded null byte"), ("x" * 5000, "cannot read '.*': File name too long")],
)
def test_an_unusable_file_name_is_named_briefly(store, boxes_coco, name, message):
    coco_file, images_dir, data = boxes_coco
    data["images"][0]["file_name"] = name
    write_json(coco_file, data)
    with pytest.raises(CocoImportError, match=rf"images\[0\] \(.*\): {message}") as info:
        import_coco(store, "site", coco_file, images_dir, name="gt", role="revision")
    assert len(str(info.value)) < 1000
    assert store.list_datasets() == []
