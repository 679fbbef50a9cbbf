"""Micro-batching: concurrent single-frame model calls run as one batched call.

``autolabel serve --micro-batch N`` lets a detector function run up to N requests at once
(N worker threads instead of Nuclio's one). Each handler still calls ``detect([image])``; the
function's `Detector` (or `Classifier`) is wrapped in a `BatchingDetector`
(`BatchingClassifier`) whose `MicroBatcher` collects the frames that arrive within
``window`` seconds of the first waiting one, up to ``max_batch``, and makes one model call for
them (one per distinct ``threshold`` among them), then hands each caller its own result. An
exception from a model call reaches every caller of that call, and only them. Model calls of
one batcher never overlap: while one runs, the next batch gathers.

No extra thread: the first waiting caller whose batch is due runs it on its own (handler)
thread. A caller whose request is given up on while it waits (`request_cancelled`: deadline
passed, client gone) stops waiting within `POLL_SECONDS` and raises `Abandoned`; if its frame
had not been taken into a batch yet, the frame is dropped and never reaches the model.

How a function gets batched: the host sets ``AUTOLABEL_MICRO_BATCH`` (and
``AUTOLABEL_MICRO_BATCH_WINDOW_MS``) in that function's own environment view
(`serverless.serve_function.function_environ`), and `serverless.nuclio_adapter` wraps the
detector or classifier it builds in ``init_context`` (`wrap_detector`, `wrap_classifier`).
Under real Nuclio (one worker per process, ``maxWorkers: 1``) nobody sets the variable, so
nothing is batched. Interactors (SAM clicks, the SAM embedding) are never batched: a click's
work is one cached-embedding decode, and SAM serialises its predictor anyway.

Replies: a model that batches frames of one size in one forward pass (Grounding DINO) may give
boxes and scores that differ in the last float digits from one-frame calls (batched kernels
sum in another order), as the `Detector` contract allows; frames of different sizes run as
separate passes inside the one call and give exactly the one-frame results.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from serverless.detections import Detections
from serverless.models.base import Classifier, Detector, Tags
from serverless.serve_function import request_cancelled

__all__ = [
    "ENV_SIZE",
    "ENV_WINDOW_MS",
    "MAX_BATCH",
    "MAX_WINDOW_MS",
    "POLL_SECONDS",
    "Abandoned",
    "BatchStats",
    "BatchingClassifier",
    "BatchingDetector",
    "MicroBatchSettings",
    "MicroBatcher",
    "batchers_in",
    "wrap_classifier",
    "wrap_detector",
]

ENV_SIZE = "AUTOLABEL_MICRO_BATCH"
"""Most frames per model call; set by ``autolabel serve --micro-batch`` in a function's environment view."""
ENV_WINDOW_MS = "AUTOLABEL_MICRO_BATCH_WINDOW_MS"
"""How long (ms) the first waiting frame waits for others (``--batch-window-ms``)."""
DEFAULT_WINDOW_MS = 5.0
MAX_BATCH = 256
MAX_WINDOW_MS = 1000.0
POLL_SECONDS = 0.05
"""How often a waiting caller checks whether its request was given up on."""

R = TypeVar("R")


class Abandoned(Exception):
    """The caller's request was given up on (deadline passed, client gone) while its frame waited."""


