"""Reasons built from facts, for items the model did not explain (fallback items, missing reasons).

A fallback item must still carry a real reason: the genres it shares with named items of the user's
history, a year close to theirs, or the retrieval similarity. Never an empty string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

from reasonrec.text import natural_title, title_core

# `is_grounded` reads the core of every history title for every reason (a 700-item history: 700 regex
# passes per reason); a catalogue's titles are few, so each is computed once.
_title_core = lru_cache(maxsize=1 << 14)(title_core)


class _ItemLike(Protocol):
    title: str
    year: int | None
    genres: tuple[str, ...]


def grounded_reason(item: _ItemLike, history: Sequence[_ItemLike], similarity: float | None = None) -> str:
    """A one-sentence reason naming real history items and real attributes of `item`.

    Args:
        item: the recommended item.
        history: the user's history, oldest first (the newest items are preferred as evidence).
        similarity: cosine similarity from retrieval, if known.

    Returns:
        A non-empty sentence.
    """
    recent = list(history)[::-1]
    if not recent:  # a new user: nothing to compare with, so state the item's own facts
        facts = ", ".join(item.genres[:2]) or "catalogue"
        return f"{_a(facts)} {facts} pick" + (f" from {item.year}" if item.year else "") + " that matches your request."
    best, shared = closest_history(item, history)
    if best is not None:
        g = ", ".join(sorted(shared)[:2])
        return f"Shares {g} with {natural_title(best.title)}, which you watched."
    if item.year is not None:
        near = [h for h in recent[:30] if h.year is not None and abs(h.year - item.year) <= 2]
        if near:
            return f"From {item.year}, the same period as {near[0].title} in your history."
    if similarity is not None:
        return f"Close to your recent history in content (similarity {similarity:.2f})."
    if item.genres:
        genres = ", ".join(item.genres[:2])
        return f"{_a(genres)} {genres} pick related to your history."
    return "Related to items in your history."


def _a(word: str) -> str:
    """The indefinite article for `word`: "An animation", "A drama"."""
    return "An" if word[:1].lower() in "aeiou" else "A"


def closest_history(item: _ItemLike, history: Sequence[_ItemLike]) -> tuple[_ItemLike | None, set[str]]:
    """The history item with the most genre overlap with `item` (Jaccard; ties: newest), and the shared genres.

    Why Jaccard and not the newest item: different recommendations then cite different, genuinely
    similar titles rather than always the latest one. (None, set()) when no item shares a genre.
    """
    genres = set(item.genres)
    best, shared, best_sim = None, set(), 0.0
    for h in list(history)[::-1][:30]:
        common = genres & set(h.genres)
        sim = len(common) / len(genres | set(h.genres)) if common else 0.0
        if sim > best_sim:
            best, shared, best_sim = h, common, sim
    return best, shared


def reason_opener(item: _ItemLike, history: Sequence[_ItemLike], domain: str) -> str:
    """The words a generated reason starts with, so that it names a checkable fact.

    Hybrid mode appends this to the reason prompt's assistant turn and the model writes the rest
    (finetune/data.py trains on the same split). A small model left alone names nothing checkable
    in about half its reasons; starting from "Like <the closest history title>, it" it explains the
    link, and "it" keeps the subject on the recommended item (not "I'm a recommender...").
    New users, or no history item sharing a genre: "A <genre> <domain>". No genre either: "" (the
    model writes the whole sentence).
    """
    best, _ = closest_history(item, history)
    if best is not None:
        return f"Like {natural_title(best.title)}, it"
    if item.genres:
        g = item.genres[0].lower()
        return f"{_a(g)} {g} {domain}"
    return ""


def opener_continuation(item: _ItemLike, history: Sequence[_ItemLike], domain: str) -> str:
    """A factual rest-of-sentence after `reason_opener`: the training target for the reason head."""
    best, shared = closest_history(item, history)
    year = f" from {item.year}" if item.year else ""
    if best is not None:
        g = " and ".join(x.lower() for x in sorted(shared)[:2])
        return f" is {_a(g).lower()} {g} {domain}{year}."
    if item.genres:
        return f"{year} that fits the rest of your history." if year else " that fits your history."
    return grounded_reason(item, history)


_LISTING = re.compile(r"\(\d{4}\)\s*[—–-]")  # "Title (1995) — Genre": how the prompt lists candidates
# Ids and labels have no place in a reason: "recommend item 99999 (Z)" is an injected request echoed
# back, not an explanation (a title, a genre or a year is what a reason names).
_INJECTED = re.compile(r"(?i:\bitems?\s*(?:id\s*)?#?\d+)|[\[(][A-Z]{1,2}[\])]|\b\d{5,}\b")


def usable_reason(text: str | None, item: _ItemLike) -> bool:
    """False for an empty reason or one that only echoes a candidate line of the prompt.

    Why: small models often copy "[B] Title (1994) — Comedy, Romance" instead of explaining, and the
    copied genres may even belong to another candidate. Such text is not a reason; the caller then
    writes a grounded one from facts instead.
    """
    if not text or not text.strip():
        return False
    if _LISTING.search(text) or _INJECTED.search(text):
        return False
    words = re.findall(r"[A-Za-z']+", text.lower())
    noise = set(re.findall(r"[A-Za-z']+", (item.title + " " + " ".join(item.genres)).lower()))
    return len([w for w in words if w not in noise]) >= 3


# Genre names as people write them in a sentence ("comedies", "sci-fi", "kids"): stems are enough.
_GENRE_WORDS = {
    "Sci-Fi": ("sci-fi", "science fiction", "scifi", "sci fi"),
    "Children's": ("children", "kids", "family"),
    "Film-Noir": ("noir",),
    "Documentary": ("documentar",),
    "Comedy": ("comed", "funny"),
    "Mystery": ("myster",),
    "Fantasy": ("fantas",),
    "Adventure": ("adventur",),
    "Romance": ("romanc", "romantic"),
    "Animation": ("animat",),
}


def is_grounded(reason: str, item: _ItemLike, history: Sequence[_ItemLike]) -> bool:
    """Whether a reason cites a fact: a real history title, or a real genre or year of `item`.

    Why this check: a fluent reason that names nothing checkable ("You will love this classic") is
    indistinguishable from a hallucination; the fine-tuning issue's bar is >= 95% grounded reasons.
    Matching is on words, case-insensitive; a history title counts when its core (no year, no
    trailing article) of at least 4 characters appears in the reason.
    """
    if not reason:
        return False
    text = " ".join(re.findall(r"[a-z0-9'\-]+", reason.lower()))
    padded = f" {text} ", f" {text.replace('-', ' ')} "  # "Sci-Fi" may be written either way
    for h in history:
        core = _title_core(h.title)
        if len(core) >= 4 and any(f" {core} " in p for p in padded):
            return True
    for g in item.genres:
        stems = _GENRE_WORDS.get(g, (g.lower(),))
        if any(s in text for s in stems):
            return True
    if item.year is not None:
        y = item.year
        decade = y - y % 10
        if re.search(rf"\b({y}|{decade}s|'?{decade % 100:02d}s)\b", text):
            return True
    return False


# The small model often restates the task instead of answering it.
_META = re.compile(
    r"\b(?:wants? to know|(?:explain|say|tell)\w* (?:in one sentence )?why|why (?:a|the|this) user)\b", re.I
)


def restates_question(text: str) -> bool:
    """True for "The user wants to know why ..." style answers that repeat the task, not a reason."""
    return bool(_META.search(text))
