"""Micro-batching for the HTTP server: requests that arrive together share one batched forward pass.

The model runs on one thread (`ModelGate`). Served one at a time, eight concurrent clients only wait
for each other. `MicroBatcher` instead collects `POST /v1/recommend` requests for `window_ms` after the
first one (and for as long as the model is busy with the previous batch), then runs up to `max_batch`
of them as one `agent.recommend_many` call, i.e. one batched ranker pass (`BatchedRanker`).

Admission stays bounded as before: every request holds one slot of the gate's capacity from arrival to
answer, and a request beyond it is refused at once with `ServerBusyError` (HTTP 429 + Retry-After).

Requests of one batch must share `k`, `exclude` and `where` (arguments of `recommend_many` that apply
to the whole call); different ones run as separate groups inside the same model job. When a batched
call fails (one bad user id fails the whole call), its requests are re-run one by one, so every
request gets its own answer or its own error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonrec.errors import ConfigError

DEFAULT_WINDOW_MS = 5.0
DEFAULT_MAX_BATCH = 8


@dataclass
class RecommendJob:
    """One `recommend` call waiting for its batch."""

    user_id: str | None = None
    history: Sequence[str] | None = None
    query: str | None = None
    k: int | None = None
    exclude: Sequence[str] = ()
    where: dict[str, Any] | None = None
    future: asyncio.Future[Any] | None = field(default=None, repr=False)

    def group_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys can share one `recommend_many` call."""
        return (self.k, tuple(self.exclude), json.dumps(self.where, sort_keys=True, default=str))


class MicroBatcher:
    """Runs concurrent recommend requests as batched calls on the gate's model thread.

    Args:
        agent: the `RecommenderAgent` (its `recommend_many` is the batched call).
        gate: the server's `ModelGate` (one model thread; its `capacity` bounds requests in flight).
        window_ms: how long to wait after the first request of a batch for others to join.
        max_batch: most requests in one batched call (the ranker still splits by `ranker.batch_size`).

    Raises:
        ConfigError: a negative window or a max_batch below 1.
    """

    def __init__(self, agent: Any, gate: Any, window_ms: float = DEFAULT_WINDOW_MS, max_batch: int = DEFAULT_MAX_BATCH):
        if window_ms < 0:
            raise ConfigError(f"`window_ms` must be >= 0, got {window_ms!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"`max_batch` must be an integer >= 1, got {max_batch!r}")
        self.agent, self.gate = agent, gate
        self.window_s, self.max_batch = window_ms / 1000, max_batch
        self._waiting: list[RecommendJob] = []
        self._in_flight = 0  # requests admitted and not yet answered (event-loop thread only: no lock)
        self._gate_jobs = 0  # our batches now queued or running on the gate (already in `_in_flight`)
        self._drainer: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # of every batched call so far, for /healthz-style introspection

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def load(self) -> int:
        """Requests held by the server: ours (waiting, batched or running) plus other routes' gate jobs."""
        return self._in_flight + self.gate.pending - self._gate_jobs

    async def recommend(self, **kwargs: Any) -> Any:
        """`agent.recommend(**kwargs)`, answered from a batched call.

        Raises:
            ServerBusyError: the server already holds `gate.capacity` requests. Whatever
                `agent.recommend` raises for this request.
        """
        if self.load() >= self.gate.capacity:
            raise self.gate.busy(self.load())
        job = RecommendJob(**kwargs, future=asyncio.get_running_loop().create_future())
        self._in_flight += 1
        try:
            self._waiting.append(job)
            if self._drainer is None or self._drainer.done():
                self._drainer = asyncio.create_task(self._drain())
            return await job.future
        finally:
            self._in_flight -= 1

    async def _drain(self) -> None:
        """Form and run batches until nobody waits; a batch forms while the previous one runs."""
        while self._waiting:
            await asyncio.sleep(self.window_s)  # let requests sent at (nearly) the same moment join
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            self.batch_sizes.append(len(batch))
            try:
                outcomes = await self._run_on_gate(batch)
            except Exception as e:  # the gate refused or failed the job: every request of it learns why
                outcomes = [e] * len(batch)
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.future is None or job.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    async def _run_on_gate(self, batch: list[RecommendJob]) -> list[Any]:
        # The batch is one gate job, so it queues behind chat turns like any other model work; while it
        # waits, the jobs it holds still count against capacity through `_in_flight`.
        self._gate_jobs += 1
        try:
            return await self.gate.run(run_batch, self.agent, batch)
        finally:
            self._gate_jobs -= 1


def run_batch(agent: Any, batch: list[RecommendJob]) -> list[Any]:
    """On the model thread: each group of compatible jobs as one `recommend_many`; a result or an
    exception per job, in order."""
    out: list[Any] = [None] * len(batch)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, job in enumerate(batch):
        groups.setdefault(job.group_key(), []).append(i)
    for idx in groups.values():
        jobs = [batch[i] for i in idx]
        for i, outcome in zip(idx, _run_group(agent.recommend_many, jobs), strict=True):
            out[i] = outcome
    return out


def _run_group(recommend_many: Callable[..., list[Any]], jobs: list[RecommendJob]) -> list[Any]:
    first = jobs[0]

    def call(part: list[RecommendJob]) -> list[Any]:
        t0 = time.perf_counter()
        recs = recommend_many(
            [j.user_id for j in part], [j.history for j in part], [j.query for j in part],
            k=first.k, exclude=first.exclude, where=first.where,
        )  # fmt: skip
        for r in recs:  # what this call cost the batch as a whole (the per-request timings are shares)
            r.timings["batch_ms"] = (time.perf_counter() - t0) * 1000
        return recs

    try:
        return call(jobs)
    except Exception as e:
        if len(jobs) == 1:
            return [e]
    outcomes: list[Any] = []
    for job in jobs:  # one failing request must not fail its neighbours: re-run alone to find out
        try:
            outcomes.extend(call([job]))
        except Exception as e:
            outcomes.append(e)
    return outcomes
