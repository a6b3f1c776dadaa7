"""Catalogue titles named in a text: where they are and which items carry them (claims.py checks them)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from reasonrec.retrieval.types import Item
from reasonrec.text import title_core

_WORD = re.compile(r"[A-Za-z0-9']+")
_MAX_TITLE_WORDS = 10


class TitleIndex:
    """Catalogue titles by their core words ("usual suspects"), for finding titles named in text."""

    def __init__(self, items: Iterable[Item]):
        self.by_core: dict[str, list[Item]] = {}
        for it in items:
            core = title_core(it.title)
            if len(core) >= 4 or " " in core:  # "It", "Up": too short to tell from ordinary words
                self.by_core.setdefault(core, []).append(it)

    def find(self, text: str) -> list[tuple[int, int, list[Item]]]:
        """(start, end, items with that title) for each title named in `text`, longest first, no overlaps.

        A title counts only when its first word (after "The") is written with a capital ("Heat", not "the heat")
        or is a number followed by more of the title ("2001: A Space Odyssey").
        """
        words = list(_WORD.finditer(text))
        lower = [w.group().lower() for w in words]  # once per word, not once per candidate span
        found, i = [], 0
        while i < len(words):
            for n in range(min(_MAX_TITLE_WORDS, len(words) - i), 0, -1):
                span = words[i : i + n]
                core = " ".join(lower[i : i + n])
                first = span[0]
                if core.startswith("the "):
                    core, first = core[4:], span[1]
                items = self.by_core.get(core)
                # A title may start with a number ("2001: A Space Odyssey") when it has more words; a bare
                # number ("1941") is read as a year, what a reason means by it far more often.
                lead = first.group()[:1]
                if items and (lead.isupper() or (lead.isdigit() and n > 1)):
                    found.append((span[0].start(), span[-1].end(), items))
                    i += n - 1
                    break
            i += 1
        return found
