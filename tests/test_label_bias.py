"""Generative mode follows the fused ranking score: a bias on the label logits (fused.label_bias).

The tiny random-weight model writes noise, so whatever order it writes comes from the bias alone; the
same requests without the bias must come out in another order, else the check could not fail.
"""

from __future__ import annotations

import pytest

from reasonrec.agent.api import RecommenderAgent
from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.labels import label_token_ids
from reasonrec.agent.ranking.constrained import RankLogitsProcessor, rank_grammar
from reasonrec.agent.ranking.fused import ZERO_LM_LABEL_BIAS, label_bias
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.errors import ConfigError

HISTORY = ["50", "172", "181"]
CANDS = ["1", "82", "100", "135", "257", "286", "313", "98"]
# fused retrieval scores that put the candidates in an order far from their listing order
FUSION = [0.2, 1.9, 0.5, 1.1, 0.05, 1.5, 0.8, 0.3]


def _requests(agent: RecommenderAgent, k: int, fusion: list[float] | None) -> list[RankRequest]:
    reqs = []
    for shift in range(3):  # three rows in one batch, each with its own fused order
        cands = CANDS[shift:] + CANDS[:shift]
        req = agent._new_request(HISTORY, cands, k, None, None)
        if fusion is not None:
            f = fusion[shift:] + fusion[:shift]
            req.features = [{"fusion": x} for x in f]
        reqs.append(req)
    return reqs


def _generate(ml100k, model, k: int, **candidates) -> tuple[list[list[str]], list[RankRequest]]:
    cfg = AgentConfig(ranker={"mode": "generative", "reason_max_new_tokens": 4},
                      prompt={"max_history": 3, "max_description_chars": 0}, candidates=candidates)  # fmt: skip
    agent = RecommenderAgent(cfg, dataset=ml100k, model=model)
    reqs = _requests(agent, k, FUSION)
    return [r.item_ids() for r in agent.ranker.rank(reqs)], reqs


def _fused_order(req: RankRequest) -> list[str]:
    return [c.id for _, c in sorted(zip(req.features, req.candidates, strict=True), key=lambda p: -p[0]["fusion"])]


def test_random_model_writes_the_fused_order_with_the_bias_and_not_without(ml100k, tiny_random_lm):
    k = 5
    biased, reqs = _generate(ml100k, tiny_random_lm, k)  # default: lm_weight 0 -> ZERO_LM_LABEL_BIAS
    free, _ = _generate(ml100k, tiny_random_lm, k, label_bias=0.0)
    for got, req in zip(biased, reqs, strict=True):
        assert got == _fused_order(req)[:k]
    assert any(got != _fused_order(req)[:k] for got, req in zip(free, reqs, strict=True)), free


def test_label_bias_scale():
    req = RankRequest(history=[], candidates=[], k=1, features=[{"fusion": 2.0}, {"fusion": 0.5}, {}])
    assert label_bias(req, 0.0, 1.0, None) == [2.0 * ZERO_LM_LABEL_BIAS, 0.5 * ZERO_LM_LABEL_BIAS, 0.0]
    # with a fitted LM weight w the first pick maximises w*log p + r*fusion: logit + (r/w)*fusion
    assert label_bias(req, 0.5, 3.0, None) == pytest.approx([12.0, 3.0, 0.0])
    assert label_bias(req, 0.5, 3.0, 1.0) == pytest.approx([6.0, 1.5, 0.0])  # the config's value wins
    assert label_bias(RankRequest(history=[], candidates=[], k=1), 0.5, 1.0, None) == []  # a caller's own list


def test_processor_adds_the_bias_only_while_a_label_is_picked(lm):
    """The bias moves label logits; it never re-opens a used label and never touches reason tokens."""
    import torch

    tok = lm.tokenizer
    g = rank_grammar(tok)
    _, ids = label_token_ids(tok, 3)
    bias = {ids[0]: 0.0, ids[1]: 5.0, ids[2]: 100.0}
    proc = RankLogitsProcessor(g, [ids], [2], prompt_len=1, max_reason_tokens=2, min_reason_tokens=1,
                               row_label_bias=[bias])  # fmt: skip
    vocab = len(tok)
    out = proc(torch.tensor([[g.open_id]]), torch.zeros(1, vocab))
    assert [out[0, i].item() for i in ids] == [0.0, 5.0, 100.0]
    word = tok.encode(" good", add_special_tokens=False)[0]
    seq = [g.open_id, ids[2], g.close_id]
    out = proc(torch.tensor([seq]), torch.zeros(1, vocab))  # inside the reason: no bias anywhere
    assert out[0, word].item() == 0.0 and out[0, ids[1]].item() in (0.0, float("-inf"))  # a letter, unbiased
    seq += [word, g.newline_id, g.open_id]
    out = proc(torch.tensor([seq]), torch.zeros(1, vocab))  # second label: ids[2] is used, bias or not
    assert out[0, ids[2]].item() == float("-inf") and out[0, ids[1]].item() == 5.0
    with pytest.raises(ConfigError, match="row_label_bias"):
        RankLogitsProcessor(g, [ids], [2], prompt_len=1, max_reason_tokens=4, row_label_bias=[])
