"""The CPU decoding speed-ups give what the plain paths give: packed oneDNN linears (agent/model/cpu_linear.py),
the in-place KV cache (agent/model/kv_cache.py) and the reason retry's reuse of the first pass's cache
(HybridRanker._reused_inputs), on the tiny float32 model (greedy)."""

from __future__ import annotations

import copy
import pickle
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from reasonrec.agent.model import cpu_linear
from reasonrec.agent.model.cpu_linear import use_packed_linears
from reasonrec.agent.model.kv_cache import BufferedLayer, empty_cache, filled
from reasonrec.agent.model.loading import default_dtype
from reasonrec.agent.ranking.hybrid import HybridRanker
from reasonrec.agent.ranking.prefix import SharedPrefix, cache_field

GREEDY = {"max_new_tokens": 8, "do_sample": False}


@pytest.mark.parametrize("shape", [(1, 24), (2, 24), (5, 24), (3, 4, 24), (32, 24), (70, 24), (0, 24)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_equals_linear(shape, bias, dtype):
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40, bias=bias, dtype=dtype)
    x = torch.randn(*shape, dtype=dtype)
    with torch.inference_mode():
        want = layer(x)
        assert use_packed_linears(layer) == 1
        got = layer(x)
    packed = layer.__dict__[cpu_linear._PACKED].weight
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # A CPU without AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT: oneDNN cannot pack bf16, F.linear answers.
        assert packed is None and torch.equal(got, want)
        return
    assert packed is not None  # oneDNN's path was taken
    assert got.shape == want.shape and got.dtype == want.dtype
    if dtype == torch.bfloat16 and default_dtype() == "bfloat16":  # where bf16 is what runs: the same bits
        assert torch.equal(got, want)
    torch.testing.assert_close(got, want, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-5)


def test_gradients_keep_the_plain_path_and_backward_works():
    layer = torch.nn.Linear(8, 8)
    use_packed_linears(layer)
    out = layer(torch.randn(4, 8))  # gradients on (training)
    out.sum().backward()
    assert layer.weight.grad is not None and cpu_linear._PACKED not in layer.__dict__


def _routed_layer() -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(24, 40), torch.randn(5, 24)
    use_packed_linears(layer)
    return layer, x


def test_a_changed_weight_is_packed_again():
    """An optimizer step updates weights in place; a later pass without gradients must use the new ones."""
    layer, x = _routed_layer()
    with torch.inference_mode():
        layer(x)
    with torch.no_grad():
        layer.weight.add_(1.0)  # in place: same tensor, new version
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        layer.weight = torch.nn.Parameter(torch.randn(40, 24))  # a new tensor
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_a_stale_packed_weight_would_be_caught():
    """The comparisons above can fail: a packed copy kept after its weight changed reads unequal."""
    layer, x = _routed_layer()
    with torch.no_grad():
        layer(x)
        layer.weight.add_(1.0)
        held = layer.__dict__[cpu_linear._PACKED]
        held.key = (layer.weight, layer.weight.data_ptr(), layer.weight._version)  # pretend nothing changed
        assert not torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias))


def test_generate_with_packed_linears_gives_the_same_tokens(tiny_random_lm):
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    ids = torch.tensor([[5, 6, 7, 8, 9], [pad, pad, 11, 12, 13], [pad, 3, 4, 5, 6]])
    mask = (ids != pad).long()
    fast = copy.deepcopy(model)
    assert use_packed_linears(fast) > 0
    with torch.inference_mode():
        want = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **GREEDY)
        got = fast.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **GREEDY)
    assert got.tolist() == want.tolist()
    assert all(m.__dict__[cpu_linear._PACKED].weight is not None for m in fast.modules() if type(m) is torch.nn.Linear)
    again = copy.deepcopy(fast)  # a packed model can be copied (and pickled): the copy packs its own weights
    with torch.inference_mode():
        assert again.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **GREEDY).tolist() == want.tolist()
    assert len(pickle.dumps(next(m for m in fast.modules() if type(m) is torch.nn.Linear))) > 0


def test_the_real_model_writes_the_same_tokens_with_packed_linears(lm):
    """SmolLM2 as loaded (linears packed) and with plain `F.linear`: the same greedy tokens for two rows (bf16:
    the same bits; float32 only up to rounding, so there the first logits are compared)."""
    tok, model = lm.tokenizer, lm.model
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert all("forward" in m.__dict__ for m in linears)  # load_model routed them
    enc = tok(["Like Fargo, it is a crime movie", "The user's history: Toy Story (1995)"], return_tensors="pt",
              padding=True, add_special_tokens=False)  # fmt: skip
    with torch.inference_mode():
        fast = model.generate(**enc, pad_token_id=tok.pad_token_id, **GREEDY), model(**enc).logits[:, -1]
        routed = {m: m.__dict__.pop("forward") for m in linears}
        try:
            plain = model.generate(**enc, pad_token_id=tok.pad_token_id, **GREEDY), model(**enc).logits[:, -1]
        finally:
            for m, f in routed.items():
                m.forward = f
    if lm.dtype == "bfloat16":
        assert fast[0].tolist() == plain[0].tolist() and torch.equal(fast[1], plain[1])
    torch.testing.assert_close(fast[1].float(), plain[1].float(), rtol=1e-3, atol=1e-3)


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
