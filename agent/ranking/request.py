"""`RankRequest`: one user's ranking job, the unit every ranker, the prompter and training work on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reasonrec.retrieval.types import Item


@dataclass
class RankRequest:
    """One user's ranking job: history items (oldest first) and candidates in retriever order.

    `features` holds, per candidate (same order), the retrieval sources' scores for it, e.g.
    {"collaborative": 3.2, "cooccurrence": 0.41, "semantic": 0.63}; the fused ranking score reads them.
    """

    history: list[Item]
    candidates: list[Item]
    k: int
    query: str | None = None
    user_id: str | None = None
    retrieval_scores: list[float | None] = field(default_factory=list)
    features: list[dict[str, float]] = field(default_factory=list)
    # Reasons (agent/ranking/evidence.py): the catalogue and co-occurrence counts a reason cites and is checked
    # against (an `evidence.ReasonData`); None = this request's own items, no co-watch evidence.
    reason_data: Any = None
