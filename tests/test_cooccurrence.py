"""Co-occurrence source and the `where` evaluator: hand-counted toy data, a filter table, Chroma parity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reasonrec.errors import ConfigError, DataError
from reasonrec.retrieval import CandidateSource, Item, item_metadata
from reasonrec.retrieval.config import CooccurrenceConfig
from reasonrec.retrieval.cooccurrence import CooccurrenceSource
from reasonrec.retrieval.where import matches, validate_where

# Four users; with window 2, "a" and "d" co-occur only for u1 (positions 0 and 2), never for u4 (0 and 3).
TOY = {
    "u1": ["a", "b", "d"],
    "u2": ["a", "b", "c"],
    "u3": ["b", "c"],
    "u4": ["a", "c", "e", "d"],
}
ITEMS = {
    "a": Item(id="a", title="A", year=1977, genres=("Sci-Fi",)),
    "b": Item(id="b", title="B", year=1994, genres=("Comedy",)),
    "c": Item(id="c", title="C", year=1985, genres=("Comedy", "Sci-Fi")),
    "d": Item(id="d", title="D", genres=("Horror",)),
    "e": Item(id="e", title="E", year=2001),
}


@pytest.fixture(scope="module")
def toy():
    return CooccurrenceSource.fit(TOY, CooccurrenceConfig(window=2, recent=2, decay=0.5), ITEMS)


def test_protocol_and_user_counts(toy):
    assert isinstance(toy, CandidateSource)
    assert dict(zip(toy.ids, toy.users.tolist(), strict=True)) == {"a": 3, "b": 3, "c": 3, "d": 2, "e": 1}


def test_windowed_counts_and_cosine(toy):
    w = lambda x, y: int(toy._window[toy.index[x], toy.index[y]])  # noqa: E731
    assert w("a", "b") == 2 and w("b", "c") == 2 and w("a", "c") == 2  # u2 + u4 (a, c adjacent in u4)
    assert w("a", "d") == 1  # u1 only: in u4 they are 3 apart, beyond the window of 2
    assert w("c", "d") == 1 and w("e", "d") == 1 and w("a", "a") == 0
    sim = toy._sim[toy.index["a"], toy.index["d"]]
    assert sim == pytest.approx(1 / math.sqrt(3 * 2))


def test_scores_recency_weighted(toy):
    # history [..., b, c]: c (age 0) weighs 1, b (age 1) weighs 0.5; "a" older than `recent` is ignored
    s = toy.scores(["d", "b", "c"])
    sim = lambda x, y: 2 / 3 if {x, y} <= {"a", "b", "c"} else None  # noqa: E731
    assert s[toy.index["a"]] == pytest.approx(1.0 * sim("c", "a") + 0.5 * sim("b", "a"))
    cands = toy.candidates(["d", "b", "c"], n=10)
    assert [c.item_id for c in cands] == ["a", "e"]  # d, b, c are history; e co-occurs with c in u4
    assert cands[1].score == pytest.approx(1 / math.sqrt(3 * 1))


def test_where_and_exclude(toy):
    assert [c.item_id for c in toy.candidates(["b"], 10)] == ["a", "c", "d"]
    assert [c.item_id for c in toy.candidates(["b"], 10, where={"genre_Comedy": True})] == ["c"]
    assert [c.item_id for c in toy.candidates(["b"], 10, where={"year": {"$lt": 1980}})] == ["a"]
    assert [c.item_id for c in toy.candidates(["b"], 10, exclude={"a"})] == ["c", "d"]
    assert len(toy.candidates(["b"], 1)) == 1
    with pytest.raises(ConfigError, match=r"\$like"):
        toy.candidates(["b"], 10, where={"year": {"$like": 1}})


def test_cold_start_and_bad_n(toy):
    with pytest.raises(DataError, match="non-empty history"):
        toy.candidates([], 5)
    with pytest.raises(DataError, match="no|none"):
        toy.candidates(["unseen-item"], 5)
    with pytest.raises(ConfigError, match="`n`"):
        toy.candidates(["a"], 0)


def test_evidence_counts(toy):
    ev = toy.evidence(["a", "b"], "c", top=3)
    assert [(e.anchor_id, e.co_users, e.anchor_users, e.item_users) for e in ev] == [
        ("b", 2, 3, 3),  # b is newer: same similarity, recency breaks the tie
        ("a", 2, 3, 3),
    ]
    assert ev[0].age == 0 and ev[1].age == 1 and ev[0].window_users == 2
    assert toy.evidence(["a"], "nope") == [] and toy.evidence(["e"], "b") == []
    assert len(toy.evidence(["a", "b"], "c", top=1)) == 1
    # a repeated anchor counts once, at its newest place; an unknown id still takes a place (ages as before)
    again = toy.evidence(["b", "zz", "a", "b"], "c", top=3)
    assert [(e.anchor_id, e.age) for e in again] == [("b", 0), ("a", 1)]
    assert [(e.anchor_id, e.age) for e in toy.evidence(["a", "zz", "b"], "c")] == [("b", 0), ("a", 2)]


def test_ml100k_fit_is_fast_and_covers_every_item(ml100k):
    import time

    t = time.perf_counter()
    co = CooccurrenceSource.from_dataset(ml100k)
    assert time.perf_counter() - t < 5  # ~0.7 s on the shared 2-core machine
    assert len(co.ids) == len({r.item_id for r in ml100k.interactions})
    cands = co.candidates(ml100k.history("196"), 20)
    assert len(cands) == 20 and not {c.item_id for c in cands} & set(ml100k.history("196"))
    ev = co.evidence(ml100k.history("196"), cands[0].item_id)
    assert ev and all(0 < e.co_users <= min(e.anchor_users, e.item_users) for e in ev)


def test_evidence_equals_counts_from_user_sets(ml100k):
    """`evidence` (read from the CSC arrays) against counts from plain sets of each item's users."""
    import math
    import random

    co = CooccurrenceSource.from_dataset(ml100k)
    users: dict[str, set[str]] = {}
    for r in ml100k.interactions:
        users.setdefault(r.item_id, set()).add(r.user_id)
    rng = random.Random(0)
    for _ in range(40):
        hist = ml100k.history(rng.choice(ml100k.users()))[-rng.choice([1, 5, 30, 300]) :]
        item = rng.choice([*hist[:1], *rng.sample(sorted(users), 3)])
        top = rng.choice([1, 3, 1000])
        want = []
        for age, a in enumerate(dict.fromkeys(reversed(hist))):
            both = len(users[a] & users[item]) if a != item else 0
            if both:
                sim = both / math.sqrt(len(users[a]) * len(users[item]))
                want.append((-sim, age, a, both, len(users[a]), int(co._window[co.index[a], co.index[item]])))
        got = co.evidence(hist, item, top=top)
        assert [(-e.similarity, e.age, e.anchor_id, e.co_users, e.anchor_users, e.window_users) for e in got] == [
            pytest.approx(w) for w in sorted(want)[:top]
        ]
        assert all(e.item_users == len(users[item]) for e in got)
        counts = co.anchor_counts(hist, item)  # the same ranking and counts, without the records
        assert len(counts) == len(want) and counts[:top] == [
            (e.anchor_id, e.co_users, e.anchor_users, e.similarity, e.age) for e in got
        ]


