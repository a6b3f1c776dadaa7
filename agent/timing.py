"""Honest timings: one-time set-up apart from what each request costs.

The agent builds its heavy parts on first use (dataset, model, vector store, candidate sources). Timed
inside a request, that set-up used to be reported as the request's latency ("retrieval 18.1 s" was the
model load and the store opening, not retrieval). `SetupClock` collects the time of every lazy build,
and a request's window subtracts what the clock gained inside it.

Every result's `timings` then holds (milliseconds):
    retrieval_ms  candidate retrieval for this request
    model_ms      the ranking model's work for this request (prompts + forward/generate; share of a batch)
    reasons_ms    generating the reasons (hybrid mode; 0 otherwise)
    total         retrieval_ms + model_ms + reasons_ms: what the request costs once everything is loaded
    setup_ms      one-time set-up that this call paid before its requests could run (0 when warm),
                  the same value on every result of one call
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class SetupClock:
    """Milliseconds spent building lazily loaded components, until `take()` collects them.

    Nested builds (the candidate source building the semantic source) count once: only the outermost
    `measure()` of a thread adds its elapsed time.
    """

    def __init__(self) -> None:
        self._ms = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def ms(self) -> float:
        """Set-up time collected so far and not yet taken."""
        return self._ms

    @contextmanager
    def measure(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._lock:
                    self._ms += (time.perf_counter() - t0) * 1000

    def take(self) -> float:
        """The collected set-up time, reset to 0."""
        with self._lock:
            ms, self._ms = self._ms, 0.0
        return ms


def split_timings(timings: dict[str, float], retrieval_ms: float, setup_ms: float) -> None:
    """Complete a ranker's timings (its `total` and, in hybrid mode, `reason_ms`) with the request's
    retrieval and the call's set-up, in the keys the module docstring lists."""
    rank_ms = timings.get("total", 0.0)
    reasons_ms = timings.get("reason_ms", 0.0)
    timings.update(
        retrieval_ms=retrieval_ms,
        model_ms=max(rank_ms - reasons_ms, 0.0),
        reasons_ms=reasons_ms,
        total=rank_ms + retrieval_ms,
        setup_ms=setup_ms,
    )


def timing_line(timings: dict[str, float]) -> str:
    """'retrieval 12 ms · model 310 ms · reasons 0 ms · total 322 ms · set-up 8.4 s': the CLI footer."""
    parts = [f"{name} {timings.get(key, 0.0):.0f} ms" for name, key in
             (("retrieval", "retrieval_ms"), ("model", "model_ms"), ("reasons", "reasons_ms"), ("total", "total"))]
    setup = timings.get("setup_ms", 0.0)
    if setup >= 1:
        parts.append(f"set-up {setup / 1000:.1f} s (once per process)")
    return " · ".join(parts)
