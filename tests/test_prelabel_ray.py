"""`autolabel prelabel --engine ray` (`sync.ray_prelabel`) on one local Ray cluster per module,
tiny models and a PostgreSQL store: the same labels as the local engine, each image covered once
when a worker is killed mid-run or a run is resumed by either engine, the idempotent batch write
(`sync.prelabel_store.record_batch` with ``skip_covered``) under a concurrent writer, and bad input
refused in one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from serverless.detections import Detections
from sync.cli import _run_params, app
from sync.console import CliError
from sync.prelabel_store import RunRecorder, record_batch, sample_uri
from sync.store import SampleIn, StoreError, open_store
from tests.conftest import ROOT, SAMPLES
from tests.test_cli_prelabel import autolabel, environment, lines, write_images
from tests.test_store import pg_admin_url, postgres_schema  # noqa: F401 (fixture)

ONTOLOGY = str(SAMPLES / "ontology.yaml")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray for the module (each engine call finds it running and leaves it so)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def pg_url(pg_admin_url, monkeypatch) -> str:  # noqa: F811 (fixture)
    """A fresh PostgreSQL store, also the CLI's (``AUTOLABEL_DB``)."""
    with postgres_schema(pg_admin_url) as url:
        rendered = url.render_as_string(hide_password=False)
        monkeypatch.setenv("AUTOLABEL_DB", rendered)
        yield rendered


@pytest.fixture
def tiny_invoke(tiny_models, monkeypatch):
    """``autolabel prelabel ARGS --ontology ONTOLOGY --batch-size 2`` in this process, pointed at
    the tiny models; its `click.testing.Result`."""
    for name, value in tiny_models.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def invoke(*args: str):
        return CliRunner().invoke(app, ["prelabel", *args, "--ontology", ONTOLOGY, "--batch-size", "2"])

    return invoke


@pytest.fixture
def tiny_cli(tiny_invoke):
    """`tiny_invoke` that must succeed; its output."""

    def run(*args: str) -> str:
        result = tiny_invoke(*args)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    return run


def image_folder(tmp_path: Path, count: int = 6) -> tuple[Path, list[Path]]:
    """``count`` readable images of one size and an unreadable file, in one folder."""
    folder = tmp_path / "imgs"
    files = write_images(folder, count)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder, files


def by_uri(store, dataset: str, run_name: str) -> dict[str, Detections]:
    run = store.get_run(dataset, run_name)
    uris = {s.id: s.uri for s in store.samples(dataset)}
    return {uris[sample_id]: det for sample_id, det in store.annotations_of(run).items()}


