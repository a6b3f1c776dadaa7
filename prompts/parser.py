"""Turn a model's answer into exactly k validated picks, whatever the model wrote.

The rank template (prompts/templates/rank.jinja) asks for one line per pick, best first:
`[C] short reason`. Small models drift from that, so this parser also reads numbered or bulleted
lines (`1. [C] ...`, `- C: ...`, `(C) ...`), lower-case labels, titles instead of labels, and JSON
anywhere in the text (fenced, wrapped in prose, or truncated: `json_answer.py`). Whatever it cannot use
is counted, not raised: names that are not candidates go to `off_candidate`, repeats to `duplicates`, and the list
is filled up to k from the retriever order with `source="fallback"` (the agent writes grounded
reasons for those). Only caller mistakes (bad `k`, empty candidates) raise `ConfigError`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from reasonrec.errors import ConfigError
from reasonrec.text import cut_at_word, front_article

from .json_answer import BRACKET_RE, json_entries

# Model output is bounded by max_new_tokens; anything longer is cut so that parsing stays linear-ish.
MAX_TEXT_CHARS = 65_536
# One char -> one char, so offsets into the text stay valid after normalising.
_NORMALISE = str.maketrans({"［": "[", "］": "]", "（": "(", "）": ")", "\r": "\n", "\u2028": "\n",
                            "\u2029": "\n", "\x0b": "\n", "\x0c": "\n", "\x85": "\n"})
_MARKER_RE = re.compile(r"(?:\d{1,3}\s*[.):]|\(\d{1,3}\)|#{1,6}|[-*•+>])\s*")
_PAREN_RE = re.compile(r"\(\s*([A-Za-z0-9]{1,4})\s*\)\s*(.*)")
_BARE_RE = re.compile(r"([A-Za-z0-9]{1,4})\s*(?:[).:]|\s[-–—]|[-–—]\s)\s*(.*)")
_LABELISH_RE = re.compile(r"\[?\s*([A-Za-z0-9]{1,4})\s*\]?")
_PREFILLED_RE = re.compile(r"\s*[A-Za-z0-9]{1,4}\s*\]")
_SPLIT_RE = re.compile(r"\s+[-–—:|]+\s+|:\s+|\s+\(because|\.\s+")
_YEAR_RE = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`", "„": "“"}


class ParsedEntry(BaseModel):
    """One pick: the label shown to the model, the item it stands for, and the model's reason."""

    model_config = ConfigDict(frozen=True)

    label: str
    item_id: str
    reason: str | None = None
    source: Literal["model", "retrieval", "fallback"]  # retrieval: scoring order where the LM had no weight


class ParsedRanking(BaseModel):
    """Exactly k picks plus counters that say how well the model followed the format."""

    entries: list[ParsedEntry]
    n_model: int
    n_fallback: int
    n_extra: int = 0  # distinct candidate picks the model made beyond k (dropped)
    off_candidate: list[str]
    duplicates: list[str]
    missing_reasons: int
    format: Literal["lines", "json", "mixed", "empty"]
    valid: bool

    @property
    def item_ids(self) -> list[str]:
        """Item ids in rank order."""
        return [e.item_id for e in self.entries]


class _Pick(NamedTuple):
    pos: tuple[int, int]  # (offset in text, index within a JSON value): the order picks were made
    name: str  # what the model wrote: a label, "[label]", or a title
    reason: Any
    strict: bool  # True: unresolved names are recorded as off-candidate; False: silently ignored
    any_case: bool  # lower-case labels allowed (bracketed or JSON forms)
    source: Literal["lines", "json"]


