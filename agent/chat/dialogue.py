"""Dialogue understanding for chat: one user message -> a `DialogueAct` (what the message asks for).

Rules first, because on a 135M model they are far more reliable than asking the LM. The readers run in
an order that keeps each phrase with the reader that owns it, and blank out what they used
(`message.Message`), so nothing is read twice:

1. the language (`language`): a message that is not English gets what its genre words, decades and
   list lengths allow, and the reply says only English is fully understood;
2. critiques of the last answer: "not that one", "not the second", "more like the second one";
3. titles ("more like Termnator 2", "not Heat", "I loved Se7en"), resolved by `TitleIndex`, before
   any number is read, so "Die Hard 2" keeps its 2;
4. numbers (`numbers`): ages, running times and head counts first, then the list length;
5. years (`years`): negated bounds ("nothing before 1990"), ranges, bounds, decades, "older"/"newer";
6. genres and moods (`moods`), with negation scope, plus the embedder's guess for mood-like words no
   rule knows (`MoodGuesser`, only when the caller passes one).

Whatever content words remain become the free-text `query` that retrieval and the prompt receive.
Nothing here touches the model or the store: title look-up takes an optional `search` callable (the
Chroma text query) as its last resort, and mood guessing an optional `MoodGuesser`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reasonrec.agent.chat.language import NAMES, NEGATION, detect_language, foreign_decade, foreign_k, foreign_lexicon
from reasonrec.agent.chat.message import Message
from reasonrec.agent.chat.moods import MoodGuesser, genre_lexicon, mood_candidates, read_genres
from reasonrec.agent.chat.numbers import read_numbers
from reasonrec.agent.chat.titles import POSITION, ItemRef, TitleIndex, TitleMatch, clause, pick_option, position_index
from reasonrec.agent.chat.years import YearReading, read_years

__all__ = ["DialogueAct", "ItemRef", "TitleIndex", "TitleMatch", "parse_message", "pick_option"]

_MORE = re.compile(r"\b(?:more|others?|something else|anything else|different ones?|next|again)\b")
_RESET = re.compile(r"\b(?:start over|reset|clear (?:everything|all|the filters?)|forget (?:it|everything|that))\b")
_NOT_A = re.compile(r"\bnot (?:a |much of a |really a |the biggest |a big )?$")
_NOT_SEEN = re.compile(r"\b(?:haven't|have not|havent|never|not)\s+(?:yet\s+)?$")
_REJECT_CUE = re.compile(
    r"\b(?:not|no|drop|remove|skip|hide|without|hate|hated|dislike|disliked|(?:didn't|did not) like|"
    r"(?:don't|do not) (?:like|want)|seen|already (?:saw|seen|watched)|watched)\s+$"
)
_LIKE_CUE = re.compile(
    r"\b(?:(?:more|something|anything|stuff)\s+like|liked?|loved?|enjoyed|great|perfect|(?:yes|yeah),?|keep)\s+$"
)
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
    old fine surprise whatever anyway something's have has got made released
    """.split()
)


@dataclass
class TitleRef:
    """A catalogue item the user referred to, resolved (or not) by `TitleIndex.resolve`."""

    polarity: str  # "like" | "dislike"
    match: TitleMatch


@dataclass
class DialogueAct:
    """Everything one message says; `session.ChatSession` applies it to the session state."""

    genres: list[str] = field(default_factory=list)
    excluded_genres: list[str] = field(default_factory=list)
    additive: bool = False  # "also funny": add genres instead of replacing the required ones
    guessed_genres: dict[str, str] = field(default_factory=dict)  # word -> genre, the embedder's guess
    year_min: int | None = None
    year_max: int | None = None
    years_given: bool = False
    clear_years: bool = False
    relative: str | None = None  # "older" | "newer": one step from the last answer's years
    k: int | None = None
    k_change: str | None = None  # "shorter" | "longer"
    age: int | None = None  # "I'm 12": read so that it is not a list length
    unsupported: list[str] = field(default_factory=list)  # asked for, not in the catalogue ("running time")
    language: str | None = None  # not English: a code ("es") or a script name ("Cyrillic")
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

    def understood_anything(self) -> bool:
        return self.changes_constraints() or bool(
            self.rejected_positions or self.k or self.k_change or self.more or self.age or self.unsupported
        )

    def year_reading(self) -> YearReading:
        return YearReading(self.year_min, self.year_max, self.years_given, self.clear_years, self.relative)


