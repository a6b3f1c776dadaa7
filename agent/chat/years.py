"""Years in a message: decades, ranges, bounds (negated ones too) and relative words, and how they apply.

"nothing before 1990" is a lower bound (1990 or later), "before 1990" an upper one (1989 or earlier):
a negation word in front of a bound word flips it, so the bound readers look for one first. A period
is a year ("1994", "'94") or a decade ("the 80s", "early nineties"); bounds take either ("before the 80s"
-> 1979 or earlier). "older"/"newer" move one step from the list the user was shown: past the median
year of what was shown, never to the end of the catalogue (`resolve_relative`).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from reasonrec.agent.chat.message import Message
from reasonrec.agent.chat.state import ChatConstraints

DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                "seventies": 1970, "eighties": 1980, "nineties": 1990, "noughties": 2000}  # fmt: skip
_DECADE = (
    r"(?:(?:early|mid|late)[\s-]+)?(?:the\s+)?(?:(?:18|19|20)?\d0'?s|'\d0'?s|" + "|".join(DECADE_WORDS) + r")(?![\w'])"
)
_YEAR = r"(?:(?:18|19|20)\d\d|'\d\d)(?![\w'])"
_PERIOD = rf"(?:{_DECADE}|{_YEAR})"
_NEG = (
    r"(?:not|no|nothing|none|never|avoid|(?:don't|dont|do not) want (?:anything|something|movies|films)|"
    r"(?:don't|dont|do not) (?:show|give) me (?:anything|movies|films))"
    r"(?:\s+(?:made|released|filmed|from|movies?|films?|anything|at all|that's|that is|that are|dated|please))*\s+"
)
_BEFORE = r"(?:before|earlier than|older than|prior to|pre-?)"
_AFTER = r"(?:after|later than|newer than|past|post-?)"
_NEGATED = re.compile(rf"\b{_NEG}({_BEFORE}|{_AFTER})\s*({_PERIOD})")
_RANGE = re.compile(
    rf"\b(?:between|from)\s+({_PERIOD})\s+(?:and|to|-|until|till|through)\s+({_PERIOD})"
    rf"|(?<![\w'])({_PERIOD})\s*(?:-|–|to|or|and|&|/)\s*({_PERIOD})"
    r"|\b((?:18|19|20)\d\d)\s*(?:-|–|to)\s*(\d\d)(?![\w'])"  # "1990-95"
)
_UPPER = re.compile(
    rf"\b(?:until|till|up to|up until|through|thru|by)\s+({_PERIOD})"
    rf"|({_PERIOD})\s+(?:or|and) (?:earlier|before|older)\b"
)
_LOWER = re.compile(
    rf"\b(?:since|starting(?: from| in)?)\s+({_PERIOD})|\b(?:from\s+|in\s+)?({_PERIOD})\s*(?:on|onwards?|\+|or later|"
    rf"and later|or newer|and newer|and up|or after|and after)(?![\w'])"
)
_STRICT = re.compile(rf"\b({_BEFORE}|{_AFTER})\s*({_PERIOD})")
_PLAIN = re.compile(rf"(?:\b(?:in|of|from)\s+)?(?<![\w'])({_PERIOD})")
_ANY_YEAR = re.compile(
    r"\b(?:any (?:year|decade|era|time)|(?:don't|dont|do not) care (?:about|for) (?:the )?(?:year|decade|age)|"
    r"(?:ignore|drop|forget) the (?:year|years|decade|dates?))\b"
)
_OLDER = re.compile(r"\b(?:older|earlier|less recent|classics?|old(?:er)? ones|vintage|even older)\b")
_NEWER = re.compile(r"\b(?:newer|more recent|recent|latest|modern|new(?:er)? ones|more modern)\b")


@dataclass
class YearReading:
    """What a message says about release years."""

    year_min: int | None = None
    year_max: int | None = None
    given: bool = False  # a bound or a period was stated
    clear: bool = False  # "any year"
    relative: str | None = None  # "older" | "newer"


def period(text: str) -> tuple[int, int]:
    """First and last year of a period: '1994' -> (1994, 1994), 'the late 80s' -> (1986, 1989), "'94" -> 1994."""
    s = " ".join(text.lower().split()).removeprefix("the ").strip()
    m = re.fullmatch(r"(?:(early|mid|late)[\s-]+)(?:the\s+)?(.+)", s)
    part, body = (m.group(1), m.group(2)) if m else (None, s)
    if re.fullmatch(r"(?:18|19|20)\d\d", body):
        return int(body), int(body)
    if re.fullmatch(r"'\d\d", body):
        year = int(body[1:])
        return (1900 + year, 1900 + year) if year > 30 else (2000 + year, 2000 + year)
    if body in DECADE_WORDS:
        start = DECADE_WORDS[body]
    else:
        digits = re.sub(r"\D", "", body)
        start = (
            int(digits) if len(digits) == 4 else int(digits) + (1900 if len(digits) == 2 and digits != "00" else 2000)
        )
    lo, hi = {"early": (0, 3), "mid": (3, 6), "late": (6, 9)}.get(part or "", (0, 9))
    return start + lo, start + hi


def read_years(m: Message) -> YearReading:
    """Read "any year", negated bounds, ranges, bounds, periods and relative words, in that order."""
    out = YearReading()
    for hit in m.finditer(_ANY_YEAR):
        out.clear = True
        m.take(hit.start(), hit.end(), control=False)
    for hit in m.finditer(_NEGATED):  # "nothing before 1990": 1990 or later
        lo, hi = period(hit.group(2))
        if re.fullmatch(_BEFORE, hit.group(1)):
            out.year_min = lo
        else:
            out.year_max = hi
        _took(m, out, hit)
    for hit in m.finditer(_RANGE):
        if hit.group(5):
            lo, hi = int(hit.group(5)), int(hit.group(5)[:2] + hit.group(6))
        else:
            first, second = (hit.group(1), hit.group(2)) if hit.group(1) else (hit.group(3), hit.group(4))
            lo, hi = period(first)[0], period(second)[1]
        if lo > hi:
            continue  # "1995-12": not a range
        out.year_min, out.year_max = lo, hi
        _took(m, out, hit)
    for hit in m.finditer(_UPPER):
        out.year_max = period(hit.group(1) or hit.group(2))[1]
        _took(m, out, hit)
    for hit in m.finditer(_LOWER):
        out.year_min = period(hit.group(1) or hit.group(2))[0]
        _took(m, out, hit)
    for hit in m.finditer(_STRICT):
        lo, hi = period(hit.group(2))
        if re.fullmatch(_BEFORE, hit.group(1)):
            out.year_max = lo - 1
        else:
            out.year_min = hi + 1
        _took(m, out, hit)
    for hit in m.finditer(_PLAIN):
        out.year_min, out.year_max = period(hit.group(1))
        _took(m, out, hit)
    for pattern, rel in ((_OLDER, "older"), (_NEWER, "newer")):
        for hit in m.finditer(pattern):
            out.relative = rel
            m.take(hit.start(), hit.end(), control=False)
    return out


def _took(m: Message, out: YearReading, hit: re.Match[str]) -> None:
    out.given = True
    m.take(hit.start(), hit.end(), control=False)


def resolve_relative(direction: str, shown: Sequence[int], catalogue: Sequence[int]) -> tuple[int, str]:
    """The bound "older"/"newer" sets: one step past the median year of `shown` (or of the catalogue).

    Returns:
        (year, note): the new `year_max` for "older" or `year_min` for "newer", and a short explanation
        ("after 1994, the middle of the last list"). The year is clamped to the catalogue's range.
    """
    base = shown if shown else catalogue
    middle = int(statistics.median_low(base))
    where = "the middle of the last list" if shown else "the middle of the catalogue"
    lo, hi = min(catalogue), max(catalogue)
    if direction == "older":
        return max(lo, middle - 1), f"before {middle}, {where}"
    return min(hi, middle + 1), f"after {middle}, {where}"


def apply_years(c: ChatConstraints, reading: YearReading, shown: Sequence[int], catalogue: Sequence[int]) -> str | None:
    """Apply a year reading to the session's constraints (in place); returns a note for relative moves.

    A stated bound replaces the same bound; a full period replaces both. "older"/"newer" set one bound
    from `shown` and drop the other (after "the 80s", "newer" means past what was shown, not 1985-1989).
    When the bounds cross, the newest statement wins.
    """
    note = None
    if reading.clear:
        c.year_min = c.year_max = None
    if reading.given:
        if reading.year_min is not None:
            c.year_min = reading.year_min
        if reading.year_max is not None:
            c.year_max = reading.year_max
    if reading.relative:
        year, note = resolve_relative(reading.relative, shown, catalogue)
        if reading.relative == "older":
            c.year_max, c.year_min = year, None
        else:
            c.year_min, c.year_max = year, None
    if c.year_min is not None and c.year_max is not None and c.year_min > c.year_max:
        if reading.relative == "older" or (reading.year_max is not None and reading.year_min is None):
            c.year_min = None
        else:
            c.year_max = None
    return note
