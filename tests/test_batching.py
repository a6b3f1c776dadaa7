"""Server micro-batching (agent/interfaces/batching.py) with a fake agent: fast, no model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from reasonrec.agent.interfaces.batching import MicroBatcher
from reasonrec.agent.interfaces.gate import ModelGate
from reasonrec.agent.interfaces.http_errors import ServerBusyError
from reasonrec.errors import ConfigError, UnknownUserError


class Result:
    def __init__(self, user_id, k):
        self.user_id, self.k, self.timings = user_id, k, {}


class FakeAgent:
    """`recommend_many` that takes 50 ms per call, records its batch sizes and rejects user 'bad'."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()

    def recommend_many(self, user_ids, histories, queries, k=None, exclude=(), where=None):
        self.calls.append(list(user_ids))
        self.threads.add(threading.current_thread().name)
        time.sleep(0.05)
        if "bad" in user_ids:
            raise UnknownUserError("unknown user 'bad'")
        return [Result(u, k) for u in user_ids]


def fire(batcher, requests):
    async def main():
        return await asyncio.gather(*(batcher.recommend(**r) for r in requests), return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_requests_share_batched_calls_on_the_model_thread():
    agent = FakeAgent()
    batcher = MicroBatcher(agent, ModelGate(max_queue=8), window_ms=5, max_batch=8)
    out = fire(batcher, [{"user_id": str(u), "k": 5} for u in range(8)])
    assert [r.user_id for r in out] == [str(u) for u in range(8)]
    assert agent.calls == [[str(u) for u in range(8)]]  # one batched call, arrival order kept
    assert agent.threads == {"reasonrec-model_0"} and "batch_ms" in out[0].timings


def test_requests_arriving_while_a_batch_runs_form_the_next_batch():
    agent = FakeAgent()
    batcher = MicroBatcher(agent, ModelGate(max_queue=8), window_ms=1, max_batch=3)
    out = fire(batcher, [{"user_id": str(u)} for u in range(7)])
    assert all(isinstance(r, Result) for r in out)
    assert [len(c) for c in agent.calls] == [3, 3, 1]


def test_one_bad_request_fails_alone():
    agent = FakeAgent()
    batcher = MicroBatcher(agent, ModelGate(max_queue=8))
    out = fire(batcher, [{"user_id": "1"}, {"user_id": "bad"}, {"user_id": "2"}])
    assert isinstance(out[1], UnknownUserError)
    assert [r.user_id for r in (out[0], out[2])] == ["1", "2"]


def test_different_k_run_as_separate_groups():
    agent = FakeAgent()
    batcher = MicroBatcher(agent, ModelGate(max_queue=8))
    out = fire(batcher, [{"user_id": "1", "k": 5}, {"user_id": "2", "k": 3}, {"user_id": "3", "k": 5}])
    assert [r.k for r in out] == [5, 3, 5] and sorted(map(len, agent.calls)) == [1, 2]


def test_requests_beyond_capacity_get_429_at_once():
    agent = FakeAgent()
    gate = ModelGate(max_queue=2)  # capacity 3 requests in flight
    batcher = MicroBatcher(agent, gate, window_ms=20)
    t0 = time.perf_counter()
    out = fire(batcher, [{"user_id": str(u)} for u in range(6)])
    refused = [r for r in out if isinstance(r, ServerBusyError)]
    assert len(refused) == 3 and all(r.retry_after_s >= 1 for r in refused)
    assert sum(isinstance(r, Result) for r in out) == 3 and time.perf_counter() - t0 < 2
    assert batcher.in_flight == 0


@pytest.mark.parametrize("kwargs", [{"window_ms": -1}, {"max_batch": 0}, {"max_batch": True}])
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        MicroBatcher(FakeAgent(), ModelGate(max_queue=1), **kwargs)