def parse_message(
    text: str,
    genres: Sequence[str],
    titles: TitleIndex,
    last_titles: Sequence[str] = (),
    search: Callable[[str, int], list[str]] | None = None,
    moods: MoodGuesser | None = None,
) -> DialogueAct:
    """Read one user message.

    Args:
        text: what the user typed.
        genres: the catalogue's genre names (only these can become constraints).
        titles: the catalogue's title index.
        last_titles: titles of the last answer, in rank order ("not the second", "not Alien").
        search: optional `search(text, n) -> item ids` (Chroma text query) for titles no rule finds.
        moods: optional embedder-backed guesser for mood words no rule knows ("eerie" -> Horror).

    Returns:
        The act; empty when the message says nothing recognisable (the caller treats it as "more").
    """
    m, act = Message(text), DialogueAct()
    act.language = detect_language(m.raw)
    if act.language is not None:
        return _parse_foreign(m, act, genres)
    for hit in m.finditer(_RESET):
        act.reset = True
        m.take(hit.start(), hit.end())
    _read_positions(m, act, len(last_titles))
    _read_titles(m, act, titles, last_titles, search)
    lexicon = genre_lexicon(genres)
    numbers = read_numbers(m, [p for p, _ in lexicon])
    act.k, act.k_change, act.age, act.unsupported = numbers.k, numbers.k_change, numbers.age, numbers.unsupported
    _set_years(act, read_years(m))
    if moods is not None:
        known = {p for p, _ in lexicon}
        act.guessed_genres = moods.guess(w for w in mood_candidates(m, _STOP) if w not in known)
        lexicon = genre_lexicon(genres, {w: (g,) for w, g in act.guessed_genres.items()})
    _set_genres(act, read_genres(m, lexicon))
    act.more = bool(m.finditer(_MORE)) and not act.k_change
    if any(w not in _STOP and not w.isdigit() for w in _WORD.findall(m.s)):
        act.query = m.remainder()
    return act


def _parse_foreign(m: Message, act: DialogueAct, genres: Sequence[str]) -> DialogueAct:
    """What a message in another language allows: genre words, negations, decades, years, list length.

    No query: MiniLM and the prompt are English, and a foreign sentence would only add noise.
    """
    if act.language in NAMES:
        _set_genres(act, read_genres(m, genre_lexicon(genres, foreign_lexicon()), negation=NEGATION))
    decade = foreign_decade(m.s)
    reading = read_years(m)
    if decade is not None:
        reading.year_min, reading.year_max, reading.given = decade[0], decade[1], True
    reading.relative = None  # English relative words in a foreign sentence are accidents ("modern")
    _set_years(act, reading)
    act.k = foreign_k(m.s)
    return act


def _set_years(act: DialogueAct, r: YearReading) -> None:
    act.year_min, act.year_max, act.years_given, act.clear_years, act.relative = (
        r.year_min, r.year_max, r.given, r.clear, r.relative
    )  # fmt: skip


def _set_genres(act: DialogueAct, g: object) -> None:
    act.genres, act.excluded_genres, act.additive = g.genres, g.excluded, g.additive  # type: ignore[attr-defined]


# --- readers of critiques and titles; each blanks out what it used --------------------------------------------