@dataclass(frozen=True)
class MicroBatchSettings:
    """How a function batches: at most ``size`` frames per model call, gathered for ``window_ms``."""

    size: int
    window_ms: float = DEFAULT_WINDOW_MS

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not 1 <= self.size <= MAX_BATCH:
            raise ValueError(f"micro_batch must lie in 1..{MAX_BATCH}, got {self.size}")
        if not 0 <= self.window_ms <= MAX_WINDOW_MS:  # also refuses NaN
            raise ValueError(f"batch_window_ms must lie in 0..{MAX_WINDOW_MS:g}, got {self.window_ms}")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> MicroBatchSettings | None:
        """The settings in ``environ`` (`ENV_SIZE`, `ENV_WINDOW_MS`), None when `ENV_SIZE` is
        unset or empty; ValueError naming the variable for a bad value."""
        size_text = environ.get(ENV_SIZE, "").strip()
        if not size_text:
            return None
        window_text = environ.get(ENV_WINDOW_MS, "").strip()
        try:
            size = int(size_text)
        except ValueError:
            raise ValueError(f"{ENV_SIZE} must be a whole number of frames, got {size_text[:40]!r}") from None
        try:
            window = float(window_text) if window_text else DEFAULT_WINDOW_MS
        except ValueError:
            raise ValueError(f"{ENV_WINDOW_MS} must be a number of milliseconds, got {window_text[:40]!r}") from None
        try:
            return cls(size, window)
        except ValueError as err:
            raise ValueError(f"{ENV_SIZE}/{ENV_WINDOW_MS}: {err}") from None

    def health(self) -> dict[str, float]:
        return {"size": self.size, "windowMs": self.window_ms}


@dataclass
class BatchStats:
    """What a batcher has done: model calls made, frames they carried, the largest call."""

    calls: int = 0
    frames: int = 0
    largest: int = 0

    def add(self, other: BatchStats) -> BatchStats:
        return BatchStats(self.calls + other.calls, self.frames + other.frames, max(self.largest, other.largest))


@dataclass(eq=False)
class _Call(Generic[R]):
    image: np.ndarray
    threshold: float | None
    arrived: float
    context: contextvars.Context
    taken: bool = False
    finished: bool = False
    abandoned: bool = False
    answered: bool = False
    result: R | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class MicroBatcher(Generic[R]):
    """Gathers concurrent ``(image, threshold)`` calls into calls of ``run(images, threshold)``
    (``Detector.detect``/``Classifier.classify`` shape: one result per image, in order).

    A batch is due when ``max_batch`` frames wait or ``window`` seconds have passed since the
    oldest waiting one arrived. ``cancelled`` is read in each caller's context (default:
    `request_cancelled`)."""

    run: Callable[[Sequence[np.ndarray], float | None], list[R]]
    max_batch: int
    window: float
    cancelled: Callable[[], bool] = request_cancelled
    _pending: list[_Call[R]] = field(default_factory=list, init=False)
    _running: bool = field(default=False, init=False)
    _stats: BatchStats = field(default_factory=BatchStats, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if not 0 <= self.window < math.inf:
            raise ValueError(f"window must be a finite number of seconds >= 0, got {self.window}")

    def __call__(self, image: np.ndarray, threshold: float | None = None) -> R:
        """This frame's result, computed in a batch with the frames of other callers."""
        call: _Call[R] = _Call(image, threshold, time.monotonic(), contextvars.copy_context())
        with self._cond:
            self._pending.append(call)
            self._cond.notify_all()
        while (batch := self._next(call)) is not None:
            self._run(batch)
        if call.abandoned:
            raise Abandoned("request given up on (deadline passed or client gone) while its frame waited for a batch")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]  # answered: no error, result set

    def waiting(self) -> int:
        """Frames waiting for a batch now."""
        with self._cond:
            return len(self._pending)

    def stats(self) -> BatchStats:
        with self._cond:
            return BatchStats(self._stats.calls, self._stats.frames, self._stats.largest)

    def _next(self, call: _Call[R]) -> list[_Call[R]] | None:
        """Wait until ``call`` is finished or given up on (None), or until a batch is due and no
        other runs: then take it (the caller runs it, whether or not ``call`` is in it)."""
        with self._cond:
            while True:
                if call.finished or call.abandoned:
                    return None
                if self.cancelled():
                    if not call.taken:
                        self._pending.remove(call)
                    call.abandoned = True
                    return None
                wait = POLL_SECONDS
                if not self._running and self._pending:
                    due = self._pending[0].arrived + self.window
                    now = time.monotonic()
                    if len(self._pending) >= self.max_batch or now >= due:
                        batch = self._take()
                        if batch:
                            self._running = True
                            return batch
                        continue
                    wait = min(wait, due - now)
                self._cond.wait(wait)

    def _take(self) -> list[_Call[R]]:
        """Up to `max_batch` waiting calls, oldest first; calls given up on are dropped."""
        batch: list[_Call[R]] = []
        while self._pending and len(batch) < self.max_batch:
            call = self._pending.pop(0)
            if call.context.run(self.cancelled):
                call.abandoned = True
                continue
            call.taken = True
            batch.append(call)
        self._cond.notify_all()  # the dropped callers stop waiting
        return batch

    def _run(self, batch: list[_Call[R]]) -> None:
        """One model call per distinct threshold in ``batch``; results and errors to their callers."""
        groups: dict[float | None, list[_Call[R]]] = {}
        for call in batch:
            groups.setdefault(call.threshold, []).append(call)
        stats = BatchStats()
        try:
            for threshold, members in groups.items():
                stats = stats.add(BatchStats(1, len(members), len(members)))
                try:
                    results = self.run([call.image for call in members], threshold)
                    if len(results) != len(members):
                        raise RuntimeError(f"the model returned {len(results)} results for {len(members)} frames")
                except Exception as err:  # noqa: BLE001 - handed to each caller of this call, who raises it
                    for call in members:
                        call.error = err
                    continue
                for call, result in zip(members, results, strict=True):
                    call.result, call.answered = result, True
        finally:
            with self._cond:
                for call in batch:
                    if not call.answered and call.error is None:
                        call.error = RuntimeError("the batch stopped before this frame's result")
                    call.finished = True
                self._running = False
                self._stats = self._stats.add(stats)
                self._cond.notify_all()


