"""Prompt-lookup decoding (agent/model/lookup.py) writes what greedy `generate` writes, in fewer model calls.

On the tiny float32 model: the same tokens with the same processors and stopping criteria, from a shared
prefix cache (as hybrid reasons are written), with guesses that are taken and with guesses that are
all wrong (the rejection path and the cache cut); and on the real SmolLM2, fewer calls than tokens.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from reasonrec.agent.model import lookup
from reasonrec.agent.model.kv_cache import BufferedLayer
from reasonrec.agent.model.lookup import can_decode, greedy_lookup, guess
from reasonrec.agent.ranking.prefix import SharedPrefix, cache_field


def test_guess_continues_the_latest_match_of_two_or_more_tokens():
    assert guess([1, 2, 3, 9, 9, 1, 2, 3, 4, 5, 1, 2, 3]) == [4, 5, 1, 2]  # the later "1 2 3" wins
    assert guess([7, 8, 5, 6, 8], k=2) == []  # only "8" recurs: one token is not enough
    assert guess([4, 5, 6, 4, 5], k=2) == [6, 4]
    assert guess([1]) == [] and guess([]) == []


class _BanToken:
    """A processor with state, like the faithful guard: it must see each step exactly once, in order."""

    def __init__(self, token: int, prompt_len: int):
        self.token, self.prompt_len, self.lengths = token, prompt_len, []

    def __call__(self, input_ids, scores):
        self.lengths.append(input_ids.shape[1] - self.prompt_len)
        scores[:, self.token] = float("-inf")
        return scores


class _StopRow:
    """Stops row 0 after `n` new tokens (like the reason stop at a sentence end)."""

    def __init__(self, n: int, prompt_len: int):
        self.n, self.prompt_len = n, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        done[0] = input_ids.shape[1] - self.prompt_len >= self.n
        return done


@pytest.fixture(scope="module")
def copying_lm(tiny_random_lm):
    """The tiny model made to mostly repeat its input: its layers' outputs scaled down and the output
    layer tied to the embeddings, so a token's own logit usually wins. A random model writes noise that
    no prompt predicts; this one writes runs a guess can match (and, where the prompt continues otherwise,
    guesses that fail)."""
    model = copy.deepcopy(tiny_random_lm.model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(0.05)
            layer.mlp.down_proj.weight.mul_(0.05)
        model.lm_head.weight.copy_(model.model.embed_tokens.weight)
    return model


def _both(model, pad, rows, max_new=20):
    """(generate's sequences, lookup's Decoded, the two processors' step lengths) for the same rows."""
    out = []
    for use_lookup in (False, True):
        enc = SharedPrefix(model, pad).generate_inputs(rows)
        plen = enc["input_ids"].shape[1]
        ban, stop = _BanToken(17, plen), _StopRow(5, plen)
        with torch.inference_mode():
            if use_lookup:
                assert can_decode(enc, cache_field())
                got = greedy_lookup(
                    model, enc, cache_key=cache_field(), max_new_tokens=max_new, processors=[ban],
                    criteria=[stop], pad_id=pad, eos_ids={model.config.eos_token_id},
                )  # fmt: skip
            else:
                got = model.generate(
                    **enc, max_new_tokens=max_new, do_sample=False, pad_token_id=pad,
                    logits_processor=LogitsProcessorList([ban]), stopping_criteria=StoppingCriteriaList([stop]),
                )  # fmt: skip
        out.append((got, ban.lengths))
    return out


def _rows():
    history = list(range(100, 130))
    loop = [40, 41, 42, 43, 44, 45] * 3  # a repeated run: the prompt offers guesses
    return [history + loop + [40, 41], history + [9, 8] + loop, history + [50, 51, 52, 50, 51]]


@pytest.mark.parametrize("which", ["random", "copying"])
def test_lookup_writes_the_tokens_generate_writes(tiny_random_lm, copying_lm, which):
    model = tiny_random_lm.model if which == "random" else copying_lm
    pad = tiny_random_lm.tokenizer.pad_token_id
    (want, want_steps), (got, got_steps) = _both(model, pad, _rows())
    assert got.sequences.tolist() == want.tolist()
    assert got_steps == want_steps  # the stateful processor saw the same steps, once each
    if which == "copying":  # guesses were taken: fewer model calls than tokens
        assert got.forwards < got.steps
    assert got.cache.get_seq_length() == got.sequences.shape[1] - 1


def test_wrong_guesses_are_all_rejected_and_cut_from_the_cache(tiny_random_lm, monkeypatch):
    """Every guess wrong: each step keeps only greedy's own token, and the cut cache still gives the
    same next tokens (a cut one position off, or a guess kept unchecked, would change them)."""
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    monkeypatch.setattr(lookup, "guess", lambda tokens, **_: [3, 3, 3, 3])  # token 3: never greedy's here
    (want, _), (got, _) = _both(model, pad, _rows())
    assert got.sequences.tolist() == want.tolist()
    assert got.forwards == got.steps  # one token a call: no guess was taken


def test_the_check_can_fail(tiny_random_lm, monkeypatch):
    """Taking the guesses without checking them gives other tokens: the comparisons above can fail."""
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    monkeypatch.setattr(lookup, "guess", lambda tokens, **_: [3, 3, 3, 3])
    monkeypatch.setattr(lookup, "_agrees", lambda *a: True)
    (want, _), (got, _) = _both(model, pad, _rows())
    assert got.sequences.tolist() != want.tolist()


def test_truncate_keeps_the_buffer_and_the_next_update_writes_over_the_cut():
    torch.manual_seed(0)
    layer = BufferedLayer()
    a, b, c = (torch.randn(2, 3, n, 4) for n in (6, 4, 1))
    layer.update(a, a)
    layer.update(b, b)
    buf = layer._buf[0]
    layer.truncate(7)
    keys, _ = layer.update(c, c)
    assert layer._buf[0] is buf  # no copy
    assert torch.equal(keys, torch.cat([a, b[:, :, :1], c], dim=-2))


def test_hybrid_reasons_take_fewer_model_calls_than_tokens(agent):
    """The real SmolLM2, user 196, default hybrid mode: reasons still written and checked as before,
    and the decoding took fewer calls than plain greedy would (one per token)."""
    assert agent.config.ranker.lookup_decoding
    agent.ranker.forget_prefixes()
    tokens = []
    real = lookup.greedy_lookup

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        tokens.append((out.forwards, out.steps))
        return out

    lookup_calls = agent.ranker.decoding_calls
    import reasonrec.agent.ranking.hybrid as hybrid

    hybrid.greedy_lookup, saved = counting, hybrid.greedy_lookup
    try:
        rec = agent.recommend(user_id="196", k=5)
    finally:
        hybrid.greedy_lookup = saved
    assert len(rec.items) == 5 and all(r.reason for r in rec.items)
    assert tokens and sum(f for f, _ in tokens) < sum(s for _, s in tokens)
    assert agent.ranker.decoding_calls - lookup_calls == sum(f for f, _ in tokens)
