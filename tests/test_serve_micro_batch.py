"""Micro-batching (``autolabel serve --micro-batch N``): concurrent one-frame calls share model
calls, each caller gets its own result, and the serve contract (same replies, 503/504,
abandoned requests dropped) holds. Models are tiny random Grounding DINOs; calls are counted
by a wrapper around the real ``detect``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from serverless.micro_batch import (
    ENV_SIZE,
    ENV_WINDOW_MS,
    Abandoned,
    BatchingDetector,
    MicroBatcher,
    MicroBatchSettings,
)
from serverless.serve import FunctionHost, ServeOptions
from serverless.serve_function import cancellation_scope
from sync.commands.serve import register
from tests.test_serve import CVAT_DIRECT_HEADERS, FUNCTIONS, call, cvat_body, png_b64, real_png_b64

# --------------------------------------------------------------------------- the batcher alone


class CountingDetector:
    """The real tiny detector, with every ``detect`` call recorded (images, threshold)."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.calls: list[tuple[list[np.ndarray], float | None]] = []
        self.lock = threading.Lock()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.detector.labels

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None):
        with self.lock:
            self.calls.append((list(images), threshold))
        return self.detector.detect(images, threshold=threshold)


@pytest.fixture(scope="module")
def detector(tiny_settings, sample_ontology):
    from serverless.pipeline import load_models

    found, _ = load_models(tiny_settings, sample_ontology, masks=False)
    return found


def frames(count: int) -> list[np.ndarray]:
    """Distinct frames of distinct sizes: Grounding DINO runs them as separate passes, so the
    batched results equal the one-frame results exactly."""
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (40 + 4 * i, 56 + 4 * i, 3), dtype=np.uint8) for i in range(count)]


def concurrently(batcher: MicroBatcher, jobs: list[tuple[np.ndarray, float | None]]) -> list:
    """Each job from its own thread; its result or the exception it raised, in job order."""
    results: list = [None] * len(jobs)

    def one(i: int) -> None:
        try:
            results[i] = batcher(*jobs[i])
        except Exception as err:  # noqa: BLE001 - the test reads it
            results[i] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def same(a, b) -> bool:
    return (np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.scores, b.scores)
            and a.labels.tolist() == b.labels.tolist())


def batcher_for(counting: CountingDetector, max_batch: int, window: float) -> MicroBatcher:
    return MicroBatcher(lambda images, threshold: counting.detect(images, threshold=threshold), max_batch, window)


def test_concurrent_frames_become_one_model_call_and_each_caller_gets_its_own(detector):
    counting = CountingDetector(detector)
    images = frames(4)
    # the window is long: the call is made because 4 frames wait, not because time passed
    results = concurrently(batcher_for(counting, 4, 30.0), [(image, 0.2) for image in images])
    assert [(len(batch), threshold) for batch, threshold in counting.calls] == [(4, 0.2)]
    alone = [detector.detect([image], threshold=0.2)[0] for image in images]
    assert all(same(got, want) for got, want in zip(results, alone, strict=True))
    assert not same(alone[0], alone[1]), "the frames must give different results for routing to be checked"


def test_each_threshold_is_its_own_model_call(detector):
    counting = CountingDetector(detector)
    images = frames(4)
    thresholds = [0.2, None, 0.2, 0.5]
    results = concurrently(batcher_for(counting, 4, 30.0), list(zip(images, thresholds, strict=True)))
    made = sorted((len(batch), str(threshold)) for batch, threshold in counting.calls)
    assert made == [(1, "0.5"), (1, "None"), (2, "0.2")]
    for image, threshold, got in zip(images, thresholds, results, strict=True):
        assert same(got, detector.detect([image], threshold=threshold)[0])


