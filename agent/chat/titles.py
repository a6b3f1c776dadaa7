"""Resolve what a user calls a catalogue item ("alien", "the godfather", "star trek") to item ids.

Catalogue titles are normalised once: a trailing article moves to the front ("Usual Suspects, The" ->
"The Usual Suspects"), an alternative title in parentheses is indexed too ("Seven (Se7en)"), and the
match key drops the leading article, case and punctuation. A phrase then resolves in three steps:

1. exact key matches plus *series siblings* — titles that continue the phrase with a plural, a number,
   a roman numeral, "part" or a subtitle ("Alien" -> Alien, Aliens, Alien 3, Alien: Resurrection);
2. difflib fuzzy matching of keys (typos: "termnator");
3. the caller's `search` (the Chroma text query), kept only when the hit shares the phrase's words.

One distinct (title, year) is a resolution; several comparable ones are options for a clarifying
question. Items sharing a title and a year (ML-100K lists a few films twice) count as one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from reasonrec.agent.schemas import OutputText
from reasonrec.retrieval.types import Item, natural_key
from reasonrec.text import ARTICLES, front_article

MAX_OPTIONS = 8
FUZZY_CUTOFF = 0.82  # difflib ratio; below it "alien" would match "alice" style neighbours
_ALT = re.compile(r"^(.*\S)\s+\(([^()]+)\)$")
_TOKEN = re.compile(r"[a-z0-9]+")
_ROMAN = {w: i for i, w in enumerate("ii iii iv v vi vii viii ix x".split(), 2)}
_YEAR_IN_PHRASE = re.compile(r"\(?\b((?:18|19|20)\d\d)\)?\s*$")
_CLAUSE_WORDS = re.compile(r"\s(?:but|and|from|with|without|though|please|instead|in the|not)\s")
_CLAUSE_END = re.compile(r"[.,;!?]|\s(?:but|and|from|with|without|though|please|instead|in the|not)\s")
_YES = re.compile(r"(?:yes|yeah|yep|yup|sure|right|correct|exactly|that one|that's it|that's the one|y)(?: please)?")
ORDINALS = {w: i for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split())}
# "the second (one)", "the last one", "#2", "number 2": a position in a list the user was shown.
POSITION = re.compile(
    r"\b(?:the\s+)?(" + "|".join(ORDINALS) + r"|last)(?:\s+one)?\b|(?:#|\bnumber\s+|\bno\.?\s*)(\d{1,2})\b"
    r"|\b(?:the\s+)?(\d{1,2})(?:st|nd|rd|th)(?:\s+one)?\b"  # "the 2nd one"
)


class ItemRef(BaseModel):
    """A short reference to a catalogue item (clarification options, resolved titles)."""

    item_id: str
    title: OutputText
    year: int | None = None

    def label(self) -> str:
        return f"{self.title} ({self.year})" if self.year else self.title

    def natural_label(self) -> str:
        """'The Terminator (1984)': how a sentence names it (the catalogue writes 'Terminator, The')."""
        title = front_article(self.title)
        return f"{title} ({self.year})" if self.year else title


@dataclass
class TitleMatch:
    """A phrase and the distinct items it may mean: one = resolved, several = ask, none = unknown."""

    phrase: str
    options: list[ItemRef] = field(default_factory=list)
    fuzzy: bool = False  # found by spelling similarity or search, not by the words as written
    confirm: bool = False  # even one option must be confirmed: the phrase's sequel number is not in the catalogue

    @property
    def resolved(self) -> ItemRef | None:
        return self.options[0] if len(self.options) == 1 and not self.confirm else None


@dataclass(frozen=True)
class _Entry:
    ref: ItemRef
    words: tuple[str, ...]
    colon_at: int  # words before the first ':' (a subtitle), or -1


def title_words(text: str) -> tuple[str, ...]:
    """Match key of a title or phrase: lowercase word tokens without a leading article.

    Sequel numbers are normalised so every spelling meets: "Star Trek III" and "star trek 3" are both
    ("star", "trek", "3"), and "Part II" is "2" ("the godfather 2" finds "The Godfather: Part II").
    """
    text = front_article(text).lower().replace("&", " and ").replace("'", "")
    words = _TOKEN.findall(text)
    words = words[1:] if len(words) > 1 and words[0] in ARTICLES else words
    out: list[str] = []
    for i, w in enumerate(words):
        if i and w in _ROMAN:
            w = str(_ROMAN[w])
        if out and out[-1] == "part" and w.isdigit():
            out.pop()
        out.append(w)
    return tuple(out)


class TitleIndex:
    """Title look-up over a catalogue.

    Args:
        refs: the items, as ItemRefs (`from_items` builds them from a catalogue).
    """

    def __init__(self, refs: Iterable[ItemRef]):
        self._entries: list[_Entry] = []
        self._by_key: dict[tuple[str, ...], list[_Entry]] = {}
        self._by_first: dict[str, list[_Entry]] = {}
        self._same: dict[tuple[str, int | None], list[str]] = {}
        for ref in refs:
            self._same.setdefault((ref.title, ref.year), []).append(ref.item_id)
            m = _ALT.match(ref.title)
            names = [m.group(1), m.group(2)] if m else [ref.title]
            for name in names:
                fronted = front_article(name)
                words = title_words(fronted)
                if not words:
                    continue
                head = fronted.split(":", 1)[0] if ":" in fronted else None
                entry = _Entry(ref, words, len(title_words(head)) if head is not None else -1)
                self._entries.append(entry)
                self._by_key.setdefault(words, []).append(entry)
                self._by_first.setdefault(words[0].rstrip("s"), []).append(entry)
        self._keys = [" ".join(k) for k in self._by_key]

    @classmethod
    def from_items(cls, items: dict[str, Item]) -> TitleIndex:
        return cls(ItemRef(item_id=i, title=it.title, year=it.year) for i, it in items.items())

    @classmethod
    def from_refs(cls, refs: Sequence[ItemRef]) -> TitleIndex:
        return cls(refs)

    def same_item(self, ref: ItemRef) -> list[str]:
        """Every id listed with the ref's title and year (ML-100K has a few films twice)."""
        return self._same.get((ref.title, ref.year), [ref.item_id])

    def resolve(
        self, phrase: str, fuzzy: bool = True, search: Callable[[str, int], list[str]] | None = None
    ) -> TitleMatch:
        """The items `phrase` may mean (exact + siblings, then fuzzy, then `search`); empty if none.

        Args:
            phrase: what the user wrote, e.g. "alien", "The Godfather", "alien (1979)".
            fuzzy: allow difflib matching when no title matches exactly.
            search: `search(text, n) -> item ids`, tried last (only with `fuzzy`).
        """
        year = None
        m = _YEAR_IN_PHRASE.search(phrase)
        if m and title_words(phrase[: m.start()]):
            year, phrase = int(m.group(1)), phrase[: m.start()]
        words = title_words(phrase)
        if not words:
            return TitleMatch(phrase.strip())
        exact = self._exact_and_siblings(words)
        found, confirm = exact, False
        if not exact and fuzzy:
            found, confirm = self._fuzzy_sequel(words)
            found = found or self._fuzzy(words) or self._searched(phrase, words, search)
        if year is not None:
            found = [e for e in found if e.ref.year == year] or found
        return TitleMatch(phrase.strip(), self._distinct(found), fuzzy=bool(found) and not exact, confirm=confirm)

    def resolve_prefix(
        self, text: str, fuzzy: bool = False, search: Callable[[str, int], list[str]] | None = None, max_words: int = 8
    ) -> tuple[TitleMatch, int] | None:
        """The longest leading run of words in `text` that names a title, and how many characters it used.

        Why: "more like alien from the 80s" must read "alien" without knowing where the title ends;
        trying the longest run first keeps "sense and sensibility" whole. Without an exact match the
        text up to the next clause boundary is matched fuzzily (when `fuzzy`).
        """
        spans = [m for m in re.finditer(r"[^\s.,;!?]+", text)]
        stop = re.search(r"[.;!?]|,\s", text)
        spans = [s for s in spans if stop is None or s.end() <= stop.start()][:max_words]
        if fuzzy and spans:
            # The whole clause first: "batman forver" is Batman Forever, and "babe 2" is no Babe, although
            # their first word alone is an exact title.
            whole = text[: spans[-1].end()]
            for clause in dict.fromkeys((whole, _CLAUSE_WORDS.split(whole)[0])):  # "... and the Last Crusad"
                match = self.resolve(clause, fuzzy=True)
                if match.options and (match.fuzzy or match.confirm) and len(title_words(clause)) > 1:
                    return match, len(clause)
        for n in range(len(spans), 0, -1):
            end = spans[n - 1].end()
            match = self.resolve(text[:end], fuzzy=False)
            if match.options:
                return match, end
        if not fuzzy or not spans:
            return None
        clause = _CLAUSE_WORDS.split(text[: spans[-1].end()])[0]
        match = self.resolve(clause, fuzzy=True, search=search)
        return (match, len(clause)) if match.options else None

    # --- steps -------------------------------------------------------------------------------------------

    def _exact_and_siblings(self, words: tuple[str, ...]) -> list[_Entry]:
        n, out = len(words), []
        for e in self._by_first.get(words[0].rstrip("s"), []):
            if e.words == words:
                out.append(e)
            elif e.words[:n] == words and len(e.words) > n:
                nxt = e.words[n]
                if e.colon_at == n or nxt.isdigit() or nxt == "part":
                    out.append(e)
            elif len(e.words) == n and e.words[:-1] == words[:-1] and e.words[-1] == words[-1] + "s":
                out.append(e)  # "alien" -> "Aliens"
        exact = [e for e in out if e.words == words]
        rest = sorted((e for e in out if e.words != words), key=lambda e: (e.ref.year or 0, natural_key(e.ref.item_id)))
        return exact + rest

    def _fuzzy(self, words: tuple[str, ...]) -> list[_Entry]:
        return [e for k in self._fuzzy_keys(words) for e in self._by_key[k]]

    def _fuzzy_keys(self, words: tuple[str, ...]) -> list[tuple[str, ...]]:
        key = " ".join(words)
        close = difflib.get_close_matches(key, self._keys, n=MAX_OPTIONS, cutoff=FUZZY_CUTOFF)
        scored = [(difflib.SequenceMatcher(None, key, k).ratio(), k) for k in close]
        if not scored:
            return []
        best = max(s for s, _ in scored)
        return [tuple(k.split()) for s, k in scored if s >= best - 0.04]  # comparable matches become options

    def _fuzzy_sequel(self, words: tuple[str, ...]) -> tuple[list[_Entry], bool]:
        """A misspelt or missing sequel: "termnator 2" -> Terminator 2, never The Terminator.

        Why apart from `_fuzzy`: on the whole phrase, "termnator 2" is closer to "terminator" than to
        "terminator 2 judgment day", so the number would be lost. The series name is matched fuzzily and
        the number exactly; when the series has no such number, its titles are returned to be confirmed.
        """
        if len(words) < 2 or not words[-1].isdigit():
            return [], False
        if self._exact_and_siblings(words[:-1]):  # "star trek 7": the series exists, that number does not
            return self._exact_and_siblings(words[:-1]), True
        bases = self._fuzzy_keys(words[:-1])
        numbered = [e for base in bases for e in self._exact_and_siblings((*base, words[-1]))]
        if numbered:
            return numbered, False
        series = [e for base in bases for e in self._exact_and_siblings(base)]
        return series, bool(series)

    def _searched(
        self, phrase: str, words: tuple[str, ...], search: Callable[[str, int], list[str]] | None
    ) -> list[_Entry]:
        if search is None:
            return []
        by_id = {e.ref.item_id: e for e in self._entries}
        out = []
        for item_id in search(phrase, 5):
            e = by_id.get(item_id)
            # An embedding neighbour is only a title match when it shares the phrase's words.
            if e is not None and set(words) <= set(title_words(e.ref.title)):
                out.append(e)
        return out

    def _distinct(self, entries: list[_Entry]) -> list[ItemRef]:
        seen: dict[tuple[str, int | None], ItemRef] = {}
        for e in entries:
            key = (e.ref.title, e.ref.year)
            if key not in seen or natural_key(e.ref.item_id) < natural_key(seen[key].item_id):
                seen[key] = e.ref
        return list(seen.values())[:MAX_OPTIONS]


