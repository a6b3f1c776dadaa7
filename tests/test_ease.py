"""EASE source: the closed form checked against an independent ridge solve, candidates, cold start, the
catalogue-size limit, the content-keyed cache, and its place in the agent's fused source."""

from __future__ import annotations

import time

import numpy as np
import pytest

from reasonrec.agent.candidates import build_candidate_source
from reasonrec.agent.config import AgentConfig
from reasonrec.errors import ConfigError, DataError
from reasonrec.retrieval import CandidateSource, Item
from reasonrec.retrieval.config import EaseConfig
from reasonrec.retrieval.ease import EaseSource

TOY = {
    "u1": ["a", "b", "d"],
    "u2": ["a", "b", "c"],
    "u3": ["b", "c"],
    "u4": ["a", "c", "e", "d"],
    "u5": ["c", "e"],
}
ITEMS = {
    i: Item(id=i, title=i.upper(), year=1990 + n, genres=("Comedy",) if i in "ac" else ())
    for n, i in enumerate("abcde")
}


@pytest.fixture(scope="module")
def toy():
    return EaseSource.fit(TOY, EaseConfig(l2=0.5), ITEMS)


def test_weights_are_the_ridge_regression_of_each_item_on_the_others(toy):
    """EASE's column j with diag(B) = 0 is the ridge regression of item j's column on the other columns;
    solving each of those directly must give the same numbers (a wrong sign or a row/column mix-up fails)."""
    ids = toy.ids
    x = np.array([[1.0 if i in set(seq) else 0.0 for i in ids] for seq in TOY.values()])
    for j in range(len(ids)):
        rest = [k for k in range(len(ids)) if k != j]
        a = x[:, rest]
        b = np.linalg.solve(a.T @ a + 0.5 * np.eye(len(rest)), a.T @ x[:, j])
        assert toy.weights[rest, j] == pytest.approx(b, abs=1e-5)
        assert toy.weights[j, j] == 0.0


def test_scores_are_weight_rows_summed_over_the_history(toy):
    assert isinstance(toy, CandidateSource)
    s = toy.scores(["a", "b", "a"])  # a repeated item counts once: EASE reads who has what
    assert s == pytest.approx(toy.weights[toy.index["a"]] + toy.weights[toy.index["b"]])
    cands = toy.candidates(["a", "b"], 10)
    assert {c.item_id for c in cands} == {"c", "d", "e"}  # every other fitted item, whatever its sign
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    assert [c.item_id for c in toy.candidates(["a", "b"], 10, where={"genre_Comedy": True})] == ["c"]
    without_c = [c.item_id for c in cands if c.item_id != "c"]
    assert [c.item_id for c in toy.candidates(["a", "b"], 10, exclude={"c"})] == without_c


def test_cold_start_and_bad_input(toy):
    with pytest.raises(DataError, match="non-empty history"):
        toy.candidates([], 5)
    with pytest.raises(DataError, match="none of the history items"):
        toy.candidates(["never-seen"], 5)
    with pytest.raises(ConfigError, match="`n`"):
        toy.candidates(["a"], 0)
    with pytest.raises(ValueError, match="l2"):
        EaseConfig(l2=0)
    with pytest.raises(DataError, match="no items"):
        EaseSource.fit({"u": []})


def test_a_catalogue_too_large_is_refused_and_the_agent_serves_without_it(ml100k):
    with pytest.raises(ConfigError, match="at most 4 items"):
        EaseSource.fit(TOY, EaseConfig(max_items=4))
    config = AgentConfig.model_validate({"candidates": {"collaborative": "off", "ease": {"max_items": 100}}})
    notes: list[str] = []
    fused = build_candidate_source(ml100k, config, semantic=lambda: None, notes=notes)
    assert "ease" not in fused.sources and "cooccurrence" in fused.sources
    assert any("without the `ease` source" in n and "1,682" in n for n in notes)


def test_ml100k_fit_is_fast_cached_and_covers_every_item(ml100k, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONREC_HOME", str(tmp_path))
    monkeypatch.setenv("REASONREC_CACHE", "on")
    seqs = {u: ml100k.history(u) for u in ml100k.users()}
    t = time.perf_counter()
    fitted = EaseSource.fit(seqs, None, ml100k.items)
    assert time.perf_counter() - t < 10  # ~0.5 s for the 1,682 x 1,682 inverse on the shared 2-core CPU
    assert len(fitted.ids) == len({r.item_id for r in ml100k.interactions})
    assert len(list((tmp_path / "cache" / "ease").glob("*.npz"))) == 1
    cached = EaseSource.fit(seqs, None, ml100k.items)
    assert cached.ids == fitted.ids and np.array_equal(cached.weights, fitted.weights)
    history = ml100k.history("196")
    cands = cached.candidates(history, 20)
    assert len(cands) == 20 and not {c.item_id for c in cands} & set(history)


def test_the_agents_default_fusion_holds_ease(ml100k):
    assert "ease" in AgentConfig().candidates.sources
    config = AgentConfig.model_validate({"candidates": {"collaborative": "off"}})
    fused = build_candidate_source(ml100k, config, semantic=lambda: None)  # the text source is never built here
    assert isinstance(fused.sources["ease"], EaseSource) and fused.weights["ease"] > 0
    assert len(fused.sources["ease"].candidates(ml100k.history("196"), 30)) == 30
