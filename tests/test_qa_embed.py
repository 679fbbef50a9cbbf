"""Embeddings for QA (`sync.qa.embed`, ``autolabel embed``, `sync.store.embeddings`): images and
annotation crops embedded by a tiny random-init CLIP in its real on-disk format, stored with
their provenance, L2-normalised, never computed twice; an interrupted run keeps its finished
batches; crops of the latest human revision (else the imported one) or of a named run; the
one-line errors (no embeddings yet, another model, an empty dataset, no readable image); the
store methods on SQLite and PostgreSQL and the schema 4 → 5 migration."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import create_engine, inspect, select, text
from typer.testing import CliRunner

from serverless.detections import Detections
from serverless.models import registry
from serverless.models.clip import ClipModel
from sync.cli import app
from sync.console import CliError
from sync.qa.embed import CROP_MARGIN, crop_box, embed_dataset, embedding_model, require_embeddings
from sync.qa.errors import QaError
from sync.store import Provenance, SampleIn, StoreError, open_store, upgrade_store
from sync.store.records import AnnotationIn
from sync.store.schema import Embedding
from tests.test_store import pg_admin_url, stamp, store_url  # noqa: F401 (fixtures)

SIZES = {"a.png": (60, 40), "b.png": (50, 50), "c.png": (40, 30)}
"""The dataset's image files: name → (width, height)."""


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory) -> str:
    """``clip:DIR`` of a tiny CLIP (16-d embeddings)."""
    return "clip:" + registry.backend("clip").tiny(tmp_path_factory.mktemp("tiny-clip"), 0)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (width, height) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name)
    return folder


def shapes(items) -> Detections:
    """A revision's annotations of one image: ``[(label, box or None for a tag)]``."""
    n = len(items)
    return Detections(
        xyxy=np.array([box or [0, 0, 1, 1] for _, box in items], np.float32).reshape(-1, 4),
        scores=np.ones(n, np.float32),
        class_ids=np.zeros(n, np.int64),
        labels=np.array([label for label, _ in items], dtype=str),
        data={"shape_type": np.array(["rectangle" if box else "tag" for _, box in items], dtype=str)},
    )


def add_revision(store, ds, samples: dict, job_id: int):
    """A human revision (CVAT job ``job_id``) of ``{sample_id: [(label, box or None)]}``."""
    task = store.link_cvat_task(ds, "https://cvat.example.com", job_id)
    store.link_frames(task, dict(enumerate(samples)))
    when = datetime(2026, 1, job_id, tzinfo=UTC)
    job = store.upsert_cvat_job(task, job_id, start_frame=0, stop_frame=len(samples) - 1, updated_date=when)
    tags = {sid: shapes([(label, None) for label, box in items if box is None]) for sid, items in samples.items()}
    det = {sid: shapes([(label, box) for label, box in items if box is not None]) for sid, items in samples.items()}
    return store.record_human_revision(job, det, tags={k: v for k, v in tags.items() if len(v)}, updated_date=when)


@pytest.fixture
def site(tmp_path, image_dir):
    """Dataset ``site``: a.png, b.png, c.png, a missing file and a URL. Human revision 1 of a
    and b (a: a box, a box at the edge and a tag; b: a box), human revision 2 of a (one box), an
    imported revision of c, a pre-label run ``pre`` of a (two boxes)."""
    store = open_store(tmp_path / "store.db")
    ds = store.get_or_create_dataset("site")
    uris = [str(image_dir / name) for name in SIZES] + [str(tmp_path / "gone.png"), "https://example.com/x.jpg"]
    sizes = [*SIZES.values(), (8, 8), (8, 8)]
    a, b, c, gone, url = store.add_samples(ds, [SampleIn(u, w, h) for u, (w, h) in zip(uris, sizes)])
    rev1 = add_revision(store, ds, {a: [("car", [5, 5, 25, 20]), ("person", [30, 2, 60, 40]), ("night", None)],
                                    b: [("dog", [3, 3, 3, 3])]}, 1)
    rev2 = add_revision(store, ds, {a: [("cat", [10, 10, 20, 20])]}, 2)
    imported = store.add_finished_run(ds, "import", [AnnotationIn(c, "cup", 1, 1, 10, 10)], name="truth-file",
                                      provenance=Provenance(params={"role": "revision"}))
    pre = store.add_finished_run(ds, "prelabel", [AnnotationIn(a, "car", 4, 4, 26, 21, score=0.8),
                                                  AnnotationIn(a, "cat", 9, 9, 21, 22, score=0.7)], name="pre")
    yield {"store": store, "ids": (a, b, c, gone, url), "rev1": rev1, "rev2": rev2, "imported": imported, "pre": pre,
           "url": f"sqlite:///{tmp_path / 'store.db'}"}
    store.close()


