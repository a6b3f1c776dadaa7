"""Scoring and hybrid ranking: read the ranking off the label distribution instead of generated text.

Scoring mode renders the same rank prompt as generative mode (ending in the "[" prefill) and runs ONE
forward pass: the next-token distribution restricted to the candidates' label tokens is a
probability per candidate. No text is generated, so the output is always k distinct candidates and
every reason is a grounded template reason.

Small LMs are strongly position-biased (they favour the first labels). With `ranker.permutations`
= P > 1 every prompt is also scored with P-1 seeded shuffles of the candidate order; labels are
mapped back to items per shuffle and each item's probability is averaged. All P x batch prompts go
through one left-padded forward pass, so the cost is ~P times the tokens, not P round trips.

Hybrid mode (ranking/hybrid.py) orders with this ranker, then has the model explain each pick.

Where the LM's probabilities cannot change the order (`fused.lm_decides`: a request with retrieval features
and `candidates.lm_weight` 0, the shipped default) the request is ordered by the fused retrieval score at
once and its forward pass is skipped: the result is the one the pass would have given, without
`confidence` (an LM margin) and with `timings["lm_skipped"]` = 1. A ranker built on a `LazyModel` then
never loads the model unless a request needs it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.labels import label_token_ids
from reasonrec.agent.model.lazy import LazyModel
from reasonrec.agent.model.loading import CompiledForward, LoadedModel
from reasonrec.agent.ranking.fused import fused_scores, lm_decides, softmax
from reasonrec.agent.ranking.generative import BatchedRanker
from reasonrec.agent.ranking.prefix import SharedPrefix
from reasonrec.agent.ranking.progress import report_picks
from reasonrec.agent.ranking.prompter import Prompter
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ConfigError, ReasonRecError
from reasonrec.prompts.loader import default_labels
from reasonrec.prompts.parser import ParsedEntry, ParsedRanking, parse_ranking

log = logging.getLogger(__name__)
_PERMUTATION_SEED = 0
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale")  # config keys that change logits after the head


@dataclasses.dataclass
class Picks:
    """A ranker's choice for one request before `finalize`: the parsed picks, timings, scores."""

    parsed: ParsedRanking
    timings: dict[str, float]
    scores: dict[str, float] | None = None
    confidence: float | None = None


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

    def __init__(self, lm: LoadedModel | LazyModel, config: AgentConfig):
        self.lm = lm  # a LazyModel loads on the first request whose order the LM decides (lm_decides)
        self.config = config
        self.prompter = Prompter(lm, config)  # the rank prompt every mode (and training) renders
        self._prefix: SharedPrefix | None = None
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

    def forget_prefixes(self) -> None:
        """Drop the cached prompt-prefix keys/values: the next request computes them as a new process would.

        Why: a prefix extended or sliced from an earlier request's cache equals a fresh one only up to
        floating-point rounding, and the CLI's background process (cli_daemon.py) promises the results of a
        one-shot `reasonrec recommend`.
        """
        self._prefix, self._prefix_ids = None, None

    @property
    def _shared(self) -> SharedPrefix:
        """The rank prompts' shared-prefix cache, built at the first forward pass (it holds the model)."""
        if self._prefix is None:
            self._prefix = SharedPrefix(self.lm.model, self.lm.tokenizer.pad_token_id)
        return self._prefix

    def lm_scores(self, requests: Sequence[RankRequest]) -> tuple[list[ItemScores | None], dict[str, float]]:
        """`score` for the requests whose order the LM decides (fused.lm_decides); None for the others.

        Why: with `candidates.lm_weight` 0 the fused score of a request with retrieval features does not
        read the LM's probabilities, so its forward pass would be multiplied by zero; it is not run.

        Returns:
            (per request, its ItemScores or None; timings of the one forward pass over the others, 0 if none ran).
        """
        lm_weight = self.config.candidates.lm_weight
        need = [i for i, r in enumerate(requests) if lm_decides(r, lm_weight)]
        out: list[ItemScores | None] = [None] * len(requests)
        if not need:
            return out, {"prompt_ms": 0.0, "forward_ms": 0.0}
        scored, stage = self.score([requests[i] for i in need])
        for i, s in zip(need, scored, strict=True):
            out[i] = s
        return out, stage

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
                text, label_map = self.prompter.prompt_text(shown)
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
            self._prefix_ids = tok(self.prompter.prefix_text(), add_special_tokens=False)["input_ids"]
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
        """Every request's candidate ids, highest fused score first (ties keep retriever order)."""
        scored, _ = self.lm_scores(requests)
        cc = self.config.candidates
        out = []
        for r, s in zip(requests, scored, strict=True):
            fused = fused_scores(r, s.probs if s else None, cc.lm_weight, cc.retrieval_weight)
            out.append(sorted((c.id for c in r.candidates), key=lambda i: -fused[i]))
        return out

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        return [self.finalize_picks(req, p) for req, p in zip(reqs, self.pick(reqs), strict=True)]

    def pick(self, reqs: list[RankRequest]) -> list[Picks]:
        """Each request's top k by fused score; retriever order (flagged) where the LM's scoring fails."""
        t0 = time.perf_counter()
        try:
            scored, stage = self.lm_scores(reqs)
        except ReasonRecError:
            raise
        except Exception as e:  # model/runtime trouble: retriever order, flagged, never a crash
            log.warning(
                "scoring failed for a batch of %d (%s: %s); using retriever order", len(reqs), type(e).__name__, e
            )
            scored, stage = [None] * len(reqs), {"prompt_ms": 0.0, "forward_ms": 0.0}
        n_lm = sum(s is not None for s in scored)
        lm_ms = (time.perf_counter() - t0) * 1000 / max(n_lm, 1)  # the forward pass, shared by the rows that ran it
        out = []
        for req, s in zip(reqs, scored, strict=True):
            if s is None and lm_decides(req, self.config.candidates.lm_weight):  # its scoring failed above
                out.append(self._retriever_order(req, t0, len(reqs)))
                continue
            r0 = time.perf_counter()
            timings = {"batch_size": float(len(reqs)), "prompt_ms": 0.0, "forward_ms": 0.0, "permutations": 0.0}
            if s is not None:
                timings.update(prompt_ms=stage["prompt_ms"] / n_lm, forward_ms=stage["forward_ms"] / n_lm,
                               permutations=float(self.permutations), top1_agreement=s.top1_agreement)  # fmt: skip
            else:  # ordered by the fused retrieval score alone: no forward pass ran for it
                timings["lm_skipped"] = 1.0
            out.append(self._picks(req, s, timings))
            timings["total"] = (time.perf_counter() - r0) * 1000 + (lm_ms if s is not None else 0.0)
        report_picks(out)  # a streaming client shows the ranked cards now, before any reason
        return out

    def _picks(self, req: RankRequest, s: ItemScores | None, timings: dict[str, float]) -> Picks:
        """`req`'s top k by fused score, from the LM's scores `s` (None: the fused retrieval score alone)."""
        cc = self.config.candidates
        n = len(req.candidates)
        fused = fused_scores(req, s.probs if s else None, cc.lm_weight, cc.retrieval_weight)
        top = sorted(req.candidates, key=lambda c: -fused[c.id])[: req.k]  # stable: ties keep retriever order
        # Labels name the candidates of the scored prompt; where none was scored, any distinct names do.
        labels = label_token_ids(self.lm.tokenizer, n)[0] if s else default_labels(n)
        label_of = {c.id: lab for lab, c in zip(labels, req.candidates, strict=True)}
        # Who ordered them: the LM where its probabilities enter the score, else the fused retrieval score alone.
        by = "model" if lm_decides(req, cc.lm_weight) else "retrieval"
        parsed = ParsedRanking(
            entries=[ParsedEntry(label=label_of[c.id], item_id=c.id, source=by) for c in top],
            n_model=req.k, n_fallback=0, off_candidate=[], duplicates=[], missing_reasons=0, format="lines",
            valid=True,
        )  # fmt: skip
        shown = s.probs if s is not None and not req.features else softmax(fused)  # the order's probabilities
        # `confidence` is the LM's top-1 margin: None where the LM did not run, never made up from retrieval.
        return Picks(parsed, timings, {c.id: shown[c.id] for c in top}, s.confidence if s else None)

    def finalize_picks(
        self, req: RankRequest, picks: Picks, reasons: dict[str, str] | None = None, raw: str | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> Recommendations:  # fmt: skip
        rec = self.finalize(req, picks.parsed, raw, picks.timings, picks.scores, reasons=reasons, evidence=evidence)
        rec.confidence = picks.confidence
        return rec

    def _retriever_order(self, req: RankRequest, t0: float, n: int) -> Picks:
        """The last link of the fallback chain: the first k candidates as retrieved, template reasons."""
        labels, _ = label_token_ids(self.lm.tokenizer, len(req.candidates))
        parsed = parse_ranking("", {lab: c.id for lab, c in zip(labels, req.candidates, strict=True)}, req.k)
        return Picks(parsed, {"total": (time.perf_counter() - t0) * 1000 / n, "batch_size": float(n)})
