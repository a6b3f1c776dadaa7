"""RecommenderAgent end to end on real components: ML-100K, Chroma + MiniLM, SmolLM2, the parser."""

from __future__ import annotations

import pytest

from reasonrec.agent.api import RecommenderAgent
from reasonrec.agent.config import AgentConfig
from reasonrec.errors import ConfigError, DataError, UnknownItemError, UnknownUserError


def check_result(recs, agent, k, seen=(), candidates=None):
    ids = recs.item_ids()
    assert len(ids) == k == recs.k
    assert len(set(ids)) == k, "duplicates"
    assert all(i in agent.items for i in ids), "off-catalogue item"
    assert not set(ids) & set(seen), "an already-seen item was recommended"
    if candidates is not None:
        assert set(ids) <= set(candidates), "item outside the candidate set"
    assert [r.rank for r in recs.items] == list(range(1, k + 1))
    for r in recs.items:
        assert r.reason.strip(), "empty reason"
        assert r.source in ("model", "retrieval", "fallback")
        assert r.title == agent.items[r.item_id].title
    assert recs.n_model + recs.n_retrieval + recs.n_fallback == k
    assert recs.template_version and recs.model_id
    assert recs.timings["total"] > 0


@pytest.mark.slow
def test_recommend_for_ml100k_user(agent):
    recs = agent.recommend(user_id="196", k=5)
    check_result(recs, agent, 5, seen=agent.dataset.history("196"))


@pytest.mark.slow
def test_recommend_for_new_user_with_history_and_query(agent):
    recs = agent.recommend(history=["50", "172", "181"], query="a funny comedy", k=3)
    check_result(recs, agent, 3, seen=["50", "172", "181"])


@pytest.mark.slow
def test_recommend_cold_start_from_query_only(agent):
    recs = agent.recommend(query="space adventure with robots", k=3)
    check_result(recs, agent, 3)


@pytest.mark.slow
def test_rank_keeps_to_the_given_candidates(agent):
    cands = [str(i) for i in range(100, 120)]
    recs = agent.rank(history=["1", "2", "3"], candidates=cands, k=5)
    check_result(recs, agent, 5, candidates=cands)


@pytest.mark.slow
def test_recommend_many_batches_users(agent):
    users = ["1", "2", "3", "4"]
    out = agent.recommend_many(users, k=4)
    assert [r.user_id for r in out] == users
    for uid, recs in zip(users, out, strict=True):
        check_result(recs, agent, 4, seen=agent.dataset.history(uid))
        assert recs.timings["batch_size"] == 4


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"user_id": "999999"}, UnknownUserError, "unknown user"),
        ({"user_id": "196", "k": 0}, ConfigError, "`k` must be"),
        ({"history": ["1", "no-such-item"]}, UnknownItemError, "no-such-item"),
        ({"history": []}, DataError, "query"),
        ({}, DataError, "user_id"),
    ],
)
def test_caller_mistakes_are_typed_errors(agent, kwargs, error, message):
    with pytest.raises(error, match=message):
        agent.recommend(**kwargs)


def test_rank_rejects_k_larger_than_candidates(agent):
    with pytest.raises(ConfigError, match="number of candidates"):
        agent.rank(history=["1"], candidates=["2", "3"], k=5)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown option"):
        AgentConfig.build(ranker={"kk": 3})
    with pytest.raises(ConfigError, match="ranker.k"):
        AgentConfig.build(ranker={"k": 0})


def test_garbage_model_output_still_gives_k_valid_items(agent, tiny_random_lm):
    """A random-weight model writes noise; the parser + fallback must still return k candidates.

    Unconstrained generative mode: with constrained decoding (the default) noise cannot happen."""
    cfg = agent.config.model_copy(deep=True)
    cfg.ranker.mode, cfg.ranker.constrained = "generative", False
    noisy = RecommenderAgent(cfg, dataset=agent.dataset, model=tiny_random_lm)
    noisy._generator = agent.candidate_source  # share the already indexed store
    cands = [str(i) for i in range(200, 220)]
    recs = noisy.rank(history=["1", "2"], candidates=cands, k=6)
    check_result(recs, noisy, 6, candidates=cands)
    assert recs.n_fallback >= 1 and not recs.valid_output
    assert all(r.reason_source == "template" for r in recs.items if r.source == "fallback")


@pytest.mark.parametrize(
    "reason, kept",
    [
        ("The people who watched the movie watched it.", False),  # names nothing checkable
        ("A comedy like the ones you watch.", True),  # a real genre of the item
        ("Fans of Up in Smoke will enjoy it.", True),  # a real co-watch claim (31 people have both)
        ("A 1995 film for a quiet evening.", True),  # the item's real year (3+ words: shorter is no reason)
        ("A 1995 horror film for a quiet evening.", False),  # a false genre (agent/ranking/claims.py)
    ],
)
def test_ungrounded_model_reasons_are_replaced_by_facts(ml100k, reason, kept):
    from reasonrec.agent.ranking.evidence import ReasonData
    from reasonrec.agent.ranking.finalize import build_recommendations
    from reasonrec.agent.ranking.request import RankRequest
    from reasonrec.prompts.parser import ParsedEntry, ParsedRanking
    from reasonrec.retrieval.cooccurrence import CooccurrenceSource

    items = ml100k.items
    history = [items[i] for i in ml100k.history("196")]
    item = items["1"]  # Toy Story (1995): Animation, Children's, Comedy
    parsed = ParsedRanking(entries=[ParsedEntry(label="A", item_id="1", reason=reason, source="model")], n_model=1,
                           n_fallback=0, off_candidate=[], duplicates=[], missing_reasons=0, format="lines",
                           valid=True)  # fmt: skip
    req = RankRequest(history, [item], k=1, reason_data=ReasonData(items, CooccurrenceSource.from_dataset(ml100k)))
    out = build_recommendations(req, parsed, None, "m", "generative", {}, template="t")
    assert out.faithful_rate_model == (0.0 if "horror" in reason else 1.0)
    assert (out.items[0].reason == reason) == kept and out.items[0].grounded and out.items[0].faithful
    assert out.items[0].reason_source == ("model" if kept else "template")