# --- where evaluator ----------------------------------------------------------------------------------

META = {"x": 1, "f": True, "s": "u", "y": 1990}
WHERE_TABLE = [
    ({"x": 1}, True),
    ({"x": 1.0}, True),  # ints and floats compare equal
    ({"x": True}, False),  # booleans never equal numbers
    ({"f": 1}, False),
    ({"f": True}, True),
    ({"s": "u"}, True),
    ({"x": {"$eq": 2}}, False),
    ({"x": {"$ne": 2}}, True),
    ({"missing": {"$ne": True}}, True),  # $ne / $nin match a missing key
    ({"missing": {"$nin": [1]}}, True),
    ({"missing": {"$eq": True}}, False),
    ({"missing": {"$gt": 0}}, False),
    ({"y": {"$gt": 1990}}, False),
    ({"y": {"$gte": 1990}}, True),
    ({"y": {"$lt": 2000}}, True),
    ({"y": {"$lte": 1989}}, False),
    ({"s": {"$gt": 0}}, False),  # numeric comparison on a string field
    ({"s": {"$in": ["u", "v"]}}, True),
    ({"s": {"$nin": ["u", "v"]}}, False),
    ({"$and": [{"x": 1}, {"y": {"$lt": 2000}}]}, True),
    ({"$and": [{"x": 1}, {"y": {"$gt": 2000}}]}, False),
    ({"$or": [{"x": 2}, {"s": "u"}]}, True),
    ({"$or": [{"x": 2}, {"$and": [{"s": "u"}, {"f": False}]}]}, False),
]


@pytest.mark.parametrize("where,expected", WHERE_TABLE)
def test_where_table(where, expected):
    assert matches(where, META) is expected


@pytest.mark.parametrize(
    "where,message",
    [
        ({"x": {"$like": 1}}, r"\$like"),
        ({"$not": [{"x": 1}, {"x": 2}]}, r"\$not"),
        ({"x": 1, "y": 2}, "exactly one key"),
        ({"$and": [{"x": 1}]}, "at least two"),
        ({"x": {"$gt": "a"}}, "number"),
        ({"x": {"$in": []}}, "non-empty list"),
        ({"x": {"$in": [1, "a"]}}, "one scalar type"),
        ({"x": {"$eq": 1, "$ne": 2}}, "exactly one operator"),
        ({"x": [1]}, "str, int, float or bool"),
        ({}, "exactly one key"),
    ],
)
def test_where_errors(where, message):
    with pytest.raises(ConfigError, match=message):
        validate_where(where)


def test_where_matches_chroma(ml100k, tmp_path):
    """The evaluator selects exactly the items Chroma's own `get(where=...)` selects."""
    import chromadb

    items = [ml100k.items[i] for i in list(ml100k.items)[:300]]
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    col = client.create_collection("where-parity", embedding_function=None)
    col.add(
        ids=[it.id for it in items],
        embeddings=np.ones((len(items), 2), dtype=np.float32).tolist(),
        metadatas=[item_metadata(it) for it in items],
    )
    filters = [w for w, _ in WHERE_TABLE if "missing" not in str(w)] + [
        {"genre_Comedy": True},
        {"genre_Horror": {"$ne": True}},
        {"year": {"$gte": 1990}},
        {"$and": [{"genre_Drama": True}, {"year": {"$lt": 1980}}]},
        {"$or": [{"genre_Children's": True}, {"year": {"$in": [1977, 1994]}}]},
        {"title": {"$nin": ["Toy Story", "GoldenEye"]}},
        {"year": {"$nin": [1995, 1996]}},
    ]
    for where in filters:
        chroma = set(col.get(where=where, include=[])["ids"])
        ours = {it.id for it in items if matches(where, item_metadata(it))}
        assert ours == chroma, where
