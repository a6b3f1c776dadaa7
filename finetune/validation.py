"""Validation during training and calibration: cand20-style lists on the *validation* item, ranked by the
label logits (scoring mode, P=1), plus a retrieval offset when the run trains with one."""

from __future__ import annotations

from typing import Any

from reasonrec.finetune.config import TrainConfig
from reasonrec.finetune.evaluation import metrics as M


def validate(
    model: Any, prompter: Any, val: list, items: dict, cfg: TrainConfig, device: str, offsets: list | None = None
) -> tuple[float, float]:
    """Mean NDCG@10 of the label-probability order (scoring mode, P=1; plus the retrieval offset when the
    run has one) on the validation lists, and the softmax temperature that calibrates those
    probabilities (`fit_temperature`; saved with the adapter)."""
    off = (cfg.retrieval_offset, offsets) if offsets else None
    logits, targets, ndcg = validation_logits(model, prompter, val, items, cfg.batch_size * 2, device, off)
    return ndcg, fit_temperature(logits, targets) if len(targets) else 1.0


def validation_logits(
    model: Any, prompter: Any, val: list, items: dict, batch_size: int, device: str, offsets: Any = None
) -> tuple[Any, Any, float]:
    """Label logits of every validation list (one row per list, labels in prompt order), the index of
    the target's label per row, and the mean NDCG@10 of the logit order.

    `offsets`: (b, per-list offsets in candidate order), added as b x offset to each label's logit.
    """
    import torch

    from reasonrec.agent.model.labels import label_token_ids
    from reasonrec.agent.ranking.request import RankRequest

    tok = prompter.lm.tokenizer
    scores, rows, targets = [], [], []
    model.eval()
    for start in range(0, len(val), batch_size):
        chunk = val[start : start + batch_size]
        prompts, orders = [], []
        for v in chunk:
            k = min(10, len(v.candidates))
            req = RankRequest([items[i] for i in v.history], [items[c] for c in v.candidates], k=k)
            text, label_map = prompter.prompt_text(req)
            prompts.append(text)
            orders.append(label_map)
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            inputs = {name: t.to(device) for name, t in enc.items()}
            logits = model(**inputs, position_ids=pos.to(device), logits_to_keep=1).logits
        _, ids = label_token_ids(tok, len(chunk[0].candidates))
        lab = logits[:, -1, :].float()[:, ids].cpu()
        if offsets is not None:
            b, offs = offsets
            for r, (v, label_map) in enumerate(zip(chunk, orders, strict=True)):
                off = dict(zip(v.candidates, offs[start + r], strict=True))
                lab[r] += b * torch.tensor([off[i] for i in label_map.values()])
        for v, label_map, row in zip(chunk, orders, lab, strict=True):
            ranked = [label_map[lbl] for lbl in (list(label_map)[int(i)] for i in torch.argsort(row, descending=True))]
            scores.append(M.ndcg_at_k(ranked, v.target, 10))
            rows.append(row)
            targets.append(list(label_map.values()).index(v.target))
    if not rows:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), 0.0
    return torch.stack(rows), torch.tensor(targets), float(sum(scores) / len(scores))


def retrieval_ndcg(val: list, offsets: list) -> float:
    """Mean NDCG@10 of the retrieval offset's own order on the validation lists (ties by list order)."""
    per = []
    for v, off in zip(val, offsets, strict=True):
        order = sorted(range(len(v.candidates)), key=lambda i: -off[i])
        per.append(M.ndcg_at_k([v.candidates[i] for i in order], v.target, 10))
    return sum(per) / max(len(per), 1)


def fit_temperature(logits: Any, targets: Any) -> float:
    """The T in softmax(logits / T) with the least negative log-likelihood of the targets (grid search).

    Why: a 135M model's label probabilities are far from calibrated (it puts most mass on "A"); one
    scalar fitted on held-out validation lists makes `Recommendation.score` mean what it says, and it
    never changes the order. A grid over 0.1..100 is enough for one parameter and cannot diverge.
    """
    import torch

    grid = torch.logspace(-1, 2, 121)
    nll = [torch.nn.functional.cross_entropy(logits.float() / t, targets).item() for t in grid]
    return float(grid[int(torch.tensor(nll).argmin())])
