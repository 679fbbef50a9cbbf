"""`autolabel prelabel` as a new user meets it: offline weights, interrupted runs, skipped files,
COCO file names that import reads back, and user text printed as typed. Real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import ROOT

AUTOLABEL = [sys.executable, "-m", "sync.cli"]
CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there: the hub "unreachable" on any machine
_MODEL_VARIABLES = (
    "AUTOLABEL_GDINO_MODEL", "AUTOLABEL_SAM_CHECKPOINT", "AUTOLABEL_SAM_MODEL_TYPE", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE", "AUTOLABEL_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT",
    "AUTOLABEL_YOLO_MODEL",
)


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without any model or hub setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _MODEL_VARIABLES}
    env.update(COLUMNS="200", HF_HOME=str(tmp_path / "hf-home"), AUTOLABEL_CACHE=str(tmp_path / "cache"))
    env.update(AUTOLABEL_DB=f"sqlite:///{tmp_path / 'store.db'}")
    return {**env, **extra}


def autolabel(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        AUTOLABEL + args, check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=150, **kwargs
    )


def lines(stream: str) -> list[str]:
    return [line for line in stream.splitlines() if line.strip()]


def write_images(folder: Path, count: int, *, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        pixels = np.random.default_rng(i).integers(0, 255, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        paths.append(folder / f"img{i}.png")
    return paths


@pytest.fixture()
def tiny_env(tmp_path, tiny_models):
    """Offline, tiny models configured the way `models make-tiny` prints them."""
    return environment(tmp_path, HF_HUB_OFFLINE="1", **tiny_models.environment())


# --------------------------------------------------------------------------- B2: offline weights


def test_unreachable_hub_without_a_model_fails_at_once_with_what_to_set(tmp_path):
    image = write_images(tmp_path / "imgs", 1)[0]
    result = autolabel(["prelabel", str(image), "--prompt", "x", "--out", str(tmp_path / "o.json")],
                       environment(tmp_path, HF_ENDPOINT=CLOSED_PORT))
    assert result.returncode == 2, result.stderr
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr
    (line,) = lines(result.stderr)
    assert "IDEA-Research/grounding-dino-tiny" in line and "not in the Hugging Face cache" in line
    assert CLOSED_PORT in line and "AUTOLABEL_GDINO_MODEL" in line and "--gdino-model" in line


def test_offline_mode_without_a_cached_model_says_what_to_set(tmp_path):
    image = write_images(tmp_path / "imgs", 1)[0]
    result = autolabel(["prelabel", str(image), "--prompt", "x", "--out", str(tmp_path / "o.json"),
                        "--gdino-model", "acme/not-cached"], environment(tmp_path, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert "'acme/not-cached'" in line and "HF_HUB_OFFLINE" in line and "AUTOLABEL_GDINO_MODEL" in line


@pytest.mark.parametrize("value", ["{tmp}/nonexistent/dir", "./no-such-model-dir", "no/such/model"])
def test_a_gdino_path_that_does_not_exist_is_named(tmp_path, value):
    image = write_images(tmp_path / "imgs", 1)[0]
    model = value.format(tmp=tmp_path)
    result = autolabel(["prelabel", str(image), "--prompt", "x", "--out", str(tmp_path / "o.json"),
                        "--gdino-model", model], environment(tmp_path, HF_ENDPOINT=CLOSED_PORT))
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert f"{model!r}: the directory does not exist" in line
    assert "Repo id" not in line


def hub_cache(hf_home: Path, repo_id: str, files_from: Path) -> None:
    """A Hugging Face cache holding ``repo_id`` at ``main``, laid out as the hub client writes it."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in files_from.iterdir():
        if path.is_file():
            (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_a_cached_hub_model_loads_without_the_hub(tmp_path, tiny_models):
    env = environment(tmp_path, HF_ENDPOINT=CLOSED_PORT)
    hub_cache(Path(env["HF_HOME"]), "acme/tiny-gdino", tiny_models.gdino_dir)
    image = write_images(tmp_path / "imgs", 1)[0]
    result = autolabel(["prelabel", str(image), "--prompt", "cat", "--out", str(tmp_path / "o.json"),
                        "--gdino-model", "acme/tiny-gdino"], env)
    assert result.returncode == 0, result.stderr
    assert "Retrying" not in result.stderr
    assert json.loads((tmp_path / "o.json").read_text())["info"]["model"] == "acme/tiny-gdino"


def test_masks_without_a_sam_checkpoint_offline_say_what_to_set(tmp_path, tiny_models):
    image = write_images(tmp_path / "imgs", 1)[0]
    env = environment(tmp_path, HF_HUB_OFFLINE="1", AUTOLABEL_GDINO_MODEL=str(tiny_models.gdino_dir))
    result = autolabel(["prelabel", str(image), "--prompt", "x", "--masks", "--out", str(tmp_path / "o.json")], env)
    assert result.returncode == 2
    error = lines(result.stderr)[-1]
    assert error.startswith("error: SAM vit_h weights are not cached") and "AUTOLABEL_SAM_CHECKPOINT" in error
    result = autolabel(["prelabel", str(image), "--prompt", "x", "--masks", "--out", str(tmp_path / "o.json"),
                        "--sam-checkpoint", str(tmp_path / "gone.pth")], env)
    assert result.returncode == 2
    assert f"SAM checkpoint {str(tmp_path / 'gone.pth')!r} does not exist" in lines(result.stderr)[-1]


def test_url_problem_is_bounded_and_tells_an_answer_from_silence(tmp_path):
    import http.server
    import threading

    from serverless.models.registry import url_problem

    assert "refused" in (url_problem(CLOSED_PORT) or "").lower()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # any HTTP answer, a 404 included, means the server is there
        assert url_problem(f"http://127.0.0.1:{server.server_port}/no-such-file") is None
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("value", "is_path"),
    [("/abs/dir", True), ("./rel", True), ("../up", True), ("~/models/gd", True), ("a/b/c", True),
     ("acme/never-cached", False), ("never-cached-model", False)],
)
def test_what_counts_as_a_path(value, is_path):
    from serverless.models.grounding_dino import locate_weights as gdino_source
    from serverless.models.registry import ModelLoadError

    if is_path:
        with pytest.raises(ModelLoadError, match="the directory does not exist"):
            gdino_source(value)
    else:
        with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
            gdino_source(value)  # the test session runs with HF_HUB_OFFLINE=1 and no such cache entry