@pytest.fixture
def spy(monkeypatch):
    """The shapes of the images each `ClipModel.image_embeddings` call was given, in order."""
    calls: list[list[tuple[int, ...]]] = []
    real = ClipModel.image_embeddings

    def recording(self, images):
        calls.append([image.shape for image in images])
        return real(self, images)

    monkeypatch.setattr(ClipModel, "image_embeddings", recording)
    return calls


def rows(store, kind):
    with store.session() as s:
        found = s.execute(select(Embedding).where(Embedding.kind == kind).order_by(Embedding.sample_id,
                                                                                  Embedding.item)).scalars()
        return [(r.sample_id, r.annotation_id, r.source_run_id, r.model, r.model_revision, r.dim) for r in found]


# --------------------------------------------------------------------------- images


def test_images_are_embedded_once_with_their_provenance(site, clip_spec, spy):
    store, (a, b, c, gone, url) = site["store"], site["ids"]
    progress = []
    summary = embed_dataset(store, "site", model_spec=clip_spec, batch_size=2, progress=lambda *p: progress.append(p))
    assert (summary.model, summary.images.added, summary.images.stored, summary.objects) == (clip_spec, 3, 0, None)
    assert {s.uri.rsplit("/", 1)[-1]: s.reason for s in summary.images.skipped} == {
        "gone.png": "no such file", "x.jpg": "not a local file (a URL)"}
    assert [len(call) for call in spy] == [2, 1] and progress[0] == ("image", 0, 5) and progress[-1] == ("image", 5, 5)
    assert rows(store, "image") == [(sid, None, None, clip_spec, None, 16) for sid in (a, b, c)]
    found = require_embeddings(store, "site", clip_spec)
    assert found.sample_ids.tolist() == [a, b, c] and found.annotation_ids.tolist() == [-1] * 3
    assert found.vectors.dtype == np.float32 and found.vectors.shape == (3, 16)
    assert np.allclose(np.linalg.norm(found.vectors, axis=1), 1.0, atol=1e-5)
    # the stored vectors are the model's, whatever the batch size
    again = ClipModel.load(clip_spec.removeprefix("clip:"), device="cpu").image_embeddings(
        [np.array(Image.open(store.samples("site", ids=[b])[0].uri).convert("RGB"))])
    assert np.allclose(found.vectors[1], again[0], atol=1e-5)

    spy.clear()
    second = embed_dataset(store, "site", model_spec=clip_spec)
    assert (second.images.added, second.images.stored, second.images.skipped_items) == (0, 3, 2) and spy == []


def test_an_interrupted_run_keeps_its_finished_batches(site, clip_spec, monkeypatch):
    store = site["store"]
    real, calls = ClipModel.image_embeddings, []

    def interrupted(self, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(ClipModel, "image_embeddings", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(store, "site", model_spec=clip_spec, batch_size=1)
    assert store.embedding_models("site") == {clip_spec: {"image": 1}}
    summary = embed_dataset(store, "site", model_spec=clip_spec, batch_size=1)
    assert (summary.images.added, summary.images.stored) == (2, 1) and calls == [1, 1, 1, 1]


# --------------------------------------------------------------------------- object crops


def test_objects_are_the_shapes_of_the_latest_revision_per_sample(site, clip_spec, spy):
    store, (a, b, c, _, _) = site["store"], site["ids"]
    summary = embed_dataset(store, "site", model_spec=clip_spec, objects=True, batch_size=8)
    assert summary.source == "latest human revision else imported revision per sample"
    assert (summary.objects.added, summary.objects.stored, summary.objects.skipped) == (3, 0, ())
    rev2, rev1, imported = (site[k].id for k in ("rev2", "rev1", "imported"))
    found = rows(store, "object")
    assert [(sid, run) for sid, _, run, *_ in found] == [(a, rev2), (b, rev1), (c, imported)]  # no tag, no rev1 of a
    # crops: the box widened by 10 % each side, outward to whole pixels, clipped, at least one
    # pixel (b's empty box)
    assert spy[-1] == [(12, 12, 3), (1, 1, 3), (11, 11, 3)]
    assert crop_box([10, 10, 20, 20], 60, 40) == (9, 9, 21, 21) and CROP_MARGIN == 0.1
    objects = require_embeddings(store, "site", clip_spec, "object")
    assert objects.source_run_ids.tolist() == [rev2, rev1, imported] and objects.annotation_ids.min() > 0

    named = embed_dataset(store, "site", model_spec=clip_spec, objects=True, run="pre")
    assert (named.images.added, named.images.stored, named.objects.added, named.source) == (0, 3, 2, "run pre (prelabel)")
    assert store.embedding_models("site") == {clip_spec: {"image": 3, "object": 5}}
    assert embed_dataset(store, "site", model_spec=clip_spec, objects=True, run="pre").objects.stored == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-50, 150, allow_nan=False), min_size=4, max_size=4),
    st.integers(1, 100),
    st.integers(1, 100),
    st.floats(0, 0.5),
)
def test_a_crop_lies_in_the_image_and_holds_its_box(box, width, height, margin):
    x1, y1 = min(box[0], box[2]), min(box[1], box[3])
    x2, y2 = max(box[0], box[2]), max(box[1], box[3])
    left, top, right, bottom = crop_box([x1, y1, x2, y2], width, height, margin)
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    if 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height:
        assert left <= x1 and top <= y1 and right >= x2 and bottom >= y2


