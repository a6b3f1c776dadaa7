"""The message being parsed: lowercased text whose read spans are blanked out, so nothing is read twice.

Every reader (`numbers`, `years`, `moods`, `language`, `dialogue`) takes a `Message`, finds its phrases
with a regex, and `take`s the span it used. `control` marks spans that steer the dialogue (critiques,
list length, titles, ages): they never reach the free-text query. Genre and year words stay in the
query (they describe what the user wants), unless a reader says otherwise.
"""

from __future__ import annotations

import re

_SPACES = re.compile(r"\s+")
_LEADING_GLUE = re.compile(r"^(?:(?:and|but|or|so|also|then|plus)\b[\s,]*)+")
_TRAILING_GLUE = re.compile(r"(?:[\s,]*\b(?:and|but|or|so|please|thanks))+$")


class Message:
    """One user message being read.

    Args:
        text: what the user typed (curly apostrophes are straightened, whitespace collapsed).
    """

    def __init__(self, text: str):
        self.raw = " ".join(text.replace("\u2019", "'").replace("\u2018", "'").split())
        # Per character, so offsets in `s` stay offsets in `raw` ("İ".lower() is two characters).
        self.s = "".join(c.lower() if len(c.lower()) == 1 else c for c in self.raw)
        self.control = [False] * len(self.raw)

    def take(self, start: int, end: int, control: bool = True) -> None:
        """Blank out `s[start:end]`; with `control` the span is also kept out of the query."""
        self.s = self.s[:start] + " " * (end - start) + self.s[end:]
        if control:
            self.control[start:end] = [True] * (end - start)

    def finditer(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        """Matches of `pattern` in what is still unread (a list: callers `take` while iterating)."""
        return list(pattern.finditer(self.s))

    def remainder(self) -> str | None:
        """The message without its control spans, tidied: the free-text query (None when nothing is left).

        Why tidy: blanking "I'm 12 years old" out of "I'm 12 years old and like animals" leaves a
        leading "and"; retrieval and the explanation read better without it.
        """
        text = "".join(" " if control else c for c, control in zip(self.raw, self.control, strict=True))
        text = _SPACES.sub(" ", re.sub(r"\s+([.,;!?])", r"\1", text)).strip(" ,.;:!?-")
        text = _LEADING_GLUE.sub("", text)
        text = _TRAILING_GLUE.sub("", text).strip(" ,.;:!?-")
        return text or None
