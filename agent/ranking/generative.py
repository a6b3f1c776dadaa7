"""Rank a candidate set with the LM and explain each pick.

Generative mode: render the ranking prompt, let the model write `[label] reason` lines (the assistant
turn is prefilled with "[" so the first token is already a label), then the parser validates the
output. Decoding is constrained by default (agent/constrained.py), so the lines always parse; a row
that still comes back short is completed in scoring order, and only then in retriever order. Every
request is padded into one batched `generate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.labels import label_token_ids
from reasonrec.agent.model.loading import LoadedModel
from reasonrec.agent.ranking.constrained import RankLogitsProcessor, parse_constrained, rank_grammar
from reasonrec.agent.ranking.evidence import ItemEvidence, for_request
from reasonrec.agent.ranking.faithful import FaithfulLogitsProcessor, row_facts
from reasonrec.agent.ranking.finalize import build_recommendations, complete_from
from reasonrec.agent.ranking.fused import label_bias
from reasonrec.agent.ranking.prompter import Prompter
from reasonrec.agent.ranking.reasons import usable_reason
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ReasonRecError
from reasonrec.prompts.loader import ANSWER_PREFIX
from reasonrec.prompts.parser import ParsedRanking, parse_ranking

log = logging.getLogger(__name__)
__all__ = ["BatchedRanker", "GenerativeRanker", "RankRequest"]


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
            out.extend(self._rank_batch(list(requests[start : start + bs])))
            if progress:
                progress(len(out), len(requests))
        return out

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        raise NotImplementedError

    @property
    def template(self) -> str:
        """The rank template version this ranker renders (recorded in every result)."""
        return self.prompter.template

    prompter: Prompter

    def finalize(self, req: RankRequest, parsed: ParsedRanking, raw: str | None, timings: dict[str, float],
                 scores: dict[str, float] | None = None, **kw: Any) -> Recommendations:  # fmt: skip
        """`finalize.build_recommendations` with this ranker's model, mode, template and reason policy."""
        return build_recommendations(
            req, parsed, raw, self.lm.model_id, self.mode, timings, scores, template=self.template,
            replace_ungrounded=self.config.ranker.grounded_reasons, domain=self.config.prompt.domain, **kw,
        )  # fmt: skip


