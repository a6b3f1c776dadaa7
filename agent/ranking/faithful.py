"""Faithful generation: a reason with a false claim is never shown, and no two reasons of a list are alike.

Two guards, in order:

1. `FaithfulLogitsProcessor` masks, while a reason is written, the tokens that would complete a genre
   or decade word the item does not have ("horror" for *Clueless*) and digits that do not continue one
   of the evidence's numbers (its year, decade, co-watch counts). Why a mask and not only a check:
   a checked-and-rejected sentence costs the user the model's reason; masked, the model writes a
   different word in the same pass, at the cost of a dictionary look-up per row and step.
2. `choose_reasons` checks every model reason (claims.ClaimChecker: titles, co-watch counts,
   shared genres, the query) and shows it only when it is faithful and unlike the reasons already
   shown in the list; otherwise the reason built from the item's evidence (evidence.evidence_reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reasonrec.agent.ranking.claims import DECADE_WORDS, GENRE_WORDS, ReasonCheck
from reasonrec.agent.ranking.evidence import ItemEvidence, ReasonData, evidence_reason
from reasonrec.agent.ranking.reasons import restates_question, usable_reason
from reasonrec.retrieval.types import Item

Trie = dict[tuple[int, ...], frozenset[int]]  # tokens before -> tokens that would complete a banned word


@dataclass(frozen=True)
class RowFacts:
    """What one reason may say: its banned word endings and the numbers it may write."""

    banned: Trie
    numbers: frozenset[str]


def row_facts(tokenizer: Any, ev: ItemEvidence) -> RowFacts:
    """The mask inputs for one item's reason, from its evidence."""
    decade = ev.year - ev.year % 10 if ev.year else None
    numbers = set()
    if ev.year:
        numbers |= {str(ev.year), str(decade), str(decade % 100).zfill(2)}
    if ev.cowatch:
        numbers |= {str(ev.cowatch.co_users), str(ev.cowatch.anchor_users)}
    return RowFacts(_banned_words(tokenizer, frozenset(ev.genres), decade), frozenset(numbers))


@lru_cache(maxsize=512)  # many items share a genre set; tokenising the lexicon once per set is enough
def _banned_words(tokenizer: Any, genres: frozenset[str], decade: int | None) -> Trie:
    words = [w for w, g in GENRE_WORDS.items() if g not in genres]
    words += [w for w, d in DECADE_WORDS.items() if d != decade]
    trie: dict[tuple[int, ...], set[int]] = {}
    for w in words:
        for form in {w, w.capitalize(), w + "s"}:
            for text in (" " + form, form):
                ids = tokenizer.encode(text, add_special_tokens=False)
                if ids:
                    trie.setdefault(tuple(ids[:-1]), set()).add(ids[-1])
    return {k: frozenset(v) for k, v in trie.items()}


@lru_cache(maxsize=8)
def _digit_tokens(tokenizer: Any) -> dict[int, str]:
    """Token id -> its digits, for every token that is only digits (SmolLM2 has one per digit)."""
    vocab = tokenizer.get_vocab()
    out = {}
    for i in vocab.values():
        t = tokenizer.decode([i])
        if t and len(t) <= 4 and t.isdigit() and t.isascii():
            out[i] = t
    return out


class FaithfulLogitsProcessor:
    """Masks false genre/decade words and unknown numbers while reasons are written.

    Args:
        tokenizer: the model's tokenizer.
        rows: per batch row, either one `RowFacts` (hybrid: the row is one reason) or a mapping of
            label token id -> `RowFacts` (constrained generative: the reason after "[label]" follows
            that candidate's facts).
        prompt_len: padded prompt length (generated tokens start there).
        close_id, newline_id: "]" and "\\n" token ids (generative rows only).
    """

    def __init__(self, tokenizer: Any, rows: Sequence[Any], prompt_len: int,
                 close_id: int | None = None, newline_id: int | None = None):  # fmt: skip
        self.rows = list(rows)
        self.prompt_len = prompt_len
        self.close_id, self.newline_id = close_id, newline_id
        self.digits = _digit_tokens(tokenizer)
        self.n_masked = 0  # tokens masked so far (how often the guard had to act)

    def _current(self, row: int, gen: list[int]) -> tuple[RowFacts | None, list[int]]:
        """The facts that apply now and the reason's tokens so far (None: not inside a reason)."""
        spec = self.rows[row]
        if isinstance(spec, RowFacts):
            return spec, gen
        if self.close_id not in gen:
            return None, []
        at = len(gen) - 1 - gen[::-1].index(self.close_id)
        if self.newline_id in gen[at:] or at == 0:
            return None, []
        return spec.get(gen[at - 1]), gen[at + 1 :]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows, cols = [], []
        for r in range(input_ids.shape[0]):
            facts, text = self._current(r, input_ids[r, self.prompt_len :].tolist())
            if facts is None:
                continue
            ban = set()
            for n in (0, 1, 2, 3):  # words of up to four tokens
                if n <= len(text):
                    ban |= facts.banned.get(tuple(text[len(text) - n :]) if n else (), frozenset())
            ban |= self._bad_digits(facts, text)
            rows += [r] * len(ban)
            cols += list(ban)
        if not rows:
            return scores
        before = scores.clone()
        scores[torch.tensor(rows), torch.tensor(cols)] = float("-inf")
        dead = torch.isinf(scores).all(dim=-1)  # never leave a row nothing to write (a forced opener token)
        if dead.any():
            scores[dead] = before[dead]
        self.n_masked += len(rows)
        return scores

    def _bad_digits(self, facts: RowFacts, text: list[int]) -> set[int]:
        """Digit tokens that would not continue one of the allowed numbers."""
        run = ""
        for t in reversed(text):
            if t not in self.digits:
                break
            run = self.digits[t] + run
        ok = {n for n in facts.numbers if n.startswith(run) and len(n) > len(run)}
        return {t for t, d in self.digits.items() if not any(n[len(run) :].startswith(d) for n in ok)}


@dataclass(frozen=True)
class ShownReason:
    """The decision for one item's reason, and the checks behind it."""

    text: str
    source: str  # "model" or "template"
    faithful: bool
    specific: bool
    model_faithful: bool | None  # the model's own text was faithful (None: it wrote none usable)
    model_specific: bool | None
    evidence: ItemEvidence


def choose_reasons(
    items: Sequence[Item], texts: Sequence[str | None], evidence: Sequence[ItemEvidence], history: Sequence[Item],
    query: str | None, data: ReasonData, domain: str,
) -> list[ShownReason]:  # fmt: skip
    """Each item's shown reason: the model's when usable, faithful and unlike the ones before, else evidence's.

    Args:
        items, texts, evidence: the list in rank order, the model's text per item (None: none), its evidence.
        history, query: the user's.
        data: catalogue and counts the claims are checked against.
        domain: "movie" for ML-100K.
    """
    checker = data.checker
    shown: list[ShownReason] = []
    for item, text, ev in zip(items, texts, evidence, strict=True):
        mine: ReasonCheck | None = None
        if text and usable_reason(text, item) and not restates_question(text):
            mine = checker.check(text, item, history, query, opener=ev.opener)
            if mine.faithful and not any(checker.alike(text, s.text) for s in shown):
                shown.append(ShownReason(text, "model", True, mine.specific, True, mine.specific, ev))
                continue
        fact = evidence_reason(ev, domain)
        verdict = checker.check(fact, item, history, query)
        shown.append(ShownReason(fact, "template", verdict.faithful, verdict.specific,
                                 None if mine is None else mine.faithful,
                                 None if mine is None else mine.specific, ev))  # fmt: skip
    return shown
