"""Dialogue understanding for chat: deterministic parsing of one user message into a `DialogueAct`.

Rules first, because on a 135M model they are far more reliable than asking the LM: genre words and
synonyms ("funny" -> Comedy), negations ("no horror"), decades and year bounds ("80s", "before 1990",
"something older"), list length ("top 3", "shorter list"), critiques of the last answer ("not that
one", "not the second", "not Alien"), references to catalogue items ("more like Alien", resolved by
`TitleIndex`) and picks from a clarifying question ("the first one", "1986"). Whatever content words
remain become the free-text `query` that retrieval and the prompt receive; that is where the LM helps.

Nothing here touches the model or the store directly: title look-up takes an optional `search`
callable (the Chroma text query) as its last resort.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reasonrec.agent.chat.titles import POSITION, ItemRef, TitleIndex, TitleMatch, clause, pick_option, position_index
from reasonrec.text import GENRE_SYNONYMS

__all__ = ["DialogueAct", "ItemRef", "TitleIndex", "TitleMatch", "parse_message", "pick_option"]


_PAIRS = {"rom-com": ("Romance", "Comedy"), "romcom": ("Romance", "Comedy"), "romantic comedy": ("Romance", "Comedy")}
_NEGATION = re.compile(
    r"\b(?:no|not|without|nothing|none|exclude|excluding|except|skip|avoid|hate|less|minus|never|"
    r"(?:don't|dont|do not) (?:want|like|need)|(?:isn't|isnt|aren't|arent))\b(?:\s+\w+){0,2}\s*$"
)
_ADDITIVE = re.compile(r"\b(?:also|too|as well|plus|additionally|and also|add)\b")
_CLAUSE = re.compile(r"[.,;!?]|\bbut\b|\binstead\b")
_NUM_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
_NOUNS = r"(?:movies?|films?|titles?|items?|picks?|recommendations?|suggestions?|options?|results?|ones)"
_NUM = r"(\d{1,2}|" + "|".join(list(_NUM_WORDS)[2:]) + r")"
_K_PATTERNS = (
    re.compile(rf"\b(?:top|just|only|give me|show me|list|list of|best)\s+{_NUM}\b(?:\s+{_NOUNS})?"),
    re.compile(rf"\b{_NUM}\s+(?:more\s+|other\s+|good\s+|great\s+)?{_NOUNS}\b"),
    re.compile(rf"\b{_NUM}(?=\s+[a-z][a-z'-]*(?:s|ies)\b)"),  # "3 westerns", "two comedies"
)
_SHORTER = re.compile(r"\b(?:shorter|smaller|fewer|less (?:items|movies|films|options))(?:\s+(?:list|please))?\b")
_LONGER = re.compile(r"\b(?:longer|bigger|larger)(?:\s+list)?\b|\bmore (?:options|items|results|choices)\b")
_MORE = re.compile(r"\b(?:more|others?|something else|anything else|different ones?|next|again)\b")
_RESET = re.compile(r"\b(?:start over|reset|clear (?:everything|all|the filters?)|forget (?:it|everything|that))\b")
_ANY_YEAR = re.compile(
    r"\b(?:any (?:year|decade|era|time)|(?:don't|dont|do not) care (?:about|for) the (?:year|decade))\b"
)
_DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                 "seventies": 1970, "eighties": 1980, "nineties": 1990, "noughties": 2000}  # fmt: skip
_DECADE = re.compile(
    r"\b(?:(early|mid|late)[\s-]+)?(?:the\s+)?(?:(1[89]|20)?(\d)0'?s|'(\d)0s|(" + "|".join(_DECADE_WORDS) + r"))\b"
)
_YEAR = r"((?:18|19|20)\d\d)"
_RANGE = re.compile(rf"\b(?:between|from)\s+{_YEAR}\s+(?:and|to|-|until)\s+{_YEAR}\b|\b{_YEAR}\s*(?:-|to)\s*{_YEAR}\b")
_BOUND = re.compile(
    rf"\b(before|earlier than|older than|pre-?|until|up to|by|after|later than|newer than|since|post-?|from)\s*{_YEAR}"
    r"(?:\s+(?:on|onwards?|or later|or earlier))?\b"
)
_BARE_YEAR = re.compile(rf"\b(?:in|of|from)?\s*{_YEAR}\b")
_OLDER = re.compile(r"\b(?:older|earlier|less recent|classics?|old(?:er)? ones|vintage)\b")
_NEWER = re.compile(r"\b(?:newer|more recent|recent|latest|modern|new(?:er)? ones)\b")
_REJECT_CUE = re.compile(
    r"\b(?:not|no|drop|remove|skip|hide|without|hate|hated|dislike|disliked|(?:didn't|did not) like|"
    r"(?:don't|do not) (?:like|want)|seen|already (?:saw|seen|watched)|watched)\s+$"
)
_LIKE_CUE = re.compile(r"\b(?:liked?|loved?|enjoyed|great|perfect|(?:yes|yeah),?|keep)\s+$")
_THAT_ONE = re.compile(r"\b(?:not|no|drop|skip|remove)\s+(?:that|this|the top|the first)(?:\s+one)?\b")
_TITLE_REF = re.compile(
    r"\b(?:(more|something|anything|movies?|films?|stuff|ones?)\s+)?"
    r"(like|similar to|in the vein of|along the lines of)\s+"
    r"|\b(i(?:'ve)?\s+(?:really\s+)?(?:liked|loved|enjoyed|adored)|fan of)\s+"
    r"|\b(not|no|without|hated?|disliked?|(?:didn't|did not) like|(?:don't|do not) (?:like|want)|seen|drop|remove)\s+"
)
_WANT_LIKE = re.compile(r"\b(?:i'd|i would|would|we'd|you'd|i)\s*$")
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_STOP = frozenset(
    """
    a an the some any something anything me i i'd i'm i've i'll ive im id we us you my please hmm well oh sure
    want wanted would like love give show recommend recommendations suggest find get need looking look for to of
    from in on with and or but that this it is are be was were maybe perhaps really very so too also just only
    more less one ones movie movies film films title titles item items pick picks good great nice best cool fun
    kind sort type watch watching see let's lets tonight today now again instead actually ok okay thanks thank
    yes no not what how about can could should there here list shorter longer top other others else different
    new era years year decade s first second third fourth fifth sixth seventh eighth ninth tenth last
    """.split()
)


@dataclass
class TitleRef:
    """A catalogue item the user referred to, resolved (or not) by `TitleIndex.resolve`."""

    polarity: str  # "like" | "dislike"
    match: TitleMatch


@dataclass
class DialogueAct:
    """Everything one message says; `chat.ChatSession` applies it to the session state."""

    genres: list[str] = field(default_factory=list)
    excluded_genres: list[str] = field(default_factory=list)
    additive: bool = False  # "also funny": add genres instead of replacing the required ones
    year_min: int | None = None
    year_max: int | None = None
    years_given: bool = False
    clear_years: bool = False
    relative: str | None = None  # "older" | "newer": relative to the last answer's years
    k: int | None = None
    k_change: str | None = None  # "shorter" | "longer"
    rejected_positions: list[int] = field(default_factory=list)  # 0-based, into the last answer
    liked_positions: list[int] = field(default_factory=list)
    titles: list[TitleRef] = field(default_factory=list)
    more: bool = False
    reset: bool = False
    query: str | None = None  # content words left over: the user's free-text preference

    def changes_constraints(self) -> bool:
        return bool(
            self.genres or self.excluded_genres or self.years_given or self.clear_years or self.relative
            or self.query or self.titles or self.reset or self.liked_positions
        )  # fmt: skip

    def is_refinement(self) -> bool:
        """Only critiques of the last answer (rejections, list length): its other items may stay."""
        return bool(self.rejected_positions or self.k or self.k_change) and not (
            self.changes_constraints() or self.more
        )


class _Text:
    """The lowercased message with consumed spans blanked out, so no phrase is read twice.

    `control` marks the spans that steer the dialogue (critiques, list length, titles); the rest of the
    message, genre and year words included, is what the user wants and becomes the free-text query.
    """

    def __init__(self, text: str):
        self.raw = " ".join(text.replace("\u2019", "'").split())
        # Per character, so offsets in `s` stay offsets in `raw` ("İ".lower() is two characters).
        self.s = "".join(c.lower() if len(c.lower()) == 1 else c for c in self.raw)
        self.control = [False] * len(self.raw)

    def take(self, start: int, end: int, control: bool = True) -> None:
        self.s = self.s[:start] + " " * (end - start) + self.s[end:]
        if control:
            self.control[start:end] = [True] * (end - start)

    def finditer(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return list(pattern.finditer(self.s))


def parse_message(
    text: str,
    genres: Sequence[str],
    titles: TitleIndex,
    last_titles: Sequence[str] = (),
    search: Callable[[str, int], list[str]] | None = None,
) -> DialogueAct:
    """Read one user message.

    Args:
        text: what the user typed.
        genres: the catalogue's genre names (only these can become constraints).
        titles: the catalogue's title index.
        last_titles: titles of the last answer, in rank order ("not the second", "not Alien").
        search: optional `search(text, n) -> item ids` (Chroma text query) for titles no rule finds.

    Returns:
        The act; empty when the message says nothing recognisable (the caller treats it as "more").
    """
    t, act = _Text(text), DialogueAct()
    for m in t.finditer(_RESET):
        act.reset = True
        t.take(m.start(), m.end())
    _read_positions(t, act, len(last_titles))
    _read_titles(t, act, titles, last_titles, search)
    _read_k(t, act)
    _read_years(t, act)
    _read_genres(t, act, genres)
    act.more = bool(t.finditer(_MORE)) and not act.k_change
    words = [w for w in _WORD.findall(t.s) if w not in _STOP and not w.isdigit()]
    if words:
        act.query = _query_text(t)
    return act


# --- readers; each blanks out what it used -------------------------------------------------------------------


def _read_titles(
    t: _Text, act: DialogueAct, titles: TitleIndex, last: Sequence[str], search: Callable[[str, int], list[str]] | None
) -> None:
    last_index = TitleIndex.from_refs([ItemRef(item_id=str(i), title=x) for i, x in enumerate(last)]) if last else None
    for m in t.finditer(_TITLE_REF):
        if m.group(2) and not m.group(1) and _WANT_LIKE.search(t.s[: m.start()]):
            continue  # "I'd like a comedy", "I like westerns": a preference, not a title
        polarity = "dislike" if m.group(4) else "like"
        rest = t.s[m.end() :]
        if last_index is not None and polarity == "dislike":  # "not Heat" names an item of the last answer
            in_last = last_index.resolve_prefix(rest) or last_index.resolve_prefix(rest, fuzzy=True)
            in_catalogue = titles.resolve_prefix(rest)
            # The longer reading wins: "not alien 3" is Alien 3, even when the last answer holds Alien.
            if in_last is not None and (in_catalogue is None or in_last[1] >= in_catalogue[1]):
                act.rejected_positions.append(int(in_last[0].options[0].item_id))
                t.take(m.start(), m.end() + in_last[1])
                continue
        # "more like X", "similar to X", "I loved X" surely name a title: fuzzy matching and search may help.
        explicit = bool(m.group(1) or m.group(3) or (m.group(2) or "like") != "like")
        hit = titles.resolve_prefix(rest, fuzzy=explicit, search=search if explicit else None)
        if hit is None or not hit[0].options:
            if explicit and polarity == "like" and clause(rest).strip() and not _mentions_genre(rest):
                act.titles.append(TitleRef(polarity, TitleMatch(phrase=clause(rest).strip(), options=[])))
                t.take(m.start(), m.end() + len(clause(rest)))
            continue
        act.titles.append(TitleRef(polarity, hit[0]))
        # "3 movies like X": leave "3 movies" for the list-length reader.
        t.take(m.start(2) if m.group(2) else m.start(), m.end() + hit[1])


def _read_positions(t: _Text, act: DialogueAct, n_last: int) -> None:
    if not n_last:
        return
    for m in t.finditer(_THAT_ONE):
        act.rejected_positions.append(0)
        t.take(m.start(), m.end())
    for m in t.finditer(POSITION):
        idx = position_index(m, n_last)
        offset = max(0, m.start() - 30)
        before = t.s[offset : m.start()]
        cue = _REJECT_CUE.search(before) or _LIKE_CUE.search(before)
        if cue is None:
            continue  # "the second" alone is not a critique
        if idx is not None:  # out of range ("not the fifth" of a 3-item answer): read, but nothing to drop
            reject = cue.re is _REJECT_CUE
            (act.rejected_positions if reject else act.liked_positions).append(idx)
        t.take(offset + cue.start(), m.end())
    act.rejected_positions = list(dict.fromkeys(act.rejected_positions))


def _read_k(t: _Text, act: DialogueAct) -> None:
    for pattern in _K_PATTERNS:
        for m in t.finditer(pattern):
            n = m.group(1)
            value = int(n) if n.isdigit() else _NUM_WORDS[n]
            if 1 <= value <= 50:
                act.k = value
                t.take(m.start(), m.end())
    for pattern, change in ((_SHORTER, "shorter"), (_LONGER, "longer")):
        for m in t.finditer(pattern):
            act.k_change = change
            t.take(m.start(), m.end())


def _read_years(t: _Text, act: DialogueAct) -> None:
    for m in t.finditer(_ANY_YEAR):
        act.clear_years = True
        t.take(m.start(), m.end(), control=False)
    for m in t.finditer(_RANGE):
        lo, hi = sorted(int(y) for y in m.groups() if y)
        act.year_min, act.year_max, act.years_given = lo, hi, True
        t.take(m.start(), m.end(), control=False)
    for m in t.finditer(_BOUND):
        word, year = m.group(1).rstrip("-"), int(m.group(2))
        if word in ("before", "earlier than", "older than", "pre"):
            act.year_max = year - 1
        elif word in ("until", "up to", "by"):
            act.year_max = year
        elif word in ("after", "later than", "newer than", "post"):
            act.year_min = year + 1
        elif word == "since" or m.group(0).rstrip().endswith(("on", "onwards", "later")):
            act.year_min = year
        elif word == "from":  # "from 1994": that year
            act.year_min = act.year_max = year
        else:  # "up to 1990 or earlier"
            act.year_max = year
        act.years_given = True
        t.take(m.start(), m.end(), control=False)
    for m in t.finditer(_DECADE):
        part, century, digit, short, word = m.groups()
        start = _DECADE_WORDS[word] if word else int((century or "19") + (digit or short) + "0")
        lo, hi = {"early": (0, 3), "mid": (3, 6), "late": (6, 9)}.get(part or "", (0, 9))
        act.year_min, act.year_max, act.years_given = start + lo, start + hi, True
        t.take(m.start(), m.end(), control=False)
    for m in t.finditer(_BARE_YEAR):
        year = int(m.group(1))
        act.year_min, act.year_max, act.years_given = year, year, True
        t.take(m.start(), m.end(), control=False)
    for pattern, rel in ((_OLDER, "older"), (_NEWER, "newer")):
        for m in t.finditer(pattern):
            act.relative = rel
            t.take(m.start(), m.end(), control=False)


def _read_genres(t: _Text, act: DialogueAct, genres: Sequence[str]) -> None:
    found: list[tuple[int, bool, tuple[str, ...]]] = []  # (position, negated, names): kept in the user's order
    for phrase, names in _genre_lexicon(tuple(genres)):
        for m in t.finditer(re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])")):
            before = t.s[: m.start()]
            clause = _CLAUSE.split(before)[-1] if before else ""
            neg = _NEGATION.search(clause)
            found.append((m.start(), bool(neg), names))
            # "no horror" is removed from the query too: its embedding would pull towards horror.
            start = m.start() - len(clause) + neg.start() if neg else m.start()
            t.take(start, m.end(), control=bool(neg))
    for _, negated, names in sorted(found):
        target = act.excluded_genres if negated else act.genres
        target.extend(n for n in names if n not in target)
    if act.genres and _ADDITIVE.search(t.s):
        act.additive = True
    act.genres = [g for g in act.genres if g not in act.excluded_genres]


# --- helpers -------------------------------------------------------------------------------------------------


def _genre_lexicon(genres: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(phrase, genre names) pairs for the catalogue's genres, longest phrase first."""
    known = set(genres)
    pairs: dict[str, tuple[str, ...]] = {g.lower(): (g,) for g in genres}
    for name, words in GENRE_SYNONYMS.items():
        if name in known:
            pairs.update({w: (name,) for w in words})
    pairs.update({w: gs for w, gs in _PAIRS.items() if set(gs) <= known})
    return sorted(pairs.items(), key=lambda p: -len(p[0]))


def _mentions_genre(text: str) -> bool:
    head = clause(text)
    return any(re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", head) for p, _ in _genre_lexicon(tuple(GENRE_SYNONYMS)))


def _query_text(t: _Text) -> str | None:
    """The message without the critique/length/title phrases that were read (genre and year words stay)."""
    text = "".join(" " if control else c for c, control in zip(t.raw, t.control, strict=True))
    text = re.sub(r"\s+", " ", re.sub(r"\s+([.,;!?])", r"\1", text)).strip(" ,.;!?")
    return text or None
