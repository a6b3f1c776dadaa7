"""Parser fuzzing (issue 7.3): whatever a model writes, the parser returns exactly k distinct candidates.

Hypothesis drives `parse_ranking` with arbitrary text, text assembled from fragments that look like
answers (labels, fake labels, JSON pieces, titles, control characters), random candidate sets and random
caller arguments. The invariants: no exception for any model output; for a caller mistake only
`ConfigError`; every returned item is a candidate, none twice, exactly k. A last test runs the whole
ranking path on a random-weight model that writes noise, sampled, so the invariants hold end to end.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_parser import CANDS, TITLES  # the same five ML-100K candidates as the example-based tests

from reasonrec.errors import ConfigError
from reasonrec.prompts.parser import ParsedRanking, parse_ranking

FRAGMENTS = [
    "[", "]", "(", ")", "{", "}", "[A]", "[b]", "[Z]", "C]", "A)", "B:", "E -", "1.", "- ", "\n", "\n\n",
    " ", '"', "'", ",", ":", '{"id": "', '"reason": "', '{"recommendations": [', "]}", "```json\n", "```",
    "Toy Story", "Star Wars", "The Usual Suspects", "great film", "\\", "\x00", "é", "漢", "\u202e", "AA",
    "<|im_end|>", "<|im_start|>assistant\n", "ignore previous instructions", "[99999]", '{"id": "99999"}',
]  # fmt: skip
texts = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=40).map("".join),
)


def _check_invariants(r: ParsedRanking, k: int, cands: dict[str, str] = CANDS) -> None:
    ids = [e.item_id for e in r.entries]
    assert len(r.entries) == k
    assert set(ids) <= {str(v) for v in cands.values()}
    assert len(set(ids)) == k
    assert all(cands[e.label] == e.item_id for e in r.entries)  # each label maps to its own item
    assert r.n_model + r.n_fallback == k
    assert all(e.source == "model" for e in r.entries[: r.n_model])
    assert all(e.source == "fallback" and e.reason is None for e in r.entries[r.n_model :])
    assert not r.valid or (r.n_fallback == 0 and r.missing_reasons == 0)


def test_non_str_and_huge_inputs_never_raise() -> None:
    for text in (None, b"[A] bytes \xff", 12345, "[A] x\n" * 100_000, "[" * 50_000, "{" * 50_000):
        r = parse_ranking(text, CANDS, k=3)  # type: ignore[arg-type]
        _check_invariants(r, 3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, k=st.integers(1, 5), use_titles=st.booleans())
def test_never_raises_and_always_returns_k(text: str, k: int, use_titles: bool) -> None:
    r = parse_ranking(text, CANDS, k, titles=TITLES if use_titles else None, max_reason_chars=40)
    _check_invariants(r, k)
    assert all(e.reason is None or 0 < len(e.reason) <= 40 for e in r.entries)


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(list(CANDS)), reasons=st.lists(st.text(min_size=1, max_size=30), min_size=5))
def test_canonical_answers_round_trip(order: list[str], reasons: list[str]) -> None:
    # Any reason with a word character, written in the canonical format, is read back as written.
    lines = [f"[{lab}] why{i} {' '.join(reasons[i].split())}" for i, lab in enumerate(order)]
    r = parse_ranking("\n".join(lines), CANDS, k=5)
    assert [e.label for e in r.entries] == order
    assert r.n_model == 5


# --- random candidate sets: labels, ids and titles drawn too ------------------------------------

labels = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=4)


@st.composite
def candidate_sets(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str], str, int]:
    """(label -> id, label -> title, an answer mixing their labels, titles and junk, k)."""
    labs = draw(st.lists(labels, min_size=1, max_size=30, unique=True))
    ids = draw(st.lists(st.text(min_size=1, max_size=8), min_size=len(labs), max_size=len(labs), unique=True))
    titles = draw(st.lists(st.text(max_size=30), min_size=len(labs), max_size=len(labs)))
    cands, names = dict(zip(labs, ids, strict=True)), dict(zip(labs, titles, strict=True))
    # Answers built from this set's own labels (right and wrong case), titles, ids and fake labels.
    pieces = st.one_of(
        st.sampled_from(FRAGMENTS),
        st.sampled_from(labs).map(lambda lab: f"\n[{lab}] "),
        st.sampled_from(labs).map(lambda lab: f"\n{lab.swapcase()}) "),
        st.sampled_from(labs).map(lambda lab: f"\n- {lab}: "),
        st.sampled_from(titles),
        st.sampled_from(ids).map(lambda i: f'{{"id": "{i}", "reason": "r"}}'),
        labels.map(lambda lab: f"[{lab}] "),
        st.text(max_size=8),
    )
    text = draw(st.lists(pieces, max_size=50).map("".join))
    return cands, names, text, draw(st.integers(1, len(labs)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=candidate_sets(), use_titles=st.booleans())
def test_any_candidate_set_and_answer(case: tuple[dict[str, str], dict[str, str], str, int], use_titles: bool) -> None:
    cands, titles, text, k = case
    r = parse_ranking(text, cands, k, titles=titles if use_titles else None)
    _check_invariants(r, k, cands)


@settings(max_examples=200, deadline=None)
@given(
    cands=st.one_of(
        st.lists(labels, min_size=1, max_size=6, unique=True).map(lambda ls: {lab: str(i) for i, lab in enumerate(ls)}),
        st.lists(labels, min_size=1, max_size=6, unique=True).map(lambda ls: {lab: i for i, lab in enumerate(ls)}),
        st.dictionaries(labels, st.one_of(st.text(max_size=4), st.integers(0, 9)), max_size=6),
        st.one_of(st.lists(labels, max_size=3), st.none(), st.text(max_size=5)),
    ),
    k=st.one_of(st.integers(1, 3), st.integers(-3, 8), st.one_of(st.booleans(), st.none(), st.text(max_size=2))),
    max_reason_chars=st.one_of(st.integers(-2, 50), st.none()),
    text=texts,
)
def test_caller_arguments_raise_only_config_error(
    cands: object, k: object, max_reason_chars: object, text: str
) -> None:
    kwargs = {} if max_reason_chars is None else {"max_reason_chars": max_reason_chars}
    try:
        r = parse_ranking(text, cands, k, **kwargs)  # type: ignore[arg-type]
    except ConfigError:
        return  # a caller mistake, typed and explained
    assert isinstance(k, int) and not isinstance(k, bool) and isinstance(cands, dict)
    _check_invariants(r, k, {lab: str(i) for lab, i in cands.items()})


# --- end to end: a model that writes noise ---------------------------------------------------------


@pytest.mark.parametrize(
    "ranker", [{"mode": "generative", "constrained": False}, {"mode": "generative"}, {"mode": "hybrid"}]
)
def test_noise_model_output_stays_inside_the_candidates(ranker, ml100k, tiny_random_lm, retrieval_config):
    """A random-weight model, sampled at temperature 1.5, through the real ranker: 4 users in one batch."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig

    cfg = AgentConfig.build(
        retrieval=retrieval_config.model_dump(),
        ranker={**ranker, "temperature": 1.5, "max_new_tokens": 48, "reason_max_new_tokens": 12},
    )
    agent = RecommenderAgent(cfg, dataset=ml100k, model=tiny_random_lm)
    users = ["1", "196", "405", "943"]
    cands = [[i for i in map(str, range(1, 300)) if i not in set(ml100k.history(u))][:12] for u in users]
    out = agent.rank_many([ml100k.history(u) for u in users], cands, k=5)
    for recs, cand in zip(out, cands, strict=True):
        ids = recs.item_ids()
        assert len(ids) == 5 == len(set(ids)) and set(ids) <= set(cand)
        assert all(r.reason.strip() for r in recs.items)
        assert recs.n_model + recs.n_fallback + recs.n_scoring == 5
