"""Faithful generation: a reason with a false claim is never shown, and no two reasons of a list are alike.

Two guards, in order:

1. `FaithfulLogitsProcessor` masks, while a reason is written, the tokens that would complete a genre
   or decade word the item does not have ("horror" for *Clueless*) and digits that do not continue one
   of the evidence's numbers (its year, decade, co-watch counts). Why a mask and not only a check:
   a checked-and-rejected sentence costs the user the model's reason; masked, the model writes a
   different word in the same pass, at the cost of a dictionary look-up per row and step.
2. `choose_reasons` checks every model reason (claims.ClaimChecker: titles, co-watch counts,
   shared genres, the query) and shows it only when it is faithful, says something true about the
   item (specific) and is unlike the reasons already shown in the list; otherwise the reason built
   from the item's evidence (evidence.evidence_reason). A claim that cannot be checked (co-watch
   counts without interaction data) counts as false.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reasonrec.agent.ranking.claims import DECADE_WORDS, GENRE_WORDS, ReasonCheck
from reasonrec.agent.ranking.evidence import FALLBACK_VARIANTS, ItemEvidence, ReasonData, evidence_reason
from reasonrec.agent.ranking.reasons import restates_question, usable_reason
from reasonrec.retrieval.types import Item

Trie = dict[tuple[int, ...], frozenset[int]]  # tokens before -> tokens that would complete a banned word
SLOT_WORDS = {"Children's": "family", "Film-Noir": "film-noir", "Sci-Fi": "sci-fi", "Animation": "animated"}


@dataclass(frozen=True)
class RowFacts:
    """What one reason may say: its banned word endings, the numbers it may write, and an optional slot.

    `slot`: token sequences one of which must follow the first `opener_len` tokens of the reason
    (" is a comedy", "'s an action", ...): the model picks which of the item's genres it names.
    """

    banned: Trie
    numbers: frozenset[str]
    slot: tuple[tuple[int, ...], ...] = ()
    opener_len: int = 0


def row_facts(tokenizer: Any, ev: ItemEvidence, slot: bool = False, opener_len: int = 0) -> RowFacts:
    """The mask inputs for one item's reason, from its evidence.

    Args:
        tokenizer: the model's tokenizer.
        ev: the item's evidence.
        slot: after an opener ending in "it", the reason goes on with "is a <one of its genres>" (constrained
            generative mode: its rank prompt holds no facts, and without the slot the model mostly
            writes a plot it does not know, which names nothing checkable).
        opener_len: tokens of the opener inside the generated reason (0: the opener is in the prompt).
    """
    decade = ev.year - ev.year % 10 if ev.year else None
    numbers = set()
    if ev.year:
        numbers |= {str(ev.year), str(decade), str(decade % 100).zfill(2)}
    if ev.cowatch:
        numbers |= {str(ev.cowatch.co_users), str(ev.cowatch.anchor_users)}
    genres = ev.shared_genres if ev.opener.startswith("Like ") else ev.genres  # "Like X" claims a shared genre
    seqs = _genre_slot(tokenizer, tuple(genres)) if slot and ev.opener.endswith(" it") and genres else ()
    return RowFacts(_banned_words(tokenizer, frozenset(ev.genres), decade), frozenset(numbers), seqs, opener_len)


@lru_cache(maxsize=512)
def _genre_slot(tokenizer: Any, genres: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """Token sequences of " is a comedy", "'s a comedy", " is an action", ... for these genres."""
    out = []
    for g in genres:
        word = SLOT_WORDS.get(g, g.lower())
        art = "an" if word[0] in "aeiou" else "a"
        for verb in (" is", "'s"):
            out.append(tuple(tokenizer.encode(f"{verb} {art} {word}", add_special_tokens=False)))
    return tuple(out)


@lru_cache(maxsize=512)  # many items share a genre set; tokenising the lexicon once per set is enough
def _banned_words(tokenizer: Any, genres: frozenset[str], decade: int | None) -> Trie:
    words = [w for w, g in GENRE_WORDS.items() if g not in genres]
    words += [w for w, d in DECADE_WORDS.items() if d != decade]
    pieces = _vocab_text(tokenizer)
    trie: dict[tuple[int, ...], set[int]] = {}
    for w in words:
        for form in {w, w.capitalize(), w.title(), w + "s"}:
            for text in (" " + form, form):
                ids = tokenizer.encode(text, add_special_tokens=False)
                if ids:
                    trie.setdefault(tuple(ids[:-1]), set()).add(ids[-1])
                # A model may spell a word in two pieces the tokenizer would not choose (" Thr" + "ill"): ban those too.
                for cut in range(1, len(text)):
                    a, b = pieces.get(text[:cut]), pieces.get(text[cut:])
                    if a is not None and b is not None:
                        trie.setdefault((a,), set()).add(b)
    return {k: frozenset(v) for k, v in trie.items()}


@lru_cache(maxsize=8)
def _vocab_text(tokenizer: Any) -> dict[str, int]:
    """Decoded text -> token id, for every vocabulary token (the first id where two decode alike)."""
    out: dict[str, int] = {}
    for i in sorted(tokenizer.get_vocab().values()):
        out.setdefault(tokenizer.decode([i]), i)
    return out


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


@lru_cache(maxsize=8)
def _sentence_ends(tokenizer: Any) -> frozenset[int]:
    """Tokens that end a sentence ("." / "!" / "?", alone or ending a word) or a clause the small model
    loops after (";")."""
    vocab = tokenizer.get_vocab()
    return frozenset(i for i in vocab.values() if tokenizer.decode([i]).rstrip().endswith((".", "!", "?", ";")))


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
        self.ends = _sentence_ends(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.n_masked = 0  # tokens masked so far (how often the guard had to act)
        self._seen: dict[int, dict[tuple[int, int], set[int]]] = {}  # row -> (a, b) -> tokens that followed
        self._done: dict[int, int] = {}  # row -> generated tokens already counted in `_seen`

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

        rows, cols, keep_rows, keep = [], [], [], []
        for r in range(input_ids.shape[0]):
            ban, only = self._masks(r, input_ids[r, self.prompt_len :].tolist())
            rows += [r] * len(ban)
            cols += list(ban)
            if only:
                keep_rows.append(r)
                keep.append(only)
        if not rows and not keep_rows:
            return scores
        before = scores.clone()
        if rows:
            scores[torch.tensor(rows), torch.tensor(cols)] = float("-inf")
        for r, only in zip(keep_rows, keep, strict=True):  # inside a genre slot: only its next tokens
            allowed = torch.tensor(sorted(only), device=scores.device)
            row = torch.full_like(scores[r], float("-inf"))
            row[allowed] = scores[r, allowed]
            scores[r] = row
        dead = torch.isinf(scores).all(dim=-1)  # never leave a row nothing to write (a forced opener token)
        if dead.any():
            scores[dead] = before[dead]
        self.n_masked += len(rows)
        return scores

    def _masks(self, r: int, gen: list[int]) -> tuple[set[int], set[int]]:
        """(tokens banned, tokens the genre slot allows — empty: no slot) for row `r` now."""
        trigrams = self._seen.setdefault(r, {})
        for i in range(max(self._done.get(r, 0), 2), len(gen)):  # the row's trigrams so far, incrementally
            trigrams.setdefault((gen[i - 2], gen[i - 1]), set()).add(gen[i])
        self._done[r] = len(gen)
        facts, text = self._current(r, gen)
        if facts is None:
            return set(), set()
        ban: set[int] = set()
        for n in (0, 1, 2, 3):  # words of up to four tokens
            if n <= len(text):
                ban |= facts.banned.get(tuple(text[len(text) - n :]) if n else (), frozenset())
        ban |= self._bad_digits(facts, text)
        only = _slot_next(facts, text)
        if not only and len(text) >= facts.opener_len + 2:
            # No trigram the row already wrote: a reason does not loop ("it's a musical, it's a musical")
            # and the k reasons of one generated list do not repeat each other word for word.
            ban |= trigrams.get((text[-2], text[-1]), set())
            if self.newline_id is not None and text[-1] in self.ends:  # one sentence per generated reason
                only = {self.newline_id, self.eos_id}
        return ban, only

    def _bad_digits(self, facts: RowFacts, text: list[int]) -> set[int]:
        """Digit tokens that would not continue one of the allowed numbers."""
        run = ""
        for t in reversed(text):
            if t not in self.digits:
                break
            run = self.digits[t] + run
        ok = {n for n in facts.numbers if n.startswith(run) and len(n) > len(run)}
        return {t for t, d in self.digits.items() if not any(n[len(run) :].startswith(d) for n in ok)}


def _slot_next(facts: RowFacts, text: list[int]) -> set[int]:
    """The tokens that may come next inside the genre slot; empty when there is none or it is complete."""
    if not facts.slot or len(text) < facts.opener_len:
        return set()
    done = tuple(text[facts.opener_len :])
    if any(done[: len(s)] == s for s in facts.slot):  # complete (or past it)
        return set()
    return {s[len(done)] for s in facts.slot if len(s) > len(done) and s[: len(done)] == done}


def degenerate(text: str) -> bool:
    """A looping sentence ("a little little story ... a little big little story"): a content word three
    times, or a pair of words with a content word twice, is not a reason a person would write."""
    words = [w.lower() for w in re.findall(r"[A-Za-z']+", text)]
    content = Counter(w for w in words if len(w) > 3)
    pairs = Counter(p for p in zip(words, words[1:], strict=False) if max(map(len, p)) > 3)
    return any(c >= 3 for c in content.values()) or any(c >= 2 for c in pairs.values())


_CLAUSE_END = re.compile(r"[,;:](?=\s|$)")


def trim_loop(text: str, opener: str = "") -> str | None:
    """A looping sentence cut back to its longest start that does not loop, at a clause boundary past the
    opener; the text itself when it does not loop; None when even its first clause loops.

    Why: the small model in constrained generative mode mostly writes a true first clause and then loops
    ("Like Amistad, it's a drama, but the story is a drama."). Dropping the whole sentence cost the user
    the model's true words; the cut keeps them ("Like Amistad, it's a drama."), and the cut text is what
    the claim checker then judges, so a false first clause is still rejected.
    """
    if not degenerate(text):
        return text
    start = len(opener.strip()) if opener and text.startswith(opener.strip()) else 0
    for m in reversed([m for m in _CLAUSE_END.finditer(text) if m.start() > start]):
        head = text[: m.start()].rstrip()
        if not degenerate(head):
            return head + "."
    return None


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
    """Each item's shown reason: the model's when usable, faithful, specific and unlike the ones before, else
    the reason built from the item's evidence. A looping model text is judged (and shown) as `trim_loop` cuts it.

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
        text = trim_loop(text, ev.opener) if text else None
        if text and usable_reason(text, item) and not restates_question(text):
            mine = checker.check(text, item, history, query, opener=ev.opener)
            # Specific too: a sentence naming nothing checkable about the item is no reason to show.
            if mine.faithful and mine.specific and not any(checker.alike(text, s.text) for s in shown):
                shown.append(ShownReason(text, "model", True, mine.specific, True, mine.specific, ev))
                continue
        variants = [evidence_reason(ev, domain, v) for v in range(FALLBACK_VARIANTS)]
        fact = next((f for f in variants if not any(checker.alike(f, s.text) for s in shown)), variants[0])
        verdict = checker.check(fact, item, history, query)
        shown.append(ShownReason(fact, "template", verdict.faithful, verdict.specific,
                                 None if mine is None else mine.faithful,
                                 None if mine is None else mine.specific, ev))  # fmt: skip
    return shown
