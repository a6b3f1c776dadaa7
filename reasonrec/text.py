"""Text helpers every layer shares: catalogue titles as people write them, word-boundary cuts, genre words.

One place for each rule, because copies drifted: four modules moved a trailing article ("Usual
Suspects, The") with four different article lists, and three cut text at a word boundary slightly
differently. Nothing here imports anything heavy.
"""

from __future__ import annotations

import re

# Trailing articles as catalogues write them ("Usual Suspects, The", "Femme Nikita, La").
ARTICLES = ("the", "a", "an", "les", "la", "le", "l'", "il", "das", "der", "die", "den", "el", "los")
_TRAILING_ARTICLE = re.compile(r"^(.*\S),\s*(" + "|".join(re.escape(a) for a in ARTICLES) + r")$", re.I)
_YEAR_SUFFIX = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")
_WORD = re.compile(r"[a-z0-9']+")


def strip_year(title: str) -> str:
    """'Heat (1995)' -> 'Heat'."""
    return _YEAR_SUFFIX.sub("", title).strip()


def trailing_article(title: str) -> tuple[str, str] | None:
    """'Usual Suspects, The' -> ('Usual Suspects', 'The'); None when the title has none."""
    m = _TRAILING_ARTICLE.match(title.strip())
    return (m.group(1), m.group(2)) if m else None


def front_article(title: str) -> str:
    """'Usual Suspects, The' -> 'The Usual Suspects'; 'Godfather: Part II, The' -> 'The Godfather: Part II'."""
    split = trailing_article(title)
    return f"{split[1]} {split[0]}" if split else title.strip()


def natural_title(title: str) -> str:
    """'Usual Suspects, The (1995)' -> 'The Usual Suspects': how a sentence names a catalogue title."""
    return front_article(strip_year(title))


def title_core(title: str) -> str:
    """'Usual Suspects, The (1995)' -> 'usual suspects': lowercase words, no year, no trailing article."""
    t = strip_year(title)
    split = trailing_article(t)
    return " ".join(_WORD.findall((split[0] if split else t).lower()))


def cut_at_word(text: str, limit: int, ellipsis: str = "…") -> str:
    """`text` shortened to at most `limit` characters, at a word boundary when one is in the second half.

    The cut drops trailing punctuation and ends with `ellipsis` (counted in `limit`); text within the
    limit is returned unchanged.
    """
    if len(text) <= limit:
        return text
    room = max(limit - len(ellipsis), 0)
    if room < 1:
        return text[:limit]
    cut = text[:room]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-") + ellipsis


# Words people use for each ML-100K genre ("funny" -> Comedy). A catalogue's own genre names are always
# recognised too; the chat's parser and the reasons' claim checks read this one lexicon.
# fmt: off
GENRE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Action": ("action", "action-packed", "actions"),
    "Adventure": ("adventure", "adventures", "adventurous"),
    "Animation": ("animation", "animated", "cartoon", "cartoons", "anime"),
    "Children's": ("children's", "childrens", "children", "kids", "kid", "family", "for kids"),
    "Comedy": ("comedy", "comedies", "comedic", "funny", "funnier", "humor", "humour", "hilarious", "comic", "laughs",
               "lighter"),
    "Crime": ("crime", "gangster", "gangsters", "heist", "mafia", "mob"),
    "Documentary": ("documentary", "documentaries", "docs"),
    "Drama": ("drama", "dramas", "dramatic", "dramedy", "dramedies"),  # a dramedy is a drama (and a comedy)
    "Fantasy": ("fantasy", "magic", "magical"),
    "Film-Noir": ("film-noir", "film noir", "noir"),
    "Horror": ("horror", "horrors", "scary", "scarier", "spooky", "creepy", "frightening", "slasher"),
    "Musical": ("musical", "musicals"),
    "Mystery": ("mystery", "mysteries", "whodunit", "detective"),
    "Romance": ("romance", "romances", "romantic", "love story", "love stories"),
    "Sci-Fi": ("sci-fi", "scifi", "sci fi", "science fiction", "science-fiction"),
    "Thriller": ("thriller", "thrillers", "suspense", "suspenseful", "thrill", "thrills", "thrilling"),
    "War": ("war", "war film", "war movie"),
    "Western": ("western", "westerns", "cowboy", "cowboys"),
}
# fmt: on
