"""A small version of bench/load_test.py: more concurrent clients than the server admits.

A real uvicorn server on 127.0.0.1 with a model queue of 2 (3 jobs admitted at once) gets 40
requests from 8 clients that do not back off; every response must be a 200 with k items or a clean
429 (JSON `error`, `Retry-After`), never a hang, a 500 or a dropped connection.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
from helpers.servers import BackgroundServer

from reasonrec.agent.interfaces.server import create_app


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "load_test.py"
    spec = importlib.util.spec_from_file_location("reasonrec_bench_load_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scoring_agent(ml100k, lm, indexed_store, retrieval_config):
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig, RankerConfig

    return RecommenderAgent(
        AgentConfig(retrieval=retrieval_config, ranker=RankerConfig(mode="scoring")), dataset=ml100k, model=lm
    )


def test_overload_gets_clean_refusals(scoring_agent, ml100k, tmp_path):
    bench = _load_bench()
    app = create_app(scoring_agent, store=None, max_queue=2)
    with BackgroundServer(app) as srv:
        report = asyncio.run(
            bench.run_load(srv.url, ml100k.users()[:100], requests=40, concurrency=8, k=3, honour_retry_after=False)
        )
        health = app.state.gate
        assert health.pending == 0, "every admitted job finished"
    assert report.requests == 40 and sum(report.status_counts.values()) == 40
    assert report.unclean == 0, report.examples
    assert set(report.status_counts) <= {"200", "429"}
    assert report.answered >= 3 and report.refused >= 5  # 8 clients > 3 admitted: some must be refused
    assert report.answered + report.refused == 40
    assert "server busy" in report.examples["429"] and "max_queue=2" in report.examples["429"]
    assert report.refused_latency_ms["p99"] < report.latency_ms["p50"], "a refusal is immediate, not queued"
