"""Hybrid mode's second try (agent/ranking/retry.py): which reasons are written again, the trigram ban, and on
the real SmolLM2 a retry that turns a near-duplicate into a distinct, true reason the model wrote.

The rates must be able to read low: the first pass alone, on the same lists, shows fewer model reasons,
and a list whose reasons repeat reads 0 on distinct and on model-written.
"""

from __future__ import annotations

import pytest

from reasonrec.agent.ranking.evidence import ReasonData, assemble
from reasonrec.agent.ranking.retry import ListTrigramBan, Retry, list_trigrams, reason_tokens, to_retry

# ML-100K: 367 Clueless (1995; Comedy), 25 The Birdcage (1996; Comedy), 1 Toy Story (1995; Animation, Children's,
# Comedy); history: 94 Home Alone, 1 Toy Story, 98 The Silence of the Lambs, 172 The Empire Strikes Back.
HISTORY = ["94", "98", "172", "50"]


def _enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_to_retry_names_the_reasons_choose_reasons_would_replace(ml100k):
    items = ml100k.items
    history = [items[i] for i in HISTORY]
    picks = [items[i] for i in ("367", "25", "1")]
    data = ReasonData(items)
    evs = assemble(picks, history, None, data, "movie")
    same = "Like Home Alone, it is a comedy movie from 1995."
    texts = [same, "Like Home Alone, it is a comedy movie from 1996.", "Like Home Alone, it's a horror film."]
    # the second is a near-duplicate of the first, the third is false (Toy Story is no horror film)
    assert to_retry(picks, texts, evs, history, None, data, "movie") == [1, 2]
    true = [same, "Like Home Alone, it pokes fun at two men in a 1996 comedy style.", ""]
    assert to_retry(picks, true, evs, history, None, data, "movie") == []  # an empty text has nothing to retry


def test_list_trigrams_and_reason_tokens(lm):
    tok = lm.tokenizer
    row = _enc(tok, " is a comedy movie")
    grams = list_trigrams([row, _enc(tok, " is a drama")])
    assert grams[(row[0], row[1])] == frozenset({row[2], _enc(tok, " is a drama")[2]})
    padded = [*row, tok.eos_token_id, tok.pad_token_id]
    assert reason_tokens(padded, tok) == row
    assert reason_tokens([*row, *_enc(tok, "\nmore")], tok) == row  # one line: a reason ends at its newline


def test_a_retry_cut_off_by_its_budget_is_not_finished():
    retry = Retry(avoid=[{}], groups=[0], max_new=6)
    assert retry.finished([1, 2, 3]) and not retry.finished([1, 2, 3, 4, 5, 6])


def test_trigram_ban_keeps_facts_free_and_bans_the_lists_other_phrasings(lm):
    """With the real tokenizer: after " is a" the word another reason wrote is banned, the year's digits and
    the full stop are not, and a row of another list is untouched."""
    import torch

    tok = lm.tokenizer
    first = _enc(tok, " is a comedy movie from 1995.")
    avoid = list_trigrams([first])
    ctx = _enc(tok, " is a")
    ban = ListTrigramBan(tok, 0, [avoid, {}], [0, 1], greedy=False)
    out = ban(torch.tensor([ctx, ctx]), torch.zeros(2, len(tok)))
    comedy = _enc(tok, " is a comedy")[len(ctx)]
    assert out[0, comedy] == float("-inf") and out[1, comedy] == 0.0
    year = _enc(tok, " movie from 1995.")
    tail = ListTrigramBan(tok, 0, [avoid], [0], greedy=False)
    for n in range(2, len(year)):  # every digit of 1995 and the final "." stay writable
        out = tail(torch.tensor([year[:n]]), torch.zeros(1, len(tok)))
        if year[n] in tail.free:
            assert out[0, year[n]] == 0.0, tok.decode(year[: n + 1])
    assert (year[-1] in tail.free) and any(t in tail.free for t in year)


def test_lockstep_rows_of_one_list_do_not_pick_the_same_trigram(lm):
    """Two retries of one list written in the same step: under greedy decoding the second cannot take the
    word the first takes now; a retry of another list can."""
    import torch

    tok = lm.tokenizer
    ctx = _enc(tok, " is a")
    scores = torch.zeros(3, len(tok))
    classic = _enc(tok, " is a classic")[len(ctx)]
    scores[:, classic] = 5.0  # every row's best next word
    ban = ListTrigramBan(tok, 0, [{}, {}, {}], [7, 7, 8], greedy=True)
    out = ban(torch.tensor([ctx, ctx, ctx]), scores)
    assert out[0].argmax() == classic and out[2].argmax() == classic
    assert out[1, classic] == float("-inf")
    # a row whose every token would be banned keeps its scores (a row is never left nothing to write)
    full = ListTrigramBan(tok, 0, [{tuple(ctx[-2:]): frozenset(range(len(tok)))}], [0], greedy=False)
    assert torch.isfinite(full(torch.tensor([ctx]), torch.zeros(1, len(tok)))).any()


