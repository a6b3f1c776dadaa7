"""Shared by the chat tests: the scoring-mode agent and session-store fixtures, and `check_turn`, which checks
every recommended item against the catalogue metadata of the turn's constraints.

    from helpers import chat_checks
    from helpers.chat_checks import check_turn
    chat_agent, store = chat_checks.chat_agent, chat_checks.store   # the fixtures, in a test module
"""

from __future__ import annotations

import pytest

from reasonrec.agent.api import RecommenderAgent
from reasonrec.agent.chat.store import SessionStore
from reasonrec.agent.config import AgentConfig, RankerConfig

_WHY = ("Only ", "so I dropped", "The ranker kept")


@pytest.fixture(scope="module")
def chat_agent(ml100k, lm, retrieval_config, indexed_store):
    """Scoring mode and 10 candidates keep a turn to about a second of model time on CPU."""
    cfg = AgentConfig(
        retrieval=retrieval_config.model_copy(update={"n_candidates": 10}), ranker=RankerConfig(mode="scoring")
    )
    return RecommenderAgent(cfg, dataset=ml100k, model=lm)


@pytest.fixture
def store(tmp_path):
    s = SessionStore(tmp_path / "sessions.sqlite3")
    yield s
    s.close()


def check_turn(turn, agent, state, k=None):
    """Every item: in the catalogue, unseen, never rejected, and inside the turn's stated constraints."""
    recs, c = turn.recommendations, turn.constraints
    assert recs is not None and turn.clarification is None, turn.reply
    ids = recs.item_ids()
    assert len(ids) == len(set(ids)) == (k or c.k), turn.reply
    history = set(agent.dataset.history(state.user_id)) if state.user_id else set()
    for r in recs.items:
        item = agent.items[r.item_id]
        assert r.reason.strip() and r.title == item.title
        assert set(c.genres) <= set(item.genres), (item, c)
        assert not set(c.excluded_genres) & set(item.genres), (item, c)
        assert c.year_min is None or (item.year or 0) >= c.year_min, (item, c)
        assert c.year_max is None or (item.year or 9999) <= c.year_max, (item, c)
        assert r.item_id not in state.disliked and r.item_id not in history and r.item_id not in state.liked
    assert f"Here {'is' if len(ids) == 1 else 'are'} {len(ids)} " in turn.reply and turn.timings["total_ms"] > 0
    check_says_why(turn)


def check_says_why(turn) -> None:
    """A list shorter than the turn's k must say why in the reply (issue 17)."""
    recs = turn.recommendations
    if recs is not None and len(recs.items) < turn.constraints.k:
        assert any(w in turn.reply for w in _WHY), turn.reply