def parse_ranking(
    text: str,
    candidates: Mapping[str, str],
    k: int,
    titles: Mapping[str, str] | None = None,
    max_reason_chars: int = 300,
) -> ParsedRanking:
    """Parse a ranked answer into exactly `k` entries; never raises for anything the model wrote.

    Args:
        text: The assistant's answer. If the ranker prefilled "[", it may start with `C] reason`.
        candidates: label -> item_id, in retriever order (the fallback order).
        k: How many entries to return.
        titles: Optional label -> title, so an answer naming a title instead of a label resolves.
        max_reason_chars: Reasons are cut to this length at a word boundary.

    Returns:
        A `ParsedRanking` with `k` entries, model picks first, then fallbacks in retriever order.

    Raises:
        ConfigError: empty or non-mapping `candidates`, repeated item ids, `k` out of range, or
            `max_reason_chars` < 1 (all caller mistakes).
    """
    _check_args(candidates, k, max_reason_chars)
    text = _as_text(text)
    resolver = _Resolver(candidates, titles or {})
    json_picks, spans = _json_picks(text)
    picks = sorted(json_picks + _line_picks(text, spans, resolver), key=lambda p: p.pos)

    chosen: list[ParsedEntry] = []
    seen: set[str] = set()
    off: list[str] = []
    dups: list[str] = []
    n_extra, used = 0, set()
    for p in picks:
        label = resolver.resolve(p.name, p.any_case)
        if label is None:
            if p.strict:
                used.add(p.source)
                name = " ".join(_printable(p.name).split())[:40]
                if name and name not in off:
                    off.append(name)
            continue
        used.add(p.source)
        if label in seen:
            dups.append(label)
        elif len(chosen) < k:
            seen.add(label)
            reason = _clean_reason(p.reason, max_reason_chars)
            entry = ParsedEntry(label=label, item_id=str(candidates[label]), reason=reason, source="model")
            chosen.append(entry)
        else:
            seen.add(label)
            n_extra += 1
    n_model = len(chosen)
    missing = sum(e.reason is None for e in chosen)
    for label, item_id in candidates.items():
        if len(chosen) >= k:
            break
        if label not in seen:
            chosen.append(ParsedEntry(label=label, item_id=str(item_id), source="fallback"))
    fmt = "mixed" if len(used) == 2 else used.pop() if used else "empty"
    return ParsedRanking(
        entries=chosen, n_model=n_model, n_fallback=k - n_model, n_extra=n_extra, off_candidate=off,
        duplicates=dups, missing_reasons=missing, format=fmt,
        valid=n_model == k and not (n_extra or missing or off or dups),
    )


def _check_args(candidates: Any, k: Any, max_reason_chars: Any) -> None:
    if not isinstance(candidates, Mapping) or not candidates:
        got = f"{candidates!r:.60}"
        raise ConfigError(f"`candidates` must be a non-empty mapping label -> item_id, got {got}")
    n = len(candidates)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError(f"`k` must be between 1 and {n} (the number of candidates), got {k!r}")
    ids = [str(v) for v in candidates.values()]
    if len(set(ids)) != n or not all(isinstance(lab, str) and lab for lab in candidates):
        raise ConfigError("`candidates` labels must be non-empty strings and item ids must be unique")
    if isinstance(max_reason_chars, bool) or not isinstance(max_reason_chars, int) or max_reason_chars < 1:
        raise ConfigError(f"`max_reason_chars` must be an int >= 1, got {max_reason_chars!r}")


def _as_text(text: Any) -> str:
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text[:MAX_TEXT_CHARS].translate(_NORMALISE)
    # The ranker prefilled "[" and passed only the continuation: restore it so "C] why" reads normally.
    if _PREFILLED_RE.match(text):
        text = "[" + text.lstrip()
    return text


class _Resolver:
    """Maps what the model wrote (label in any case, "[C]", a title) to a candidate label."""

    def __init__(self, candidates: Mapping[str, str], titles: Mapping[str, str]) -> None:
        self.labels = set(candidates)
        self.lower: dict[str, str | None] = {}
        for lab in candidates:  # a case-folded label that two labels share is ambiguous -> None
            self.lower[lab.lower()] = None if lab.lower() in self.lower else lab
        self.titles: dict[str, str | None] = {}
        for lab, title in titles.items():
            if lab in self.labels and isinstance(title, str):
                for key in _title_keys(title):
                    self.titles[key] = lab if self.titles.get(key, lab) == lab else None

    def resolve(self, name: str, any_case: bool = True) -> str | None:
        s = name.strip().strip("*_ ")
        inner = s[1:-1].strip() if s[:1] in "[(" and s[-1:] in "])" else s
        if inner in self.labels:
            return inner
        if any_case and inner.lower() in self.lower:
            return self.lower[inner.lower()]
        for key in _title_keys(s) if self.titles else ():
            if self.titles.get(key):
                return self.titles[key]
        return None


