"""`SharedPrefix.generate_inputs`: generating from the cached common prefix gives the tokens that a plain
left-padded `generate` gives (float32 tiny model, greedy), for rows of different lengths."""

from __future__ import annotations

import pytest
import torch

from reasonrec.agent.ranking.prefix import SharedPrefix


@pytest.mark.parametrize("tails", [[[7, 8, 9], [10, 11]], [[5]], [[3, 4, 5, 6], [3, 4], [9, 9, 9]]])
def test_generating_from_the_shared_prefix_matches_plain_generate(tiny_random_lm, tails):
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    prefix = list(range(100, 140))
    rows = [prefix + t for t in tails]
    width = max(map(len, rows))
    plain_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    plain_mask = (torch.arange(width)[None] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    greedy = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": pad}
    with torch.inference_mode():
        want = model.generate(input_ids=plain_ids, attention_mask=plain_mask, **greedy)[:, width:]
        inputs = SharedPrefix(model, pad).generate_inputs(rows)
        got = model.generate(**inputs, **greedy)[:, inputs["input_ids"].shape[1] :]
    assert got.tolist() == want.tolist()
