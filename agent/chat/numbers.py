"""Numbers in a message: which one is a list length, and which are ages, running times or other counts.

Why its own reader: a number is only a list length when it counts what is listed ("top 3", "5 comedies",
"give me ten"); "I'm 12 years old", "my 8-year-old", "under 2 hours" and "for 4 friends" are not. Ages
and counts of people are read (and blanked) first, so the list-length patterns never see them. Years
and decades are `years`'s job; titles with numerals ("Die Hard 2") are read before this runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from reasonrec.agent.chat.message import Message

MAX_K = 50  # the longest list a chat turn shows (session.open_session, update.apply_act)
NUM_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {"a couple of": 2, "a couple": 2, "couple of": 2, "a few": 3, "a dozen": 12, "half a dozen": 6}
# "one" is left out of the general pattern: "that one", "the second one", "one of those" are not lengths.
_NUM = r"(\d{1,2}|" + "|".join(sorted((w for w in NUM_WORDS if w not in ("zero", "one")), key=len, reverse=True)) + r")"
_NOUNS = r"(?:movies?|films?|flicks?|titles?|items?|picks?|recs|recommendations?|suggestions?|options?|results?|ones)"
# Words that may stand between a number and the noun it counts ("3 good old comedies", "5 funny sci-fi films").
_COUNTED_ADJ = (
    "good great more other new old older newer recent classic fun different random similar decent solid "
    "top best underrated lesser-known obscure popular famous"
).split()
_PEOPLE = (
    r"(?:of us|people|persons|friends|guys|girls|boys|kids|children|adults|teens|teenagers|grandkids|"
    r"stars?|times|days|weeks|months|episodes|seasons|dollars|bucks|oscars?|awards?|people over)"
)
_RELATIVE = (
    r"(?:son|daughter|kid|kids|child|children|boy|girl|nephew|niece|brother|sister|grandson|granddaughter|"
    r"little one|toddler)"
)
_AGE_PATTERNS = (
    re.compile(
        rf"\b(?:i'm|i am|im|he's|he is|she's|she is|they're|they are|(?:my|our) {_RELATIVE}(?:\s+is|\s+are)?)"
        rf"\s+(?:only\s+|just\s+|turning\s+|almost\s+)?{_NUM}\b(?:[\s-]*(?:years?|yrs?)[\s-]*old)?"
    ),
    re.compile(rf"\b{_NUM}[\s-]*(?:years?|yrs?)[\s-]*olds?\b"),
    re.compile(rf"\b(?:aged?|ages)\s+{_NUM}(?:\s*(?:-|to|and)\s*{_NUM})?\b"),
)
_BIRTH = re.compile(r"\b(?:i was |i'm |i am )?born in (?:(?:18|19|20)\d\d|'\d\d)\b")
_RUNTIME = re.compile(
    rf"\b(?:(?:under|less than|at most|no more than|over|more than|about|around|max|only have|have|got)\s+)?"
    rf"{_NUM}\s*(?:hours?|hrs?|minutes?|mins?)\b(?:\s+(?:long|or less|or so|max))?"
    r"|\b(?:shorter|short|longer|long|quick)\s+(?:movies?|films?|ones)\b|\b(?:running time|runtime|run time)\b"
)
_OTHER_COUNT = re.compile(rf"\b(?:for\s+|with\s+|we are\s+|we're\s+)?{_NUM}\s+{_PEOPLE}\b")
_SHORTER = re.compile(r"\b(?:shorter|smaller|fewer|less (?:items|movies|films|options))(?:\s+(?:list|please))?\b")
_LONGER = re.compile(r"\b(?:longer|bigger|larger)(?:\s+list)?\b|\bmore (?:options|items|results|choices)\b")
_ONE = re.compile(
    r"\b(?:just|only|top)\s+one\b(?!\s+of)|\b(?:one|a single)\s+(?:movie|film|title|pick|recommendation)\b"
)


@dataclass
class NumberReading:
    """What the numbers of a message mean."""

    k: int | None = None
    k_change: str | None = None  # "shorter" | "longer"
    age: int | None = None
    unsupported: list[str] = field(default_factory=list)  # e.g. "running time": asked for, not in the catalogue


def number_value(token: str) -> int:
    """'12' -> 12, 'twelve' -> 12, 'a couple' -> 2."""
    token = " ".join(token.split())
    return int(token) if token.isdigit() else NUM_WORDS[token]


def read_numbers(m: Message, counted_words: Iterable[str] = ()) -> NumberReading:
    """Read ages, running times, other counts, then the list length, in that order.

    Args:
        m: the message (read spans are blanked out).
        counted_words: genre and mood phrases ("comedies", "sci-fi", "scary") that may stand between a
            number and the noun it counts, or be the counted noun themselves ("3 westerns").

    Returns:
        The reading; `k` only when a number counts the items to list (1 to 50).
    """
    out = NumberReading()
    for pattern in _AGE_PATTERNS:
        for hit in m.finditer(pattern):
            out.age = number_value(hit.group(1))
            m.take(hit.start(), hit.end())
    for hit in m.finditer(_BIRTH):
        m.take(hit.start(), hit.end())
    for hit in m.finditer(_RUNTIME):
        if "running time" not in out.unsupported:
            out.unsupported.append("running time")
        m.take(hit.start(), hit.end())
    for hit in m.finditer(_OTHER_COUNT):
        m.take(hit.start(), hit.end(), control=False)  # "for 4 friends": not a length, still what they want
    _read_length(m, out, counted_words)
    return out


def _read_length(m: Message, out: NumberReading, counted_words: Iterable[str]) -> None:
    words = sorted({*(re.escape(w) for w in counted_words), *_COUNTED_ADJ}, key=len, reverse=True)
    adj = r"(?:" + "|".join(words) + r")"
    plurals = [w for w in counted_words if w.endswith("s") and " " not in w]
    nouns = rf"(?:{_NOUNS}|" + "|".join(re.escape(w) for w in plurals) + ")" if plurals else _NOUNS
    counted = r"(?:\s+(?:" + adj + r"\s+){0,3}" + nouns + ")"
    patterns = (
        r"\b(?:top|just|only|give me|show me|list|list of|best|another|make it|suggest|recommend(?: me)?|"
        r"find me|pick|i want|i'd like|i need)\s+" + _NUM + r"\b" + counted + "?",
        r"\b" + _NUM + counted + r"\b",
        r"\b" + _NUM + r"\s+(?:more|others?)\b",
        r"^\s*" + _NUM + r"\s*(?:please|pls)?\s*$",
    )
    for text in patterns:
        pattern = re.compile(text)
        for hit in m.finditer(pattern):
            value = number_value(hit.group(1))
            if 1 <= value <= MAX_K:
                out.k = value
                # The counted noun stays: "3 westerns" still says Western to the genre reader.
                m.take(hit.start(), hit.end(1))
    for hit in m.finditer(_ONE):
        out.k = 1
        m.take(hit.start(), hit.end())
    for pattern, change in ((_SHORTER, "shorter"), (_LONGER, "longer")):
        for hit in m.finditer(pattern):
            out.k_change = change
            m.take(hit.start(), hit.end())