# protocol-cand20 users whose first reasons, on SmolLM2 greedy, hold a near-duplicate in the list
RETRY_USERS = ["26", "753", "522"]


@pytest.fixture(scope="module")
def retried(agent, ml100k):
    from reasonrec.finetune.evaluation.split import cand20_candidates, leave_one_out
    from reasonrec.retrieval.types import natural_key

    split = leave_one_out(ml100k)
    catalogue = sorted(ml100k.items, key=natural_key)
    out = []
    for user in RETRY_USERS:
        hist = split.eval_history(user, "test")
        out.append((hist, agent.rank(hist, cand20_candidates(split, user, catalogue, 0, 20), 5)))
    return out


def test_a_retry_turns_a_near_duplicate_into_a_distinct_true_model_reason(retried, ml100k):
    """The real SmolLM2: some first reason was alike an earlier one (or false) and was written again; every
    shown model reason is faithful and specific, every list distinct, and at least one retry is shown."""
    from reasonrec.agent.ranking.claims import ClaimChecker

    checker = ClaimChecker(ml100k.items)
    shown_retries = 0
    for _, recs in retried:
        lines = recs.raw_output.split("\n")
        retries = {ln.split(":", 1)[0].removeprefix("retry "): ln for ln in lines[len(recs.items) :]}
        assert all(ln.startswith("retry ") for ln in retries.values())
        for r in recs.items:
            if r.reason_source == "model":
                assert r.faithful and r.specific, r.reason
                shown_retries += r.item_id in retries
        assert checker.all_distinct([r.reason for r in recs.items]), [r.reason for r in recs.items]
    assert shown_retries >= 1


def test_the_first_pass_alone_reads_lower(retried, agent, ml100k):
    """The same lists judged on the model's first sentences only: fewer model reasons are shown, so the
    model-written rate is a number the retry moved, not one that cannot move."""
    from reasonrec.agent.ranking.faithful import choose_reasons
    from reasonrec.agent.ranking.hybrid import clean_reason
    from reasonrec.finetune.evaluation.reasons import reason_rates

    data = agent._reason_data()  # what the agent checked its reasons against
    words = agent.config.prompt.max_reason_words
    first = after = 0
    for hist_ids, recs in retried:
        hist = [ml100k.items[i] for i in hist_ids]
        picks = [ml100k.items[r.item_id] for r in recs.items]
        texts = [clean_reason(t, words, words * 12) for t in recs.raw_output.split("\n")[: len(picks)]]
        evs = [r.evidence for r in recs.items]
        first += sum(s.source == "model" for s in choose_reasons(picks, texts, evs, hist, None, data, "movie"))
        after += sum(r.reason_source == "model" for r in recs.items)
    assert first < after
    # and a list whose reasons repeat, shown as reasons built from facts, reads 0 on both rates
    recs = retried[0][1]
    same = recs.items[0].reason
    bad = recs.model_copy(update={"items": [r.model_copy(update={"reason": same, "reason_source": "template"})
                                            for r in recs.items]})  # fmt: skip
    rates = reason_rates([bad], ml100k.items)
    assert rates.distinct_rate == 0.0 and rates.model_reason_rate == 0.0


def test_distinct_first_pass_bans_the_rows_above_from_the_start(agent, ml100k, lm, monkeypatch):
    """`ranker.distinct_first_pass`: the first pass gets the retry's lockstep ban (nothing to avoid from
    before, one group per list); by default the first pass has no ban and only a retry does."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.ranking import hybrid

    made = []
    real = hybrid.ListTrigramBan
    monkeypatch.setattr(hybrid, "ListTrigramBan", lambda *a, **kw: made.append(a[2:4]) or real(*a, **kw))
    cfg = agent.config.model_copy(deep=True)
    cfg.ranker.distinct_first_pass = True
    on = RecommenderAgent(cfg, dataset=ml100k, model=lm)
    recs = on.recommend(user_id="26", k=5)
    avoid, groups = made[0]
    assert list(groups) == [0] * len(recs.items) and all(not a for a in avoid)
    made.clear()
    agent.recommend(user_id="26", k=5)
    assert all(any(a for a in avoid) for avoid, _ in made)  # only retries, each with the list's trigrams