# --------------------------------------------------------------------------- bad input


def test_missing_embeddings_and_another_model_say_what_to_run(site, clip_spec):
    store = site["store"]
    with pytest.raises(QaError, match=r"dataset 'site' has no image embeddings yet: run `autolabel embed --dataset site`$"):
        require_embeddings(store, "site")
    command = re.escape(f"`autolabel embed --dataset site --model {clip_spec} --objects`")
    with pytest.raises(QaError, match=f"no object embeddings yet: run {command}"):
        require_embeddings(store, "site", clip_spec, "object")
    embed_dataset(store, "site", model_spec=clip_spec)
    default = embedding_model(None).text
    assert default == "clip:openai/clip-vit-base-patch32"
    with pytest.raises(QaError, match=re.escape(
        f"the image embeddings of dataset 'site' were made with {clip_spec}, not {default}: "
        f"run `autolabel embed --dataset site` or pass --model {clip_spec}"
    )):
        require_embeddings(store, "site", "clip")


def test_bad_requests_are_refused_in_one_line(site, clip_spec, tmp_path):
    store = site["store"]
    store.get_or_create_dataset("empty")
    with pytest.raises(QaError, match="dataset 'empty' has no samples"):
        embed_dataset(store, "empty", model_spec=clip_spec)
    with pytest.raises(QaError, match="dataset 'empty' has no samples"):
        require_embeddings(store, "empty")
    remote = store.get_or_create_dataset("remote")
    store.add_samples(remote, [SampleIn("https://example.com/1.jpg", 8, 8), SampleIn(str(tmp_path / "no.png"), 8, 8)])
    with pytest.raises(QaError, match=r"no image of dataset 'remote' can be read \(2 skipped, e.g. https://example.com/1.jpg: not a local file"):
        embed_dataset(store, "remote", model_spec=clip_spec)
    with pytest.raises(QaError, match="has no human revision to crop objects from"):
        embed_dataset(store, "remote", model_spec=clip_spec, objects=True)
    for spec, message in (("sam", "sam is a segmenter"), ("nope:x", "'nope' is not a model backend")):
        with pytest.raises(QaError, match=f"--model '{spec}': embeddings need an image-text model such as clip:.*; {message}"):
            embed_dataset(store, "site", model_spec=spec)
    with pytest.raises(QaError, match="--run pre names the run whose annotations are cropped: add --objects"):
        embed_dataset(store, "site", model_spec=clip_spec, run="pre")
    with pytest.raises(StoreError, match="has no run named 'nope'"):
        embed_dataset(store, "site", model_spec=clip_spec, objects=True, run="nope")
    with pytest.raises(QaError, match="--batch-size must be a positive integer"):
        embed_dataset(store, "site", model_spec=clip_spec, batch_size=0)
    with pytest.raises(QaError, match="--device 'tpu9'"):
        embed_dataset(store, "site", model_spec=clip_spec, device="tpu9")
    assert store.embedding_models("site") == {}