class BatchingDetector:
    """A `Detector` whose one-frame ``detect`` calls from concurrent threads share model calls."""

    def __init__(self, detector: Detector, settings: MicroBatchSettings) -> None:
        self.detector = detector
        self.settings = settings
        self.batcher: MicroBatcher[Detections] = MicroBatcher(
            lambda images, threshold: detector.detect(images, threshold=threshold),
            settings.size,
            settings.window_ms / 1000,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.detector.labels

    def detect(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Detections]:
        """One-frame calls go through the batcher; other calls straight to the detector."""
        if len(images) != 1:
            return self.detector.detect(images, threshold=threshold)
        return [self.batcher(images[0], threshold)]


class BatchingClassifier:
    """A `Classifier` whose one-frame ``classify`` calls from concurrent threads share model calls."""

    def __init__(self, classifier: Classifier, settings: MicroBatchSettings) -> None:
        self.classifier = classifier
        self.settings = settings
        self.batcher: MicroBatcher[Tags] = MicroBatcher(
            lambda images, threshold: classifier.classify(images, threshold=threshold),
            settings.size,
            settings.window_ms / 1000,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.labels

    def classify(self, images: Sequence[np.ndarray], *, threshold: float | None = None) -> list[Tags]:
        """One-frame calls go through the batcher; other calls straight to the classifier."""
        if len(images) != 1:
            return self.classifier.classify(images, threshold=threshold)
        return [self.batcher(images[0], threshold)]


def wrap_detector(detector: Detector, environ: Mapping[str, str]) -> Detector:
    """``detector`` batched as ``environ`` says (`MicroBatchSettings.from_environ`), else itself."""
    settings = MicroBatchSettings.from_environ(environ)
    return detector if settings is None else BatchingDetector(detector, settings)


def wrap_classifier(classifier: Classifier, environ: Mapping[str, str]) -> Classifier:
    """``classifier`` batched as ``environ`` says, else itself."""
    settings = MicroBatchSettings.from_environ(environ)
    return classifier if settings is None else BatchingClassifier(classifier, settings)


def batchers_in(holder: object) -> list[MicroBatcher]:
    """The batchers of the batching models among ``holder``'s attributes (a function's
    ``context.user_data``), for the host's health counters."""
    values = vars(holder).values() if hasattr(holder, "__dict__") else ()
    return [value.batcher for value in values if isinstance(value, (BatchingDetector, BatchingClassifier))]
