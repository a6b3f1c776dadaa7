"""The CPU decoding speed-ups give what the plain paths give: small-batch linears (agent/model/cpu_linear.py),
the in-place KV cache (agent/model/kv_cache.py) and the reason retry's reuse of the first pass's cache
(HybridRanker._reused_inputs), on the tiny float32 model (greedy)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from reasonrec.agent.model import cpu_linear
from reasonrec.agent.model.cpu_linear import use_small_batch_linears
from reasonrec.agent.model.kv_cache import BufferedLayer, empty_cache, filled
from reasonrec.agent.ranking.hybrid import HybridRanker
from reasonrec.agent.ranking.prefix import SharedPrefix, cache_field

GREEDY = {"max_new_tokens": 8, "do_sample": False}


@pytest.mark.parametrize("shape", [(1, 24), (2, 24), (5, 24), (3, 4, 24), (32, 24), (33, 24), (70, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_small_batch_linear_equals_linear(shape, bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        want = layer(x)
        assert use_small_batch_linears(layer) == 1
        got = layer(x)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_other_path_is_taken_only_for_2_to_32_rows_without_gradients(monkeypatch):
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *a: calls.append(a[1].shape[1]) or real_mm(*a))
    layer = torch.nn.Linear(8, 8)
    use_small_batch_linears(layer)
    with torch.inference_mode():
        for rows in (1, 2, 32, 33):
            layer(torch.randn(rows, 8))
    out = layer(torch.randn(4, 8))  # gradients on (training): the plain path, and backward works
    out.sum().backward()
    assert calls == [2, 32] and layer.weight.grad is not None


def test_a_wrong_kernel_would_be_caught(monkeypatch):
    """The comparison above can fail: a kernel that drops the bias reads unequal."""
    layer = torch.nn.Linear(24, 40)
    x = torch.randn(5, 24)
    with torch.inference_mode():
        want = layer(x)
        use_small_batch_linears(layer)
        monkeypatch.setattr(layer, "bias", None)
        got = layer(x)
    assert not torch.allclose(got, want)


def test_generate_with_small_batch_linears_gives_the_same_tokens(tiny_random_lm):
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    ids = torch.tensor([[5, 6, 7, 8, 9], [pad, pad, 11, 12, 13], [pad, 3, 4, 5, 6]])
    mask = (ids != pad).long()
    fast = copy.deepcopy(model)
    assert use_small_batch_linears(fast) > 0
    with torch.inference_mode():
        want = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **GREEDY)
        got = fast.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **GREEDY)
    assert got.tolist() == want.tolist()
    assert cpu_linear.MIN_ROWS <= ids.shape[0] <= cpu_linear.MAX_ROWS  # decoding took the other path


def test_buffered_layer_holds_what_cat_holds():
    torch.manual_seed(0)
    layer, keys, values = BufferedLayer(), [], []
    for n in (7, 1, 1, 90, 1):  # the third update outgrows the first buffer
        k, v = torch.randn(2, 3, n, 4), torch.randn(2, 3, n, 4)
        keys.append(k)
        values.append(v)
        got_k, got_v = layer.update(k, v)
        assert torch.equal(got_k, torch.cat(keys, dim=-2)) and torch.equal(got_v, torch.cat(values, dim=-2))
    layer.crop(-5)  # someone else sets `keys`: the next update starts from what they left
    k = torch.randn(2, 3, 1, 4)
    got_k, _ = layer.update(k, k)
    assert torch.equal(got_k, torch.cat([torch.cat(keys, dim=-2)[:, :, :-5], k], dim=-2))


def test_generate_with_a_buffered_cache_gives_the_same_tokens(tiny_random_lm):
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    ids = torch.tensor([[5, 6, 7, 8, 9], [pad, pad, 11, 12, 13]])
    mask = (ids != pad).long()
    with torch.inference_mode():
        want = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **GREEDY)
        cache = empty_cache(model)
        got = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **GREEDY, **{cache_field(): cache})
    assert got.tolist() == want.tolist()
    assert all(type(layer) is BufferedLayer for layer in cache.layers)


def test_the_retry_reuses_the_first_pass_cache_and_generates_the_same(tiny_random_lm):
    """A retry of rows 2 and 0 of a first pass, from that pass's cache, equals generating them afresh."""
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    history = list(range(100, 140))
    rows = [history + [7, 8, 9], history + [10, 11], history + [3, 4, 5, 6]]
    with torch.inference_mode():
        enc = SharedPrefix(model, pad).generate_inputs(rows)
        out = model.generate(**enc, pad_token_id=pad, return_dict_in_generate=True, **GREEDY)
        plen = enc["input_ids"].shape[1]
        ranker = SimpleNamespace(_first_pass=(enc, getattr(out, cache_field()), plen), lm=SimpleNamespace(model=model))
        reused = HybridRanker._reused_inputs(ranker, [2, 0])
        assert reused[cache_field()].get_seq_length() == plen - 1  # only the last prompt token is fed again
        got = model.generate(**reused, pad_token_id=pad, **GREEDY)[:, plen:]
        fresh = SharedPrefix(model, pad).generate_inputs([rows[2], rows[0]])
        want = model.generate(**fresh, pad_token_id=pad, **GREEDY)[:, fresh["input_ids"].shape[1] :]
    assert got.tolist() == want.tolist()
    assert HybridRanker._reused_inputs(SimpleNamespace(_first_pass=None), [0]) is None


def test_filled_cache_holds_the_given_keys(tiny_random_lm):
    model = tiny_random_lm.model
    n_layers = model.config.num_hidden_layers
    heads = model.config.num_key_value_heads
    dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    kv = [(torch.randn(1, heads, 6, dim).expand(3, -1, -1, -1),) * 2 for _ in range(n_layers)]
    cache = filled(model, kv)
    assert cache.get_seq_length() == 6 and torch.equal(cache.layers[0].keys, kv[0][0])