def test_an_error_reaches_only_the_callers_of_its_model_call(detector):
    counting = CountingDetector(detector)
    batcher = batcher_for(counting, 3, 30.0)
    images = frames(3)
    results = concurrently(batcher, [(images[0], 2.0), (images[1], 0.3), (images[2], 2.0)])
    assert isinstance(results[0], ValueError) and "threshold" in str(results[0])
    assert isinstance(results[2], ValueError)
    assert same(results[1], detector.detect([images[1]], threshold=0.3)[0])
    after = concurrently(batcher, [(image, 0.3) for image in images])  # the batcher goes on
    assert not any(isinstance(result, Exception) for result in after)
    assert [len(batch) for batch, _ in counting.calls] == [2, 1, 3]


def test_no_model_call_carries_more_than_max_batch_frames(detector):
    counting = CountingDetector(detector)
    results = concurrently(batcher_for(counting, 2, 0.2), [(image, 0.3) for image in frames(5)])
    sizes = [len(batch) for batch, _ in counting.calls]
    assert max(sizes) <= 2 and sum(sizes) == 5 and len(sizes) >= 3
    assert not any(isinstance(result, Exception) for result in results)


def test_a_caller_given_up_on_is_dropped_before_the_model_sees_its_frame(detector):
    counting = CountingDetector(detector)
    batcher = batcher_for(counting, 2, 60.0)
    images = frames(3)
    given_up = threading.Event()
    outcome: list = []

    def waiting() -> None:
        with cancellation_scope(given_up):
            try:
                outcome.append(batcher(images[0], 0.3))
            except Abandoned as err:
                outcome.append(err)

    thread = threading.Thread(target=waiting)
    thread.start()
    while not batcher.waiting():  # its frame waits for a partner
        time.sleep(0.01)
    given_up.set()
    thread.join(timeout=30)
    assert not thread.is_alive() and isinstance(outcome[0], Abandoned)
    results = concurrently(batcher, [(images[1], 0.3), (images[2], 0.3)])
    assert [len(batch) for batch, _ in counting.calls] == [2]
    assert all(image is not images[0] for image in counting.calls[0][0])
    assert same(results[0], detector.detect([images[1]], threshold=0.3)[0])


def test_other_calls_go_straight_to_the_model(detector):
    counting = CountingDetector(detector)
    wrapped = BatchingDetector(counting, MicroBatchSettings(4, 1000))
    assert wrapped.labels == detector.labels
    assert wrapped.detect([]) == []
    assert len(wrapped.detect(frames(2), threshold=0.3)) == 2  # no window wait for a batch of its own
    assert [len(batch) for batch, _ in counting.calls] == [0, 2] and wrapped.batcher.stats().calls == 0


def test_a_classifier_batches_the_same_way(tmp_path):
    from serverless.micro_batch import BatchingClassifier
    from serverless.models import registry
    from serverless.models.tiny_clip import make_tiny_clip
    from tests.test_models_clip import TAGS, parse_ontology

    ontology = parse_ontology(TAGS, "tags.yaml")
    spec = registry.parse_spec(f"clip:{make_tiny_clip(tmp_path, family='clip')}", "classifier", {})
    classifier = registry.load_classifier(spec, ontology, device="cpu", source=registry.locate(spec, download=False))
    calls: list[int] = []

    class CountingClassifier:
        labels = classifier.labels

        def classify(self, images, *, threshold=None):
            calls.append(len(images))
            return classifier.classify(images, threshold=threshold)

    wrapped = BatchingClassifier(CountingClassifier(), MicroBatchSettings(3, 1000))  # 3 frames make the call
    assert wrapped.labels == classifier.labels
    images = frames(3)
    results: list = [None] * 3

    def one(i: int) -> None:
        (results[i],) = wrapped.classify([images[i]], threshold=0.1)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert calls == [3]
    for image, tags in zip(images, results, strict=True):
        (alone,) = classifier.classify([image], threshold=0.1)
        assert tags.labels.tolist() == alone.labels.tolist()
        np.testing.assert_allclose(tags.scores, alone.scores, atol=1e-5)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({ENV_SIZE: "four"}, "AUTOLABEL_MICRO_BATCH must be a whole number"),
        ({ENV_SIZE: "0"}, "micro_batch must lie in 1..256"),
        ({ENV_SIZE: "4", ENV_WINDOW_MS: "-1"}, "batch_window_ms must lie in 0..1000"),
        ({ENV_SIZE: "4", ENV_WINDOW_MS: "soon"}, "AUTOLABEL_MICRO_BATCH_WINDOW_MS must be a number"),
    ],
)
def test_bad_settings_name_the_variable(environ, message):
    with pytest.raises(ValueError, match=message):
        MicroBatchSettings.from_environ(environ)


