"""`prelabel_files(..., workers=N)`: images read in worker processes give the results of reading
them in the calling thread (same order, same detections, same errors in the same place);
`RunRecorder.record_many` stores a batch whole or not at all; ``autolabel prelabel --workers``
records every image once and its runs resume with any number of workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLES
from tests.test_cli_prelabel import autolabel, covered, interrupted, lines, recorder, write_images
from tests.test_cli_prelabel import tiny_env  # noqa: F401 - a fixture the CLI tests share


@pytest.fixture(scope="module")
def detector(tiny_settings, sample_ontology):
    from serverless.pipeline import load_detector

    return load_detector(tiny_settings, sample_ontology, masks=False)


def run(files: list[Path], detector, workers: int, batch_size: int) -> list:
    from serverless.pipeline import prelabel_files

    return list(prelabel_files(files, detector, batch_size=batch_size, workers=workers))


def same(a, b) -> bool:
    """Two `FrameResult`s alike: file, size, error and every detection column."""
    if (a.path, a.width, a.height, a.error) != (b.path, b.width, b.height, b.error):
        return False
    if a.detections is None or b.detections is None:
        return a.detections is b.detections
    columns = ("xyxy", "scores", "class_ids", "labels")
    return all(np.array_equal(getattr(a.detections, c), getattr(b.detections, c)) for c in columns)


def test_workers_give_the_results_of_the_calling_thread(tmp_path, detector):
    photos = sorted(SAMPLES.glob("*.jpg"))
    unreadable = tmp_path / "missing.jpg"  # never written: cannot be read
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    files = [photos[0], unreadable, *photos[1:3], not_an_image, photos[3]]

    here = run(files, detector, workers=0, batch_size=2)
    ahead = run(files, detector, workers=2, batch_size=2)

    assert len(ahead) == len(here) == len(files)
    assert all(same(a, b) for a, b in zip(ahead, here, strict=True))
    errors = {r.path: r.error for r in ahead if r.error}
    assert set(errors) == {unreadable, not_an_image}
    assert errors[unreadable].startswith(f"{unreadable}: cannot read")
    assert errors[not_an_image].startswith(str(not_an_image))
    assert [r.width for r in ahead if r.error is None] == [512, 451, 600, 640]


def test_order_is_kept_batch_by_batch(tmp_path, detector):
    files = write_images(tmp_path / "imgs", 10)
    bad = tmp_path / "imgs" / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    files.insert(4, bad)  # batch 2 of 3: [img3, bad, img4]

    here = run(files, detector, workers=0, batch_size=3)
    ahead = run(files, detector, workers=3, batch_size=3)

    assert [r.path for r in ahead] == [r.path for r in here]
    # a batch's unreadable files come first, then its images in file order
    assert [r.path for r in ahead] == [*files[:3], bad, files[3], *files[5:]]
    assert all(same(a, b) for a, b in zip(ahead, here, strict=True))


def test_workers_below_zero_are_refused(detector):
    from serverless.pipeline import prelabel_files

    with pytest.raises(ValueError, match="workers must be at least 0, got -1"):
        next(prelabel_files([SAMPLES / "rocket.jpg"], detector, workers=-1))


# --------------------------------------------------------------------------- the store


def test_record_many_stores_a_batch_whole_or_not_at_all(tmp_path, sample_ontology):
    from serverless.detections import Detections
    from sync.store import StoreError, open_store

    a, b, c = write_images(tmp_path / "imgs", 3)
    box = Detections(np.array([[1, 1, 8, 8]]), np.array([0.9]), np.array([0]), np.array(["person"]))
    wrong_mask = Detections(box.xyxy, box.scores, box.class_ids, box.labels, masks=np.ones((1, 5, 5), bool))
    with open_store(tmp_path / "batch.db") as store:
        rec = recorder(store, sample_ontology, [a, b, c])
        with pytest.raises(StoreError):
            rec.record_many([(a, 32, 24, box, None), (b, 32, 24, wrong_mask, None)])  # b's mask: 5x5
        with pytest.raises(StoreError):
            rec.record_many([(a, 32, 24, box, None), (c, 0, 24, Detections.empty(), None)])  # width 0
        assert store.covered_samples(rec.run) == [] and store.count_annotations(rec.run) == 0
        assert rec.pending([a, b, c]) == [a, b, c]

        rec.record_many([(a, 32, 24, box, None), (b, 32, 24, Detections.empty(), None)])
        assert len(store.covered_samples(rec.run)) == 2 and store.count_annotations(rec.run) == 1
        assert rec.pending([a, b, c]) == [c]
        resumed = recorder(store, sample_ontology, [a, b, c])
        assert (resumed.name, resumed.pending([a, b, c])) == (rec.name, [c])


# --------------------------------------------------------------------------- the command line


def test_cli_workers_record_every_image_once_and_resume_without_them(tmp_path, tiny_env):
    from sync.store import open_store

    files = write_images(tmp_path / "imgs", 8)
    args = ["prelabel", str(tmp_path / "imgs"), "--prompt", "cat", "--dataset", "site", "--batch-size", "2"]
    db = tmp_path / "store.db"
    returncode, stderr = interrupted([*args, "--workers", "2"], db, tiny_env)
    finished, done = covered(db, "site")["prelabel-1"]
    if returncode == 0:  # it finished before the signal came: nothing left to resume
        assert (finished, done) == (True, 8), stderr
        return
    assert returncode == 130, stderr
    assert not finished and 2 <= done < 8 and done % 2 == 0  # whole batches only
    again = autolabel([*args, "--workers", "0"], tiny_env)
    assert again.returncode == 0, again.stderr
    assert f"resuming run 'prelabel-1' (dataset 'site'): {done} of 8 images already done" in again.stderr
    assert f"{8 - done} images," in again.stdout
    assert covered(db, "site") == {"prelabel-1": (True, 8)}
    with open_store(f"sqlite:///{db}", create=False) as store:
        uris = [s.uri for s in store.samples("site")]
    assert sorted(uris) == sorted(str(f.resolve()) for f in files)  # each image once


def test_cli_workers_below_zero_are_one_line(tmp_path, tiny_env):
    image = write_images(tmp_path / "imgs", 1)[0]
    refused = autolabel(["prelabel", str(image), "--prompt", "cat", "--out", str(tmp_path / "x.json"),
                         "--workers", "-1"], tiny_env)
    assert refused.returncode == 2
    assert lines(refused.stderr) == ["error: --workers must be at least 0, got -1"]