def _read_titles(
    m: Message,
    act: DialogueAct,
    titles: TitleIndex,
    last: Sequence[str],
    search: Callable[[str, int], list[str]] | None,
) -> None:
    last_index = TitleIndex.from_refs([ItemRef(item_id=str(i), title=x) for i, x in enumerate(last)]) if last else None
    for cue in m.finditer(_TITLE_REF):
        before = m.s[: cue.start()]
        if cue.group(2) and not cue.group(1) and _WANT_LIKE.search(before):
            continue  # "I'd like a comedy", "I like westerns": a preference, not a title
        if cue.group(4) == "seen" and _NOT_SEEN.search(before):
            continue  # "I haven't seen Heat" is no rejection
        polarity = "dislike" if cue.group(4) or (cue.group(3) == "fan of" and _NOT_A.search(before)) else "like"
        rest = m.s[cue.end() :]
        if last_index is not None and polarity == "dislike":  # "not Heat" names an item of the last answer
            in_last = last_index.resolve_prefix(rest) or last_index.resolve_prefix(rest, fuzzy=True)
            in_catalogue = titles.resolve_prefix(rest)
            # The longer reading wins: "not alien 3" is Alien 3, even when the last answer holds Alien.
            if in_last is not None and (in_catalogue is None or in_last[1] >= in_catalogue[1]):
                act.rejected_positions.append(int(in_last[0].options[0].item_id))
                m.take(cue.start(), cue.end() + in_last[1])
                continue
        # "more like X", "similar to X", "I loved X" surely name a title: fuzzy matching and search may help.
        explicit = bool(cue.group(1) or cue.group(3) or (cue.group(2) or "like") != "like")
        hit = titles.resolve_prefix(rest, fuzzy=explicit, search=search if explicit else None)
        if hit is None or not hit[0].options:
            if explicit and polarity == "like" and clause(rest).strip() and not _mentions_genre(rest):
                act.titles.append(TitleRef(polarity, TitleMatch(phrase=clause(rest).strip(), options=[])))
                m.take(cue.start(), cue.end() + len(clause(rest)))
            continue
        written = m.raw[cue.end() : cue.end() + hit[1]]
        if not hit[0].fuzzy and written.islower() and written.strip() in _genre_phrases():
            continue  # "no war", "a fan of war movies": the genre; "more like Kids" (capitalised) is the title
        if cue.group(4) and re.match(r"an? ", written.lower()):
            continue  # "not a fan of ...": an indefinite article starts a common noun, not a title
        act.titles.append(TitleRef(polarity, hit[0]))
        # "3 movies like X": leave "3 movies" for the list-length reader; "more like X" is no "more".
        counted = cue.group(2) and cue.group(1) in ("movie", "movies", "film", "films", "one", "ones")
        m.take(cue.start(2) if counted else cue.start(), cue.end() + hit[1])


def _read_positions(m: Message, act: DialogueAct, n_last: int) -> None:
    if not n_last:
        return
    for hit in m.finditer(_THAT_ONE):
        act.rejected_positions.append(0)
        m.take(hit.start(), hit.end())
    for hit in m.finditer(POSITION):
        idx = position_index(hit, n_last)
        offset = max(0, hit.start() - 30)
        before = m.s[offset : hit.start()]
        cue = _REJECT_CUE.search(before) or _LIKE_CUE.search(before)
        if cue is None:
            continue  # "the second" alone is not a critique
        if idx is not None:  # out of range ("not the fifth" of a 3-item answer): read, but nothing to drop
            reject = cue.re is _REJECT_CUE
            (act.rejected_positions if reject else act.liked_positions).append(idx)
        m.take(offset + cue.start(), hit.end())
    act.rejected_positions = list(dict.fromkeys(act.rejected_positions))


@functools.cache
def _genre_phrases() -> frozenset[str]:
    return frozenset(p for p, _ in genre_lexicon(_ALL_GENRES))


def _mentions_genre(text: str) -> bool:
    head = clause(text)
    return any(re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", head) for p in _genre_phrases())


_ALL_GENRES = (
    "Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir Horror Musical Mystery "
    "Romance Sci-Fi Thriller War Western"
).split()