def test_settings_from_the_environment():
    assert MicroBatchSettings.from_environ({}) is None
    assert MicroBatchSettings.from_environ({ENV_SIZE: "8"}) == MicroBatchSettings(8, 5.0)
    assert MicroBatchSettings.from_environ({ENV_SIZE: "8", ENV_WINDOW_MS: "2.5"}) == MicroBatchSettings(8, 2.5)


# --------------------------------------------------------------------------- autolabel serve


@pytest.fixture(scope="module")
def hosts(tiny_models):
    """The real grounding-dino (and sam-interactor) functions served twice with tiny models:
    without micro-batching and with ``--micro-batch 4``."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in tiny_models.environment().items():
            mp.setenv(name, value)
        mp.setenv("AUTOLABEL_DEVICE", "cpu")
        mp.setenv(ENV_SIZE, "3")  # an export must not switch micro-batching on by itself
        dirs = [FUNCTIONS / "grounding-dino", FUNCTIONS / "sam-interactor"]
        plain = ServeOptions(port=0, function_ports="ephemeral")
        # a long window: the 4 concurrent frames meet in one call however slow this machine is
        batched = ServeOptions(port=0, function_ports="ephemeral", micro_batch=4, batch_window_ms=1000)
        with FunctionHost(dirs, plain) as one, FunctionHost(dirs, batched) as four:
            yield one, four


def post_frame(host, image_b64: str, headers: dict[str, str] | None = None):
    return call(host.functions["grounding-dino"].port, "POST", "/", {**CVAT_DIRECT_HEADERS, **(headers or {})},
                cvat_body(image=image_b64))


def batch_health(host) -> dict:
    return call(host.dashboard_port, "GET", "/healthz").json()["functions"]


def post_concurrently(host, bodies: list[str]) -> list:
    answers: list = [None] * len(bodies)

    def one(i: int) -> None:
        answers[i] = post_frame(host, bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def test_concurrent_requests_get_the_replies_of_one_by_one_requests_in_fewer_model_calls(hosts):
    one, four = hosts
    bodies = [real_png_b64(48 + 8 * i, 36 + 6 * i) for i in range(4)]  # distinct sizes: exact results
    expected = [post_frame(one, body) for body in bodies]
    before = batch_health(four)["grounding-dino"]["microBatch"]
    answers = post_concurrently(four, bodies)
    for got, want in zip(answers, expected, strict=True):
        assert want.status == 200, want.body[:300]
        assert (got.status, got.headers["content-type"], got.body) == (want.status, want.headers["content-type"],
                                                                      want.body)
    after = batch_health(four)["grounding-dino"]["microBatch"]
    assert after["frames"] - before["frames"] == 4
    assert after["modelCalls"] - before["modelCalls"] < 4
    assert after["largestCall"] >= 2


def test_frames_of_one_size_batched_in_one_pass_agree_with_one_by_one(hosts):
    """One forward pass for frames of one size sums in another order: the same items, boxes
    equal up to float rounding (the `Detector` contract)."""
    one, four = hosts
    bodies = [real_png_b64(64, 48), png_b64(64, 48)] * 2
    expected = [post_frame(one, body).json() for body in bodies]
    answers = post_concurrently(four, bodies)
    for got, want in zip(answers, expected, strict=True):
        assert got.status == 200
        items = got.json()
        assert [(i["label"], i["type"]) for i in items] == [(i["label"], i["type"]) for i in want]
        for item, wanted in zip(items, want, strict=True):
            np.testing.assert_allclose(item["points"], wanted["points"], atol=1e-3)


def test_health_shows_the_setting_and_interactors_stay_one_at_a_time(hosts):
    one, four = hosts
    plain, batched = batch_health(one), batch_health(four)
    assert "microBatch" not in plain["grounding-dino"] and "microBatch" not in plain["sam-interactor"]
    assert not one.functions["grounding-dino"].batched
    # the exported AUTOLABEL_MICRO_BATCH was hidden from the function: its detector is not wrapped
    assert not isinstance(one.functions["grounding-dino"].context.user_data.detector, BatchingDetector)
    assert batched["grounding-dino"]["microBatch"]["size"] == 4
    assert batched["grounding-dino"]["microBatch"]["windowMs"] == 1000
    assert batched["grounding-dino"]["microBatch"]["batched"] is True
    assert batched["sam-interactor"]["microBatch"]["batched"] is False
    assert batched["sam-interactor"]["microBatch"]["modelCalls"] == 0


def test_the_banner_names_the_batched_functions(hosts):
    import io

    from rich.console import Console

    from sync.commands.serve import print_banner

    one, four = hosts
    text = io.StringIO()
    print_banner(four, Console(file=text, width=200, color_system=None))
    assert "Micro-batching: up to 4 frames per model call (window 1000 ms) for: grounding-dino\n" in text.getvalue()
    text = io.StringIO()
    print_banner(one, Console(file=text, width=200, color_system=None))
    assert "Micro-batching" not in text.getvalue()


def test_a_request_past_its_deadline_is_504_and_its_frame_never_reaches_the_model(hosts):
    _, four = hosts
    before = batch_health(four)["grounding-dino"]
    answer = post_frame(four, real_png_b64(40, 30), {"X-Nuclio-Invoke-Timeout": "200ms"})
    assert answer.status == 504 and "did not answer within 0.2 s" in answer.json()["error"]
    time.sleep(1.5)  # past the 1 s window: a frame still waiting would have been run by now
    after = batch_health(four)["grounding-dino"]
    assert after["timeouts"] == before["timeouts"] + 1
    assert after["microBatch"]["frames"] == before["microBatch"]["frames"]
    assert post_frame(four, real_png_b64(40, 30)).status == 200  # and serving goes on


def test_a_full_queue_is_503_with_micro_batching_too(tiny_models, monkeypatch):
    for name, value in tiny_models.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTOLABEL_DEVICE", "cpu")
    options = ServeOptions(port=0, function_ports="ephemeral", micro_batch=2, queue_size=1)
    with FunctionHost([FUNCTIONS / "grounding-dino"], options) as host:
        assert host.functions["grounding-dino"].batched
        # 2 run (one model call), 1 waits: the others, sent meanwhile, are refused
        answers = post_concurrently(host, [real_png_b64(40, 30)] * 8)
        statuses = sorted(answer.status for answer in answers)
        assert statuses[0] == 200 and 503 in statuses
        refused = next(answer for answer in answers if answer.status == 503)
        assert "busy" in json.loads(refused.body)["error"] and refused.headers["retry-after"].isdigit()


# --------------------------------------------------------------------------- the CLI


@pytest.fixture()
def runner_app():
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    return app


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--micro-batch", "0"], "error: --micro-batch must lie in 1..256, got 0"),
        (["--micro-batch", "-2"], "error: --micro-batch must lie in 1..256, got -2"),
        (["--micro-batch", "4", "--batch-window-ms", "-1"], "error: --batch-window-ms must lie in 0..1000, got -1"),
        (["--batch-window-ms", "-1"], "error: --batch-window-ms must lie in 0..1000"),
        (["--queue-size", "-1"], "error: --queue-size must lie in 0..10000, got -1"),
        (["--port", "70000"], "error: --port must lie in 0..65535, got 70000"),
    ],
)
def test_bad_micro_batch_options_are_one_line_and_exit_2(tmp_path, runner_app, args, expected):
    result = CliRunner().invoke(runner_app, ["serve", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
