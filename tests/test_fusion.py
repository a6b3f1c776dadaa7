"""Candidate fusion: RRF / linear arithmetic, per-source ranks on real sources, cold start, weight fitting."""

from __future__ import annotations

import pytest

from reasonrec.errors import ConfigError, DataError, UnknownItemError
from reasonrec.retrieval import Candidate, CandidateGenerator, CandidateSource, RetrievalConfig, build_index
from reasonrec.retrieval.cooccurrence import CooccurrenceSource
from reasonrec.retrieval.fusion import FusedSource, fit_weights, fuse


def C(item: str, score: float) -> Candidate:
    return Candidate(item_id=item, score=score)


def test_rrf_arithmetic_and_ties():
    lists = {"a": [C("x", 9), C("y", 5)], "b": [C("y", 0.9), C("z", 0.1)]}
    out = fuse(lists, {"a": 1.0, "b": 2.0}, k=60)
    assert [c.item_id for c in out] == ["y", "z", "x"]
    y = out[0]
    assert y.score == pytest.approx(1 / 62 + 2 / 61)
    assert y.ranks == {"a": 2, "b": 1} and y.scores == {"a": 5.0, "b": 0.9}
    assert out[2].ranks == {"a": 1} and "b" not in out[2].scores
    tie = fuse({"a": [C("2", 1)], "b": [C("10", 1)]})
    assert [c.item_id for c in tie] == ["2", "10"]  # same score, same best rank: natural id order


def test_linear_zscores_and_missing_items():
    lists = {"a": [C("x", 3.0), C("y", 1.0)], "b": [C("y", 10.0), C("z", 0.0), C("w", 5.0)]}
    out = {c.item_id: c.score for c in fuse(lists, method="linear")}
    # a: z(x)=1, z(y)=-1, missing=-2 ; b: y=(10-5)/sd, z=(0-5)/sd, w=0, missing=z_min-1
    sd = (50 / 3) ** 0.5
    assert out["x"] == pytest.approx(1 + (-5 / sd - 1))
    assert out["y"] == pytest.approx(-1 + 5 / sd)
    assert out["w"] == pytest.approx(-2 + 0)


@pytest.fixture(scope="module")
def sources(ml100k, embedder, tmp_path_factory):
    """Real co-occurrence (all interactions) and a real Chroma text store of 400 items."""
    cfg = RetrievalConfig(persist_dir=tmp_path_factory.mktemp("fusion-chroma"), collection="fusion-test")
    items = [ml100k.items[i] for i in list(ml100k.items)[:400]]
    store, _ = build_index(items, cfg, embedder=embedder)
    semantic = CandidateGenerator(store, embedder, ml100k.items, cfg)
    return {"cooccurrence": CooccurrenceSource.from_dataset(ml100k), "semantic": semantic}


def test_fused_candidates_carry_each_sources_ranks(sources, ml100k):
    fused = FusedSource(sources, depth=50)
    assert isinstance(fused, CandidateSource)
    history = ml100k.history("196")
    out = fused.candidates(history, n=30, exclude={"1"})
    own = {name: [c.item_id for c in s.candidates(history, 50, exclude={"1"})] for name, s in sources.items()}
    assert len(out) == 30 and len({c.item_id for c in out}) == 30
    assert not {c.item_id for c in out} & (set(history) | {"1"})
    assert any(len(c.ranks) == 2 for c in out)
    for c in out:
        assert c.ranks and set(c.ranks) == set(c.scores)
        for name, rank in c.ranks.items():
            assert own[name][rank - 1] == c.item_id
    assert [c.score for c in out] == sorted((c.score for c in out), reverse=True)


def test_where_reaches_every_source(sources, ml100k):
    out = FusedSource(sources, depth=40).candidates(ml100k.history("196"), 20, where={"genre_Comedy": True})
    assert out and all("Comedy" in ml100k.items[c.item_id].genres for c in out)


def test_cold_start_falls_back_to_semantic(sources, ml100k):
    fused = FusedSource(sources, depth=20)
    out = fused.candidates([], n=10, query="a funny animated film for children")
    assert len(out) == 10 and all(set(c.ranks) == {"semantic"} for c in out)
    with pytest.raises(DataError):  # nothing can serve: no history and no query
        fused.candidates([], n=10)
    with pytest.raises(UnknownItemError):
        fused.candidates(["no-such-item"], n=10)


def test_query_raises_semantic_weight(sources, ml100k):
    fused = FusedSource(sources, weights={"semantic": 0.0}, depth=30)
    history = ml100k.history("196")
    plain = fused.candidates(history, 10)
    asked = fused.candidates(history, 10, query="a horror film")
    assert all("cooccurrence" in c.ranks for c in plain)  # weight 0: semantic-only items sink
    assert any("cooccurrence" not in c.ranks for c in asked)  # query-only items now make the list


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"weights": {"nope": 1.0}}, "unknown source"),
        ({"weights": {"semantic": -1.0}}, ">= 0"),
        ({"method": "borda"}, "method"),
        ({"depth": 0}, "depth"),
    ],
)
def test_bad_settings(sources, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FusedSource(sources, **kwargs)


def test_fit_weights_finds_the_useful_source():
    """Source "good" ranks the target 2nd, "noise" puts it last: the noise weight drops to 0."""
    lists, targets = [], []
    for u in range(30):
        good = [C(f"g{u}", 1.0), C(f"t{u}", 0.9)] + [C(f"x{u}_{i}", 0.5 - i / 100) for i in range(8)]
        noise = [C(f"x{u}_{i}", 1 - i / 10) for i in range(8)] + [C(f"g{u}", 0.1), C(f"t{u}", 0.0)]
        lists.append({"a_good": good, "noise": noise})
        targets.append(f"t{u}")
    weights, ndcg = fit_weights(lists, targets)
    assert weights["a_good"] == 1.0 and weights["noise"] == 0.0
    assert ndcg == pytest.approx(1 / 1.5849625, rel=1e-6)  # every target at rank 2
    with pytest.raises(ConfigError):
        fit_weights(lists, targets[:3])