class GenerativeRanker(BatchedRanker):
    """The model writes the ranked list and the reasons; the parser keeps it inside the candidates.

    With `ranker.constrained` (the default) decoding is masked by `RankLogitsProcessor`, so every row
    writes exactly k distinct candidate labels with bounded reasons. The fallback chain covers what is
    left: a row that still comes back short (generation raised, hit `ranker.generate_timeout_s` or
    `ranker.max_new_tokens`) is completed from `rescue` (scoring order, set by `make_ranker`), and
    only where that fails too from retriever order. Each item's `source` says which path chose it.
    """

    mode = "generative"

    def __init__(self, lm: LoadedModel, config: AgentConfig):
        self.lm = lm
        self.config = config
        self.prompter = Prompter(lm, config)
        self._newline_ids = _newline_token_ids(lm.tokenizer)
        self.constrained = config.ranker.constrained
        self._grammar = rank_grammar(lm.tokenizer) if self.constrained else None
        # requests -> item ids in scoring order, one list per request (see make_ranker)
        self.rescue: Callable[[list[RankRequest]], list[list[str]]] | None = None

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        t0 = time.perf_counter()
        prompts, label_maps = zip(*(self.prompter.prompt_text(r) for r in reqs), strict=True)
        # reasons: every candidate's evidence (its opener, its facts), different anchors per list (evidence.py)
        evs = [{ev.item_id: ev for ev in for_request(r, r.candidates, self.config.prompt.domain)} for r in reqs]
        t1 = time.perf_counter()
        try:
            texts, n_gen = self._generate(list(prompts), reqs, evs)
        except ReasonRecError:
            raise
        except Exception as e:  # model/runtime trouble is not the caller's: the fallback chain takes over
            log.warning("generation failed for a batch of %d (%s: %s); falling back", len(reqs), type(e).__name__, e)
            texts, n_gen = [""] * len(reqs), 0
        t2 = time.perf_counter()
        parsed = []
        chars = self.prompter.reason_chars()
        for req, labels, text in zip(reqs, label_maps, texts, strict=True):
            if self.constrained:
                p = parse_constrained(ANSWER_PREFIX + text, labels, req.k, chars)
                parsed.append(self._drop_echoes(p, req))
            else:
                titles = {lab: it.title for lab, it in zip(labels, req.candidates, strict=True)}
                parsed.append(parse_ranking(ANSWER_PREFIX + text, labels, req.k, titles=titles, max_reason_chars=chars))
        short = [i for i, (p, r) in enumerate(zip(parsed, reqs, strict=True)) if p.n_model < r.k]
        orders = self._rescue_orders([reqs[i] for i in short]) if self.constrained and short else []
        t3 = time.perf_counter()
        results = []
        for i, (req, p, text, labels) in enumerate(zip(reqs, parsed, texts, label_maps, strict=True)):
            order = orders[short.index(i)] if orders and i in short else None
            if order is not None:  # picks past the model's own come from the scoring order
                p = complete_from(p, order, labels, req.k)
            timings = {
                "prompt_ms": (t1 - t0) * 1000 / len(reqs),
                "generate_ms": (t2 - t1) * 1000 / len(reqs),
                "rescue_ms": (t3 - t2) * 1000 / len(reqs),
                "total": (time.perf_counter() - t0) * 1000 / len(reqs),
                "batch_size": float(len(reqs)),
                "tokens_per_s": n_gen / max(t2 - t1, 1e-9),
            }
            filled_by = "scoring" if order is not None else "fallback"
            results.append(self.finalize(req, p, ANSWER_PREFIX + text, timings, filled_by=filled_by, evidence=evs[i]))
        return results

    def _generate(
        self, prompts: list[str], reqs: list[RankRequest], evs: list[dict[str, ItemEvidence]]
    ) -> tuple[list[str], int]:
        """One left-padded `generate` over the batch: (continuations after the "[" prefill, tokens made)."""
        import torch

        tok = self.lm.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        prompt_len = enc["input_ids"].shape[1]
        k_max = max(r.k for r in reqs)
        rc = self.config.ranker
        gen_kwargs: dict[str, Any] = {"pad_token_id": tok.pad_token_id}
        if rc.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=rc.temperature)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if rc.generate_timeout_s:
            gen_kwargs["max_time"] = rc.generate_timeout_s
        if self._grammar is not None:
            from transformers import LogitsProcessorList

            budget = self.prompter.reason_tokens()
            row_labels = [label_token_ids(tok, len(r.candidates))[1] for r in reqs]
            openers = [self._opener_ids(r, ids, ev) for r, ids, ev in zip(reqs, row_labels, evs, strict=True)]
            longest = max((len(t) for op in openers for t in op.values()), default=0)
            bias = self._label_bias(reqs, row_labels)
            proc = RankLogitsProcessor(self._grammar, row_labels, [r.k for r in reqs], prompt_len, budget,
                                       row_openers=openers, row_label_bias=bias)  # fmt: skip
            # reasons: after "[label]" no genre, decade or number outside that candidate's evidence (faithful.py)
            facts = [{lid: row_facts(tok, ev[it.id], slot=True, opener_len=len(op.get(lid, ())))
                      for lid, it in zip(ids, r.candidates, strict=True)}
                     for r, ids, ev, op in zip(reqs, row_labels, evs, openers, strict=True)]  # fmt: skip
            guard = FaithfulLogitsProcessor(tok, facts, prompt_len, self._grammar.close_id, self._grammar.newline_id)
            gen_kwargs.update(
                logits_processor=LogitsProcessorList([proc, guard]),
                eos_token_id=self._grammar.eos_id,
                max_new_tokens=self.prompter.answer_tokens(k_max, longest),
            )
        else:
            stop = _LinesStop(self._newline_ids, prompt_len, [r.k for r in reqs])
            gen_kwargs.update(
                stopping_criteria=[stop],
                max_new_tokens=self.prompter.answer_tokens(k_max),
            )
        with torch.inference_mode():
            seqs = self.lm.model.generate(**enc, **gen_kwargs)
        new_tokens = seqs[:, prompt_len:]
        n_gen = int((new_tokens != tok.pad_token_id).sum())
        return tok.batch_decode(new_tokens, skip_special_tokens=True), n_gen

    def _label_bias(self, reqs: list[RankRequest], row_labels: list[list[int]]) -> list[dict[int, float]]:
        """Per row, label token -> the fused retrieval score's bias (none for a list without retrieval features):
        the written list follows the fused ranking score unless the LM is confident (fused.label_bias)."""
        cc = self.config.candidates
        out = []
        for req, ids in zip(reqs, row_labels, strict=True):
            bias = label_bias(req, cc.lm_weight, cc.retrieval_weight, cc.label_bias)
            out.append(dict(zip(ids, bias, strict=True)) if bias else {})
        return out

    def _opener_ids(self, req: RankRequest, label_ids: list[int], evs: dict[str, ItemEvidence]) -> dict[int, list[int]]:
        """Label token -> token ids of that candidate's reason opener (empty with `ranker.reason_opener` off)."""
        out = {}
        for label_id, item in zip(label_ids, req.candidates, strict=True):
            opener = self.prompter.opener(item, req.history, evs.get(item.id))
            if opener:  # after "]" the reason starts with a space, as the model writes it
                out[label_id] = self.lm.tokenizer.encode(" " + opener, add_special_tokens=False)
        return out

    def _drop_echoes(self, parsed: ParsedRanking, req: RankRequest) -> ParsedRanking:
        """A reason that only echoes the listing is dropped (build_recommendations then writes a template
        reason), as hybrid mode does; validity stays about the list: k distinct candidates."""
        by_id = {it.id: it for it in req.candidates}
        entries = [
            e.model_copy(update={"reason": None}) if e.reason and not usable_reason(e.reason, by_id[e.item_id]) else e
            for e in parsed.entries
        ]
        return parsed.model_copy(update={"entries": entries})

    def _rescue_orders(self, reqs: list[RankRequest]) -> list[list[str]]:
        """Scoring order for rows the model left short; [] (retriever order stays) if scoring fails too."""
        if self.rescue is None:
            return []
        try:
            return self.rescue(reqs)
        except ReasonRecError:
            raise
        except Exception as e:  # the last link of the chain: retriever order, never a crash
            log.warning("scoring fallback failed (%s: %s); using retriever order", type(e).__name__, e)
            return []


@lru_cache(maxsize=8)  # decodes the whole vocabulary; every ranker built on one tokenizer shares it
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
