"""The labelled message corpus (tests/data/dialogue_corpus.jsonl): exact match of the parsed constraints.

Fast: rules over the real ML-100K catalogue plus MiniLM for the mood guesser; the LM is not loaded. The
same `evaluate` writes bench/results/dialogue.json (bench/dialogue_eval.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the repository root
    sys.path.insert(0, str(ROOT))

from bench.dialogue_eval import FIELDS, Parser, evaluate, load_corpus  # noqa: E402

CATEGORIES = {"ages", "list_length", "years", "bounds", "relative", "multi", "negation", "titles", "typos", "moods",
              "language", "plain"}  # fmt: skip


@pytest.fixture(scope="module")
def parser(ml100k, embedder):
    from reasonrec.agent.chat.moods import MoodGuesser

    genres = sorted({g for it in ml100k.items.values() for g in it.genres})
    return Parser(ml100k.items, MoodGuesser(embedder, genres))


def test_corpus_is_large_and_covers_every_category():
    rows = load_corpus()
    assert len(rows) >= 150 and {r["category"] for r in rows} == CATEGORIES
    assert len({r["text"] + str(r.get("last")) for r in rows}) == len(rows)  # no duplicates


def test_corpus_exact_match(parser):
    result = evaluate(parser, load_corpus())
    assert result["exact_match"] >= 0.95, result["misses"]
    for cat, r in result["by_category"].items():
        assert r["exact_match"] >= 0.85, (cat, [m for m in result["misses"]])


def test_the_check_can_fail(parser):
    """Wrong labels read as wrong: the measure is not vacuous (every field is compared)."""
    rows = [
        {"category": "bounds", "text": "nothing before 1990", "expect": {"year_max": 1989}},  # the old, wrong reading
        {"category": "ages", "text": "I'm 12 years old and like animals", "expect": {"k": 12}},
        {"category": "typos", "text": "more like Termnator 2", "expect": {"liked": ["195"]}},  # The Terminator
        {"category": "plain", "text": "no horror", "expect": {}},  # a missing field counts too
    ]
    result = evaluate(parser, rows)
    assert result["exact_match"] == 0.0 and {m[1] for m in result["misses"]} >= {"year_max", "k", "liked"}
    assert set(FIELDS) >= {"genres", "excluded_genres", "year_min", "year_max", "k", "liked", "disliked", "query"}


def test_rules_alone_without_the_embedder(ml100k):
    """Without MiniLM only the mood words no rule knows are lost ("eerie")."""
    result = evaluate(Parser(ml100k.items), load_corpus())
    assert result["exact_match"] >= 0.95
    assert {m[0] for m in result["misses"]} <= {"an eerie movie"}