def clause(text: str) -> str:
    """The text up to the next clause boundary (punctuation, 'but', 'and', 'from', 'with', ...)."""
    m = _CLAUSE_END.search(text)
    return text[: m.start()] if m else text


def position_index(m: re.Match[str], n: int) -> int | None:
    """0-based index named by a `POSITION` match (or a bare number in group 1) in a list of n; None if outside."""
    groups = m.groups()
    word, digits = groups[0], next((g for g in groups[1:] if g), None)
    if word == "last":
        idx = n - 1
    elif word in ORDINALS:
        idx = ORDINALS[word]
    else:
        idx = int(digits or word) - 1
    return idx if 0 <= idx < n else None


def pick_option(text: str, options: Sequence[ItemRef]) -> ItemRef | None:
    """The option an answer to a clarifying question picks: a title, a year, "the second", "2"; else None.

    Why this order: "Alien 3" is a title before it is the number 3, and "1986" a year before anything.
    """
    s = " ".join(text.lower().split()).strip(" .!?")
    if len(options) == 1 and _YES.fullmatch(s):  # "Did you mean Babe (1995)?" "yes"
        return options[0]
    index = TitleIndex.from_refs(options)
    exact = index.resolve(re.sub(r"^(?:the one called|i mean|i meant)\s+", "", s), fuzzy=False)
    if len(exact.options) == 1:
        return exact.options[0]
    years = {int(y) for y in re.findall(r"\b(?:18|19|20)\d\d\b", s)}
    by_year = [o for o in options if o.year in years]
    if len(by_year) == 1:
        return by_year[0]
    m = POSITION.search(s) or re.fullmatch(r"(\d{1,2})", s)
    idx = position_index(m, len(options)) if m else None
    if idx is not None:
        return options[idx]
    fuzzy = index.resolve(s, fuzzy=True)
    return fuzzy.options[0] if len(fuzzy.options) == 1 else None
