"""Hybrid ranking: order with scoring, then let the model explain each pick in one sentence.

The reasons of all picks of all users are written in one batched `generate` from the reason prompt
(prompts/templates/reason.jinja), each starting from its grounded opener; `finalize` then decides, once,
whether the model's sentence is shown or a reason built from facts.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from reasonrec.agent.model.lookup import can_decode, greedy_lookup
from reasonrec.agent.ranking.evidence import ItemEvidence, for_request, request_data
from reasonrec.agent.ranking.faithful import FaithfulLogitsProcessor, Trie, row_facts
from reasonrec.agent.ranking.prefix import SharedPrefix, cache_field
from reasonrec.agent.ranking.progress import reason_criteria
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.agent.ranking.retry import RETRY_SLACK, ListTrigramBan, Retry, list_trigrams, reason_tokens, to_retry
from reasonrec.agent.ranking.scoring import ScoringRanker
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ReasonRecError
from reasonrec.text import cut_at_word

log = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


class HybridRanker(ScoringRanker):
    """Order with scoring, then let the model explain each pick in one sentence."""

    mode = "hybrid"
    _reason_prefix: SharedPrefix | None = None  # the reason prompts' common prefix (one user's history)
    _first_pass: tuple[dict[str, Any], Any, int] | None = None  # the batch's first `generate`: inputs, cache, length
    decoding_calls = 0  # model calls spent writing reasons (lookup.py's guesses save some), for benchmarks

    def forget_prefixes(self) -> None:
        super().forget_prefixes()
        self._reason_prefix = None

    def _rank_batch(self, reqs: list[RankRequest]) -> list[Recommendations]:
        t0 = time.perf_counter()
        picks = self.pick(reqs)
        t1 = time.perf_counter()
        jobs = []  # (user index, request, picked item)
        evidence: list[dict[str, ItemEvidence]] = []  # reasons: each pick's evidence, one list at a time (evidence.py)
        for u, (req, p) in enumerate(zip(reqs, picks, strict=True)):
            by_id = {c.id: c for c in req.candidates}
            chosen = [by_id[e.item_id] for e in p.parsed.entries]
            jobs.extend((u, req, item) for item in chosen)
            evidence.append({ev.item_id: ev for ev in for_request(req, chosen, self.config.prompt.domain)})
        words, chars = self.config.prompt.max_reason_words, self.prompter.reason_chars()
        texts, raw = [""] * len(jobs), [[""] * len(p.parsed.entries) for p in picks]
        try:  # each step's result stands when a later one fails
            first, tokens = self._generate_reasons(
                [(req, item, evidence[u][item.id]) for u, req, item in jobs], groups=[u for u, _, _ in jobs]
            )
            raw = [[t for (v, _, _), t in zip(jobs, first, strict=True) if v == u] for u in range(len(reqs))]
            texts = [clean_reason(t, words, chars) for t in first]
            texts = self._retry(jobs, texts, tokens, evidence, raw)  # reasons: a second try (retry.py)
        except ReasonRecError:
            raise
        except Exception as e:  # finalize writes reasons from facts instead; never a crash
            log.warning("reason generation failed (%s: %s); using reasons built from facts", type(e).__name__, e)
        finally:
            self._first_pass = None  # its cache holds every row's prompt: not kept beyond the batch
        t2 = time.perf_counter()
        reasons: list[dict[str, str]] = [{} for _ in reqs]
        for (u, _, item), text in zip(jobs, texts, strict=True):
            reasons[u][item.id] = text
        out = []
        for u, (req, p) in enumerate(zip(reqs, picks, strict=True)):
            p.timings["reason_ms"] = (t2 - t1) * 1000 / len(reqs)
            p.timings["total"] = (time.perf_counter() - t0) * 1000 / len(reqs)
            out.append(self.finalize_picks(req, p, reasons=reasons[u], raw="\n".join(raw[u]), evidence=evidence[u]))
        return out

    def _retry(
        self, jobs: list[tuple[int, RankRequest, Any]], texts: list[str], tokens: list[list[int]],
        evidence: list[dict[str, ItemEvidence]], raw: list[list[str]],
    ) -> list[str]:  # fmt: skip
        """`texts` with each reason finalize would replace written once more, the list's other reasons'
        trigrams banned (retry.py), in one batched `generate`; the retries are appended to `raw`."""
        domain = self.config.prompt.domain
        again: list[int] = []  # job indices to write again
        avoid: list[Trie] = []  # and the trigrams each may not write
        longest = 0  # tokens of the longest first reason of a retried list
        for u in range(len(raw)):
            rows = [j for j, (v, _, _) in enumerate(jobs) if v == u]
            if not rows:
                continue
            req, items = jobs[rows[0]][1], [jobs[j][2] for j in rows]
            evs = [evidence[u][it.id] for it in items]
            mine = [texts[j] for j in rows]
            bad = [rows[i] for i in to_retry(items, mine, evs, req.history, req.query, request_data(req), domain)]
            if bad:
                again += bad
                avoid += [list_trigrams([tokens[j] for j in rows])] * len(bad)
                longest = max(longest, *(len(tokens[j]) for j in rows))
        if not again:
            return texts
        retry = Retry(avoid, [jobs[j][0] for j in again], min(self.prompter.reason_tokens(), longest + RETRY_SLACK))
        rows_again = [(jobs[j][1], jobs[j][2], evidence[jobs[j][0]][jobs[j][2].id]) for j in again]
        second, ids = self._generate_reasons(rows_again, retry, reuse=again)
        out = list(texts)
        for j, text, row in zip(again, second, ids, strict=True):
            done = retry.finished(row)  # a sentence cut off by the budget is not shown
            raw[jobs[j][0]].append(f"retry {jobs[j][2].id}: {text}" + ("" if done else " [unfinished]"))
            words, chars = self.config.prompt.max_reason_words, self.prompter.reason_chars()
            out[j] = clean_reason(text, words, chars) if done else ""
        return out

    def _generate_reasons(
        self, jobs: list[tuple[RankRequest, Any, ItemEvidence]], retry: Retry | None = None,
        reuse: list[int] | None = None, groups: list[int] | None = None,
    ) -> tuple[list[str], list[list[int]]]:  # fmt: skip
        """One greedy sentence per (request, item, evidence), all in one left-padded `generate`, written as
        `retry` says for a second try (retry.py). Returns the texts and each row's generated tokens.

        `groups`: each first-pass row's list (rows of one list in rank order); with
        `ranker.distinct_first_pass` a row may not write the trigrams the rows above it in its list write.

        `reuse`: the jobs are those rows of this batch's first pass, same prompts: their prompt keys/values
        are taken from its cache instead of being computed again (~0.2 s a row on the 2-core CPU).
        """
        import torch
        from transformers import LogitsProcessorList

        if not jobs:
            return [], []
        tok = self.lm.tokenizer
        built = [self.prompter.reason_text(req.history, item, req.query, ev) for req, item, ev in jobs]
        prompts, openers = [p for p, _ in built], [o for _, o in built]
        if self._reason_prefix is None:  # its own cache: the rank prompt's prefix is another one
            self._reason_prefix = SharedPrefix(self.lm.model, tok.pad_token_id)
        enc = self._reused_inputs(reuse) if reuse is not None else None
        if enc is None:
            enc = self._reason_prefix.generate_inputs(tok(prompts, add_special_tokens=False)["input_ids"])
        max_new = retry.max_new if retry is not None else self.prompter.reason_tokens()
        prompt_len = enc["input_ids"].shape[1]
        stop = _ReasonStop(tok, prompt_len, self.config.prompt.max_reason_words)
        t = self.config.ranker.temperature  # the config's sampling applies to reasons too
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": t}
            if t > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        # reasons: no genre, decade or number outside each item's evidence can be written (faithful.py)
        guard = FaithfulLogitsProcessor(tok, [row_facts(tok, ev) for _, _, ev in jobs], prompt_len)
        processors = [guard]
        if retry is not None:  # phrased unlike the list's other reasons (retry.py)
            processors.append(ListTrigramBan(tok, prompt_len, retry.avoid, retry.groups, greedy=t == 0))
        elif groups is not None and self.config.ranker.distinct_first_pass:  # unlike the rows above, at once
            processors.append(ListTrigramBan(tok, prompt_len, [{}] * len(jobs), groups, greedy=t == 0))
        # a streaming client sees each reason grow token by token (nothing is done without one)
        rows = [(req, item.id, o) for (req, item, _), o in zip(jobs, openers, strict=True)]
        progress = reason_criteria(tok, prompt_len, rows)
        if t == 0 and self.config.ranker.lookup_decoding and can_decode(enc, cache_field()):
            out = greedy_lookup(
                self.lm.model, enc, cache_key=cache_field(), max_new_tokens=max_new, processors=processors,
                criteria=[stop, *progress], pad_id=tok.pad_token_id, eos_ids=_eos_ids(self.lm.model, tok),
            )  # fmt: skip
            seqs, cache = out.sequences, out.cache
            self.decoding_calls += out.forwards
        else:
            with torch.inference_mode():
                out = self.lm.model.generate(
                    **enc, max_new_tokens=max_new, stopping_criteria=[stop, *progress],
                    pad_token_id=tok.pad_token_id, logits_processor=LogitsProcessorList(processors),
                    return_dict_in_generate=True, **sampling,
                )  # fmt: skip
            seqs, cache = out.sequences, getattr(out, cache_field(), None)
            self.decoding_calls += seqs.shape[1] - prompt_len  # the prompt (its first token), then one a token
        if retry is None:
            self._first_pass = (enc, cache, prompt_len)
        texts = tok.batch_decode(seqs[:, prompt_len:], skip_special_tokens=True)
        tokens = [reason_tokens(row, tok) for row in seqs[:, prompt_len:].tolist()]
        # The opener is part of the reason: the model wrote the rest of the sentence from it.
        return [o + t if o else t for o, t in zip(openers, texts, strict=True)], tokens

    def _reused_inputs(self, rows: list[int]) -> dict[str, Any] | None:
        """`generate` inputs for `rows` of the first pass: its padded prompts and their cached keys/values
        up to the last prompt token (which `generate` feeds to get the first logits). None: nothing to reuse."""
        import torch

        from reasonrec.agent.model.kv_cache import filled

        if self._first_pass is None:
            return None
        enc, cache, plen = self._first_pass
        layers = getattr(cache, "layers", None)
        if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
            return None
        idx = torch.tensor(rows, device=enc["input_ids"].device)
        kv = [(layer.keys[idx, :, : plen - 1], layer.values[idx, :, : plen - 1]) for layer in layers]
        return {
            "input_ids": enc["input_ids"][idx],
            "attention_mask": enc["attention_mask"][idx],
            cache_field(): filled(self.lm.model, kv),
        }


def _eos_ids(model: Any, tok: Any) -> set[int]:
    """The tokens `generate` would end a row on (the generation config's, else the tokenizer's)."""
    cfg = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = cfg if isinstance(cfg, list) else [cfg] if cfg is not None else [tok.eos_token_id]
    return {int(i) for i in ids if i is not None}


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
