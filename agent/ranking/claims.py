"""A claim checker for reasons: every checkable claim, extracted and verified against the data.

Why: the old `is_grounded` passed any reason containing a history title, and the forced opener
"Like <history title>, it" always contains one, so it passed by construction. Here a reason is
split into claims and each is checked:

- **title**: a catalogue title named in the reason must be in the user's history (or be the item);
- **genre**: a genre word (catalogue names and `reasonrec.text.GENRE_SYNONYMS`: "funny", "scary",
  "kids", ...; forms of `GENRE_STEMS`: "thrillercraft", "film noire") is a claim about the recommended
  item, true when the item has that genre;
- **shared**: "Like <T>, it ..." / "shares ... with <T>" also claims T shares a named genre;
- **year / decade**: "1995", "90s", "the 1990s", "nineties" must match the item's year;
- **cowatch**: "3 of the 5 people who watched <T> also watched it" (counts must be exact) and
  "people who liked <T> also liked it" (at least 2 people have both) are checked against
  interaction counts;
- **query**: "matches your request" is true when the item matches the request's genre words or text.

`faithful` = no false claim; `specific` = at least one true claim about the item itself (genre,
year, co-watch or query) outside the opener; `alike` / `all_distinct` compare reasons of one list
after normalising case and punctuation, and count near-duplicates (>= 0.9 similar once titles are
masked: "Shares Comedy with X" and "Shares Comedy with Y" are the same reason) as alike.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from reasonrec.agent.ranking.title_spans import TitleIndex
from reasonrec.retrieval.types import Item
from reasonrec.text import GENRE_SYNONYMS, title_core

ClaimKind = Literal["title", "genre", "shared", "year", "decade", "cowatch", "query"]
ABOUT_ITEM = ("genre", "year", "decade", "cowatch", "query")  # kinds that say something about the item itself
DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                "seventies": 1970, "eighties": 1980, "nineties": 1990}  # fmt: skip
NEAR_DUPLICATE = 0.9
_WORD = re.compile(r"[A-Za-z0-9']+")
_MASK_CACHE = 4096  # masked texts a checker keeps (ClaimChecker._masked)


class CoCounts(Protocol):
    """Interaction counts a collaborative claim is checked against."""

    def co_counts(self, anchor_id: str, item_id: str) -> tuple[int, int]:
        """(users who have both items, users who have the anchor)."""
        ...


class InteractionCounts:
    """`CoCounts` from per-user item sequences: one set of users per item, intersected on demand."""

    def __init__(self, sequences: Mapping[str, Iterable[str]]):
        self.users: dict[str, set[str]] = {}
        for user, items in sequences.items():
            for i in items:
                self.users.setdefault(str(i), set()).add(str(user))

    def co_counts(self, anchor_id: str, item_id: str) -> tuple[int, int]:
        a = self.users.get(anchor_id, set())
        return len(a & self.users.get(item_id, set())), len(a)


class Claim(BaseModel):
    """One checkable statement found in a reason."""

    model_config = ConfigDict(frozen=True)

    kind: ClaimKind
    text: str = Field(description="The words of the reason that make the claim.")
    true: bool
    start: int = Field(description="Character offset in the reason.")
    detail: str = Field("", description="What the data says, for a false claim.")


class ReasonCheck(BaseModel):
    """The verdict on one reason."""

    claims: list[Claim]
    faithful: bool = Field(description="No claim is false.")
    specific: bool = Field(description="At least one true claim about the item itself, outside the opener.")

    @property
    def false_claims(self) -> list[Claim]:
        return [c for c in self.claims if not c.true]


def _genre_lexicon() -> dict[str, str]:
    """Word or phrase (lower case) -> genre, from the shared synonym lexicon plus plural-free names."""
    out = {}
    for genre, words in GENRE_SYNONYMS.items():
        out[genre.lower()] = genre
        for w in words:
            out[w.lower()] = genre
    return out


GENRE_WORDS = _genre_lexicon()
# Hyphens separate words here: "comedy-drama" claims both genres ("sci-fi" is matched whole, longest first).
_GENRE_RE = re.compile(r"(?<![\w'])(" + "|".join(re.escape(w) for w in sorted(GENRE_WORDS, key=len, reverse=True))
                       + r")(?![\w'])", re.I)  # fmt: skip
# Word forms the lexicon does not list but that still name a genre: "thrillercraft", "film noire", "adventurism",
# "romanticized", "dramatically", "comedies-to-be". Only stems that no everyday word shares ("fantastic" or
# "mysterious" say nothing about a genre, so "fantas" and "myster" are not here). The reasons' second try
# (retry.py) bans the list's usual phrasings, and the small model then reached for such forms.
GENRE_STEMS = {"noir": "Film-Noir", "adventur": "Adventure", "thrill": "Thriller", "romant": "Romance",
               "comed": "Comedy", "dramat": "Drama", "dramed": "Drama", "animat": "Animation"}  # fmt: skip
_STEM_RE = re.compile(r"(?<![\w'])(" + "|".join(GENRE_STEMS) + r")[a-z]*(?![\w'])", re.I)
_YEAR_RE = re.compile(r"(?<![\w'])(1[89]\d\d|20\d\d)(s?)(?!\w)")
_DECADE_RE = re.compile(r"(?<![\w])'?([0-9]0)s(?!\w)|(?<!\w)(" + "|".join(DECADE_WORDS) + r")(?!\w)", re.I)
_T = r"<T(\d+)>"  # a masked title
_COUNT_RE = re.compile(r"(\d+)\s+(?:out\s+)?of\s+(?:the\s+|all\s+)?(\d+)\s+(?:[a-z]+\s+){0,4}?" + _T, re.I)
_PERCENT_RE = re.compile(r"(\d+)\s*%\s+of\s+(?:the\s+)?(?:[a-z]+\s+){0,4}?" + _T, re.I)
_PEOPLE_RE = re.compile(
    r"(?:people|users|viewers|fans|those|others|audiences)\s+(?:who|that)\s+(?:[a-z]+\s+){0,2}?"
    r"(?:watched|rated|liked|loved|enjoyed|saw|have\s+seen)\s+" + _T + r"|fans\s+of\s+" + _T,
    re.I,
)
_LIKE_RE = re.compile(r"^\s*(?:just\s+)?like\s+" + _T + r"|\bshares?\s+[^.]*?\bwith\s+" + _T, re.I)
_QUERY_RE = re.compile(r"\b(?:your\s+request|you\s+asked|asked\s+for|you\s+wanted|looking\s+for|your\s+search)\b", re.I)


class ClaimChecker:
    """Extract and verify the claims of reasons against a catalogue and interaction counts.

    Args:
        catalogue: every item (titles named in a reason are looked up here).
        counts: co-watch counts for collaborative claims; None = such claims are false (unverifiable).
    """

    def __init__(self, catalogue: Mapping[str, Item] | Iterable[Item], counts: CoCounts | None = None):
        items = catalogue.values() if isinstance(catalogue, Mapping) else catalogue
        self.titles = TitleIndex(items)
        self.counts = counts
        self._masked_cache: dict[str, str] = {}

    def check(
        self, reason: str, item: Item, history: Sequence[Item], query: str | None = None, opener: str = ""
    ) -> ReasonCheck:
        """Every claim of `reason` about `item` for a user with `history`, verified.

        Args:
            reason: the text shown.
            item: the recommended item ("it").
            history: the user's items.
            query: the user's request, if any.
            opener: words the reason was forced to start with; claims inside them do not make it specific.
        """
        masked, named, claims = self._titles(reason, item, history)
        claims += self._cowatch(masked, item, named)
        claims += self._shared(masked, item, named)
        claims += self._facts(masked, item, query)
        claims.sort(key=lambda c: c.start)
        # Masked spans keep their length, so the reason's own words can be shown for every claim.
        claims = [c.model_copy(update={"text": reason[c.start : c.start + len(c.text)]}) if "<T" in c.text else c
                  for c in claims]  # fmt: skip
        n_open = len(opener.strip()) if opener and reason.startswith(opener.strip()) else 0
        return ReasonCheck(
            claims=claims,
            faithful=all(c.true for c in claims),
            specific=any(c.true and c.kind in ABOUT_ITEM and c.start >= n_open for c in claims),
        )

    def _titles(self, reason: str, item: Item, history: Sequence[Item]) -> tuple[str, list[list[Item]], list[Claim]]:
        """The reason with titles masked as <Tn> (same length kept out: offsets map by position list), and per
        tag the history items with that title (ML-100K lists some films twice: "Kull the Conqueror" is 266 and 680)."""
        seen = {h.id: h for h in history}
        parts, named, claims, last = [], [], [], 0
        for start, end, items in self.titles.find(reason):
            mine = [seen[h.id] for h in items if h.id in seen]
            is_item = any(it.id == item.id for it in items)
            text = reason[start:end]
            claims.append(Claim(kind="title", text=text, true=bool(mine) or is_item, start=start,
                                detail="" if mine or is_item else "not in the user's history"))  # fmt: skip
            named.append(mine)
            tag = f"<T{len(named) - 1}>"
            parts += [reason[last:start], tag + " " * max(0, end - start - len(tag))]  # keep offsets
            last = end
        return "".join(parts) + reason[last:], named, claims

    def _cowatch(self, masked: str, item: Item, named: list[list[Item]]) -> list[Claim]:
        out = []
        for m in _COUNT_RE.finditer(masked):
            co, n, anchors = int(m.group(1)), int(m.group(2)), named[int(m.group(3))]
            ok, true_co, true_n = self._counts(anchors, item, lambda c, t, co=co, n=n: c > 0 and (co, n) == (c, t))
            out.append(
                Claim(kind="cowatch", text=m.group(0), true=ok, start=m.start(), detail=f"{true_co} of {true_n}")
            )
        for m in _PERCENT_RE.finditer(masked):
            pct, anchors = int(m.group(1)), named[int(m.group(2))]
            near = lambda c, t, pct=pct: t > 0 and abs(100 * c / t - pct) <= 1  # noqa: E731
            ok, true_co, true_n = self._counts(anchors, item, near)
            out.append(
                Claim(kind="cowatch", text=m.group(0), true=ok, start=m.start(), detail=f"{true_co} of {true_n}")
            )
        counted = {c.start for c in out}
        for m in _PEOPLE_RE.finditer(masked):
            anchors = named[int(m.group(1) or m.group(2))]
            ok, true_co, true_n = self._counts(anchors, item, lambda c, t: c >= 2)
            if not any(abs(m.start() - s) < 40 for s in counted):  # the counted form already checked it
                out.append(Claim(kind="cowatch", text=m.group(0), true=ok,
                                 start=m.start(), detail=f"{true_co} of {true_n}"))  # fmt: skip
        return out

    def _counts(self, anchors: list[Item], item: Item, fits: Callable[[int, int], bool]) -> tuple[bool, int, int]:
        """Whether the counts of one of the history items with the named title fit the claim, and those counts
        (the first item's when none fits; (0, 0) without counts: an unverifiable claim is false)."""
        found = [self.counts.co_counts(a.id, item.id) for a in anchors] if self.counts is not None else []
        ok = [(co, n) for co, n in found if fits(co, n)]
        co, n = (ok or found or [(0, 0)])[0]
        return bool(ok), co, n

    def _shared(self, masked: str, item: Item, named: list[list[Item]]) -> list[Claim]:
        """ "Like <T>, it is a comedy": at least one genre named in the sentence is T's too (when any is named)."""
        m = _LIKE_RE.search(masked)
        if not m:
            return []
        anchors = named[int(m.group(1) or m.group(2))]
        said = {g for _, g in genre_mentions(masked)}
        if not anchors or not said:
            return []
        theirs = sorted({g for a in anchors for g in a.genres})
        ok = bool(said & set(theirs))
        return [Claim(kind="shared", text=m.group(0), true=ok, start=m.start(),
                      detail="" if ok else f"its genres are {', '.join(theirs) or 'none'}")]  # fmt: skip

    def _facts(self, masked: str, item: Item, query: str | None) -> list[Claim]:
        """Genre, year and decade words (outside titles and counts) about the item; the query claim."""
        counts = [(m.start(), m.end()) for r in (_COUNT_RE, _PERCENT_RE) for m in r.finditer(masked)]
        free = lambda m: not any(s <= m.start() < e for s, e in counts)  # noqa: E731
        out, genres = [], set(item.genres)
        for m, g in genre_mentions(masked):
            if not free(m):
                continue
            why = "" if g in genres else f"its genres are {', '.join(item.genres) or 'none'}"
            out.append(Claim(kind="genre", text=m.group(), true=g in genres, start=m.start(), detail=why))
        for m in filter(free, _YEAR_RE.finditer(masked)):
            y = int(m.group(1))
            ok = item.year is not None and (y == item.year if not m.group(2) else item.year - item.year % 10 == y)
            out.append(Claim(kind="decade" if m.group(2) else "year", text=m.group(), true=ok, start=m.start(),
                             detail=f"it is from {item.year}"))  # fmt: skip
        for m in filter(free, _DECADE_RE.finditer(masked)):
            d = 1900 + int(m.group(1)) if m.group(1) else DECADE_WORDS[m.group(2).lower()]
            ok = item.year is not None and item.year - item.year % 10 == d
            out.append(Claim(kind="decade", text=m.group(), true=ok, start=m.start(), detail=f"it is from {item.year}"))
        for m in _QUERY_RE.finditer(masked):
            ok = query_match(query, item)
            out.append(Claim(kind="query", text=m.group(), true=ok, start=m.start(),
                             detail="" if ok else "the item does not match the request"))  # fmt: skip
        return out

    def alike(self, a: str, b: str) -> bool:
        """Two reasons say the same thing: equal after normalising, or >= 0.9 similar with titles masked."""
        na, nb = normalise(a), normalise(b)
        if na == nb:
            return True
        ma, mb = self._masked(a), self._masked(b)
        return _near(ma, mb)

    def all_distinct(self, reasons: Sequence[str]) -> bool:
        """No two reasons of one list are alike."""
        return not any(self.alike(a, b) for i, a in enumerate(reasons) for b in reasons[i + 1 :])

    def _mask(self, text: str) -> str:
        for start, end, _ in reversed(self.titles.find(text)):
            text = text[:start] + "TITLE" + text[end:]
        return text

    def _masked(self, text: str) -> str:
        """`normalise(self._mask(text))`, kept per text. Why: a list's shown reasons are compared again with
        every later candidate reason, and finding titles was most of a scoring request's reason checks."""
        out = self._masked_cache.get(text)
        if out is None:
            if len(self._masked_cache) >= _MASK_CACHE:  # a long-lived server sees unbounded texts
                self._masked_cache.clear()
            out = self._masked_cache[text] = normalise(self._mask(text))
        return out


def genre_mentions(text: str) -> list[tuple[re.Match[str], str]]:
    """Every genre word of `text` with its genre: lexicon words, then stem forms no lexicon word covers."""
    found = [(m, GENRE_WORDS[m.group().lower()]) for m in _GENRE_RE.finditer(text)]
    spans = [(m.start(), m.end()) for m, _ in found]
    for m in _STEM_RE.finditer(text):
        if not any(a <= m.start() < b or m.start() <= a < m.end() for a, b in spans):
            found.append((m, GENRE_STEMS[m.group(1).lower()]))
    return sorted(found, key=lambda f: f[0].start())


def query_genres(query: str | None) -> set[str]:
    """Genres a request asks for, by the same lexicon ("something funny" -> {"Comedy"})."""
    return {GENRE_WORDS[m.group().lower()] for m in _GENRE_RE.finditer(query or "")}


def query_match(query: str | None, item: Item) -> bool:
    """The item matches the request: a genre word of the query is the item's, or a query word is in its title."""
    if not query:
        return False
    asked = query_genres(query)
    if asked:
        return bool(asked & set(item.genres))
    words = {w.lower() for w in _WORD.findall(query) if len(w) > 3}
    return bool(words & set(title_core(item.title).split()))


def _near(x: str, y: str) -> bool:
    """SequenceMatcher's ratio() >= NEAR_DUPLICATE in either order (it is not symmetric: its junk heuristic
    and tie-breaks depend on which side is `b`, and serving asks alike(new, shown) while evaluation asks
    alike(first, second)).

    Decided on difflib's own upper bounds first (ratio <= quick_ratio <= real_quick_ratio), computed here
    as difflib does, to the same float, but from character counts kept per text: both are symmetric, and
    building a SequenceMatcher (its index of `b`) for each pair was ~60 % of a scoring request's reason
    checks, while ~90 % of a list's pairs fail a bound.
    """
    n = len(x) + len(y)
    if not n:
        return True  # difflib's ratio of two empty sequences is 1.0
    if 2.0 * min(len(x), len(y)) / n < NEAR_DUPLICATE:  # real_quick_ratio
        return False
    if 2.0 * sum((_char_counts(x) & _char_counts(y)).values()) / n < NEAR_DUPLICATE:  # quick_ratio
        return False
    return any(difflib.SequenceMatcher(None, a, b).ratio() >= NEAR_DUPLICATE for a, b in ((x, y), (y, x)))


@functools.lru_cache(maxsize=4096)  # a list's texts are compared with every later one; bounded for a server
def _char_counts(text: str) -> Counter[str]:
    return Counter(text)


def normalise(text: str) -> str:
    """Lower case, words only: how reasons of one list are compared."""
    return " ".join(w.lower() for w in _WORD.findall(text))
