"""Scoring and hybrid ranking: read the ranking off the label distribution instead of generated text.

Scoring mode renders the same rank prompt as generative mode (ending in the "[" prefill) and runs ONE
forward pass: the next-token distribution restricted to the candidates' label tokens is a
probability per candidate. No text is generated, so the output is always k distinct candidates and
every reason is a grounded template reason.

Small LMs are strongly position-biased (they favour the first labels). With `ranker.permutations`
= P > 1 every prompt is also scored with P-1 seeded shuffles of the candidate order; labels are
mapped back to items per shuffle and each item's probability is averaged. All P x batch prompts go
through one left-padded forward pass, so the cost is ~P times the tokens, not P round trips.

Hybrid mode orders with scoring, then asks the model for one sentence per picked item with the
reason prompt (prompts/templates/reason.jinja), all reasons of all users in one batched `generate`.
A reason that is empty or only echoes the item's listing line is replaced by the template reason.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.labels import label_token_ids
from reasonrec.agent.model.loading import CompiledForward, LoadedModel
from reasonrec.agent.ranking.generative import (
    BatchedRanker,
    GenerativeRanker,
    RankRequest,
    build_recommendations,
    reason_token_budget,
)
from reasonrec.agent.ranking.prefix import SharedPrefix
from reasonrec.agent.ranking.reasons import usable_reason
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ConfigError, ReasonRecError
from reasonrec.prompts.loader import template_version
from reasonrec.prompts.parser import ParsedEntry, ParsedRanking, parse_ranking
from reasonrec.text import cut_at_word

log = logging.getLogger(__name__)
_PERMUTATION_SEED = 0
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale")  # config keys that change logits after the head
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
# The small model often restates the task instead of answering it.
_META = re.compile(
    r"\b(?:wants? to know|(?:explain|say|tell)\w* (?:in one sentence )?why|why (?:a|the|this) user)\b", re.I
)


class Ranker(Protocol):
    """What the agent needs from a ranker: a mode name and batched `rank`."""

    mode: str

    def rank(
        self, requests: Sequence[RankRequest], progress: Callable[[int, int], None] | None = None
    ) -> list[Recommendations]: ...


@dataclasses.dataclass
class ItemScores:
    """One request's scoring result: candidate item id -> probability averaged over permutations."""

    probs: dict[str, float]
    confidence: float  # top-1 minus top-2 averaged probability, in [0, 1]
    top1_agreement: float  # share of permutations whose own top-1 is the averaged top-1


def permutation_orders(n: int, permutations: int) -> list[list[int]]:
    """Candidate orders to score: the original order first, then seeded shuffles (deterministic).

    Returns:
        `permutations` lists of indices into the candidate list; `order[j]` is the candidate shown
        with label j. Shuffles are distinct from each other and from the original while n! allows.
    """
    orders = [list(range(n))]
    rng = random.Random(_PERMUTATION_SEED * 1_000_003 + n)
    seen = {tuple(orders[0])}
    for _ in range(permutations - 1):
        order = list(range(n))
        for _attempt in range(20):
            rng.shuffle(order)
            if tuple(order) not in seen:
                break
        seen.add(tuple(order))
        orders.append(list(order))
    return orders


