"""The `reasons` block of a results row (shared/protocols.md): how trustworthy the shown reasons are.

    faithful_rate        shown reasons with no false claim (agent/ranking/claims.py)
    faithful_rate_model  the model's own usable reasons with no false claim, before any replacement
    specific_rate        shown reasons with a true claim about the item itself beyond the opener
    distinct_rate        lists whose reasons are pairwise unlike (normalised text, near-duplicates alike)
    model_reason_rate    shown reasons the model wrote
    n_reasons            shown reasons counted

The per-item verdicts are the ones `finalize` made while serving (`Recommendation.faithful`,
`.specific`, `.model_faithful`), checked against the catalogue and the co-watch counts of the
candidate source the run used (in evaluation: fitted on the users' pre-test items).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from reasonrec.agent.ranking.claims import ClaimChecker
from reasonrec.agent.schemas import Recommendations
from reasonrec.retrieval.types import Item


class ReasonRates(BaseModel):
    """Rates over the reasons of one method's lists."""

    faithful_rate: float = Field(description="Shown reasons with no false claim.")
    faithful_rate_model: float | None = Field(
        description="Model-written usable reasons with no false claim, before replacement; None: the model wrote none."
    )
    specific_rate: float = Field(description="Shown reasons with a true claim about the item beyond the opener.")
    distinct_rate: float = Field(description="Lists whose reasons are all different (near-duplicates count as alike).")
    model_reason_rate: float = Field(description="Shown reasons the model wrote.")
    n_reasons: int = Field(description="Shown reasons counted.")
    n_model_reasons: int = Field(description="Model-written usable reasons (the denominator of faithful_rate_model).")


def reason_rates(recs: Sequence[Recommendations], catalogue: Mapping[str, Item]) -> ReasonRates | None:
    """The reasons block for a method's results; None when no list has reasons.

    Args:
        recs: one Recommendations per user.
        catalogue: the items (titles are masked when comparing reasons for near-duplicates).
    """
    shown = [r for rec in recs for r in rec.items]
    if not shown:
        return None
    checker = ClaimChecker(catalogue)
    model = [r.model_faithful for r in shown if r.model_faithful is not None]
    lists = [rec for rec in recs if rec.items]
    return ReasonRates(
        faithful_rate=sum(bool(r.faithful) for r in shown) / len(shown),
        faithful_rate_model=sum(model) / len(model) if model else None,
        specific_rate=sum(bool(r.specific) for r in shown) / len(shown),
        distinct_rate=sum(checker.all_distinct([r.reason for r in rec.items]) for rec in lists) / len(lists),
        model_reason_rate=sum(r.reason_source == "model" for r in shown) / len(shown),
        n_reasons=len(shown),
        n_model_reasons=len(model),
    )
