"""Distillation from retrieval: the teacher's scale is fitted on the targets, and the loss pulls the LM's label
distribution towards the teacher (finetune/distill.py)."""

from __future__ import annotations

import copy

import pytest

from reasonrec.errors import ConfigError
from reasonrec.finetune.config import TrainConfig
from reasonrec.finetune.data import TrainExample


def _rank(offsets: tuple[float, ...], target: int) -> TrainExample:
    return TrainExample("rank", "u", "p", "a", tuple(range(len(offsets))), target, offsets)


def test_teacher_scale_follows_how_often_retrieval_is_right():
    right = [_rank((0.05, 0.03, 0.02, 0.01), 0) for _ in range(20)]  # the target always has the top score
    half = right[:10] + [_rank((0.05, 0.03, 0.02, 0.01), 3) for _ in range(10)]
    wrong = [_rank((0.05, 0.03, 0.02, 0.01), 3) for _ in range(20)]  # ... always the lowest
    from reasonrec.finetune.distill import teacher_scale

    s_right, s_half, s_wrong = teacher_scale(right), teacher_scale(half), teacher_scale(wrong)
    assert s_right > s_half > s_wrong == 0.0  # a teacher never rewards what retrieval ranks last
    with pytest.raises(ConfigError, match="retrieval features"):
        teacher_scale([_rank((), 0)])


def test_distillation_pulls_the_label_distribution_to_the_teacher(tiny_random_lm):
    import torch

    from reasonrec.finetune.data import Encoded, collate
    from reasonrec.finetune.distill import distill_loss
    from reasonrec.finetune.train import batch_loss

    tok = tiny_random_lm.tokenizer
    model = copy.deepcopy(tiny_random_lm.model).train()  # the session fixture stays untouched
    labels = tuple(tok.convert_tokens_to_ids(list("ABCD")))
    prompt = tok("Pick one: [", add_special_tokens=False)["input_ids"]
    offsets = (0.0, 0.1, 0.0, 0.05)  # the teacher prefers B, then D; the true item is C
    ex = Encoded(prompt + [labels[2], tok.eos_token_id], 2, labels, 2, offsets)
    batch = collate([ex], tok.pad_token_id)
    cfg = TrainConfig(distill_weight=1.0, lm_loss_weight=0.0)
    with pytest.raises(ConfigError, match="teacher"):
        batch_loss(model, batch, cfg, "cpu")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        loss, parts = batch_loss(model, batch, cfg, "cpu", teacher_scale=20.0)
        first = parts["distill_kl"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, parts = batch_loss(model, batch, cfg, "cpu", teacher_scale=20.0)
        out = model(input_ids=torch.tensor([prompt])).logits[0, -1]  # the distribution after "[", unpadded
    probs = torch.softmax(out[list(labels)], -1)
    assert parts["distill_kl"] < first / 5  # the student moved to the teacher ...
    assert probs.argmax().item() == 1 and probs[3] > probs[2]  # ... B first, D over the true item C (w = 1)
    kl = distill_loss(out[list(labels)].unsqueeze(0), torch.tensor([offsets]), 20.0)
    assert abs(kl.item() - parts["distill_kl"]) < 1e-4  # the loss is the documented KL


def test_without_distillation_the_loss_is_unchanged(tiny_random_lm):
    import torch

    from reasonrec.finetune.data import Encoded, collate
    from reasonrec.finetune.train import batch_loss

    tok = tiny_random_lm.tokenizer
    labels = tuple(tok.convert_tokens_to_ids(list("ABCD")))
    prompt = tok("Pick one: [", add_special_tokens=False)["input_ids"]
    batch = collate([Encoded(prompt + [labels[2], tok.eos_token_id], 2, labels, 2, (0.0, 0.1, 0.0, 0.05))],
                    tok.pad_token_id)  # fmt: skip
    with torch.no_grad():
        plain, p_parts = batch_loss(tiny_random_lm.model, batch, TrainConfig(lm_loss_weight=0.0), "cpu", 20.0)
        half, h_parts = batch_loss(tiny_random_lm.model, batch, TrainConfig(lm_loss_weight=0.0, distill_weight=0.5),
                                   "cpu", 20.0)  # fmt: skip
    assert "distill_kl" not in p_parts and plain.item() == pytest.approx(p_parts["rank_loss"])
    assert half.item() == pytest.approx(0.5 * h_parts["rank_loss"] + 0.5 * h_parts["distill_kl"], rel=1e-5)


def test_a_run_from_before_distillation_existed_still_resumes(tmp_path):
    import json

    from reasonrec.finetune.train import _check_resume

    cfg = TrainConfig(output_dir=tmp_path)
    ckpt = tmp_path / "checkpoints" / "step-000002"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text("{}")
    old = {k: v for k, v in json.loads(cfg.model_dump_json()).items() if not k.startswith("distill_")}
    (tmp_path / "run.json").write_text(json.dumps({"train_config": old, "data_hash": "h"}))
    assert _check_resume(cfg, "h") == ckpt  # the new fields at their defaults: the same run
    with pytest.raises(ConfigError, match="distill_weight"):
        _check_resume(cfg.model_copy(update={"distill_weight": 0.5}), "h")
