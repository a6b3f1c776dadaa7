"""Masked attention over several positions without copied key/value heads (agent/model/cpu_attention.py)
gives transformers' `sdpa` result bit for bit, and is really used by the loaded model."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from reasonrec.agent.model import cpu_attention
from reasonrec.agent.model.cpu_attention import NAME, use_grouped_attention


def _inputs(positions: int, keys: int, dtype: torch.dtype) -> tuple:
    torch.manual_seed(0)
    q = torch.randn(3, 6, positions, 16, dtype=dtype)  # 6 query heads share 2 key/value heads
    k, v = (torch.randn(3, 2, keys + 8, 16, dtype=dtype)[:, :, :keys] for _ in range(2))  # views, as the cache's
    mask = torch.ones(3, 1, positions, keys, dtype=torch.bool).tril(keys - positions)
    mask[1, ..., :5] = False  # a left-padded row
    return SimpleNamespace(num_key_value_groups=3), q, k, v, mask


@pytest.mark.parametrize("positions, keys", [(5, 40), (33, 70), (2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_attention_equals_sdpa(positions, keys, dtype):
    module, q, k, v, mask = _inputs(positions, keys, dtype)
    with torch.inference_mode():
        want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
        got, _ = cpu_attention._attention(module, q, k, v, mask, scaling=0.25)
    assert got.shape == want.shape == (3, positions, 6, 16) and got.is_contiguous()
    assert torch.equal(got, want)


def test_a_wrong_attention_would_be_caught():
    """The comparison above can fail: the same call without its padding mask reads unequal."""
    module, q, k, v, mask = _inputs(5, 40, torch.float32)
    with torch.inference_mode():
        want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.25)
        got, _ = cpu_attention._attention(module, q, k, v, torch.ones_like(mask), scaling=0.25)
    assert not torch.equal(got, want)


def test_other_calls_go_to_transformers_sdpa(monkeypatch):
    seen = []
    monkeypatch.setattr(
        "transformers.integrations.sdpa_attention.sdpa_attention_forward",
        lambda *a, **kw: seen.append(a[1].shape[2]) or (a[1].transpose(1, 2), None),
    )
    module, q, k, v, mask = _inputs(5, 40, torch.float32)
    with torch.inference_mode():
        cpu_attention._attention(module, q[:, :, :1], k, v, mask[:, :, :1])  # one position
        cpu_attention._attention(module, q, k, v, None)  # no mask
        cpu_attention._attention(module, q, k, v, mask, softcap=30.0)
        cpu_attention._attention(module, q, k, v, mask)  # ours
    cpu_attention._attention(module, q, k, v, mask)  # gradients on
    assert seen == [1, 5, 5, 5]


def test_generate_with_grouped_attention_gives_the_same_tokens(tiny_random_lm):
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    ids = torch.tensor([[5, 6, 7, 8, 9], [pad, pad, 11, 12, 13], [pad, 3, 4, 5, 6]])
    mask = (ids != pad).long()
    fast = copy.deepcopy(model)
    assert use_grouped_attention(fast) and fast.config._attn_implementation == NAME
    assert model.config._attn_implementation == "sdpa"  # the copy's switch left the original alone
    greedy = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": pad}
    with torch.inference_mode():
        want = model.generate(input_ids=ids, attention_mask=mask, **greedy)
        got = fast.generate(input_ids=ids, attention_mask=mask, **greedy)
    assert got.tolist() == want.tolist()


def test_the_real_model_uses_it_and_gives_the_same_logits(lm):
    tok, model = lm.tokenizer, lm.model
    assert model.config._attn_implementation == NAME  # load_model switched it
    enc = tok(["Like Fargo, it is a crime movie from 1996", "Toy Story"], return_tensors="pt", padding=True)
    try:
        with torch.inference_mode():
            fast = model(**enc).logits
            model.set_attn_implementation("sdpa")
            plain = model(**enc).logits
    finally:
        model.set_attn_implementation(NAME)
    assert torch.equal(fast, plain)
