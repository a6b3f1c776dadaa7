"""Constrained generative mode and the fallback chain (constrained generation -> scoring -> retriever order).

Fast cases run on the tiny random-weight model, which writes noise: only the grammar can make its output
parse. One case runs the real SmolLM2 on a short prompt. Failures are real, not mocked: a generation
time limit that cuts every row short, and a model whose embedding table is smaller than the tokenizer's
ids (every forward pass raises IndexError).
"""

from __future__ import annotations

import re

import pytest

from reasonrec.agent.api import RecommenderAgent
from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.labels import label_token_ids
from reasonrec.agent.ranking.constrained import RankLogitsProcessor, parse_constrained, rank_grammar
from reasonrec.agent.ranking.generative import GenerativeRanker
from reasonrec.agent.ranking.registry import make_ranker
from reasonrec.errors import ConfigError

PROMPT = {"domain": "movie", "max_history": 3, "max_description_chars": 0}
HISTORY = ["50", "172", "181"]
CANDS = ["1", "82", "100", "135", "257", "286", "313", "98"]
LINE = re.compile(r"\[([A-Z]{1,2})\] ?([^\n\[\]()]+)")


def make_agent(ml100k, model, **ranker):
    cfg = AgentConfig(ranker={"mode": "generative", **ranker}, prompt=PROMPT)
    return RecommenderAgent(cfg, dataset=ml100k, model=model)


def check_grammar(recs, tokenizer, cands, k):
    """The raw answer is exactly k lines `[label] reason` with distinct candidate labels."""
    lines = recs.raw_output.split("\n")
    assert len(lines) == k, recs.raw_output
    labels, _ = label_token_ids(tokenizer, len(cands))
    seen = []
    for line in lines:
        m = LINE.fullmatch(line)
        assert m, line
        seen.append(m.group(1))
    assert len(set(seen)) == k and set(seen) <= set(labels)
    ids = recs.item_ids()
    assert len(set(ids)) == k and set(ids) <= set(cands)
    assert recs.valid_output and recs.n_model == k and recs.n_scoring == recs.n_fallback == 0
    assert recs.n_off_candidate == recs.n_duplicates == 0
    assert all(r.source == "model" and r.reason.strip() for r in recs.items)


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_random_model_output_always_parses(ml100k, tiny_random_lm, temperature):
    """Noise in, grammar out: 3 users of different k and candidate counts in one batch."""
    import torch

    torch.manual_seed(0)
    agent = make_agent(ml100k, tiny_random_lm, reason_max_new_tokens=6, temperature=temperature)
    cand_lists = [CANDS, CANDS[:4], CANDS[:6]]
    out = agent.rank_many([HISTORY, HISTORY[:1], ["1"]], cand_lists, k=3)
    for recs, cands in zip(out, cand_lists, strict=True):
        check_grammar(recs, tiny_random_lm.tokenizer, cands, 3)


def test_k_equal_to_the_candidate_count_uses_every_label_once(ml100k, tiny_random_lm):
    agent = make_agent(ml100k, tiny_random_lm, reason_max_new_tokens=4)
    recs = agent.rank(HISTORY, CANDS[:5], k=5)
    check_grammar(recs, tiny_random_lm.tokenizer, CANDS[:5], 5)
    assert sorted(recs.item_ids()) == sorted(CANDS[:5])


