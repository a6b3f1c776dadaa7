"""The ranking parser: a table of malformed / variant model outputs (fuzzing is in test_parser_fuzz.py).

Each case says which labels come back in order, which of them the model chose ("m") and which were
filled from the retriever order ("f"), and the counters that matter for that case.
"""

from __future__ import annotations

import pytest

from reasonrec.errors import ConfigError
from reasonrec.prompts.parser import parse_ranking

# ML-100K ids, in retriever order (the fallback order).
CANDS = {"A": "1", "B": "12", "C": "50", "D": "100", "E": "181"}
TITLES = {
    "A": "Toy Story (1995)",
    "B": "Usual Suspects, The",
    "C": "Star Wars",
    "D": "Star Wars: Episode V",
    "E": "Return of the Jedi",
}

# (case id, text, expected labels, expected sources, expected counters)
CASES = [
    ("canonical", "[C] epic space opera\n[A] playful animation\n[B] twisty crime",
     "CAB", "mmm", {"valid": True, "format": "lines"}),
    ("prefilled", "C] epic space opera\n[A] playful\n[B] twisty",
     "CAB", "mmm", {"valid": True}),
    ("numbered", "1. [C] epic\n2. [A] playful\n3. [B] twisty",
     "CAB", "mmm", {"valid": True}),
    ("bullets-colon", "- [C]: epic\n* [A] - playful\n• [B]: twisty",
     "CAB", "mmm", {"valid": True}),
    ("bare-forms", "C) epic\nA: playful\nB - twisty",
     "CAB", "mmm", {"valid": True}),
    ("paren-form", "(C) epic\n(A) playful\n(B) twisty",
     "CAB", "mmm", {"valid": True}),
    ("lower-case-bracketed", "[c] epic\n[a] playful\n[b] twisty",
     "CAB", "mmm", {"valid": True}),
    ("markdown-bold", "1. **[C]** epic\n2. **[A]**: playful\n3. **B** - twisty",
     "CAB", "mmm", {"valid": True}),
    ("prose-around", "Sure! Here are my picks:\n\n[C] epic\n[A] playful\n[B] twisty\n\nEnjoy watching!",
     "CAB", "mmm", {"valid": True}),
    ("off-candidate", "[C] epic\n[Z] not offered\n[A] playful",
     "CAB", "mmf", {"off_candidate": ["Z"], "valid": False}),
    ("duplicates", "[C] epic\n[C] again\n[A] playful",
     "CAB", "mmf", {"duplicates": ["C"], "valid": False}),
    ("fake-label-mid-line", "[A] like [Z] and [C] together\n[B] twisty\n[D] sequel",
     "ABD", "mmm", {"off_candidate": [], "valid": True}),
    ("extra-lines", "[A] a\n[B] b\n[C] c\n[D] d\n[E] e",
     "ABC", "mmm", {"n_extra": 2, "valid": False}),
    ("truncated-last-line", "[D] more Star Wars\n[E] the end of the saga\n[A] wonderfully",
     "DEA", "mmm", {"valid": True}),
    ("cut-after-label", "[D] sequel\n[E] finale\n[",
     "DEA", "mmf", {"valid": False}),
    ("missing-reasons", "[C]\n[A]\n[B] twisty",
     "CAB", "mmm", {"missing_reasons": 2, "valid": False}),
    ("reason-on-next-line", "[C]\nbecause you loved Star Wars\n[A] playful\n[B] twisty",
     "CAB", "mmm", {"missing_reasons": 0, "valid": True}),
    ("labels-only-line", "C, A, B", "CAB", "mmm", {"missing_reasons": 3}),
    ("empty", "", "ABC", "fff", {"format": "empty", "n_model": 0}),
    ("whitespace-only", "  \n\t\n  ", "ABC", "fff", {"format": "empty"}),
    ("prose-only", "I think you would enjoy many of these films.", "ABC", "fff", {"format": "empty"}),
    ("json-list",
     '[{"id": "C", "reason": "epic"}, {"id": "A", "reason": "fun"}, {"id": "B", "reason": "twisty"}]',
     "CAB", "mmm", {"format": "json", "valid": True}),
    ("json-fenced-prose", 'Here you go:\n```json\n{"recommendations": [{"label": "E", "why": "finale"},\n'
     '{"label": "D", "why": "sequel"}]}\n```\nHope that helps!', "EDA", "mmf", {"format": "json"}),
    ("json-truncated",
     '{"ranking": [{"item": "B", "explanation": "twisty"}, {"item": "C", "explanation": "ep',
     "BCA", "mmf", {"format": "json", "missing_reasons": 0}),
    ("json-truncated-key", '[{"id": "B", "reason": "twisty"}, {"id": "D", "rea', "BDA", "mmf",
     {"missing_reasons": 1}),
    ("json-wrong-label", '[{"id": "Q", "reason": "x"}, {"id": "c", "reason": "epic"}]',
     "CAB", "mff", {"off_candidate": ["Q"]}),
    ("json-trailing-comma", '[{"id": "E", "reason": "finale"}, {"id": "D", "reason": "sequel"},]',
     "EDA", "mmf", {"format": "json"}),
    ("json-label-map", '{"D": "sequel", "E": "finale", "A": "fun"}', "DEA", "mmm", {"valid": True}),
    ("json-strings", '["[E] finale", "D", "[Q] nope"]', "EDA", "mmf", {"off_candidate": ["Q"]}),
    ("mixed", '[A] fun\n{"id": "B", "reason": "twisty"}\n[C] epic', "ABC", "mmm", {"format": "mixed"}),
    ("titles", "The Usual Suspects - twisty\nStar Wars: Episode V: the sequel\n\"Toy Story\" (1995): fun",
     "BDA", "mmm", {"valid": True}),
    ("title-in-brackets", "[Star Wars] space\n[Return of the Jedi] finale\n[A] fun", "CEA", "mmm", {}),
    ("unknown-title", "Citizen Kane - classic\n[A] fun", "ABC", "mff", {"off_candidate": []}),
    ("binary-junk", "\x00\x01\x02\ufffd\u202e[[[{{{\\\\\"", "ABC", "fff", {}),
    ("unicode-brackets", "［C］ epic\n［A］ fun\n[B] 好看的电影", "CAB", "mmm", {"valid": True}),
    ("quoted-reason", '[C] "epic space opera"\n[A] \u201cfun\u201d\n[B] twisty', "CAB", "mmm",
     {"valid": True}),
]


