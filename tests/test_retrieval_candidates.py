"""CandidateGenerator on the session-indexed ML-100K store: exclusion, size, determinism, query mixing."""

from __future__ import annotations

import numpy as np
import pytest

from reasonrec.errors import ConfigError, DataError, UnknownItemError
from reasonrec.retrieval import CandidateGenerator, CandidateSource, Item, genre_key


@pytest.fixture(scope="module")
def generator(indexed_store, embedder, ml100k, retrieval_config):
    return CandidateGenerator(indexed_store, embedder, ml100k.items, retrieval_config)


def test_is_a_candidate_source(generator):
    assert isinstance(generator, CandidateSource)


@pytest.mark.parametrize("n", [1, 20, 100])
def test_user_196_excludes_history_exactly_n_deterministic(generator, ml100k, n):
    history = ml100k.history("196")
    first = generator.candidates(history, n=n)
    assert len(first) == n
    assert not {c.item_id for c in first} & set(history)
    assert len({c.item_id for c in first}) == n
    assert [c.score for c in first] == sorted((c.score for c in first), reverse=True)
    generator.clear_cache()
    assert generator.candidates(history, n=n) == first


def test_extra_exclude_and_where(generator, ml100k):
    history = ml100k.history("196")
    base = generator.candidates(history, n=10)
    skip = {c.item_id for c in base[:3]}
    again = generator.candidates(history, n=10, exclude=skip)
    assert len(again) == 10 and not skip & {c.item_id for c in again}
    comedies = generator.candidates(history, n=10, where={genre_key("Comedy"): True})
    assert len(comedies) == 10 and all("Comedy" in ml100k.items[c.item_id].genres for c in comedies)


def test_query_pulls_results_toward_the_query(generator, ml100k):
    history = ml100k.history("196")
    query = "animated cartoon for children"

    def animated(cands):
        return sum("Animation" in ml100k.items[c.item_id].genres for c in cands)

    plain = generator.candidates(history, n=20)
    mixed = generator.candidates(history, n=20, query=query)
    assert mixed != plain
    assert animated(mixed) > animated(plain)
    assert not {c.item_id for c in mixed} & set(history)


def test_query_alone_serves_a_new_user(generator, ml100k):
    cands = generator.candidates([], n=5, query="Star Wars")
    assert len(cands) == 5 and any("Star Wars" in ml100k.items[c.item_id].title for c in cands[:3])


def test_recency_weighting(indexed_store, embedder, ml100k, retrieval_config):
    history = ml100k.history("196")

    def profile(**overrides):
        config = retrieval_config.model_copy(update=overrides)
        return CandidateGenerator(indexed_store, embedder, ml100k.items, config).profile(history)

    gen = CandidateGenerator(indexed_store, embedder, ml100k.items, retrieval_config)
    recent = history[-retrieval_config.max_profile_items :]
    vecs = np.stack(list(gen.vectors(recent).values()))
    ages = np.arange(len(recent))[::-1]
    expected = (0.5 ** (ages / retrieval_config.recency_half_life)) @ vecs
    np.testing.assert_allclose(profile(), expected / np.linalg.norm(expected), atol=1e-5)
    assert float(profile(recency_half_life=1e-3) @ vecs[-1]) > 0.999  # only the newest item counts
    flat = vecs.mean(0) / np.linalg.norm(vecs.mean(0))
    assert float(profile(recency_half_life=1e9) @ flat) > 0.999  # all items count equally
    last5 = vecs[-5:].mean(0)
    assert float(profile(max_profile_items=5, recency_half_life=1e9) @ last5) / np.linalg.norm(last5) > 0.999


def test_items_not_in_the_store_are_embedded_from_the_catalogue(
    indexed_store, embedder, ml100k, retrieval_config
):
    extra = Item(id="new-1", title="Star Wars: A New Hope", year=1977, genres=("Sci-Fi",))
    gen = CandidateGenerator(indexed_store, embedder, {**ml100k.items, extra.id: extra}, retrieval_config)
    cands = gen.candidates(["new-1"], n=5)
    assert "50" in {c.item_id for c in cands}


@pytest.mark.parametrize(
    "history, kwargs, error, match",
    [
        ([], {}, DataError, "history is empty and no `query`"),
        ([], {"query": "   "}, DataError, "history is empty"),
        (["1", "no-such-item"], {}, UnknownItemError, "'no-such-item'"),
        (["1"], {"n": 0}, ConfigError, "`n` must be >= 1, got 0"),
    ],
)
def test_errors(generator, history, kwargs, error, match):
    with pytest.raises(error, match=match):
        generator.candidates(history, **{"n": 5, **kwargs})


def test_preload_reads_every_vector_once_and_changes_no_candidate(indexed_store, embedder, ml100k, retrieval_config):
    cold = CandidateGenerator(indexed_store, embedder, ml100k.items, retrieval_config)
    warm = CandidateGenerator(indexed_store, embedder, ml100k.items, retrieval_config)
    reads: list[int] = []
    real = indexed_store.embeddings

    def counted(ids):  # the real store, only counted: which requests still read vectors from it
        ids = list(ids)
        reads.append(len(ids))
        return real(ids)

    assert warm.preload(max_items=indexed_store.count() - 1) == 0  # too big a catalogue: nothing read
    assert warm.preload(max_items=indexed_store.count()) == indexed_store.count() == len(ml100k.items)
    indexed_store.embeddings = counted
    try:
        for user in ("196", "1", "500"):
            history = ml100k.history(user)
            assert warm.candidates(history, n=20) == cold.candidates(history, n=20)
    finally:
        del indexed_store.embeddings
    assert len(reads) == 3  # every one from the generator that did not preload