def test_processor_masks_each_phase(lm):
    """Table of phases: what is allowed after each generated token (real SmolLM2 tokenizer)."""
    import torch

    tok = lm.tokenizer
    g = rank_grammar(tok)
    _, ids = label_token_ids(tok, 4)
    proc = RankLogitsProcessor(g, [ids], [2], prompt_len=1, max_reason_tokens=4, min_reason_tokens=2)
    word = tok.encode(" good", add_special_tokens=False)[0]
    seq = [g.open_id]  # the "[" prefill
    steps = [
        (None, set(ids)),  # a label first
        (ids[2], {g.close_id}),
        (g.close_id, "reason"),  # any reason token, no line end yet (min 2)
        (word, "reason"),
        (word, "reason+end"),  # 2 tokens: a newline is allowed now
        (g.newline_id, {g.open_id}),
        (g.open_id, {ids[0], ids[1], ids[3]}),  # ids[2] is used
        (ids[0], {g.close_id}),
        (g.close_id, "reason"),
        (word, "reason"),
        (word, "reason+eos"),  # the last line ends with EOS, not a newline
        (word, "reason+eos"),
        (word, {g.eos_id}),  # 4 tokens: the reason must end
    ]
    vocab = len(tok)
    for tok_id, expected in steps:
        if tok_id is not None:
            seq.append(tok_id)
        out = proc(torch.tensor([seq]), torch.zeros(1, vocab))
        allowed = set(torch.nonzero(out[0] > float("-inf")).flatten().tolist())
        if isinstance(expected, set):
            assert allowed == expected, (tok_id, sorted(allowed)[:10])
        else:
            assert word in allowed and g.open_id not in allowed and g.close_id not in allowed
            assert (g.newline_id in allowed) == (expected == "reason+end")
            assert (g.eos_id in allowed) == (expected == "reason+eos")
    bad_in_reason = [i for i in range(vocab) if g.reason_ok[i] and re.search(r"[\n\[\]()—]", tok.decode([i]))]
    assert bad_in_reason == []


def test_processor_forces_each_labels_reason_opener(lm):
    """After "[B]" the reason must start with B's opener tokens (a title may hold "(" or "-"), then
    it is free again; the opener does not count against the reason's token budget."""
    import torch

    tok = lm.tokenizer
    g = rank_grammar(tok)
    _, ids = label_token_ids(tok, 3)
    opener = tok.encode(" Like Seven (Se7en), it", add_special_tokens=False)
    proc = RankLogitsProcessor(
        g, [ids], [2], prompt_len=1, max_reason_tokens=2, min_reason_tokens=1, row_openers=[{ids[1]: opener}]
    )
    word = tok.encode(" good", add_special_tokens=False)[0]
    seq = [g.open_id, ids[1], g.close_id]
    for forced in opener:
        out = proc(torch.tensor([seq]), torch.zeros(1, len(tok)))
        assert set(torch.nonzero(out[0] > float("-inf")).flatten().tolist()) == {forced}
        seq.append(forced)
    for expected_end in (False, True):  # then 2 free tokens, line end allowed after the first
        out = proc(torch.tensor([seq]), torch.zeros(1, len(tok)))
        allowed = set(torch.nonzero(out[0] > float("-inf")).flatten().tolist())
        assert word in allowed and (g.newline_id in allowed) == expected_end
        seq.append(word)
    seq += [g.newline_id, g.open_id, ids[0], g.close_id]  # a label without an opener: free at once
    out = proc(torch.tensor([seq]), torch.zeros(1, len(tok)))
    assert word in set(torch.nonzero(out[0] > float("-inf")).flatten().tolist())
    with pytest.raises(ConfigError, match="one entry per row"):
        RankLogitsProcessor(g, [ids], [1], prompt_len=1, max_reason_tokens=4, row_openers=[{}, {}])


@pytest.mark.parametrize(
    "text, ids, n_model, reasons",
    [
        ("[C] A, B\n[A] I am\n[B] good", ["3", "1", "2"], 3, ["A, B", "I am", "good"]),  # label-like reasons
        ("[B] fine one\n[D", ["2", "1", "3"], 1, ["fine one", None, None]),  # cut short: retriever order after
        ("[B] x\n[B] again\n[Z] off", ["2", "1", "3"], 1, ["x", None, None]),  # impossible under the grammar
        ("[D]", ["4", "1", "2"], 1, [None, None, None]),
    ],
)
def test_parse_constrained_reads_the_grammar_exactly(text, ids, n_model, reasons):
    labels = {"A": "1", "B": "2", "C": "3", "D": "4"}
    parsed = parse_constrained(text, labels, 3, 40)
    assert [e.item_id for e in parsed.entries] == ids and parsed.n_model == n_model
    assert [e.reason for e in parsed.entries] == reasons
    assert [e.source for e in parsed.entries] == ["model"] * n_model + ["fallback"] * (3 - n_model)
    assert parsed.valid == (n_model == 3)


