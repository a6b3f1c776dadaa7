"""Rank a candidate set with the LM and explain each pick.

Generative mode: render the ranking prompt, let the model write `[label] reason` lines (the assistant
turn is prefilled with "[" so the first token is already a label), then the parser validates the
output and fills any gap from retriever order. Every request is padded into one batched `generate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.labels import label_token_ids
from reasonrec.agent.model import LoadedModel
from reasonrec.agent.parser import ParsedRanking, parse_ranking
from reasonrec.agent.reasons import grounded_reason, is_grounded, usable_reason
from reasonrec.agent.schemas import Recommendation, Recommendations
from reasonrec.prompts.loader import ANSWER_PREFIX, TEMPLATE_VERSION, render_rank_messages
from reasonrec.retrieval.types import Item


@dataclass
class RankRequest:
    """One user's ranking job: history items (oldest first) and candidates in retriever order."""

    history: list[Item]
    candidates: list[Item]
    k: int
    query: str | None = None
    user_id: str | None = None
    retrieval_scores: list[float | None] = field(default_factory=list)


class BatchedRanker:
    """Shared driver: split requests into `ranker.batch_size` chunks, one model call per chunk."""

    config: AgentConfig

    def rank(
        self, requests: Sequence[RankRequest], progress: Callable[[int, int], None] | None = None
    ) -> list[Recommendations]:
        """Rank every request, `ranker.batch_size` at a time. Never raises for bad model output."""
        out: list[Recommendations] = []
        bs = self.config.ranker.batch_size
        for start in range(0, len(requests), bs):
            batch = list(requests[start : start + bs])
            out.extend(mark_grounded(req, rec) for req, rec in zip(batch, self._rank_batch(batch), strict=True))
            if progress:
                progress(len(out), len(requests))
        return out

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        raise NotImplementedError


class GenerativeRanker(BatchedRanker):
    """The model writes the ranked list and the reasons; the parser keeps it inside the candidates."""

    mode = "generative"

    def __init__(self, lm: LoadedModel, config: AgentConfig):
        self.lm = lm
        self.config = config
        self._newline_ids = _newline_token_ids(lm.tokenizer)

    def prompt_text(self, req: RankRequest) -> tuple[str, dict[str, str]]:
        """Chat-templated prompt (ending in the "[" prefill) and the label -> item id map."""
        labels, _ = label_token_ids(self.lm.tokenizer, len(req.candidates))
        pairs = list(zip(labels, req.candidates, strict=True))
        messages = render_rank_messages(req.history, pairs, req.k, req.query, self.config.prompt)
        text = self.lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + ANSWER_PREFIX, {label: item.id for label, item in pairs}

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        import torch

        t0 = time.perf_counter()
        prompts, label_maps = zip(*(self.prompt_text(r) for r in reqs), strict=True)
        tok = self.lm.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        k_max = max(r.k for r in reqs)
        max_new = self.config.ranker.max_new_tokens or k_max * (self.config.prompt.max_reason_words * 2 + 8)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": tok.pad_token_id}
        if self.config.ranker.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=self.config.ranker.temperature)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stop = _LinesStop(self._newline_ids, enc["input_ids"].shape[1], [r.k for r in reqs])
        t1 = time.perf_counter()
        with torch.inference_mode():
            seqs = self.lm.model.generate(**enc, stopping_criteria=[stop], **gen_kwargs)
        t2 = time.perf_counter()
        new_tokens = seqs[:, enc["input_ids"].shape[1] :]
        texts = tok.batch_decode(new_tokens, skip_special_tokens=True)
        n_gen = int((new_tokens != tok.pad_token_id).sum())
        per_user_ms = (time.perf_counter() - t0) * 1000 / len(reqs)
        results = []
        for req, labels, text in zip(reqs, label_maps, texts, strict=True):
            raw = ANSWER_PREFIX + text
            titles = {lab: it.title for lab, it in zip(labels, req.candidates, strict=True)}
            parsed = parse_ranking(raw, labels, req.k, titles=titles, max_reason_chars=self._reason_chars())
            timings = {
                "prompt_ms": (t1 - t0) * 1000 / len(reqs),
                "generate_ms": (t2 - t1) * 1000 / len(reqs),
                "total": per_user_ms,
                "batch_size": float(len(reqs)),
                "tokens_per_s": n_gen / max(t2 - t1, 1e-9),
            }
            results.append(build_recommendations(req, parsed, raw, self.lm.model_id, self.mode, timings))
        return results

    def _reason_chars(self) -> int:
        return self.config.prompt.max_reason_words * 12


def build_recommendations(
    req: RankRequest,
    parsed: ParsedRanking,
    raw: str | None,
    model_id: str,
    mode: str,
    timings: dict[str, float],
    scores: dict[str, float] | None = None,
) -> Recommendations:
    """Turn a parsed ranking into the public result; every item gets a non-empty reason."""
    by_id = {it.id: it for it in req.candidates}
    sims = dict(zip([c.id for c in req.candidates], req.retrieval_scores or [], strict=False))
    items = []
    echoed = 0
    for rank, entry in enumerate(parsed.entries, start=1):
        item = by_id[entry.item_id]
        reason, reason_source = entry.reason, "model"
        if reason and not usable_reason(reason, item):
            echoed += 1
            reason = None
        if not reason:
            reason, reason_source = grounded_reason(item, req.history, sims.get(item.id)), "template"
        items.append(
            Recommendation(
                item_id=item.id,
                title=item.title,
                year=item.year,
                genres=list(item.genres),
                rank=rank,
                reason=reason,
                score=(scores or {}).get(item.id),
                retrieval_score=sims.get(item.id),
                source=entry.source,
                reason_source=reason_source,
            )
        )
    return Recommendations(
        user_id=req.user_id,
        query=req.query,
        items=items,
        k=req.k,
        n_candidates=len(req.candidates),
        mode=mode,
        model_id=model_id,
        template_version=TEMPLATE_VERSION,
        valid_output=parsed.valid and echoed == 0,
        n_model=parsed.n_model,
        n_fallback=parsed.n_fallback,
        n_off_candidate=len(parsed.off_candidate),
        n_duplicates=len(parsed.duplicates),
        raw_output=raw,
        timings=timings,
    )


def mark_grounded(req: RankRequest, rec: Recommendations) -> Recommendations:
    """Flag each reason as grounded or not, and the share of grounded model-written reasons.

    Why after ranking, in the driver: hybrid mode replaces reasons after `build_recommendations`, so
    only the final text can be judged; every mode passes through here.
    """
    by_id = {it.id: it for it in req.candidates}
    n_model = n_ok = 0
    for r in rec.items:
        r.grounded = is_grounded(r.reason, by_id[r.item_id], req.history)
        if r.reason_source == "model":
            n_model += 1
            n_ok += r.grounded
    rec.grounded_rate = n_ok / n_model if n_model else None
    return rec


def _newline_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of every vocabulary token whose text contains a newline (a pick ends at one)."""
    vocab = tokenizer.get_vocab()
    return frozenset(i for i in vocab.values() if "\n" in tokenizer.decode([i]))


class _LinesStop:
    """Stop a sequence once it has written k lines: the rest would be thrown away by the parser."""

    def __init__(self, newline_ids: frozenset[int], prompt_len: int, ks: list[int]):
        import torch

        self.ids = torch.tensor(sorted(newline_ids))
        self.prompt_len = prompt_len
        self.ks = torch.tensor(ks)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        gen = input_ids[:, self.prompt_len :]
        lines = torch.isin(gen, self.ids.to(gen.device)).sum(dim=1)
        return lines >= self.ks.to(gen.device)
