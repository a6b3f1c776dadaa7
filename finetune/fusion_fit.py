"""Fit the fused ranking score's weights (`candidates.lm_weight`, `candidates.retrieval_weight`) on validation items.

For a seeded set of users: the retrieval sources are fitted on the users' train side only (no validation or
test item), each user's fused top-N is ranked by the LM (one scoring forward per list), and the two
weights that make the held-out validation item most likely are found (ranking/fused.py). Users whose
validation item is not among the candidates carry no signal for the ranking and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel

from reasonrec.agent.config import AgentConfig

Progress = Callable[[int, int], None]


class FusionFit(BaseModel):
    """What `fit_fusion` measured on the validation lists."""

    users: int
    lists: int
    candidates: int
    lm_weight: float
    retrieval_weight: float
    ndcg10_fusion: float
    ndcg10_fused: float
    ndcg10_lm: float


def fit_fusion(
    agent_cfg: AgentConfig, users: int = 300, seed: int = 0, candidates: int = 20, progress: Progress | None = None
) -> FusionFit:
    """See the module docstring.

    Raises:
        ConfigError: `users` < 1. DataError / ModelError: the dataset or the model cannot be loaded.
    """
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.candidates import build_candidate_source, ranking_features
    from reasonrec.agent.ranking.fused import fit_fusion_weights, fused_scores
    from reasonrec.agent.ranking.scoring import ScoringRanker
    from reasonrec.errors import ConfigError
    from reasonrec.finetune.data import validation_users
    from reasonrec.finetune.evaluation import metrics as M
    from reasonrec.finetune.evaluation.split import leave_one_out

    if users < 1:
        raise ConfigError(f"`users` must be >= 1, got {users}")
    agent = RecommenderAgent(agent_cfg)
    split = leave_one_out(agent.dataset)
    train_side = {u: split.eval_history(u, "valid") for u in split.user_ids()}
    source = build_candidate_source(agent.dataset, agent_cfg, agent._semantic_source, sequences=train_side, train=True)
    reqs, targets = [], []
    chosen = validation_users(split, users, seed)
    for n, u in enumerate(chosen):
        hist, target = train_side[u], split.get(u).valid
        cands = source.candidates(hist, candidates)
        ids = [c.item_id for c in cands]
        if target in ids:
            req = agent._request(hist, ids, min(10, len(ids)), None, u)
            req.features = ranking_features(source, hist, ids, known=cands)
            reqs.append(req)
            targets.append(ids.index(target))
        if progress:
            progress(n + 1, len(chosen))
    ranker = ScoringRanker(agent.model, agent_cfg)
    probs = []
    for start in range(0, len(reqs), agent_cfg.ranker.batch_size):
        scored, _ = ranker.score(reqs[start : start + agent_cfg.ranker.batch_size])
        probs.extend(s.probs for s in scored)
    lm = [[math.log(max(p[c.id], 1e-30)) for c in r.candidates] for r, p in zip(reqs, probs, strict=True)]
    fusion = [[f["fusion"] for f in r.features] for r in reqs]
    w_lm, w_ret = fit_fusion_weights(lm, fusion, targets)

    def ndcg(a: float, b: float) -> float:
        per = []
        for r, p, t in zip(reqs, probs, targets, strict=True):
            s = fused_scores(r, p, a, b)
            order = sorted((c.id for c in r.candidates), key=lambda i: -s[i])
            per.append(M.user_metrics(order, r.candidates[t].id, [10])["ndcg@10"])
        return sum(per) / max(len(per), 1)

    return FusionFit(
        users=len(chosen), lists=len(reqs), candidates=candidates, lm_weight=w_lm, retrieval_weight=w_ret,
        ndcg10_fusion=ndcg(0.0, 1.0), ndcg10_fused=ndcg(w_lm, w_ret), ndcg10_lm=ndcg(1.0, 0.0),
    )  # fmt: skip