def test_processor_rejects_inconsistent_rows(lm):
    g = rank_grammar(lm.tokenizer)
    with pytest.raises(ConfigError, match="`k` must be between 1 and 2"):
        RankLogitsProcessor(g, [[5, 6]], [3], prompt_len=1, max_reason_tokens=4)
    with pytest.raises(ConfigError, match="one entry per row"):
        RankLogitsProcessor(g, [[5, 6]], [1, 1], prompt_len=1, max_reason_tokens=4)
    with pytest.raises(ConfigError, match="min_reason_tokens"):
        RankLogitsProcessor(g, [[5, 6]], [1], prompt_len=1, max_reason_tokens=2, min_reason_tokens=3)


@pytest.mark.slow
def test_smollm2_constrained_generation_is_valid(ml100k, lm):
    agent = make_agent(ml100k, lm, reason_max_new_tokens=8)
    recs = agent.rank(HISTORY, CANDS, k=2)
    check_grammar(recs, lm.tokenizer, CANDS, 2)
    assert recs.mode == "generative" and recs.timings["generate_ms"] > 0
    model_written = [r for r in recs.items if r.reason_source == "model"]
    assert model_written, recs.raw_output
    for r in model_written:  # each reason continues its item's evidence opener, and says nothing false
        assert r.reason.startswith(r.evidence.opener), r.reason
        assert r.grounded and r.faithful


def test_rows_cut_short_are_completed_in_scoring_order(ml100k, tiny_random_lm):
    """max_new_tokens too small for k lines: the model's picks stay, the rest comes from scoring."""
    # no openers: they are forced tokens on top of the reason budget, and this test counts tokens
    agent = make_agent(ml100k, tiny_random_lm, reason_max_new_tokens=4, max_new_tokens=10, reason_opener=False)
    recs = agent.rank(HISTORY, CANDS, k=4)  # 10 tokens: one line of <= 8 tokens, then "[B]" at least
    assert [r.source for r in recs.items] == ["model", "model", "scoring", "scoring"]
    assert (recs.n_model, recs.n_scoring, recs.n_fallback) == (2, 2, 0) and not recs.valid_output
    ids = recs.item_ids()
    assert len(set(ids)) == 4 and set(ids) <= set(CANDS)
    order = agent.ranker.rescue([agent._request(HISTORY, CANDS, 4, None, None)])[0]
    assert ids[2:] == [i for i in order if i not in ids[:2]][:2]
    assert all(r.reason_source == "template" for r in recs.items[2:])


def test_generation_time_limit_falls_back_to_scoring(ml100k, tiny_random_lm):
    agent = make_agent(ml100k, tiny_random_lm, generate_timeout_s=1e-9)
    recs = agent.rank(HISTORY, CANDS, k=3)
    assert recs.n_model + recs.n_scoring == 3 and recs.n_scoring >= 2 and recs.n_fallback == 0
    assert len(set(recs.item_ids())) == 3


def test_broken_model_falls_back_to_retriever_order(ml100k, lm):
    """Every forward pass raises (ids beyond the embedding table): generation, then scoring fail."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from reasonrec.agent.model.loading import LoadedModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    broken = LoadedModel(LlamaForCausalLM(cfg).eval(), lm.tokenizer, "broken-llama", "cpu", "float32")
    for mode in ("generative", "scoring", "hybrid"):
        cfg_a = AgentConfig(ranker={"mode": mode, "reason_max_new_tokens": 4}, prompt=PROMPT)
        recs = RecommenderAgent(cfg_a, dataset=ml100k, model=broken).rank(HISTORY, CANDS, k=3)
        assert recs.item_ids() == CANDS[:3], mode  # retriever order
        assert all(r.source == "fallback" and r.reason_source == "template" for r in recs.items)
        assert recs.n_fallback == 3 and recs.n_model == 0 and not recs.valid_output


def test_make_ranker_wires_the_chain_and_hybrid_is_default(lm):
    assert AgentConfig().ranker.mode == "hybrid" and AgentConfig().ranker.constrained
    gen = make_ranker(lm, AgentConfig(ranker={"mode": "generative"}))
    assert isinstance(gen, GenerativeRanker) and gen.rescue is not None and gen.constrained
    plain = make_ranker(lm, AgentConfig(ranker={"mode": "generative", "constrained": False}))
    assert not plain.constrained
    with pytest.raises(ConfigError, match="ranker.generate_timeout_s"):
        AgentConfig.build(ranker={"generate_timeout_s": -1})