def test_an_existing_folder_is_a_path_and_a_file_is_not_a_model(tmp_path):
    from serverless.models.grounding_dino import locate_weights as gdino_source
    from serverless.models.registry import ModelLoadError

    assert gdino_source(str(tmp_path)).load_from == str(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        gdino_source(str(tmp_path / "model.bin"))


# --------------------------------------------------------------------------- model specs (issue 10)


def test_models_named_by_spec_on_the_command_line_or_in_the_ontology(tmp_path, tiny_models):
    image = write_images(tmp_path / "imgs", 1)[0]
    env = environment(tmp_path, HF_HUB_OFFLINE="1")  # no AUTOLABEL_* model variable
    detector = f"grounding-dino:{tiny_models.gdino_dir}"
    segmenter = f"sam:{tiny_models.sam_model_type}:{tiny_models.sam_checkpoint}"
    given = autolabel(["prelabel", str(image), "--prompt", "cat", "--masks", "--out", str(tmp_path / "a.json"),
                       "--detector", detector, "--segmenter", segmenter], env)
    assert given.returncode == 0, given.stderr
    info = json.loads((tmp_path / "a.json").read_text())["info"]
    assert (info["detector"], info["segmenter"], info["tiny_models"]) == (detector, segmenter, True)
    ontology = tmp_path / "site.yaml"
    ontology.write_text(f"models:\n  detector: {detector}\n  segmenter: {segmenter}\nlabels: [{{name: cat}}]\n")
    named = autolabel(["prelabel", str(image), "--ontology", str(ontology), "--masks",
                       "--out", str(tmp_path / "b.json")], env)
    assert named.returncode == 0, named.stderr
    from_ontology = json.loads((tmp_path / "b.json").read_text())["info"]
    assert {**from_ontology, "ontology_hash": None} == {**info, "ontology_hash": None}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--detector", "yolov5:best.pt"], "detector spec 'yolov5:best.pt': unknown model backend 'yolov5'"),
        (["--detector", "yolo:best.pt"], "YOLO checkpoint best.pt does not exist; give yolo:PATH"),
        (["--detector", "yolo"], "the yolo backend has no default weights: give yolo:PATH"),
        (["--detector", "grounding-dino:/x", "--gdino-model", "/y"], "give --detector or --gdino-model, not both"),
        (["--masks", "--segmenter", "sam:vit_q"], "the model type must be one of vit_h, vit_l, vit_b"),
        (["--detector", "sam:vit_b"], "sam is a segmenter, not a detector"),
    ],
)
def test_bad_model_specs_are_one_line_errors(tmp_path, args, fragment):
    image = write_images(tmp_path / "imgs", 1)[0]
    result = autolabel(["prelabel", str(image), "--prompt", "x", "--out", str(tmp_path / "o.json"), *args],
                       environment(tmp_path, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert line.startswith("error: ") and fragment in line, line


# --------------------------------------------------------------------------- B3: resuming


def covered(db: Path, dataset: str) -> dict[str, tuple[bool, int]]:
    """Run name → (finished, images covered), read from the store file while the CLI runs
    (empty until the CLI has made the store and the dataset)."""
    from sync.store import StoreError, open_store

    try:
        with open_store(f"sqlite:///{db}", create=False) as store:
            return {r.name: (r.finished, len(store.covered_samples(r))) for r in store.list_runs(dataset)}
    except StoreError:  # the CLI is still creating the store or the dataset
        return {}


def interrupted(args: list[str], db: Path, env: dict[str, str]) -> tuple[int, str]:
    """``autolabel ARGS`` in a subprocess, sent Ctrl-C once its run ``prelabel-1`` of dataset
    ``site`` covers an image: ``(exit code, stderr)`` (0 when it finished before the signal)."""
    process = subprocess.Popen(
        AUTOLABEL + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - as from a terminal, even under `&`
    )
    try:
        while process.poll() is None and not (db.exists() and covered(db, "site").get("prelabel-1", (0, 0))[1]):
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, stderr


def test_an_interrupted_run_is_resumed_by_the_same_command(tmp_path, tiny_env):
    files = write_images(tmp_path / "imgs", 8)
    args = ["prelabel", str(tmp_path / "imgs"), "--prompt", "cat", "--dataset", "site", "--batch-size", "1"]
    db = tmp_path / "store.db"
    returncode, stderr = interrupted(args, db, tiny_env)
    assert returncode == 130, stderr
    finished, done = covered(db, "site")["prelabel-1"]
    assert not finished and 1 <= done < 8
    assert "run 'prelabel-1' started" in stderr
    assert f"run 'prelabel-1' stopped with {done} of 8 images; run the same command again" in stderr
    assert "--run prelabel-1" in lines(stderr)[-1]

    again = autolabel(args, tiny_env)
    assert again.returncode == 0, again.stderr
    assert f"resuming run 'prelabel-1' (dataset 'site'): {done} of 8 images already done" in again.stderr
    assert f"{8 - done} images," in again.stdout and "run: prelabel-1" in again.stdout
    assert covered(db, "site") == {"prelabel-1": (True, 8)}
    from sync.store import open_store

    with open_store(f"sqlite:///{db}", create=False) as store:
        samples = store.samples("site")
        annotated = store.annotations_of(store.get_run("site", "prelabel-1"))
    assert sorted(s.uri for s in samples) == sorted(str(f.resolve()) for f in files)
    assert set(annotated) <= {s.id for s in samples}


@pytest.fixture()
def store(tmp_path):
    from sync.store import open_store

    with open_store(tmp_path / "rules.db") as opened:
        yield opened


def recorder(store, ontology, files, *, run_name=None, threshold=None, model="m"):
    from sync.prelabel_store import RunRecorder

    params = {"threshold": threshold, "masks": False, "batch_size": 4}
    settings = SimpleNamespace(gdino_model=model, model_revision=lambda ontology: None)  # ModelSettings' two reads
    return RunRecorder(store, "site", run_name, ontology, settings, params, files=files)


def test_the_resume_rule(store, tmp_path, sample_ontology):
    from serverless.detections import Detections
    from serverless.ontology import ontology_from_prompt
    from sync.store import StoreError

    a, b = write_images(tmp_path / "imgs", 2)
    first = recorder(store, sample_ontology, [a, b])
    assert (first.name, first.resumed, first.note) == ("prelabel-1", False, None)
    first.record(a, 32, 24, Detections.empty())

    same = recorder(store, sample_ontology, [b, a])
    assert (same.name, same.resumed, same.pending([a, b])) == ("prelabel-1", True, [b])

    other = recorder(store, sample_ontology, [a, b], threshold=0.5)
    assert (other.name, other.resumed) == ("prelabel-2", False)
    assert other.note == "unfinished run 'prelabel-1' not resumed: it was started with threshold unset (now 0.5)"
    # the newest unfinished run that matches is resumed, whatever newer ones differ
    assert recorder(store, sample_ontology, [a, b]).name == "prelabel-1"
    assert recorder(store, sample_ontology, [a, b], threshold=0.5).name == "prelabel-2"

    model = recorder(store, ontology_from_prompt("cat"), [a, b], model="n", threshold=0.5)
    assert model.name == "prelabel-3"
    assert "another ontology; model m (now n)" in (model.note or "")

    for name in ("prelabel-2", "prelabel-3"):  # finished runs are never resumed nor reported
        store.finish_run(store.get_run("site", name))
    fewer = recorder(store, sample_ontology, [b])
    assert fewer.name == "prelabel-4" and fewer.note == (
        "unfinished run 'prelabel-1' not resumed: it covers images that are not among these inputs"
    )
    store.finish_run(fewer.run)
    changed = r"run 'prelabel-1' of dataset 'site' was started with threshold unset \(now 0.3\)"
    with pytest.raises(StoreError, match=changed):
        recorder(store, sample_ontology, [a, b], run_name="prelabel-1", threshold=0.3)
    assert recorder(store, sample_ontology, [a], run_name="prelabel-1").pending([a, b]) == [b]
    store.finish_run(store.get_run("site", "prelabel-1"))
    fresh = recorder(store, sample_ontology, [a, b])
    assert (fresh.name, fresh.resumed, fresh.note) == ("prelabel-5", False, None)


# --------------------------------------------------------------------------- B4, B1: summary, literal text


def test_missing_arguments_count_as_skipped_and_user_text_is_printed_as_typed(tmp_path, tiny_env):
    image = write_images(tmp_path / "imgs", 1)[0]
    missing = tmp_path / "bad [v2].jpg"
    result = autolabel(["prelabel", str(missing), str(image), "--prompt", "hard hat [red]. cat",
                        "--out", str(tmp_path / "o.json")], tiny_env)
    assert result.returncode == 0, result.stderr
    assert f"skipped {missing}: no such file or folder" in result.stderr
    assert "1 images, " in result.stdout and ", 1 skipped;" in result.stdout
    assert "│ hard hat [red] │" in result.stdout


def test_error_messages_keep_brackets(tmp_path):
    env = environment(tmp_path, HF_HUB_OFFLINE="1")
    missing = tmp_path / "only [v2].jpg"
    result = autolabel(["prelabel", str(missing), "--prompt", "cat", "--out", str(tmp_path / "o.json")], env)
    assert result.returncode == 2
    assert lines(result.stderr) == [
        f"skipped {missing}: no such file or folder", f"error: no image files found in {missing}"
    ]

    ontology = tmp_path / "site [a].yaml"
    ontology.write_text("name: Site [A]\nlabels:\n  - name: cat\n", encoding="utf-8")
    result = autolabel(["prelabel", str(missing), "--ontology", str(ontology)], env)
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert "site [a].yaml:1" in line and "[a-z0-9]([a-z0-9-]*[a-z0-9])?$" in line and "'Site [A]'" in line


# --------------------------------------------------------------------------- B5: file names that import reads


@pytest.mark.parametrize(
    ("arguments", "root", "names"),
    [
        (["imgs"], "imgs", ["img0.png", "img1.png", "sub/img2.png"]),
        (["imgs/img0.png", "imgs/img1.png"], "imgs", ["img0.png", "img1.png"]),
        (["imgs/sub", "other/img3.png"], ".", ["imgs/sub/img2.png", "other/img3.png"]),
    ],
)
def test_coco_file_names_round_trip_through_import(tmp_path, tiny_env, arguments, root, names):
    write_images(tmp_path / "imgs", 2)
    write_images(tmp_path / "imgs" / "sub", 1, start=2)
    write_images(tmp_path / "other", 1, start=3)
    out = tmp_path / "pre.json"
    args = ["prelabel", *[str(tmp_path / a) for a in arguments], "--prompt", "cat", "--out", str(out)]
    result = autolabel([*args, "--dataset", "site"], tiny_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [image["file_name"] for image in data["images"]] == names
    assert data["info"]["images_root"] == str((tmp_path / root).resolve())

    imported = autolabel(["import", "--dataset", "site", "--coco", str(out), "--images", data["info"]["images_root"],
                          "--as-run", "back"], tiny_env)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {len(names)} images" in imported.stdout
    from sync.store import open_store

    with open_store(tiny_env["AUTOLABEL_DB"], create=False) as store:
        assert len(store.samples("site")) == len(names)  # the same samples as the pre-label run
        pre, back = store.get_run("site", "prelabel-1"), store.get_run("site", "back")
        assert store.count_annotations(pre) == store.count_annotations(back)


_PARTS = st.sampled_from(["a", "b", "c d", "[x]", "..e"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(st.lists(_PARTS, min_size=1, max_size=3), min_size=1, max_size=6, unique_by=tuple),
    picks=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=4),
)
def test_file_names_are_relative_to_one_root_that_holds_them_all(tmp_path_factory, files, picks):
    """Whatever mix of folders and files is given, each image is ``root / file_name`` and the
    names are distinct, relative and never climb out of the root."""
    from serverless.images import find_images
    from sync.paths import coco_file_name, images_root

    base = tmp_path_factory.mktemp("tree")
    paths = [base.joinpath(*parts[:-1], parts[-1] + ".png") for parts in files]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    arguments = []
    for which, depth in picks:  # a file, or one of the folders above it
        path = paths[which % len(paths)]
        arguments.append(path if depth == 0 else path.parents[min(depth - 1, len(path.relative_to(base).parts) - 1)])
    found, problems = find_images(arguments)
    root = images_root(arguments)
    names = [coco_file_name(f, root) for f in dict.fromkeys(found)]
    assert not problems and len(set(names)) == len(names)
    for name, path in zip(names, dict.fromkeys(found)):
        assert not name.startswith(("/", "../")) and name != ".."
        assert (root / name).samefile(path)


def test_compile_gives_the_same_prelabels_and_names_what_it_compiled(tmp_path, tiny_env):
    """--compile (torch.compile's eager backend here: the same graph capture as inductor without
    minutes of code generation on this CPU) pre-labels exactly as the eager models do."""
    images = write_images(tmp_path / "imgs", 3)
    plain = autolabel(["prelabel", str(tmp_path / "imgs"), "--prompt", "cat. dog", "--masks", "--threshold", "0.05",
                       "--out", str(tmp_path / "plain.json")], tiny_env)
    assert plain.returncode == 0, plain.stderr
    compiled = autolabel(["prelabel", *map(str, images), "--prompt", "cat. dog", "--masks", "--threshold", "0.05",
                          "--compile", "--out", str(tmp_path / "compiled.json")],
                         {**tiny_env, "AUTOLABEL_COMPILE_BACKEND": "eager"})
    assert compiled.returncode == 0, compiled.stderr
    assert "torch.compile: GroundingDinoForObjectDetection, SAM" in " ".join(compiled.stderr.split())
    assert "torch.compile" not in plain.stderr

    def shapes(name: str) -> list[tuple]:
        coco = json.loads((tmp_path / name).read_text())
        return sorted((a["image_id"], a["category_id"], tuple(np.round(a["bbox"], 2)), a["segmentation"]["counts"])
                      for a in coco["annotations"])

    assert shapes("compiled.json") == shapes("plain.json") and shapes("plain.json")

    bad = autolabel(["prelabel", str(images[0]), "--prompt", "cat", "--out", str(tmp_path / "x.json")],
                    {**tiny_env, "AUTOLABEL_COMPILE": "maybe"})
    assert bad.returncode == 2 and lines(bad.stderr) == [
        "error: AUTOLABEL_COMPILE must be 1, true, yes, 0, false or no, got 'maybe'"]
