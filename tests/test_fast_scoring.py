"""The CPU-latency options of scoring mode: the compact prompt, torch.compile, the unmasked bs-1 forward.

Each option must change speed only: the same candidates, the same probabilities (within float
tolerance), and results that record which prompt form produced them.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest

from reasonrec.agent.api import RecommenderAgent
from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.loading import CompiledForward
from reasonrec.agent.ranking.registry import make_ranker
from reasonrec.prompts import TEMPLATE_VERSION

PROMPT = {"domain": "movie", "max_history": 3, "max_description_chars": 0}
HISTORY = ["50", "172", "181"]  # Star Wars, Empire Strikes Back, Return of the Jedi
CANDS = ["1", "82", "100", "135", "257", "286", "313", "98"]


def make_agent(ml100k, model, compact=False, **ranker):
    cfg = AgentConfig(ranker={"mode": "scoring", **ranker}, prompt={**PROMPT, "compact": compact})
    return RecommenderAgent(cfg, dataset=ml100k, model=model)


def test_compact_prompt_ranks_on_smollm2_and_caches_its_answer_format(ml100k, lm):
    agent = make_agent(ml100k, lm, compact=True, prefix_cache=True)
    recs = agent.rank(HISTORY, CANDS, k=4)
    assert recs.valid_output and len(set(recs.item_ids())) == 4 and set(recs.item_ids()) <= set(CANDS)
    assert recs.template_version == TEMPLATE_VERSION + "-compact"
    assert make_agent(ml100k, lm).rank(HISTORY, CANDS, k=4).template_version == TEMPLATE_VERSION
    # The cached prefix now runs up to the history: system message + the answer-format line.
    ranker = agent.ranker
    cached = lm.tokenizer.decode(ranker._prefix_ids[: ranker.last_prefix_len])
    assert cached.rstrip().endswith("History, oldest first:") and "Answer in" in cached
    full_prefix = make_agent(ml100k, lm, prefix_cache=True).ranker.prompter.prefix_text()
    assert ranker.last_prefix_len > len(lm.tokenizer(full_prefix, add_special_tokens=False)["input_ids"]) + 15


def test_unpadded_batch_runs_without_a_mask_and_gives_the_masked_scores(ml100k, tiny_random_lm):
    """bs 1 (no padding, no cache) skips the attention mask for SDPA's causal path: same probabilities."""
    agent = make_agent(ml100k, tiny_random_lm)
    ranker = agent.ranker
    req = agent._request(HISTORY, CANDS, 3, None, None)
    rows = [tiny_random_lm.tokenizer(ranker.prompter.prompt_text(req)[0], add_special_tokens=False)["input_ids"]]
    enc, _ = ranker._shared.inputs(rows, [])
    assert set(enc) == {"input_ids", "use_cache"}
    padded, _ = ranker._shared.inputs([rows[0], rows[0][5:]], [])
    assert "attention_mask" in padded and "position_ids" in padded
    [alone], _ = ranker.score([req])
    short = agent._request(HISTORY[:1], CANDS[:5], 2, None, None)
    [in_batch, _], _ = ranker.score([req, short])  # left-padded, masked
    assert alone.probs == pytest.approx(in_batch.probs, abs=1e-5)


def test_compiled_forward_gives_the_eager_scores(ml100k, tiny_random_lm):
    eager = make_agent(ml100k, tiny_random_lm)
    compiled = make_agent(ml100k, tiny_random_lm, compile=True)
    reqs = [eager._request(HISTORY, CANDS, 3, None, None), eager._request(HISTORY[:1], CANDS[:5], 2, None, None)]
    for batch in (reqs[:1], reqs):  # unmasked bs 1, then a padded (masked) batch: dynamic shapes
        want, _ = eager.ranker.score(batch)
        got, _ = compiled.ranker.score(batch)
        for a, b in zip(got, want, strict=True):
            assert a.probs == pytest.approx(b.probs, abs=1e-4)
    assert list(compiled.ranker._compiled) == ["decoder"]


def test_compile_failure_falls_back_to_eager_with_a_warning(caplog):
    """No C++ compiler for Inductor (here: a compiler path that does not exist) costs speed, not a result."""
    import torch
    from torch._inductor import config as inductor

    torch._dynamo.reset()
    layer = torch.nn.Linear(4, 2)
    fwd = CompiledForward(lambda x: layer(x).relu())
    x = torch.randn(3, 4)
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING):
        mp.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
        out = fwd(x=x)
    assert torch.equal(out, layer(x).relu())
    assert fwd.failed and "torch.compile failed" in caplog.text
    torch._dynamo.reset()


def test_adapter_trained_on_another_template_form_is_warned_about(lm, caplog):
    trained_compact = dataclasses.replace(lm, adapter_template=TEMPLATE_VERSION + "-compact")
    with caplog.at_level(logging.WARNING):
        make_ranker(trained_compact, AgentConfig(ranker={"mode": "scoring"}))
    assert "set `prompt.compact` as in training" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_ranker(trained_compact, AgentConfig(ranker={"mode": "scoring"}, prompt={"compact": True}))
    assert "prompt.compact" not in caplog.text