@pytest.mark.parametrize(
    ("text", "labels", "sources", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_table(text: str, labels: str, sources: str, expect: dict) -> None:
    r = parse_ranking(text, CANDS, k=3, titles=TITLES)
    assert [e.label for e in r.entries] == list(labels)
    assert [e.item_id for e in r.entries] == [CANDS[lab] for lab in labels]
    assert "".join(e.source[0] for e in r.entries) == sources
    assert r.n_model == sources.count("m") and r.n_fallback == sources.count("f")
    for key, value in expect.items():
        assert getattr(r, key) == value, key
    assert all(e.reason is None for e in r.entries if e.source == "fallback")


def test_reasons_are_cleaned() -> None:
    long = "word " * 200
    r = parse_ranking(f'[A]   "spaced\n   out"\n[B] {long}\n[C] :: - ', CANDS, k=3, max_reason_chars=50)
    assert r.entries[0].reason == "spaced"  # the reason's continuation is on another line
    assert r.entries[1].reason is not None and len(r.entries[1].reason) <= 50
    assert r.entries[1].reason.endswith("word")  # cut on a word boundary
    assert r.entries[2].reason is None and r.missing_reasons == 1


def test_reason_keeps_mid_line_brackets_and_drops_control_chars() -> None:
    r = parse_ranking("[A] better than [Z]\x00 really\n[B] b\n[C] c", CANDS, k=3)
    assert r.entries[0].reason == "better than [Z] really"
    assert r.off_candidate == [] and r.valid


def test_ambiguous_lower_case_label_is_not_guessed() -> None:
    cands = {"A": "1", "a": "2", "B": "3"}
    r = parse_ranking("[a] exact\n[b] folded", cands, k=2)
    assert [e.label for e in r.entries] == ["a", "B"]
    cands = {"AB": "1", "Ab": "2", "C": "3"}
    r = parse_ranking("[ab] which one?", cands, k=1)
    assert r.entries[0].source == "fallback" and r.off_candidate == ["ab"]


def test_item_ids_property_and_k_equal_to_candidates() -> None:
    r = parse_ranking("[E] e", CANDS, k=5)
    assert r.item_ids == ["181", "1", "12", "50", "100"]
    assert parse_ranking("[B] b", {"A": 1, "B": 2}, k=2).item_ids == ["2", "1"]  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("cands", "k", "match"),
    [
        (CANDS, 0, r"`k` must be between 1 and 5 \(the number of candidates\), got 0"),
        (CANDS, 6, "got 6"),
        ({chr(65 + i): str(i) for i in range(20)}, 25,
         r"`k` must be between 1 and 20 \(the number of candidates\), got 25"),
        ({}, 1, "non-empty mapping"),
        ({"A": "1", "B": "1"}, 1, "unique"),
        (CANDS, True, "got True"),
    ],
)
def test_caller_mistakes_raise_config_error(cands: dict, k: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_ranking("[A] x", cands, k)
