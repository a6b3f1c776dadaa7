"""The ranking forward pass is skipped where it cannot change the order (fused.lm_decides).

With `candidates.lm_weight` 0 the fused score of a request with retrieval features is the fused retrieval
score alone, so scoring mode neither runs the LM nor (without an injected model) loads it, and hybrid
mode shows its cards before the model writes anything. Real ML-100K rows, the session's Chroma store and
the tiny random model (its forward passes are counted); the real SmolLM2 only for the recorded id.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from reasonrec.agent.api import RecommenderAgent
from reasonrec.agent.config import AgentConfig, ModelConfig
from reasonrec.agent.model.lazy import LazyModel
from reasonrec.agent.ranking import progress, scoring
from reasonrec.agent.timing import timing_line

USERS = ["196", "1", "42"]
HISTORY = ["50", "172", "181"]


def make_agent(ml100k, retrieval_config, model=None, source=None, mode="scoring", lm_weight=0.0):
    cfg = AgentConfig(retrieval=retrieval_config, ranker={"mode": mode}, candidates={"lm_weight": lm_weight})
    return RecommenderAgent(cfg, dataset=ml100k, model=model, candidate_source=source)


@pytest.fixture(scope="module")
def source(ml100k, indexed_store, retrieval_config):
    """One fused candidate source (its fits built once) for every agent of this file."""
    return make_agent(ml100k, retrieval_config).candidate_source


@contextmanager
def forward_calls(lm):
    """A list that grows by one per forward pass of `lm`'s decoder (scoring and `generate` both run it)."""
    calls: list[int] = []
    handle = lm.model.get_decoder().register_forward_hook(lambda *a: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def comparable(recs):
    """A result without what differs by construction: timings, the LM margin `confidence`, and who is said to
    have ordered the items (the forced pass below claims the LM decides)."""
    drop = {"timings": True, "confidence": True, "n_model": True, "n_retrieval": True, "items": {"__all__": {"source"}}}
    return recs.model_dump(mode="json", exclude=drop)


def test_scoring_with_lm_weight_0_never_loads_the_model(ml100k, retrieval_config, source, monkeypatch):
    def refuse(cfg):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("reasonrec.agent.model.loading.load_model", refuse)
    agent = make_agent(ml100k, retrieval_config, source=source)
    assert isinstance(agent.ranker.lm, LazyModel)
    for recs in (agent.recommend(user_id="196", k=5), agent.recommend(history=HISTORY, k=5)):
        assert len(recs.item_ids()) == 5 and recs.model_id == "SmolLM2-135M-Instruct" and recs.mode == "scoring"
        assert recs.confidence is None and recs.timings["lm_skipped"] == 1 and recs.timings["forward_ms"] == 0
        assert all(r.reason for r in recs.items)
        assert "no model pass" in timing_line(recs.timings)
        # the result says who ordered the items: not the LM, which had no weight
        assert {r.source for r in recs.items} == {"retrieval"} and recs.n_model == 0 and recs.n_retrieval == 5
        assert recs.order_line() == "5 by retrieval score"
    assert agent._model is None
    # A caller's own list has no retrieval features: the LM alone ranks it, so the model is needed.
    with pytest.raises(AssertionError, match="the model was loaded"):
        agent.rank(HISTORY, ["1", "82", "100", "135"], k=2)


def test_lm_weight_0_gives_the_order_the_lm_pass_gave(ml100k, retrieval_config, source, tiny_random_lm, monkeypatch):
    agent = make_agent(ml100k, retrieval_config, model=tiny_random_lm, source=source)
    with forward_calls(tiny_random_lm) as calls:
        skipped = agent.recommend_many(USERS, k=5)
    assert calls == [] and all(r.timings["lm_skipped"] == 1 and r.confidence is None for r in skipped)
    # The path before the skip: every request scored, the LM's term then multiplied by lm_weight 0.
    monkeypatch.setattr(scoring, "lm_decides", lambda req, lm_weight: True)
    with forward_calls(tiny_random_lm) as calls:
        scored = make_agent(ml100k, retrieval_config, model=tiny_random_lm, source=source).recommend_many(USERS, k=5)
    assert calls and all(r.confidence is not None and "lm_skipped" not in r.timings for r in scored)
    assert all(it.source == "retrieval" for r in skipped for it in r.items)
    assert all(it.source == "model" for r in scored for it in r.items)  # as the patched lm_decides claims
    assert [comparable(r) for r in skipped] == [comparable(r) for r in scored]


def test_lm_weight_above_0_runs_the_lm_and_changes_the_order(ml100k, retrieval_config, source, tiny_random_lm):
    fused = make_agent(ml100k, retrieval_config, model=tiny_random_lm, source=source).recommend_many(USERS, k=5)
    agent = make_agent(ml100k, retrieval_config, model=tiny_random_lm, source=source, lm_weight=1000.0)
    with forward_calls(tiny_random_lm) as calls:
        weighted = agent.recommend_many(USERS, k=5)
    assert len(calls) == 1  # one batched pass for the three users
    assert all(r.confidence is not None and r.timings["forward_ms"] > 0 for r in weighted)
    assert [r.item_ids() for r in weighted] != [r.item_ids() for r in fused]
    assert all(it.source == "model" for r in weighted for it in r.items)  # here the LM had its say


def test_hybrid_with_lm_weight_0_shows_cards_before_the_model_runs(ml100k, retrieval_config, source, tiny_random_lm):
    agent = make_agent(ml100k, retrieval_config, model=tiny_random_lm, source=source, mode="hybrid")
    fused = make_agent(ml100k, retrieval_config, model=tiny_random_lm, source=source).recommend(user_id="196", k=3)
    seen: list[tuple[list[str], int]] = []

    class Sink:
        def cards(self, request_index, item_ids):
            seen.append((item_ids, len(calls)))

        def reason(self, request_index, item_id, text):
            pass

    with forward_calls(tiny_random_lm) as calls, progress.reporting(Sink()):
        recs = agent.recommend(user_id="196", k=3)
    assert seen == [(fused.item_ids(), 0)]  # the fused order, before any forward pass
    assert calls and recs.item_ids() == fused.item_ids() and recs.timings["lm_skipped"] == 1
    assert all(r.source == "retrieval" and r.reason_source in ("model", "template") for r in recs.items)


def test_lazy_model_records_the_loaded_models_id_without_loading(lm, monkeypatch):
    loads: list[int] = []
    lazy = LazyModel(ModelConfig(), lambda: loads.append(1) or lm)
    assert lazy.model_id == lm.model_id and lazy.adapter_template is None and lazy.score_temperature is None
    assert repr(lazy) == "LazyModel('SmolLM2-135M-Instruct')" and loads == []
    assert lazy.tokenizer is lm.tokenizer and loads == [1]
