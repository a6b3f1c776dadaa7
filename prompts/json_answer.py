"""JSON anywhere in a model's answer: found, repaired when truncated, and read as (name, reason) entries.

Small models asked for `[C] reason` lines sometimes answer in JSON instead — fenced, wrapped in prose,
cut off by the token limit, with trailing commas. `parser.py` merges these entries with the line picks;
this module only finds and reads them, bounded so that a long answer stays cheap to parse.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

MAX_JSON_TRIES = 16  # JSON starts tried per answer (each try is O(len(text)))
_LABEL_KEYS = ("label", "id", "item", "item_id", "candidate", "choice", "title", "movie", "name")
_REASON_KEYS = ("reason", "why", "explanation", "rationale", "because", "justification")
_LIST_KEYS = ("recommendations", "ranking", "items", "picks", "results", "ranked")
_JSON_START_RE = re.compile(r"\{|\[(?=\s*[\[{\"])")
# The `[C] reason` form: a line of the rank template, and also what a JSON list of strings may hold.
BRACKET_RE = re.compile(r"\[\s*([^\[\]\n]{1,120}?)\s*\]\s*(.*)")


class JsonEntry(NamedTuple):
    """One pick read from JSON: where it was (start offset of its value, index within it) and what it says."""

    start: int
    index: int
    name: str  # a label, "[label]" or a title, as written
    reason: Any
    strict: bool  # False for a soft {"C": "why"} map: names that are no candidate are ignored, not counted


def json_entries(text: str) -> tuple[list[JsonEntry], list[tuple[int, int]]]:
    """The entries of every JSON value in `text` that holds picks, and the spans of those values."""
    entries: list[JsonEntry] = []
    spans: list[tuple[int, int]] = []
    end = tries = 0
    for m in _JSON_START_RE.finditer(text):
        if m.start() < end or tries >= MAX_JSON_TRIES:
            continue
        tries += 1
        decoded = _decode_at(text, m.start())
        if decoded is None:
            continue
        value, stop = decoded
        found = _entries(value)
        if found:
            end = stop
            spans.append((m.start(), stop))
            entries += [JsonEntry(m.start(), i, name, reason, strict) for i, (name, reason, strict) in enumerate(found)]
    return entries, spans


def _decode_at(text: str, start: int) -> tuple[Any, int] | None:
    """A JSON value starting at `start`, repairing truncation; (value, end offset) or None."""
    try:
        return json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        pass
    stack: list[str] = []
    in_str = esc = False
    # Last place where cutting leaves only complete values, and the depth there. Every close sets a
    # new cut, so the stack never drops below that depth afterwards and stack[:depth] is still valid.
    cut = depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            esc, in_str = (False, True) if esc else (ch == "\\", ch != '"')
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
            if len(stack) > 256:  # deeper than any answer; json itself would hit its recursion limit
                return None
        elif ch in "]}":
            if not stack or stack.pop() != ch:
                return None
            if not stack:  # balanced but invalid (trailing comma, single quotes): one lenient retry
                value = _loads(text[start : i + 1])
                return None if value is None else (value, i + 1)
            cut, depth = i + 1, len(stack)
        elif ch == ",":
            cut, depth = i, len(stack)
    # Truncated: close the open string and brackets, else drop back to the last complete value.
    tail = text[start:].removesuffix("\\") if esc else text[start:]
    for attempt in (tail + ('"' if in_str else "") + "".join(reversed(stack)),
                    text[start:cut] + "".join(reversed(stack[:depth])) if cut else ""):
        value = _loads(attempt) if attempt else None
        if value is not None:
            return value, len(text)
    return None


def _loads(s: str) -> Any:
    for attempt in (s, re.sub(r",\s*([\]}])", r"\1", s)):
        try:
            return json.loads(attempt)
        except (ValueError, RecursionError):
            continue
    return None


def _entries(value: Any, depth: int = 0) -> list[tuple[str, Any, bool]]:
    """(name, reason, strict) triples from a decoded JSON value, in order."""
    if depth > 4:
        return []
    if isinstance(value, list):
        out = []
        for el in value[:200]:
            if isinstance(el, dict):
                out += _entries(el, depth + 1)[:1]
            elif isinstance(el, str) and (m := BRACKET_RE.match(el.strip())):
                out.append((m.group(1), m.group(2), True))  # ["[C] why", ...]
            elif isinstance(el, str | int) and not isinstance(el, bool):
                out.append((str(el), None, True))
            elif isinstance(el, list) and el and isinstance(el[0], str | int):
                out.append((str(el[0]), el[1] if len(el) > 1 else None, True))
        return out
    if not isinstance(value, dict):
        return []
    keys = {str(key).lower(): v for key, v in value.items()}
    for key in _LIST_KEYS:
        if isinstance(keys.get(key), list | dict):
            return _entries(keys[key], depth + 1)
    name = next((keys[key] for key in _LABEL_KEYS if isinstance(keys.get(key), str | int)), None)
    if name is not None and not isinstance(name, bool):
        return [(str(name), next((keys[key] for key in _REASON_KEYS if key in keys), None), True)]
    lists = [v for v in value.values() if isinstance(v, list)]
    if len(lists) == 1:
        return _entries(lists[0], depth + 1)
    # {"C": "why", "A": "why"}: soft, so that an unrelated object adds no off-candidate noise.
    return [(str(key), v, False) for key, v in value.items() if isinstance(v, str)][:200]