def _title_keys(title: str) -> list[str]:
    """Lookup keys, most specific first: with year, without year, with a trailing article moved."""
    t = unicodedata.normalize("NFKC", title).strip().strip("*_\"'“”")
    no_year = _YEAR_RE.sub("", t)
    fronted = front_article(no_year)
    variants = [t, no_year] + ([fronted] if fronted != no_year else [])
    keys = []
    for v in variants:
        key = " ".join(re.sub(r"[\W_]+", " ", v.casefold()).split())
        if key and key not in keys:
            keys.append(key)
    return keys


def _line_picks(text: str, spans: list[tuple[int, int]], resolver: _Resolver) -> list[_Pick]:
    picks: list[_Pick] = []
    offset, pending = 0, None  # pending: index of the previous line's pick if it had no reason
    for raw in text.split("\n"):
        start, offset = offset, offset + len(raw) + 1
        line = raw.strip()
        if not line or any(a <= start < b for a, b in spans):
            pending = None
            continue
        found = _parse_line(line, start, resolver)
        if found:
            picks.extend(found)
            pending = len(picks) - 1 if len(found) == 1 and not _has_words(found[0].reason) else None
        elif pending is not None:  # "[C]" alone, reason on the next line
            picks[pending] = picks[pending]._replace(reason=line)
            pending = None
    return picks


def _parse_line(line: str, pos: int, resolver: _Resolver) -> list[_Pick]:
    body = _MARKER_RE.sub("", line, count=1) if _MARKER_RE.match(line) else line
    body = body.lstrip("*_ ")
    tokens = [t for t in re.split(r"[\s,;>/|]+", body) if t]
    if 0 < len(tokens) <= 30 and all(_LABELISH_RE.fullmatch(t) for t in tokens):
        names = [(t, t.startswith("[")) for t in tokens]  # a line of labels only: "[C] [A]", "C, A"
        if all(resolver.resolve(t, any_case) for t, any_case in names):
            return [_Pick((pos, i), t, None, False, a, "lines") for i, (t, a) in enumerate(names)]
    m = BRACKET_RE.match(body)
    if m:  # "[C] why": the canonical form; a bracketed non-candidate is an off-candidate pick
        return [_Pick((pos, 0), m.group(1), m.group(2), True, True, "lines")]
    for rx, any_case in ((_PAREN_RE, True), (_BARE_RE, False)):
        m = rx.match(body)
        if m and resolver.resolve(m.group(1), any_case):
            return [_Pick((pos, 0), m.group(1), m.group(2), False, any_case, "lines")]
    # A title instead of a label: try the longest head first, so "Star Wars: Episode V" beats "Star Wars".
    cuts = [m.start() for m in _SPLIT_RE.finditer(body)][:8]
    for cut in [len(body), *reversed(cuts)]:
        if cut and resolver.resolve(body[:cut], False):
            return [_Pick((pos, 0), body[:cut], body[cut:], False, False, "lines")]
    return []


def _json_picks(text: str) -> tuple[list[_Pick], list[tuple[int, int]]]:
    entries, spans = json_entries(text)
    # Strict entries ("id": "c") may use any case; a soft {"a": ...} map must match exactly.
    picks = [_Pick((e.start, e.index), e.name, e.reason, e.strict, e.strict, "json") for e in entries]
    return picks, spans


def _printable(s: Any) -> str:
    s = s if isinstance(s, str) else ""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch for ch in s)


def _has_words(reason: Any) -> bool:
    return isinstance(reason, str) and any(ch.isalnum() for ch in reason)


def _clean_reason(reason: Any, max_chars: int) -> str | None:
    if isinstance(reason, list):
        reason = " ".join(str(r) for r in reason if isinstance(r, str | int | float))
    elif isinstance(reason, int | float) and not isinstance(reason, bool):
        reason = str(reason)
    if not isinstance(reason, str):
        return None
    r = " ".join(_printable(reason[: max_chars * 4 + 64]).replace("**", "").replace("__", "").split())
    r = r.lstrip(":-–—.)|>*_ ")
    r = re.sub(r"^(?:reason|why|because of)\s*:\s*", "", r, flags=re.IGNORECASE)
    while len(r) >= 2 and r[0] in _QUOTES and r[-1] == _QUOTES[r[0]]:
        r = r[1:-1].strip()
    if r[:1] in _QUOTES and _QUOTES[r[0]] not in r[1:]:  # opening quote of a cut-off answer
        r = r[1:].strip()
    r = cut_at_word(r, max_chars, ellipsis="")
    return r if _has_words(r) else None
