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
    lm_skipped    1 where no ranking forward pass ran (scoring/hybrid with candidates.lm_weight 0: the fused
                  retrieval score alone ordered the list); model_ms then holds no forward pass, only the
                  ordering (and in hybrid mode the result's assembly)
    setup_ms      one-time set-up that this call paid before its requests could run (0 when warm),
                  the same value on every result of one call
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_GC_LOCK = threading.Lock()
_GC_PAUSES = 0  # builds in progress (any thread) that paused the cyclic collector
_GC_WAS_ENABLED = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a build runs, then freeze what was built.

    Why: importing torch + transformers and building 100,000 records allocate millions of objects, and
    every few hundred allocations the collector traverses a generation again. On the 2-core CPU the same
    imports took 7-8 s with it paused and 13-14 s with it running. Reference counting still frees every
    object without a cycle while paused.

    When the last pause ends, everything alive is moved to the permanent generation (`gc.freeze`) before
    the collector runs again: the modules, the model and the dataset live as long as the process, and
    the first collection after a plain re-enable traversed all of them (1.4 s measured). The cost: a
    cycle that was garbage at that moment (import temporaries, ~13,000 objects after the imports), or
    a frozen object that later becomes part of one, is not collected (`gc.unfreeze()` hands them back).
    Pauses nest and may overlap across threads; the collector runs again when the last one ends, if it
    ran before the first one.
    """
    global _GC_PAUSES, _GC_WAS_ENABLED
    with _GC_LOCK:
        if _GC_PAUSES == 0:
            _GC_WAS_ENABLED = gc.isenabled()
            gc.disable()
        _GC_PAUSES += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_PAUSES -= 1
            if _GC_PAUSES == 0 and _GC_WAS_ENABLED:
                gc.freeze()  # what was built lives as long as the process: never traverse it again
                gc.enable()


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
        """Time one lazy build (the collector paused meanwhile, see `paused_gc`)."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        t0 = time.perf_counter()
        try:
            with paused_gc():
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
    if timings.get("lm_skipped"):
        parts[1] = "no model pass for the order (candidates.lm_weight 0: fused retrieval order)"
    setup = timings.get("setup_ms", 0.0)
    if setup >= 1:
        parts.append(f"set-up {setup / 1000:.1f} s (once per process)")
    return " · ".join(parts)