class ScoringRanker(BatchedRanker):
    """Rank by the label-token probabilities after "[" (one forward pass, optionally debiased)."""

    mode = "scoring"
    fp32_head = True  # False: always use the model's own head (`logits_to_keep=1`); see _label_logits

    def __init__(self, lm: LoadedModel, config: AgentConfig):
        self.lm = lm
        self.config = config
        # The rank prompt is defined once, by the generative ranker: reuse it so the two modes can
        # never drift apart (also gives us its newline-token set for the hybrid reason stop).
        self._prompter = GenerativeRanker(lm, config)
        self._shared = SharedPrefix(lm.model, lm.tokenizer.pad_token_id)
        self._prefix_ids: list[int] | None = None
        self.last_prefix_len = 0  # prefix tokens the last forward pass took from the cache
        self.prefix_cache = config.ranker.prefix_cache  # reuse the shared prefix's keys/values (agent/prefix.py)
        self._compiled: dict[str, CompiledForward] = {}  # `ranker.compile`: one per forward callable

    @property
    def temperature(self) -> float:
        """Softmax temperature of the label logits: the config's, else the adapter's fitted one, else 1."""
        return self.config.ranker.score_temperature or self.lm.score_temperature or 1.0

    @property
    def permutations(self) -> int:
        return self.config.ranker.permutations

    def score(self, requests: Sequence[RankRequest]) -> tuple[list[ItemScores], dict[str, float]]:
        """Probabilities for every candidate of every request, from one batched forward pass.

        Returns:
            (one ItemScores per request, batch timings in ms: prompt_ms, forward_ms — totals).
        """
        import torch

        t0 = time.perf_counter()
        reqs = list(requests)
        p = self.permutations
        prompts: list[str] = []
        columns: list[list[str]] = []  # per prompt row: item id shown with label j
        token_ids: list[list[int]] = []
        for req in reqs:
            n = len(req.candidates)
            if not 1 <= req.k <= n:
                raise ConfigError(f"`k` must be between 1 and {n} (the number of candidates), got {req.k}")
            labels, ids = label_token_ids(self.lm.tokenizer, n)
            for order in permutation_orders(n, p):
                shown = dataclasses.replace(req, candidates=[req.candidates[i] for i in order])
                text, label_map = self._prompter.prompt_text(shown)
                prompts.append(text)
                columns.append([label_map[lab] for lab in labels])
                token_ids.append(ids)
        t1 = time.perf_counter()
        union = list(dict.fromkeys(i for ids in token_ids for i in ids))
        col = {tid: j for j, tid in enumerate(union)}
        label_logits = self._label_logits(prompts, union)  # [rows, len(union)] float32
        t2 = time.perf_counter()
        results = []
        for r, req in enumerate(reqs):
            acc = {c.id: 0.0 for c in req.candidates}
            tops = []
            for row in range(r * p, (r + 1) * p):
                cols = torch.tensor([col[t] for t in token_ids[row]], device=label_logits.device)
                probs = torch.softmax(label_logits[row, cols] / self.temperature, dim=-1).tolist()
                for item_id, pr in zip(columns[row], probs, strict=True):
                    acc[item_id] += pr / p
                tops.append(columns[row][max(range(len(probs)), key=probs.__getitem__)])
            ranked = sorted(acc.values(), reverse=True)
            margin = ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0)
            best = max(acc, key=acc.__getitem__)
            results.append(ItemScores(acc, max(0.0, min(1.0, margin)), sum(t == best for t in tops) / p))
        return results, {"prompt_ms": (t1 - t0) * 1000, "forward_ms": (t2 - t1) * 1000}

    def _label_logits(self, prompts: list[str], token_ids: list[int]) -> Any:
        """Next-token logits of `token_ids` at the last position of each prompt, one left-padded forward.

        Why not just `model(...).logits`: in bfloat16 a logit near 24 is rounded to a multiple of 0.125,
        so neighbouring labels tie and a probability moves by up to ~6% with batch padding. Where the
        head is a plain Linear we run the decoder only and apply the label rows of the head in float32
        (also skips the [rows, vocab] product). Otherwise (LoRA on the head, logit soft-capping or
        scaling) the model's own head runs on the last position only (`logits_to_keep=1`).
        """
        import torch

        tok = self.lm.tokenizer
        rows = tok(prompts, add_special_tokens=False)["input_ids"]
        if self._prefix_ids is None:
            self._prefix_ids = tok(self._prompter.prefix_text(), add_special_tokens=False)["input_ids"]
        prefix_ids = self._prefix_ids if self.prefix_cache else []
        enc, self.last_prefix_len = self._shared.inputs(rows, prefix_ids)
        model = self.lm.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel
        head = base.get_output_embeddings()
        cfg = getattr(base, "config", None)
        special = any(getattr(cfg, a, None) not in (None, 1.0) for a in _HEAD_EXTRAS)
        fp32_head = self.fp32_head and type(head) is torch.nn.Linear and hasattr(base, "get_decoder")
        with torch.inference_mode():
            if fp32_head and not special:
                out = self._forward("decoder", base.get_decoder())(**enc)
                hidden = out.last_hidden_state[:, -1].float()
                ids = torch.tensor(token_ids, device=hidden.device)
                logits = hidden @ head.weight[ids].float().T
                if head.bias is not None:
                    logits = logits + head.bias[ids].float()
                return logits
            out = self._forward("model", model)(**enc, logits_to_keep=1)
            return out.logits[:, -1, token_ids].float()

    def _forward(self, key: str, fn: Any) -> Any:
        """`fn`, or its compiled form with `ranker.compile` (compiled once per ranker, on first use)."""
        if not self.config.ranker.compile:
            return fn
        if key not in self._compiled:
            self._compiled[key] = CompiledForward(fn)
        return self._compiled[key]

    def order(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        """Every request's candidate ids, most probable first (ties keep retriever order)."""
        scored, _ = self.score(requests)
        return [
            sorted((c.id for c in r.candidates), key=lambda i: -s.probs[i])
            for r, s in zip(requests, scored, strict=True)
        ]

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        t0 = time.perf_counter()
        try:
            scored, stage = self.score(reqs)
        except ReasonRecError:
            raise
        except Exception as e:  # model/runtime trouble: retriever order, flagged, never a crash
            log.warning(
                "scoring failed for a batch of %d (%s: %s); using retriever order", len(reqs), type(e).__name__, e
            )
            return [self._retriever_order(req, t0, len(reqs)) for req in reqs]
        per_user_ms = (time.perf_counter() - t0) * 1000 / len(reqs)
        out = []
        for req, s in zip(reqs, scored, strict=True):
            # Stable sort: ties keep retriever order. Labels are those of the original order.
            labels, _ = label_token_ids(self.lm.tokenizer, len(req.candidates))
            label_of = {c.id: lab for lab, c in zip(labels, req.candidates, strict=True)}
            top = sorted(req.candidates, key=lambda c: -s.probs[c.id])[: req.k]
            parsed = ParsedRanking(
                entries=[ParsedEntry(label=label_of[c.id], item_id=c.id, source="model") for c in top],
                n_model=req.k,
                n_fallback=0,
                off_candidate=[],
                duplicates=[],
                missing_reasons=0,
                format="lines",
                valid=True,
            )
            timings = {
                "prompt_ms": stage["prompt_ms"] / len(reqs),
                "forward_ms": stage["forward_ms"] / len(reqs),
                "total": per_user_ms,
                "batch_size": float(len(reqs)),
                "permutations": float(self.permutations),
                "top1_agreement": s.top1_agreement,
            }
            scores = {c.id: s.probs[c.id] for c in top}
            rec = build_recommendations(
                req, parsed, None, self.lm.model_id, self.mode, timings, scores, template=self.template
            )
            rec.confidence = s.confidence
            out.append(rec)
        return out

    def _retriever_order(self, req: RankRequest, t0: float, n: int) -> Recommendations:
        """The last link of the fallback chain: the first k candidates as retrieved, template reasons."""
        labels, _ = label_token_ids(self.lm.tokenizer, len(req.candidates))
        parsed = parse_ranking("", {lab: c.id for lab, c in zip(labels, req.candidates, strict=True)}, req.k)
        timings = {"total": (time.perf_counter() - t0) * 1000 / n, "batch_size": float(n)}
        return build_recommendations(req, parsed, None, self.lm.model_id, self.mode, timings, template=self.template)


class HybridRanker(ScoringRanker):
    """Order with scoring, then let the model explain each pick in one sentence."""

    mode = "hybrid"

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        t0 = time.perf_counter()
        recs = super()._rank_batch(reqs)
        t1 = time.perf_counter()
        jobs = []  # (user index, request, item, its Recommendation)
        for u, (req, rec) in enumerate(zip(reqs, recs, strict=True)):
            by_id = {c.id: c for c in req.candidates}
            jobs.extend((u, req, by_id[r.item_id], r) for r in rec.items)
        try:
            texts = self._generate_reasons([(req, item) for _, req, item, _ in jobs])
        except ReasonRecError:
            raise
        except Exception as e:  # keep the template reasons build_recommendations wrote; never a crash
            log.warning("reason generation failed (%s: %s); keeping template reasons", type(e).__name__, e)
            texts = [""] * len(jobs)
        t2 = time.perf_counter()
        raw: list[list[str]] = [[] for _ in reqs]
        for (u, _, item, r), text in zip(jobs, texts, strict=True):
            raw[u].append(text)
            reason = clean_reason(text, self.config.prompt.max_reason_words, self._prompter._reason_chars())
            if reason and usable_reason(reason, item) and not restates_question(reason):
                r.reason, r.reason_source = reason, "model"
            # else: keep the grounded template reason build_recommendations wrote (reason_source="template")
        for u, rec in enumerate(recs):
            rec.raw_output = "\n".join(raw[u])
            rec.timings["reason_ms"] = (t2 - t1) * 1000 / len(reqs)
            rec.timings["total"] = (time.perf_counter() - t0) * 1000 / len(reqs)
        return recs

    def _generate_reasons(self, jobs: list[tuple[RankRequest, Any]]) -> list[str]:
        """One greedy sentence per (request, item), all in one left-padded `generate`."""
        import torch

        if not jobs:
            return []
        tok = self.lm.tokenizer
        built = [self._prompter.reason_text(req.history, item, req.query) for req, item in jobs]
        prompts, openers = [p for p, _ in built], [o for _, o in built]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        max_new = reason_token_budget(self.config)
        prompt_len = enc["input_ids"].shape[1]
        stop = _ReasonStop(tok, prompt_len, self.config.prompt.max_reason_words)
        with torch.inference_mode():
            seqs = self.lm.model.generate(
                **enc,
                max_new_tokens=max_new,
                stopping_criteria=[stop],
                pad_token_id=tok.pad_token_id,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        texts = tok.batch_decode(seqs[:, prompt_len:], skip_special_tokens=True)
        # The opener is part of the reason: the model wrote the rest of the sentence from it.
        return [o + t if o else t for o, t in zip(openers, texts, strict=True)]


class _ReasonStop:
    """Stop a reason row at its first sentence end, newline or word cap.

    Why: `clean_reason` keeps only the first sentence of at most `max_words` words, so every token
    after it is wasted decoding; small models tend to run on to the token budget.
    """

    def __init__(self, tokenizer: Any, prompt_len: int, max_words: int):
        self.tok, self.prompt_len, self.max_words = tokenizer, prompt_len, max_words
        self.done: list[bool] | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.done is None:
            self.done = [False] * input_ids.shape[0]
        for row, finished in enumerate(self.done):
            if not finished:
                text = self.tok.decode(input_ids[row, self.prompt_len :], skip_special_tokens=True)
                self.done[row] = "\n" in text or _first_sentence(text) != text or len(text.split()) > self.max_words + 1
        return torch.tensor(self.done, device=input_ids.device)


def clean_reason(text: str, max_words: int, max_chars: int) -> str:
    """First line, first sentence, at most `max_words` words and `max_chars` characters."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    line = _first_sentence(line).strip().strip("\"'*_ ").strip()
    words = line.split()
    if len(words) > max_words:
        line = " ".join(words[:max_words]).rstrip(",;:-") + "…"
    return cut_at_word(line, max_chars)


def _first_sentence(line: str) -> str:
    for m in _SENTENCE_END.finditer(line):
        word = line[: m.start()].rsplit(None, 1)[-1]
        # "Sgt. Bilko", "Dr. Strangelove", "L.A. Confidential": an abbreviation, not a sentence end.
        if len(word.rstrip(".!?")) <= 3 and word[:1].isupper() or word.count(".") > 1:
            continue
        return line[: m.start()]
    return line


def restates_question(text: str) -> bool:
    """True for "The user wants to know why ..." style answers that repeat the task, not a reason."""
    return bool(_META.search(text))


def make_ranker(lm: LoadedModel, config: AgentConfig) -> Ranker:
    """The ranker for `config.ranker.mode`: generative, scoring or hybrid."""
    served = template_version(config.prompt)
    if lm.adapter_template and lm.adapter_template != served:  # e.g. trained compact, served full
        log.warning("the adapter was trained with rank template %r but this config renders %r: "
                    "set `prompt.compact` as in training", lm.adapter_template, served)  # fmt: skip
    mode = config.ranker.mode
    if mode == "generative":
        ranker = GenerativeRanker(lm, config)
        ranker.rescue = ScoringRanker(lm, config).order  # the fallback chain's second link
        return ranker
    if mode == "scoring":
        return ScoringRanker(lm, config)
    if mode == "hybrid":
        return HybridRanker(lm, config)
    raise ConfigError(f"`ranker.mode` must be 'generative', 'scoring' or 'hybrid', got {mode!r}")
