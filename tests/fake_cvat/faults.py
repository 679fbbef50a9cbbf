"""Fault injection: error statuses, hangs and connection resets on chosen requests."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

FAULT_KINDS = ("500", "502", "503", "504", "timeout", "reset", "slow")
"""``5xx``: an error page instead of the answer. ``timeout``: hold the request for ``delay``
seconds, then close the connection without answering. ``reset``: close the connection with
a TCP RST. ``slow``: answer normally after ``delay`` seconds."""


@dataclass(frozen=True)
class FaultPlan:
    """Which requests get a fault, and which fault.

    A request matches when its method is in ``methods`` (all methods when empty) and
    ``paths`` (a regular expression) is found in its path (query excluded). The plan fires on
    every ``every``-th matching request (the ``every``-th, ``2*every``-th, …), after skipping
    the first ``skip`` matches, at most ``limit`` times (no limit when None).

    ``when="before"``: the request never reaches the API (a proxy failing). ``when="after"``:
    the API handles the request (state changes happen) and then the answer is replaced by the
    fault, which models a response lost on the way back.
    """

    kind: str = "502"
    every: int = 1
    methods: frozenset[str] = frozenset()
    paths: str | re.Pattern | None = None
    limit: int | None = None
    skip: int = 0
    delay: float = 2.0
    when: str = "before"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"FaultPlan.kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.every < 1:
            raise ValueError(f"FaultPlan.every must be >= 1, got {self.every}")
        if self.when not in ("before", "after"):
            raise ValueError(f"FaultPlan.when must be 'before' or 'after', got {self.when!r}")
        if self.delay < 0:
            raise ValueError(f"FaultPlan.delay must be >= 0, got {self.delay}")
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if isinstance(self.paths, str):
            object.__setattr__(self, "paths", re.compile(self.paths))

    @property
    def status(self) -> int:
        """The HTTP status of a ``5xx`` fault (0 for the others)."""
        return int(self.kind) if self.kind.isdigit() else 0

    def matches(self, method: str, path: str) -> bool:
        """Whether a request is one this plan counts."""
        if self.methods and method.upper() not in self.methods:
            return False
        return self.paths is None or self.paths.search(path) is not None


class InjectedFault(NamedTuple):
    """One fault the server served."""

    method: str
    path: str
    kind: str
    plan_index: int


@dataclass
class _PlanCounters:
    matched: int = 0
    fired: int = 0


@dataclass
class FaultInjector:
    """Holds the active plans and counts what they did. Thread-safe."""

    _plans: tuple[FaultPlan, ...] = ()
    _counters: list[_PlanCounters] = field(default_factory=list)
    injected: list[InjectedFault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_plans(self, plans: FaultPlan | Iterable[FaultPlan] | None) -> None:
        """Replace the active plans; per-plan counters restart, ``injected`` is kept."""
        if plans is None:
            normalized: tuple[FaultPlan, ...] = ()
        elif isinstance(plans, FaultPlan):
            normalized = (plans,)
        else:
            normalized = tuple(plans)
        for plan in normalized:
            if not isinstance(plan, FaultPlan):
                raise TypeError(f"expected FaultPlan, got {type(plan).__name__}")
        with self._lock:
            self._plans = normalized
            self._counters = [_PlanCounters() for _ in normalized]

    @property
    def plans(self) -> tuple[FaultPlan, ...]:
        """The active plans."""
        return self._plans

    def pick(self, method: str, path: str) -> FaultPlan | None:
        """Count the request against every plan and return the first plan that fires."""
        chosen = None
        with self._lock:
            for index, (plan, counters) in enumerate(zip(self._plans, self._counters)):
                if not plan.matches(method, path):
                    continue
                counters.matched += 1
                position = counters.matched - plan.skip
                if chosen is not None or position <= 0 or position % plan.every:
                    continue
                if plan.limit is not None and counters.fired >= plan.limit:
                    continue
                counters.fired += 1
                chosen = plan
                self.injected.append(InjectedFault(method, path, plan.kind, index))
        return chosen

    def counts(self) -> Counter:
        """How many faults of each kind were served since the server started."""
        with self._lock:
            return Counter(fault.kind for fault in self.injected)

    def plan_stats(self) -> list[dict[str, int]]:
        """``{"matched", "fired"}`` for each active plan."""
        with self._lock:
            return [{"matched": c.matched, "fired": c.fired} for c in self._counters]
