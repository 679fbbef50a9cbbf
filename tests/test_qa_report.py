"""The QA report of ``autolabel qa mistakes --html`` (`sync.qa.report`) and its 2-D map
(`sync.qa.projection`), with the tiny random-init CLIP world of `tests.test_qa_cli`:

- ``project_2d``: shape, the chosen rows, the same map for the same seed, the subsample cap;
- the page holds both maps (by id), one thumbnail per top suspect with its reason escaped, the
  counts, and nothing loaded from elsewhere;
- ``--html`` on the CLI writes it; an image that cannot be read is a note on the page;
- ``qa duplicates --html`` shows each planted group with a thumbnail per member.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from sync.qa.errors import QaError
from sync.qa.projection import project_2d
from sync.qa.report import MAP_LABEL_ID, MAP_SCORE_ID, mistakes_page
from sync.qa.scores import AnnotationScore, Mistakes, annotation_mistakes
from tests.test_qa_cli import FLIPPED, OBJECT_IMAGES, THRESHOLD, ok, run_cli, world  # noqa: F401  (the fixture)

# --------------------------------------------------------------------------- projection


def test_project_2d_shape_determinism_and_cap():
    vectors = np.random.default_rng(1).normal(size=(60, 16)).astype(np.float32)
    xy, chosen = project_2d(vectors, seed=3)
    assert xy.shape == (60, 2) and np.isfinite(xy).all() and chosen.tolist() == list(range(60))
    again, _ = project_2d(vectors, seed=3)
    np.testing.assert_array_equal(xy, again)
    small, picked = project_2d(vectors, max_points=25, seed=3)
    assert small.shape == (25, 2) and len(set(picked.tolist())) == 25
    assert picked.tolist() == sorted(picked.tolist()) and 0 <= picked.min() and picked.max() < 60
    np.testing.assert_array_equal(project_2d(vectors, max_points=25, seed=3)[1], picked)


def test_project_2d_few_points_and_bad_input():
    xy, chosen = project_2d(np.eye(3, dtype=np.float32))
    assert xy.shape == (3, 2) and len({tuple(p) for p in xy.tolist()}) == 3 and chosen.tolist() == [0, 1, 2]
    assert project_2d(np.zeros((0, 4)))[0].shape == (0, 2)
    with pytest.raises(QaError, match="2-D array"):
        project_2d(np.zeros(4))
    with pytest.raises(QaError, match="max_points"):
        project_2d(np.zeros((5, 4)), max_points=0)


# --------------------------------------------------------------------------- the page


def images_of(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]*)"', page)


def test_the_page_has_both_maps_and_a_thumbnail_per_suspect(world):
    store = world["store"]
    found = annotation_mistakes(store, "objs", model=world["clip"], k=3, evaluation=False)
    # a reason with markup in it is escaped (reasons and labels come from users' label names)
    first = max(found.annotations, key=lambda a: a.score)
    marked = AnnotationScore(first.sample_id, first.annotation_id, first.label, first.score, "<b>&'x'</b>")
    found = Mistakes(found.dataset, found.model, found.source, found.k, found.classifier, found.signals,
                     tuple(marked if a == first else a for a in found.annotations))
    page = mistakes_page(store, found, top=3)
    assert f'id="{MAP_LABEL_ID}"' in page and f'id="{MAP_SCORE_ID}"' in page
    sources = images_of(page)
    assert sum(s.startswith("data:image/png;base64,") for s in sources) == 2
    assert sum(s.startswith("data:image/jpeg;base64,") for s in sources) == 3
    assert all(s.startswith("data:") for s in sources) and not re.search(r"(src|href)=\"https?:", page)
    assert "<script" not in page and "<link" not in page
    assert [int(n) for n in re.findall(r'id="suspect-(\d+)"', page)] == [1, 2, 3]
    assert "&lt;b&gt;&amp;&#x27;x&#x27;&lt;/b&gt;" in page and "<b>&'x'</b>" not in page
    assert f"objects{FLIPPED}.png" in page.split('id="suspect-1"')[1].split("</figure>")[0]
    assert f"all {2 * OBJECT_IMAGES} annotations" in page


def test_a_map_of_a_sample_says_how_many_it_shows(world):
    from sync.qa.report import render_mistakes_page

    found = annotation_mistakes(world["store"], "objs", model=world["clip"], k=3, evaluation=False)
    xy = np.zeros((4, 2))
    page = render_mistakes_page(found, xy, np.arange(4), [])
    assert f"4 of the {2 * OBJECT_IMAGES} annotations, chosen at random" in page
    assert 'id="suspect-1"' not in page


def test_duplicates_html_shows_each_group_with_thumbnails(world, tmp_path):
    page_file = tmp_path / "dups.html"
    ok(run_cli(world["env"], "qa", "duplicates", "--dataset", "dups", "--model", world["clip"],
               "--threshold", THRESHOLD, "--html", page_file))
    page = page_file.read_text(encoding="utf-8")
    assert re.findall(r'<h2 id="group-(\d+)">', page) == ["1", "2"]
    members = re.findall(r'<figure id="group-(\d+)-\d+">', page)
    assert sorted(Counter(members).values()) == [2, 4]
    assert len(images_of(page)) == 6 and all(s.startswith("data:image/jpeg;base64,") for s in images_of(page))
    assert "scene0-q60.jpg" in page and "exact" in page


def test_cli_html_and_an_unreadable_image_is_a_note(world, tmp_path):
    page_file = tmp_path / "report" / "qa.html"
    result = ok(run_cli(world["env"], "qa", "mistakes", "--dataset", "objs", "--model", world["clip"], "--k", "3",
                        "--top", "2", "--no-evaluation", "--html", page_file))
    assert f"report: {page_file}" in result.stderr.replace("\n", "")
    page = page_file.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and len(images_of(page)) == 2 + 2
    assert "label &#x27;checker&#x27; but 3 of 3 nearest are &#x27;stripes&#x27;" in page

    flipped = world["root"] / "images" / f"objects{FLIPPED}.png"
    flipped.write_bytes(b"not an image")  # last in this module (its own world): the embeddings are stored already
    ok(run_cli(world["env"], "qa", "mistakes", "--dataset", "objs", "--model", world["clip"], "--k", "3",
               "--top", "2", "--no-evaluation", "--html", page_file))
    page = page_file.read_text(encoding="utf-8")
    suspect = page.split('id="suspect-1"')[1].split("</figure>")[0]
    assert '<p class="note">no thumbnail: the file changed since it was stored' in suspect and "<img" not in suspect
    assert len(images_of(page)) == 2 + 1

