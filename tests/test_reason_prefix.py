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


def test_a_kept_prefix_is_extended_or_sliced_and_generation_is_unchanged(tiny_random_lm):
    """One SharedPrefix over a sequence of batches (a first pass, its retry of one row, the next user's
    batch): a longer prefix extends the kept one, a shorter one is a slice of it, and every batch
    generates what a fresh SharedPrefix (and so a plain `generate`) gives."""
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    history = list(range(100, 150))
    first = [history + [7, 8, 9], history + [10, 11]]
    retry = [history + [10, 11, 12, 13]]  # one row: its prefix is the whole row but its last token
    other = [history[:20] + [5, 6], history[:20] + [3]]
    greedy = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": pad}
    kept = SharedPrefix(model, pad)
    for rows in (first, retry, other, first):
        with torch.inference_mode():
            fresh = SharedPrefix(model, pad).generate_inputs(rows)
            want = model.generate(**fresh, **greedy)[:, fresh["input_ids"].shape[1] :]
            inputs = kept.generate_inputs(rows)
            got = model.generate(**inputs, **greedy)[:, inputs["input_ids"].shape[1] :]
        assert got.tolist() == want.tolist()
    assert len(kept._ids) >= len(history) + 3  # the retry's longer prefix was kept (extended, not recomputed)


def test_a_prefix_that_diverges_from_the_kept_one_computes_only_its_own_tail(tiny_random_lm):
    """The next chat turn: the same history, another request. The shared history is sliced from the kept
    prefix and only the new request's tokens are computed; generation equals a fresh SharedPrefix's."""
    model, pad = tiny_random_lm.model, tiny_random_lm.tokenizer.pad_token_id
    history = list(range(100, 160))
    turns = [[history + [7, 8, 9, 40, r] for r in (1, 2)], [history + [5, 6, 41, r] for r in (3, 4)]]
    greedy = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": pad}
    fed: list[int] = []
    kept = SharedPrefix(model, pad)
    for rows in turns:
        with torch.inference_mode():
            fresh = SharedPrefix(model, pad).generate_inputs(rows)
            want = model.generate(**fresh, **greedy)[:, fresh["input_ids"].shape[1] :]
            real = model.forward
            model.forward = lambda *a, real=real, **kw: fed.append(kw["input_ids"].shape[1]) or real(*a, **kw)
            try:
                inputs = kept.generate_inputs(rows)
            finally:
                del model.forward
            got = model.generate(**inputs, **greedy)[:, inputs["input_ids"].shape[1] :]
        assert got.tolist() == want.tolist()
    assert fed == [len(history) + 4, 3]  # the first turn's prefix, then only "5 6 41"
    assert list(kept._ids) == turns[1][0][:-1]
