"""Finalize: the one place that turns a ranker's picks into the public `Recommendations`.

Every mode ends here. It decides each item's reason exactly once (the model's text when it is usable
and grounded, else a reason built from facts), fills a short list up to k, and leaves the counters to
the result itself (`Recommendations.n_model` etc. are computed from the items' `source`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reasonrec.agent.ranking.reasons import grounded_reason, is_grounded, restates_question, usable_reason
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.agent.schemas import Recommendation, Recommendations
from reasonrec.prompts.parser import ParsedEntry, ParsedRanking
from reasonrec.retrieval.types import Item


@dataclass(frozen=True)
class Reason:
    """The decision for one item's reason."""

    text: str
    source: str  # "model" or "template"
    grounded: bool
    model_grounded: bool | None  # the model's own text was grounded (None: the model wrote none usable)


def decide_reason(
    text: str | None, item: Item, history: Sequence[Item], similarity: float | None, replace_ungrounded: bool
) -> Reason:
    """The reason shown for `item`: the model's `text` if it explains something checkable, else facts.

    A text that is empty, only echoes the listing, or restates the task is not a reason; one that names
    nothing checkable is replaced too when `replace_ungrounded` (ranker.grounded_reasons).
    """
    if text and usable_reason(text, item) and not restates_question(text):
        grounded = is_grounded(text, item, history)
        if grounded or not replace_ungrounded:
            return Reason(text, "model", grounded, grounded)
        model_grounded: bool | None = False
    else:
        model_grounded = None
    fact = grounded_reason(item, history, similarity)
    return Reason(fact, "template", is_grounded(fact, item, history), model_grounded)


def complete_from(parsed: ParsedRanking, order: list[str], label_map: dict[str, str], k: int) -> ParsedRanking:
    """Keep the model's picks, then fill up to k in `order` (scoring order) instead of retriever order."""
    model = parsed.entries[: parsed.n_model]
    chosen = {e.item_id for e in model}
    label_of = {item_id: label for label, item_id in label_map.items()}
    rest = [ParsedEntry(label=label_of[i], item_id=i, source="fallback") for i in order if i not in chosen]
    return parsed.model_copy(update={"entries": model + rest[: k - len(model)]})


def build_recommendations(
    req: RankRequest,
    parsed: ParsedRanking,
    raw: str | None,
    model_id: str,
    mode: str,
    timings: dict[str, float],
    scores: Mapping[str, float] | None = None,
    *,
    template: str,
    replace_ungrounded: bool = True,
    reasons: Mapping[str, str] | None = None,
    filled_by: str = "fallback",
) -> Recommendations:
    """Turn a parsed ranking into the public result; every item gets a non-empty reason, decided once.

    Args:
        req: the request (history, candidates in retriever order, retrieval scores).
        parsed: the picks; entry reasons are the rank answer's own text (generative mode).
        raw, model_id, mode, timings: recorded as they are.
        scores: item id -> ranking score, where the mode has one.
        template: the rank template version that produced it.
        replace_ungrounded: `ranker.grounded_reasons`.
        reasons: item id -> a reason written apart from the rank answer (hybrid mode's reason prompts).
        filled_by: the `source` of picks past the model's own ("fallback" = retriever order, "scoring").
    """
    by_id = {it.id: it for it in req.candidates}
    sims = dict(zip([c.id for c in req.candidates], req.retrieval_scores or [], strict=False))
    items, echoed, judged = [], 0, []
    for rank, entry in enumerate(parsed.entries, start=1):
        item = by_id[entry.item_id]
        text = (reasons or {}).get(item.id, entry.reason)
        if entry.reason and not usable_reason(entry.reason, item):
            echoed += 1  # the rank answer echoed the listing: the output was not valid as written
        r = decide_reason(text, item, req.history, sims.get(item.id), replace_ungrounded)
        if r.model_grounded is not None:
            judged.append(r.model_grounded)
        source = entry.source if entry.source == "model" else filled_by
        items.append(
            Recommendation(
                item_id=item.id, title=item.title, year=item.year, genres=list(item.genres), rank=rank,
                reason=r.text, score=(scores or {}).get(item.id), retrieval_score=sims.get(item.id),
                source=source, reason_source=r.source, grounded=r.grounded,
            )
        )  # fmt: skip
    return Recommendations(
        user_id=req.user_id,
        query=req.query,
        items=items,
        k=req.k,
        n_candidates=len(req.candidates),
        mode=mode,
        model_id=model_id,
        template_version=template,
        valid_output=parsed.valid and echoed == 0,
        n_off_candidate=len(parsed.off_candidate),
        n_duplicates=len(parsed.duplicates),
        raw_output=raw,
        grounded_rate=sum(judged) / len(judged) if judged else None,
        timings=timings,
    )
