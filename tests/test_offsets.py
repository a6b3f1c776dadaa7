"""Training that can only add: the retrieval offset's features never saw their targets, the loss reads
logit + b x offset, and validation reports retrieval's own order beside the sum."""

from __future__ import annotations

import pytest

from reasonrec.finetune.config import TrainConfig


@pytest.fixture(scope="module")
def split(ml100k):
    from reasonrec.finetune.evaluation.split import leave_one_out

    return leave_one_out(ml100k)


def test_offset_features_come_from_sources_that_never_saw_the_targets(split):
    from reasonrec.finetune.offsets import offset_sequences

    train_seqs, val_seqs = offset_sequences(split, positions_per_user=2)
    for u in split.user_ids()[:200]:
        s = split.get(u)
        assert train_seqs[u] == list(s.train[:-2])  # the two training targets (and what follows) are out
        assert s.valid not in val_seqs[u] and s.test not in val_seqs[u] and val_seqs[u] == list(s.train)


def test_offset_examples_carry_one_fused_score_per_candidate(agent, split):
    from reasonrec.agent.ranking.prompter import Prompter
    from reasonrec.finetune.data import build_examples, data_hash
    from reasonrec.finetune.evaluation.baselines import ItemKNNRanker
    from reasonrec.finetune.offsets import list_offsets, offset_sources
    from reasonrec.retrieval.types import natural_key

    knn = ItemKNNRanker(split, sorted(agent.items, key=natural_key))
    cfg = TrainConfig(train_users=5, positions_per_user=1, reason_share=0.0, retrieval_offset=1.0)
    train_src, _, _ = offset_sources(agent, split, cfg.positions_per_user)
    prompter = Prompter(agent.model, agent.config)
    plain = build_examples(agent, split, cfg, knn, prompter)
    with_off = build_examples(agent, split, cfg, knn, prompter, offsets=lambda h, c: list_offsets(train_src, h, c))
    assert [e.prompt for e in plain] == [e.prompt for e in with_off]
    assert all(len(e.offsets) == len(e.label_ids) for e in with_off)
    assert any(max(e.offsets) > 0 for e in with_off)  # the sources score these lists (global ranks)
    assert data_hash(plain) != data_hash(with_off) and all(e.offsets == () for e in plain)


def test_loss_reads_logits_plus_the_offset(agent, tiny_random_lm, split):
    import torch

    from reasonrec.finetune.data import Encoded, collate
    from reasonrec.finetune.train import batch_loss

    tok = tiny_random_lm.tokenizer
    labels = tuple(tok.convert_tokens_to_ids(list("ABCD")))
    prompt = tok("Pick one: [", add_special_tokens=False)["input_ids"]
    sure = Encoded(prompt + [labels[2], tok.eos_token_id], 2, labels, 2, (0.0, 0.0, 30.0, 0.0))
    wrong = Encoded(prompt + [labels[2], tok.eos_token_id], 2, labels, 2, (30.0, 0.0, 0.0, 0.0))
    cfg = TrainConfig(retrieval_offset=1.0, lm_loss_weight=0.0)
    with torch.no_grad():
        _, right_parts = batch_loss(tiny_random_lm.model, collate([sure], tok.pad_token_id), cfg, "cpu")
        _, wrong_parts = batch_loss(tiny_random_lm.model, collate([wrong], tok.pad_token_id), cfg, "cpu")
        no_offset = cfg.model_copy(update={"retrieval_offset": 0.0})
        _, none_parts = batch_loss(tiny_random_lm.model, collate([sure], tok.pad_token_id), no_offset, "cpu")
    assert right_parts["rank_loss"] < 1e-6  # the offset alone makes the target certain
    assert wrong_parts["rank_loss"] > 20  # ... or rules it out
    assert 0.5 < none_parts["rank_loss"] < 3.0  # without it: a random model's ~ln 4
