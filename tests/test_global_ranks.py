"""Global ranks: an item's rank over the whole catalogue equals its rank in the source's own list where
the list reaches it, goes on past the list's end, and gives a caller's own candidates real features."""

from __future__ import annotations

import pytest

from reasonrec.agent.candidates import ranking_features
from reasonrec.retrieval import CandidateGenerator, RetrievalConfig, build_index
from reasonrec.retrieval.collaborative import CollaborativeSource
from reasonrec.retrieval.config import CollaborativeConfig
from reasonrec.retrieval.cooccurrence import CooccurrenceSource
from reasonrec.retrieval.ease import EaseSource
from reasonrec.retrieval.fusion import FusedSource
from reasonrec.retrieval.ranks import global_ranks, safe_global_ranks
from reasonrec.retrieval.sasrec import load_or_train

pytest.importorskip("cornac")

TINY = CollaborativeConfig(
    embedding_dim=16, max_len=20, n_sample=128, batch_size=128, max_epochs=1, patience=0, threads=1
)


@pytest.fixture(scope="module")
def sources(ml100k, embedder, tmp_path_factory):
    """Real sources: co-occurrence and EASE on all interactions, a tiny SASRec in Chroma, a 300-item text store."""
    seqs = {u: ml100k.history(u) for u in ml100k.users()[:60]}
    model, _ = load_or_train(seqs, TINY, cache_dir=tmp_path_factory.mktemp("ranks-cache"))
    cfg = RetrievalConfig(persist_dir=tmp_path_factory.mktemp("ranks-chroma"), collection="ranks-test")
    store, _ = build_index([ml100k.items[i] for i in list(ml100k.items)[:300]], cfg, embedder=embedder)
    return {
        "collaborative": CollaborativeSource(model, cfg, ml100k.items),
        "cooccurrence": CooccurrenceSource.from_dataset(ml100k),
        "ease": EaseSource.from_dataset(ml100k),
        "semantic": CandidateGenerator(store, embedder, ml100k.items, cfg),
    }


@pytest.mark.parametrize("name", ["collaborative", "cooccurrence", "ease", "semantic"])
def test_global_rank_is_the_list_rank_and_continues_past_it(sources, ml100k, name):
    source, history = sources[name], ml100k.history("1")[:30]
    listed = [c.item_id for c in source.candidates(history, 120)]
    top, beyond = listed[:40], listed[40:]
    ranks = global_ranks(source, history, listed)
    assert [ranks[i] for i in top] == list(range(1, 41))  # the list's own order, rank for rank
    assert all(ranks[i] > 40 for i in beyond)
    assert not set(ranks) & set(history)


def test_items_a_source_cannot_score_are_left_out(sources, ml100k):
    history = ml100k.history("1")[:30]
    outside_store = [i for i in ml100k.items if i not in set(sources["semantic"].store.ids())][:3]
    assert not global_ranks(sources["semantic"], history, outside_store)
    assert not global_ranks(sources["cooccurrence"], history, history[:3])  # history items are never ranked
    assert safe_global_ranks(sources["cooccurrence"], [], ["1"], None) == {}  # cold start: no ranks, no error


def test_a_callers_list_gets_features_beyond_the_fused_depth(sources, ml100k):
    fused = FusedSource(sources, weights={"collaborative": 1.0, "cooccurrence": 1.25, "semantic": 0.2}, k=5, depth=10)
    history = ml100k.history("1")[:30]
    deep = [c.item_id for c in sources["cooccurrence"].candidates(history, 200)][100:110]  # far past depth 10
    feats = ranking_features(fused, history, deep)
    assert all(f["cooccurrence"] > 0 for f in feats)
    assert all(f["fusion"] == pytest.approx(sum(v for k, v in f.items() if k != "fusion")) for f in feats)
    known = fused.candidates(history, 10)  # the agent's own list: features exactly as the fusion had them
    as_known = ranking_features(fused, history, [c.item_id for c in known], known=known)
    assert [f["fusion"] for f in as_known] == pytest.approx([5 * c.score for c in known])
