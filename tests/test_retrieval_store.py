"""ItemStore on a real embedded Chroma with the real packaged MiniLM and the real ML-100K catalogue.

The whole catalogue is indexed once per session (`indexed_store` in conftest.py); tests that write use
small collections of their own so the shared store stays exactly the catalogue. Bad input to the store is
in test_bad_input.py, a killed indexing run in test_crash_safety.py, a Chroma server in test_chroma_server.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from reasonrec.errors import ConfigError, RetrievalError
from reasonrec.retrieval import Embedder, ItemStore, build_index, genre_key
from reasonrec.retrieval.embed import resolve_model


def _small_store(retrieval_config, embedder, name, **overrides):
    config = retrieval_config.model_copy(update={"collection": name, **overrides})
    return ItemStore(config, embedder)


def test_reindex_is_a_no_op(indexed_store, ml100k, retrieval_config, embedder):
    assert indexed_store.count() == len(ml100k.items)
    store, report = build_index(ml100k, retrieval_config, embedder=embedder)
    assert (report.added, report.updated, report.unchanged) == (0, 0, len(ml100k.items))
    assert store.count() == len(ml100k.items)


def test_stored_metadata(indexed_store):
    meta = indexed_store.get(["50", "267", "no-such-id"])
    assert set(meta) == {"50", "267"}
    assert meta["50"]["title"] == "Star Wars" and meta["50"]["year"] == 1977
    assert meta["50"]["genres"] == "Action|Adventure|Romance|Sci-Fi|War"
    assert meta["50"][genre_key("Sci-Fi")] is True and genre_key("Comedy") not in meta["50"]
    assert "year" not in meta["267"]  # unknown year: omitted, so year filters never match it


def test_text_query_finds_star_wars(indexed_store, ml100k):
    hits = indexed_store.query(text="Star Wars", n=10)
    assert len(hits) == 10
    assert any("Star Wars" in ml100k.items[h.item_id].title for h in hits[:3])
    assert hits[0].item_id == "50"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in scores)


@pytest.mark.parametrize(
    "where, check",
    [
        ({genre_key("Comedy"): True}, lambda it: "Comedy" in it.genres),
        ({"year": {"$gte": 1980}}, lambda it: it.year is not None and it.year >= 1980),
        (
            {"$and": [{genre_key("Sci-Fi"): True}, {"year": {"$lt": 1980}}]},
            lambda it: "Sci-Fi" in it.genres and it.year < 1980,
        ),
        ({genre_key("Drama"): {"$ne": True}}, lambda it: "Drama" not in it.genres),
    ],
)
def test_where_filters(indexed_store, ml100k, where, check):
    hits = indexed_store.query(text="space adventure", n=15, where=where)
    assert len(hits) == 15
    assert all(check(ml100k.items[h.item_id]) for h in hits)


def test_exclude_still_returns_exactly_n(indexed_store, ml100k):
    top = [h.item_id for h in indexed_store.query(text="Star Wars", n=10)]
    hits = indexed_store.query(text="Star Wars", n=10, exclude=set(top[:5]))
    assert len(hits) == 10 and not set(top[:5]) & {h.item_id for h in hits}
    assert [h.item_id for h in hits][:5] == top[5:]  # the rest keep their order

    noir = [i for i, it in ml100k.items.items() if "Film-Noir" in it.genres]
    where = {genre_key("Film-Noir"): True}
    assert len(indexed_store.query(text="detective", n=100, where=where)) == len(noir)  # all available
    hits = indexed_store.query(text="detective", n=100, where=where, exclude=set(noir[:4]))
    assert len(hits) == len(noir) - 4 and {h.item_id for h in hits} == set(noir[4:])


def test_query_by_vector_matches_text(indexed_store, embedder):
    v = embedder.encode(["Toy Story"])[0]
    by_vector = indexed_store.query(vector=v * 3.0, n=5)
    by_text = indexed_store.query(text="Toy Story", n=5)
    # Same items in the same order; the scores only up to float32 rounding, since
    # re-normalising 3v is not bit-identical to the embedder's own unit vector.
    assert [h.item_id for h in by_vector] == [h.item_id for h in by_text]
    assert [h.score for h in by_vector] == pytest.approx([h.score for h in by_text], abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of"),
        ({"text": "x", "vector": np.ones(384)}, "exactly one of"),
        ({"text": "x", "n": 0}, "`n` must be >= 1, got 0"),
        ({"text": "  "}, "`text` is empty"),
        ({"vector": np.zeros(384)}, "non-zero"),
        ({"text": "x", "where": {"year": {"$bad": 1}}}, "invalid `where` filter"),
    ],
)
def test_query_validation(indexed_store, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        indexed_store.query(**kwargs)


def test_changed_item_is_updated_and_stale_genres_removed(ml100k, retrieval_config, embedder):
    items = [ml100k.items[str(i)] for i in range(1, 41)]
    store = _small_store(retrieval_config, embedder, "changed-items")
    assert store.upsert(items).added == 40
    toy = items[0].model_copy(update={"title": "Toy Story (Director's Cut)", "genres": ("Animation",)})
    report = store.upsert([toy, *items[1:]])
    assert (report.added, report.updated, report.unchanged) == (0, 1, 39)
    meta = store.get(["1"])["1"]
    assert meta["title"] == "Toy Story (Director's Cut)" and meta["genres"] == "Animation"
    assert genre_key("Comedy") not in meta  # upsert merges metadata; the store must null stale keys
    comedies = store.query(text="cartoon", n=40, where={genre_key("Comedy"): True})
    assert comedies and "1" not in {h.item_id for h in comedies}
    assert store.delete(["1", "2", "no-such-id"]) == 2 and store.count() == 38


def test_reopen_with_the_embedding_function(indexed_store, retrieval_config, embedder):
    reopened = ItemStore(retrieval_config, embedder)
    assert reopened.count() == indexed_store.count()
    col = reopened.collection
    assert col.configuration["hnsw"]["space"] == "cosine"
    assert col.configuration["hnsw"]["ef_search"] == retrieval_config.ef_search
    assert type(col.configuration["embedding_function"]).__name__ == "ReasonRecEmbeddingFunction"
    # Chroma embeds query_texts with our function, so its answer matches ours.
    res = col.query(query_texts=["Star Wars"], n_results=3)
    assert res["ids"][0] == [h.item_id for h in reopened.query(text="Star Wars", n=3)]


def test_reopen_with_another_embedding_model_fails(indexed_store, retrieval_config, embedder):
    # Same weights, but named by folder: a different model name as far as the store can tell.
    other = Embedder(resolve_model("all-MiniLM-L6-v2"))
    assert other.name != embedder.name
    with pytest.raises(RetrievalError, match="built with embedding model 'all-MiniLM-L6-v2'"):
        ItemStore(retrieval_config, other)


def test_ef_search_follows_the_config(retrieval_config, embedder):
    _small_store(retrieval_config, embedder, "ef-search")
    store = _small_store(retrieval_config, embedder, "ef-search", ef_search=64)
    assert store.collection.configuration["hnsw"]["ef_search"] == 64


def test_missing_model_folder(tmp_path):
    with pytest.raises(RetrievalError, match="does not exist"):
        Embedder(str(tmp_path / "no-model"))