def ordered(det: Detections) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Boxes, scores and labels in one canonical order (a run's rows come back by id)."""
    order = np.lexsort((*det.xyxy.T[::-1], det.scores))
    return det.xyxy[order], det.scores[order], [det.labels[i] for i in order]


def test_the_ray_engine_labels_a_datasets_images_once_as_the_local_engine_does(tmp_path, pg_url, tiny_cli):
    folder, files = image_folder(tmp_path)
    tiny_cli(str(folder), "--dataset", "d", "--run", "local")
    output = tiny_cli("--dataset", "d", "--run", "ray", "--engine", "ray", "--ray-workers", "1")  # its samples
    assert "6 images" in output and "0 skipped" in output
    with open_store(pg_url) as store:
        run = store.get_run("d", "ray")
        assert run.finished and len(store.covered_samples(run)) == len(files)
        local, ray = by_uri(store, "d", "local"), by_uri(store, "d", "ray")
    assert set(ray) == set(local) == {sample_uri(f) for f in files}
    assert sum(len(det) for det in ray.values()) > 0
    for uri, expected in local.items():
        boxes, scores, labels = ordered(ray[uri])
        want_boxes, want_scores, want_labels = ordered(expected)
        assert labels == want_labels, uri
        np.testing.assert_allclose(boxes, want_boxes, atol=1e-3)
        np.testing.assert_allclose(scores, want_scores, atol=1e-4)


def label_writers(*, other_than: frozenset[int] = frozenset(), labelling: bool = False) -> list[psutil.Process]:
    """This module's Ray workers that run the `LabelWriter` actor (their process title names it),
    but for the pids ``other_than`` (an earlier test's, still exiting); with ``labelling``, only
    those running a batch (not loading the models: a worker killed then is restarted without
    its batch being retried). Ray may have started the process before the test: its title, not
    its start time, says what it runs."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            title = process.cmdline()
        except psutil.NoSuchProcess:
            continue
        if process.pid in other_than or not title or not title[0].startswith("ray::") or "LabelWriter" not in title[0]:
            continue
        if not labelling or not title[0].endswith(".__init__"):
            found.append(process)
    return found


def covered_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM run_samples")).scalar_one()


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_worker_killed_mid_run_is_restarted_and_every_image_is_covered_once(
    tmp_path, pg_url, tiny_settings, sample_ontology
):
    from sync.ray_prelabel import prelabel_with_ray

    files = write_images(tmp_path / "imgs", 10)
    params = _run_params(sample_ontology, tiny_settings, masks=False, threshold=None, batch_size=2)
    result = {}
    open_store(pg_url).close()  # the schema, before this test reads it

    def drive() -> None:
        result["outcome"] = prelabel_with_ray(
            files, sample_ontology, tiny_settings, store_url=pg_url, dataset="k", run_name="k", batch_size=2,
            workers=1, params=params,
        )

    driver = threading.Thread(target=drive)
    before = frozenset(p.pid for p in label_writers())
    driver.start()
    engine = create_engine(pg_url)
    try:
        wait_for(lambda: covered_count(engine) >= 2 or not driver.is_alive(), "the first batch in the store")
        with engine.begin() as conn:  # no batch commits while this holds the table: the kill lands mid-run
            conn.execute(text("LOCK TABLE run_samples IN EXCLUSIVE MODE"))
            covered_at_kill = conn.execute(text("SELECT count(*) FROM run_samples")).scalar_one()
            (victim,) = label_writers(other_than=before)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            wait_for(lambda: any(p.pid != victim.pid for p in label_writers(other_than=before)), "Ray to restart the actor")
        driver.join(timeout=240)
    finally:
        engine.dispose()
    assert not driver.is_alive() and "outcome" in result
    assert 2 <= covered_at_kill < len(files)
    outcome = result["outcome"]
    with open_store(pg_url) as store:
        run = store.get_run("k", "k")
        covered = store.covered_samples(run)
        assert run.finished and outcome.done == len(files) and not outcome.errors
        assert sorted({s.uri for s in store.samples("k", ids=covered)}) == sorted(sample_uri(f) for f in files)
        assert len(covered) == len(files)
        assert store.count_annotations(run) == outcome.detections  # each image's rows written once


def partial_run(pg_url, name, files, ontology, settings) -> None:
    """What an interrupted ``autolabel prelabel --run NAME`` leaves: its first batch stored."""
    from serverless.pipeline import load_pipeline, prelabel_files

    params = _run_params(ontology, settings, masks=False, threshold=None, batch_size=2)
    detector, classifier = load_pipeline(settings, ontology, masks=False)
    with open_store(pg_url) as store:
        recorder = RunRecorder(store, "r", name, ontology, settings, params, files=files)
        first = list(prelabel_files(files[:2], detector, classifier=classifier, batch_size=2))
        recorder.record_many([(r.path, r.width, r.height, r.detections, r.tags) for r in first])


@pytest.mark.parametrize("engine", ["ray", "local"])
def test_an_interrupted_run_is_resumed_by_either_engine_with_every_image_once(
    tmp_path, pg_url, tiny_cli, tiny_settings, sample_ontology, engine
):
    folder, files = image_folder(tmp_path)
    partial_run(pg_url, "half", files, sample_ontology, tiny_settings)
    output = tiny_cli(str(folder), "--dataset", "r", "--run", "half", "--engine", engine)
    assert "resuming run 'half'" in output and "2 of 7 images already done" in output
    assert "4 images" in output and "1 skipped" in output and "broken.png" in output  # reported, not covered
    with open_store(pg_url) as store:
        run = store.get_run("r", "half")
        covered = store.covered_samples(run)
        assert run.finished and len(covered) == len(set(covered)) == len(files)
        assert {s.uri for s in store.samples("r", ids=covered)} == {sample_uri(f) for f in files}


# --------------------------------------------------------------------------- the idempotent write


def one_box() -> Detections:
    return Detections(xyxy=np.array([[1, 1, 9, 9]], np.float32), scores=np.array([0.9], np.float32),
                      class_ids=np.zeros(1, np.int64), labels=["cat"])


def test_a_batch_written_twice_covers_each_image_once(tmp_path, pg_url):
    files = write_images(tmp_path / "imgs", 2)
    det = one_box()
    rows = [(f, 32, 24, det, None) for f in files]
    with open_store(pg_url) as store:
        dataset = store.get_or_create_dataset("w")
        run = store.create_run(dataset, "prelabel")
        assert record_batch(store, dataset, run, rows, skip_covered=True) == 2
        assert record_batch(store, dataset, run, rows, skip_covered=True) == 0  # the retried batch
        with pytest.raises(StoreError, match="already covers"):
            record_batch(store, dataset, run, rows)
        assert store.count_annotations(run) == 2 and len(store.covered_samples(run)) == 2


def test_a_concurrent_writer_of_the_same_image_is_settled_by_the_primary_key(pg_url):
    """The write checks what the run covers, another writer covers an image before this one
    inserts it: the primary key conflict makes the write filter once more and skip it."""
    det = one_box()
    name = f"race-{uuid.uuid4().hex[:8]}"
    racer_url = f"{pg_url}&application_name={name}" if "?" in pg_url else f"{pg_url}?application_name={name}"
    with open_store(pg_url) as store, open_store(racer_url) as racer:
        dataset = store.get_or_create_dataset("c")
        run = store.create_run(dataset, "prelabel")
        ids = store.add_samples(dataset, [SampleIn("/x/a.png", 32, 24), SampleIn("/x/b.png", 32, 24)])
        with store.engine.connect() as other:
            other.execute(text("INSERT INTO run_samples (run_id, sample_id) VALUES (:r, :s)"),
                          {"r": run.id, "s": ids[0]})  # uncommitted: the racer's insert of ids[0] waits
            written = {}
            racing = threading.Thread(
                target=lambda: written.update(n=racer.add_detections(run, dict.fromkeys(ids, det), skip_covered=True))
            )
            racing.start()
            waiting = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n AND wait_event_type = 'Lock'")
            with store.engine.connect() as watch:
                wait_for(lambda: watch.execute(waiting, {"n": name}).scalar_one() == 1, "the racer to wait", 60)
            other.commit()
        racing.join(timeout=60)
        assert written == {"n": 1}  # ids[1] only: ids[0] was the other writer's
        assert store.covered_samples(run) == sorted(ids)
        assert list(store.annotations_of(run)[ids[1]].labels) == ["cat"] and not len(store.annotations_of(run)[ids[0]])


# --------------------------------------------------------------------------- bad input, one line


def test_bad_ray_input_is_refused_in_one_line(tmp_path, pg_url):
    folder, _ = image_folder(tmp_path, count=1)
    sqlite = environment(tmp_path)
    cases = [
        (["prelabel", str(folder), "--prompt", "x", "--dataset", "d", "--engine", "ray", "--address", "auto"],
         sqlite, "the store is a SQLite file"),
        (["prelabel", str(folder), "--prompt", "x", "--dataset", "d", "--engine", "ray", "--ray-workers", "0"],
         sqlite, "--ray-workers must be at least 1, got 0"),
        (["prelabel", str(folder), "--prompt", "x", "--dataset", "d", "--engine", "bogus"],
         sqlite, "--engine must be local or ray, got 'bogus'"),
        (["prelabel", str(folder), "--prompt", "x", "--dataset", "d", "--engine", "ray", "--ray-retries", "-1"],
         sqlite, "--ray-retries must be at least 0, got -1"),
        (["prelabel", str(folder), "--prompt", "x", "--dataset", "d", "--ray-retries", "2"],
         sqlite, "--ray-retries needs --engine ray"),
        (["prelabel", str(folder), "--prompt", "x", "--dataset", "d", "--engine", "ray",
          "--detector", f"owlv2:{tmp_path / 'no-such-owlv2'}"], sqlite, "cannot load OWLv2 from"),
        (["prelabel", "--prompt", "x", "--dataset", "d"], sqlite, "give the image files or folders"),
        (["prelabel", "--prompt", "x", "--dataset", "empty", "--engine", "ray"],
         environment(tmp_path, AUTOLABEL_DB=pg_url), "dataset 'empty' has no samples"),
    ]
    with open_store(pg_url) as store:
        store.get_or_create_dataset("empty")
    for args, env, message in cases:
        result = autolabel(args, env)
        assert result.returncode == 2, (args, result.stderr)
        (line,) = lines(result.stderr)
        assert message in line, (args, line)
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:  # refused before any run was made
        assert not any(store.list_runs(dataset) for dataset in store.list_datasets())


def test_the_cli_and_the_engine_import_without_ray():
    code = (
        "import sys, sync, sync.cli, sync.ray_prelabel; from typer.testing import CliRunner; "
        "result = CliRunner().invoke(sync.cli.app, ['prelabel', '--help']); "
        "print(result.exit_code, 'ray' in sys.modules, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.split() == ["0", "False", "False"], result.stderr


def test_without_ray_the_engine_says_which_extra_to_install_before_any_run_is_made(tmp_path):
    folder, _ = image_folder(tmp_path, count=1)
    code = (
        "import sys; sys.modules['ray'] = None; from sync.cli import main; "  # as if ray were not installed
        f"sys.argv = ['autolabel', 'prelabel', {str(folder)!r}, '--prompt', 'x', '--dataset', 'd', '--engine', 'ray']; "
        "main()"
    )
    env = environment(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert "needs the ray extra" in line and "pip install 'autolabel-cvat[ray]'" in line
    assert not (tmp_path / "store.db").exists()


# --------------------------------------------------------------------------- last: a run that fails on Ray


def test_a_batch_whose_worker_always_dies_stops_the_run_after_its_retries_and_a_rerun_finishes_it(
    tmp_path, pg_url, tiny_invoke, tiny_cli
):
    """Every worker running a batch is killed while the store holds the first batch only: with
    ``--ray-retries 1`` the run stops after the retry (no endless restarts), in one error line
    after the resume hint, keeping that batch; a rerun finishes it. Last in the module: Ray
    keeps the failed pool's restarted actor (and its CPU) until the driver exits, so the rerun
    here is the local engine's (a run resumes by either engine)."""
    folder = tmp_path / "imgs"
    files = write_images(folder, 10)
    open_store(pg_url).close()
    args = (str(folder), "--dataset", "p", "--run", "p", "--engine", "ray", "--ray-workers", "1")
    result = {}
    driver = threading.Thread(target=lambda: result.update(r=tiny_invoke(*args, "--ray-retries", "1")))
    before = frozenset(p.pid for p in label_writers())
    driver.start()
    engine = create_engine(pg_url)
    killed: set[int] = set()
    try:
        wait_for(lambda: covered_count(engine) >= 2 or not driver.is_alive(), "the first batch in the store")
        with engine.begin() as conn:  # no batch commits while this holds the table
            conn.execute(text("LOCK TABLE run_samples IN EXCLUSIVE MODE"))
            covered_at_kill = conn.execute(text("SELECT count(*) FROM run_samples")).scalar_one()
            deadline = time.monotonic() + 240
            while driver.is_alive() and time.monotonic() < deadline:
                for worker in label_writers(other_than=before, labelling=True):
                    if worker.pid not in killed:
                        worker.send_signal(signal.SIGKILL)
                        killed.add(worker.pid)
                time.sleep(0.05)
            driver.join(timeout=30)
    finally:
        engine.dispose()
    assert not driver.is_alive()
    failed = result["r"]
    assert isinstance(failed.exception, CliError), (failed.output, failed.exception)
    assert str(failed.exception).startswith("the Ray engine failed: a model worker died on every try of a batch")
    assert 2 <= len(killed) <= 3  # the first worker and its one restart (and one starting as the run failed)
    assert 2 <= covered_at_kill < len(files)
    assert f"run 'p' stopped with {covered_at_kill} of {len(files)} images; run the same command again" in (
        " ".join(failed.output.split())
    )
    with open_store(pg_url) as store:
        run = store.get_run("p", "p")
        assert not run.finished and len(store.covered_samples(run)) == covered_at_kill
    output = tiny_cli(str(folder), "--dataset", "p", "--run", "p")
    assert f"{covered_at_kill} of {len(files)} images already done" in output
    with open_store(pg_url) as store:
        run = store.get_run("p", "p")
        covered = store.covered_samples(run)
        assert run.finished and len(covered) == len(set(covered)) == len(files)
