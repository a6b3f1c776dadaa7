"""The fused ranking score: the LM's label log-probability plus the retrieval sources' fused score.

score(i) = candidates.lm_weight * log p_LM(i) + candidates.retrieval_weight * fusion(i)

where fusion(i) is `candidates.rrf_k` x the weighted reciprocal-rank sum over the sources (agent/candidates.py). Both
weights are fitted on validation items (`fit_fusion_weights`), so the LM can only add what it knows on
top of what retrieval knows; with lm_weight 0 the fused retrieval order decides and the LM explains, so
such a request's ranking runs no forward pass at all (`lm_decides`; scoring mode then never loads the
model). A request without retrieval features (a caller's own candidate list) is ordered by the LM alone.

Generative mode reads the same score while the model picks each label: `label_bias` is added to the label
logits under constrained decoding, so the list it writes follows the fused order unless the LM is confident.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from reasonrec.agent.ranking.request import RankRequest


def lm_decides(req: RankRequest, lm_weight: float) -> bool:
    """Whether the LM's probabilities change `req`'s fused scores, i.e. whether ranking it needs a forward pass.

    Without retrieval features they are the whole score; with them, only where `lm_weight` is not 0 (the
    shipped default is 0: the score is then the fused retrieval score, and the LM only explains).
    """
    return not req.features or lm_weight != 0


def fused_scores(
    req: RankRequest, probs: Mapping[str, float] | None, lm_weight: float, retrieval_weight: float
) -> dict[str, float]:
    """Item id -> fused ranking score; the LM's log-probability alone when `req` has no features.

    `probs` (the LM's, per candidate) is read only where `lm_decides`; elsewhere it may be None.
    """
    fusion = _retrieval_term(req, retrieval_weight)
    if not lm_decides(req, lm_weight):  # lm_weight 0: the LM's term is exactly 0, whatever it scored
        return {c.id: x for c, x in zip(req.candidates, fusion, strict=True)}
    if probs is None:
        raise ValueError("the LM decides this request's order (lm_decides), but no LM probabilities were given")
    if not req.features:
        return {c.id: _log(probs[c.id]) for c in req.candidates}
    return {c.id: lm_weight * _log(probs[c.id]) + x for c, x in zip(req.candidates, fusion, strict=True)}


# label_bias where lm_weight is 0: one RRF unit is worth 30 nats (cand20, 60 users: HR@1 0.483 at 30, 0.400 at 8,
# 0.067 at 0 against the fusion's 0.500; bench/results/cand20_genbias*.json): the LM moves only near-ties.
ZERO_LM_LABEL_BIAS = 30.0


def label_bias(req: RankRequest, lm_weight: float, retrieval_weight: float, bias: float | None) -> list[float]:
    """Per candidate of `req` (same order), what generative decoding adds to its label logit; [] without features.

    Why this scale: with lm_weight w > 0 the fused score is w·log p + r·fusion, so a label logit plus
    (r / w)·fusion has the fused score's argmax at the first pick; `bias` (candidates.label_bias) overrides it.
    """
    if not req.features:
        return []
    scale = bias if bias is not None else (1.0 / lm_weight if lm_weight > 0 else ZERO_LM_LABEL_BIAS)
    return [scale * x for x in _retrieval_term(req, retrieval_weight)]


def _retrieval_term(req: RankRequest, retrieval_weight: float) -> list[float]:
    """retrieval_weight x each candidate's fused retrieval score (the ranking score's retrieval part)."""
    return [retrieval_weight * f.get("fusion", 0.0) for f in req.features]


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf  # monotonic: the LM-only order is the probability order


def softmax(scores: dict[str, float]) -> dict[str, float]:
    """The fused scores as probabilities over the candidates (what results report as `score`)."""
    a = np.array(list(scores.values()), dtype=np.float64)
    e = np.exp(a - a.max())
    return dict(zip(scores, (e / e.sum()).tolist(), strict=True))


def fit_fusion_weights(
    lm_logp: Sequence[Sequence[float]], fusion: Sequence[Sequence[float]], targets: Sequence[int], steps: int = 300
) -> tuple[float, float]:
    """(lm_weight, retrieval_weight) maximising the likelihood of the validation targets, lm_weight >= 0.

    A listwise softmax regression with two weights (they also set the temperature), by projected gradient
    ascent from (0, 1): each list is one user's validation candidates, `targets` the index of the held-out
    item. Why the LM weight is kept >= 0: a negative weight on log-probabilities rewards the labels the
    model finds *least* likely, which is not the LM adding what it knows (fitted unconstrained on 96
    full20 lists it came out -0.06, and on cand20 it cost HR@1 0.484 -> 0.332: bench/results/cand20_fused).
    """
    x1 = [np.asarray(a, dtype=np.float64) for a in lm_logp]
    x2 = [np.asarray(a, dtype=np.float64) for a in fusion]
    w = np.array([0.0, 1.0])
    lr = 0.5
    for _ in range(steps):
        grad = np.zeros(2)
        for a, b, t in zip(x1, x2, targets, strict=True):
            s = w[0] * a + w[1] * b
            p = np.exp(s - s.max())
            p /= p.sum()
            grad += np.array([a[t] - p @ a, b[t] - p @ b])
        w += lr * grad / max(len(targets), 1)
        w[0] = max(w[0], 0.0)
    return float(w[0]), float(w[1])
