"""Distillation from retrieval: the label loss also matches the fused retrieval score's distribution.

With `TrainConfig.distill_weight` = w > 0 the label loss of a rank example becomes
(1 - w) x cross-entropy(true item) + w x KL(teacher || student) over its candidates' labels, where the
teacher is softmax(s x fused retrieval score) (the same per-candidate score the offset uses,
`finetune/offsets.py`, from sources that never saw the example's target) and the student the LM's label
distribution (plus the offset when `retrieval_offset` is also set). Why: one target per list teaches
little to a small model (three CPU runs left the label loss at ln 20); twenty soft targets say how
retrieval ranks every candidate, so the LM first learns what co-occurrence and SASRec know.

The teacher's sharpness s: fitted by maximum likelihood on the training examples' own targets
(`teacher_scale`), so the teacher is as confident as retrieval is right on these lists — a fixed
scale is either too flat or overconfident (on 48 ML-100K validation lists the fused score spans a median 0.53
from best to worst candidate and the likelihood is best at s = 8.2).
`distill_scale` fixes it instead. Combining distillation with the offset mostly cancels: the sum
logit_LM + b x fusion already matches a teacher of scale b when the LM is flat, so use one or the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonrec.errors import ConfigError


def teacher_scale(examples: Sequence[Any]) -> float:
    """s maximising the likelihood of the rank examples' targets under softmax(s x offsets), s >= 0.

    Raises:
        ConfigError: no rank example carries offsets (distillation needs the retrieval features).
    """
    from reasonrec.agent.ranking.fused import fit_fusion_weights

    rank = [e for e in examples if e.kind == "rank" and e.offsets]
    if not rank:
        raise ConfigError("distill_weight > 0 needs rank examples with retrieval features; none were built")
    fusion = [list(e.offsets) for e in rank]
    # lm_logp all zero: the LM weight gets no gradient and stays 0, so this fits the retrieval weight alone
    _, s = fit_fusion_weights([[0.0] * len(f) for f in fusion], fusion, [e.target for e in rank])
    return max(float(s), 0.0)


def run_scale(cfg: Any, examples: Sequence[Any]) -> float | None:
    """A run's teacher sharpness: `cfg.distill_scale`, else fitted on `examples`; None without distillation."""
    if not cfg.distill_weight:
        return None
    return cfg.distill_scale if cfg.distill_scale is not None else teacher_scale(examples)


def distill_loss(student: Any, offsets: Any, scale: float) -> Any:
    """Mean over rows of KL(softmax(scale x offsets) || softmax(student)), [R, n] tensors."""
    import torch.nn.functional as F

    teacher = F.softmax(scale * offsets, dim=-1)
    return F.kl_div(F.log_softmax(student, dim=-1), teacher, reduction="batchmean")