def test_the_embed_command(site, clip_spec):
    env = {"AUTOLABEL_DB": site["url"], "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    result = CliRunner().invoke(app, ["embed", "--dataset", "site", "--model", clip_spec, "--objects"], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "images: embedded 3 new, 0 already stored, 2 skipped" in result.stdout
    assert "object crops (latest human revision else imported revision per sample): embedded 3 new" in result.stdout
    assert "skipped https://example.com/x.jpg: not a local file (a URL)" in result.stderr
    for args, message in (
        (["--model", "owlv2"], "--model 'owlv2': embeddings need an image-text model"),
        (["--run", "pre"], "add --objects"),
    ):
        failed = CliRunner().invoke(app, ["embed", "--dataset", "site", *args], env=env)
        assert isinstance(failed.exception, CliError) and message in str(failed.exception)


# --------------------------------------------------------------------------- the store


def unit(*values):
    vector = np.asarray(values, np.float32)
    return vector / np.linalg.norm(vector)


def test_store_embeddings_are_idempotent_and_checked(store_url):
    with open_store(store_url) as store:
        ds = store.get_or_create_dataset("d")
        a, b = store.add_samples(ds, [SampleIn("/i/a.png", 8, 8), SampleIn("/i/b.png", 8, 8)])
        run = store.add_finished_run(ds, "import", [AnnotationIn(a, "car", 0, 0, 4, 4), AnnotationIn(b, "car", 1, 1, 5, 5)])
        (ann_a,), (ann_b,) = (store.annotations_of(run)[s].data["annotation_id"].tolist() for s in (a, b))
        model = "clip:x"
        assert store.add_embeddings(ds, model, "image", [(a, None, None, unit(1, 0, 0))], model_revision="abc") == 1
        assert store.add_embeddings(ds, model, "image", [(a, None, None, unit(0, 1, 0)), (b, None, None, unit(0, 0, 1))]) == 1
        assert store.add_embeddings(ds, model, "object", [(a, ann_a, None, unit(1, 1, 0)), (b, ann_b, run.id, unit(1, 0, 1))]) == 2
        assert store.add_embeddings(ds, model, "object", [(a, ann_a, None, unit(0, 1, 1))]) == 0
        images = store.embeddings(ds, model, "image")
        assert images.sample_ids.tolist() == [a, b] and np.allclose(images.vectors[0], [1, 0, 0])  # not overwritten
        objects = store.embeddings(ds, model, "object", sample_ids=[b])
        assert (objects.annotation_ids.tolist(), objects.source_run_ids.tolist(), objects.dim) == ([ann_b], [run.id], 3)
        assert store.embedded_keys(ds, model, "object") == {(a, ann_a), (b, ann_b)}
        assert store.embedded_keys(ds, model, "image") == {(a, None), (b, None)}
        assert store.embedding_models(ds) == {model: {"image": 2, "object": 2}}
        assert len(store.embeddings(ds, "clip:other", "image")) == 0 and store.embeddings(ds, "clip:other", "image").dim == 0
        for args, message in (
            (("image", [(a, None, None, unit(1, 0))]), "these vectors have 2 dimensions, the stored ones 3"),
            (("image", [(a, None, None, np.array([1.0, 1.0, 0.0]))]), "stored L2-normalised, this one has norm 1.41"),
            (("image", [(a, None, None, np.array([np.nan, 0.0, 0.0]))]), "NaN or infinity"),
            (("image", [(a, ann_a, None, unit(1, 0, 0))]), "an image embedding has no annotation id"),
            (("object", [(b, ann_a, None, unit(1, 0, 0))]), f"annotation {ann_a} is of sample {a}, not {b}"),
            (("object", [(a, ann_a, run.id + 1, unit(1, 0, 0))]), f"annotation {ann_a} is of run id {run.id}"),
            (("object", [(a, 10**9, None, unit(1, 0, 0))]), "there is no annotation"),
            (("image", [(10**9, None, None, unit(1, 0, 0))]), "are not samples of dataset"),
            (("image", [(a, None, None, unit(1, 0, 0)), (a, None, None, unit(1, 0, 0))]), "given twice"),
            (("shape", [(a, None, None, unit(1, 0, 0))]), "kind must be one of"),
        ):
            with pytest.raises(StoreError, match=message):
                store.add_embeddings(ds, model, *args)
        assert store.embedding_models(ds) == {model: {"image": 2, "object": 2}}


def test_a_version_4_store_gets_the_embeddings_table(store_url):
    with open_store(store_url) as store:
        store.get_or_create_dataset("kept")
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE embeddings"))
        stamp(store, 4)
    with pytest.raises(StoreError, match="autolabel store migrate"):
        open_store(store_url)
    store, before = upgrade_store(store_url)
    with store:
        assert before == 4 and [d.name for d in store.list_datasets()] == ["kept"]
        (sid,) = store.add_samples("kept", [SampleIn("/i/a.png", 8, 8)])
        assert store.add_embeddings("kept", "clip:x", "image", [(sid, None, None, unit(1, 0))]) == 1
        found = inspect(store.engine)
        assert {i["name"] for i in found.get_indexes("embeddings")} >= {"ix_embeddings_dataset_model_kind"}
        keys = found.get_unique_constraints("embeddings") + [i for i in found.get_indexes("embeddings") if i["unique"]]
        assert {tuple(k["column_names"]) for k in keys} == {("model", "kind", "sample_id", "item")}
