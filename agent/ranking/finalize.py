"""Finalize: the one place that turns a ranker's picks into the public `Recommendations`.

Every mode ends here. It decides each item's reason exactly once (the model's text when it is usable,
faithful and unlike the list's other reasons, else the reason built from the item's evidence), fills a
short list up to k, and leaves the counters to the result itself (`Recommendations.n_model` etc. are
computed from the items' `source`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from reasonrec.agent.ranking.evidence import ItemEvidence, for_request, request_data
from reasonrec.agent.ranking.faithful import ShownReason, choose_reasons
from reasonrec.agent.ranking.reasons import is_grounded, restates_question, usable_reason
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.agent.schemas import Recommendation, Recommendations
from reasonrec.prompts.parser import ParsedEntry, ParsedRanking
from reasonrec.retrieval.types import Item


def reasons_for(
    req: RankRequest, picked: list[Item], texts: list[str | None],
    evidence: Mapping[str, ItemEvidence] | None, replace_ungrounded: bool, domain: str = "item",
) -> list[ShownReason]:  # fmt: skip
    """Each pick's shown reason (faithful.choose_reasons), from the evidence the ranker used or assembled here.

    With `replace_ungrounded` off (ranker.grounded_reasons) the model's usable text is shown unchecked.
    """
    known = evidence or {}
    missing = [it for it in picked if it.id not in known]
    extra = {ev.item_id: ev for ev in for_request(req, missing, domain)} if missing else {}
    evs = [known.get(it.id) or extra[it.id] for it in picked]
    data = request_data(req)
    shown = choose_reasons(picked, texts, evs, req.history, req.query, data, domain)
    if replace_ungrounded:
        return shown
    return [_unchecked(s, t, it) for s, t, it in zip(shown, texts, picked, strict=True)]


def _unchecked(s: ShownReason, text: str | None, item: Item) -> ShownReason:
    if s.source == "model" or not (text and usable_reason(text, item) and not restates_question(text)):
        return s
    return dataclasses.replace(s, text=text, source="model", faithful=bool(s.model_faithful),
                               specific=bool(s.model_specific))  # fmt: skip


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
    evidence: Mapping[str, ItemEvidence] | None = None,
    domain: str = "item",
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
        evidence: item id -> the evidence its reason was written from; missing picks get theirs here.
        domain: what is recommended ("movie"), for reasons built from facts.
    """
    by_id = {it.id: it for it in req.candidates}
    sims = dict(zip([c.id for c in req.candidates], req.retrieval_scores or [], strict=False))
    picked = [by_id[e.item_id] for e in parsed.entries]
    texts = [(reasons or {}).get(e.item_id, e.reason) for e in parsed.entries]
    # reasons: a model reason is shown only when faithful and unlike the list's others (faithful.py)
    shown = reasons_for(req, picked, texts, evidence, replace_ungrounded, domain)
    items, echoed, judged, checked = [], 0, [], []
    for rank, (entry, item, r, text) in enumerate(zip(parsed.entries, picked, shown, texts, strict=True), start=1):
        if entry.reason and not usable_reason(entry.reason, item):
            echoed += 1  # the rank answer echoed the listing: the output was not valid as written
        if r.model_faithful is not None:  # the model wrote a usable reason: judge its own text
            judged.append(is_grounded(text or "", item, req.history))
            checked.append(r.model_faithful)
        source = entry.source if entry.source in ("model", "retrieval") else filled_by
        items.append(
            Recommendation(
                item_id=item.id, title=item.title, year=item.year, genres=list(item.genres), rank=rank,
                reason=r.text, score=(scores or {}).get(item.id), retrieval_score=sims.get(item.id),
                source=source, reason_source=r.source, grounded=is_grounded(r.text, item, req.history),
                faithful=r.faithful, specific=r.specific, model_faithful=r.model_faithful, evidence=r.evidence,
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
        faithful_rate_model=sum(checked) / len(checked) if checked else None,
        timings=timings,
    )
