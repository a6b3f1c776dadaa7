"""Genre and mood words, how a negation scopes over them, and the embedder's guess for words no rule knows.

Rules first: the catalogue's genre names, `reasonrec.text.GENRE_SYNONYMS` ("funny" -> Comedy) and the
mood phrases below ("feel-good" -> Comedy, "tear-jerker" -> Drama). Mood words stay out of
GENRE_SYNONYMS on purpose: that lexicon also checks the claims of reasons, where "moving" or "tense"
are not genre claims.

Negation is read per mention, in the words between the previous mention (or the clause start) and this
one: an odd number of negation words excludes the genre ("no horror", "I don't want horror"), an even
number requires it ("nothing that isn't a comedy", "not without action"); phrases such as "don't mind"
and "nothing but" are positive. "no horror or romance" carries the negation across "or"/"and"/"nor".

`MoodGuesser` is the fuzzy part: a leftover word that looks like a mood ("eerie") is embedded and
compared with one description per genre; only a clear winner (similarity and margin thresholds,
chosen on the labelled corpus) becomes a genre, and the reply says it was a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonrec.agent.chat.message import Message
from reasonrec.text import GENRE_SYNONYMS

PAIRS = {"rom-com": ("Romance", "Comedy"), "romcom": ("Romance", "Comedy"), "romantic comedy": ("Romance", "Comedy")}
MOODS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        "feel-good|feel good|feelgood|uplifting|cheerful|cheer me up|light-hearted|lighthearted|make me laugh|"
        "silly|goofy|witty|laugh out loud|laugh-out-loud|quirky".split("|"),
        ("Comedy",),
    ),
    **dict.fromkeys(
        "tear-jerker|tearjerker|tear jerker|sad|weepy|make me cry|a good cry|heartbreaking|moving|touching|"
        "emotional|heartwarming|heart-warming|bittersweet".split("|"),
        ("Drama",),
    ),
    **dict.fromkeys(
        "terrifying|spine-chilling|gory|haunted|ghost|ghosts|zombie|zombies|vampire|vampires|jump scares|"
        "nightmares|bloody".split("|"),
        ("Horror",),
    ),
    **dict.fromkeys(
        "nail-biting|nail biter|nail-biter|edge of my seat|edge-of-your-seat|edge of your seat|tense|gripping|"
        "thrilling|intense".split("|"),
        ("Thriller",),
    ),
    **dict.fromkeys("date night|date movie|date-night".split("|"), ("Romance",)),
    **dict.fromkeys("swashbuckling|treasure hunt|quest".split("|"), ("Adventure",)),
    **dict.fromkeys(
        "explosions|car chases|shootouts|adrenaline|high-octane|fast-paced|kung fu|martial arts".split("|"), ("Action",)
    ),
    **dict.fromkeys("futuristic|time travel|outer space|spaceships|spaceship".split("|"), ("Sci-Fi",)),
    **dict.fromkeys("wholesome|family-friendly|family friendly".split("|"), ("Children's",)),
    **dict.fromkeys("dragons|wizards|fairy tale|fairy tales|fairytale|sword and sorcery".split("|"), ("Fantasy",)),
    **dict.fromkeys("sing-along|singing|songs|dancing".split("|"), ("Musical",)),
    **dict.fromkeys("whodunnit|puzzle".split("|"), ("Mystery",)),
    **dict.fromkeys("soldiers|battlefield|world war|wwii|ww2|vietnam".split("|"), ("War",)),
    **dict.fromkeys("wild west|gunslinger|gunslingers".split("|"), ("Western",)),
}
_CLAUSE = re.compile(r"[.;!?]|,|(?<!anything)(?<!everything)(?<!nothing)(?<!all)\s+but\b|\binstead\b|\bwhile\b")
_POSITIVE = re.compile(
    r"\b(?:(?:don't|dont|do not|wouldn't|wouldnt|would not) mind|(?:wouldn't|would not|never|can't|cannot) say no to|"
    r"(?:can't|cannot) get enough(?: of)?|not (?:opposed|against) to|no problem with|why not|nothing but|not only)\b"
)
_NEGATION_WORD = re.compile(
    r"\b(?:no|not|without|nothing|none|never|neither|nor|hate|hated|dislike|avoid|skip|exclude|excluding|except|"
    r"minus|less|anything but|everything but|other than|sick of|tired of|enough of|(?:can't|cannot) stand|"
    r"no more|too)\b|\b\w+n't\b"
)
_CARRY = re.compile(r"^[\s,]*(?:or|nor|and|&|/)?[\s,]*(?:or|nor|and)?\s*$")
_ADDITIVE = re.compile(r"\b(?:also|too|as well|plus|additionally|and also|add)\b")
_CANDIDATE = re.compile(r"[a-z][a-z-]{3,}")
_ADJECTIVE = re.compile(r"[a-z]+(?:y|ie|ing|ful|ous|ic|ish|al|ive|less|some|ed|ant|ent|ier|iest)|[a-z]+-[a-z]+")


@dataclass
class GenreReading:
    """Genres a message requires or excludes, in the user's order."""

    genres: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    additive: bool = False  # "also funny": add to the required genres instead of replacing them
    guessed: dict[str, str] = field(default_factory=dict)  # word -> genre, from the embedder


def genre_lexicon(
    genres: Sequence[str], extra: dict[str, tuple[str, ...]] | None = None
) -> list[tuple[str, tuple[str, ...]]]:
    """(phrase, genre names) pairs for the catalogue's genres, moods and `extra`, longest phrase first."""
    known = set(genres)
    pairs: dict[str, tuple[str, ...]] = {}
    for table in (MOODS, {w: (g,) for g, ws in GENRE_SYNONYMS.items() for w in ws}, PAIRS, extra or {}):
        pairs.update({w: gs for w, gs in table.items() if set(gs) <= known})
    pairs.update({g.lower(): (g,) for g in genres})
    return sorted(pairs.items(), key=lambda p: -len(p[0]))


def read_genres(
    m: Message, lexicon: Sequence[tuple[str, tuple[str, ...]]], negation: re.Pattern[str] | None = None
) -> GenreReading:
    """Find every genre/mood phrase of `lexicon` in the message and decide, per mention, required or excluded.

    Args:
        m: the message (read spans are blanked; negated genres and their cue leave the query too).
        lexicon: from `genre_lexicon`.
        negation: extra negation words (another language's "sin", "ohne"), added to the English ones.
    """
    mentions: list[tuple[int, int, tuple[str, ...]]] = []
    for phrase, names in lexicon:
        for hit in m.finditer(re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])")):
            mentions.append((hit.start(), hit.end(), names))
            m.take(hit.start(), hit.end(), control=False)
    out, text = GenreReading(), m.s  # what other readers left: their negations are not ours
    prev_end, prev_negated = 0, False
    for start, end, names in sorted(mentions):
        window = text[prev_end:start]
        cut = [c.end() for c in _CLAUSE.finditer(window)]
        if cut:
            window, prev_negated, offset = window[cut[-1] :], False, prev_end + cut[-1]
        else:
            offset = prev_end
        cues, first = _negations(window, negation)
        negated = len(cues) % 2 == 1 if cues else (prev_negated and bool(_CARRY.match(window)))
        if first is not None:  # cue words ("don't mind", "isn't") are no content for the query
            m.take(offset + first, start, control=True)
        if negated:  # "no horror" leaves the query too: its embedding would pull towards horror
            m.take(start, end, control=True)
        target = out.excluded if negated else out.genres
        target.extend(n for n in names if n not in target)
        prev_end, prev_negated = end, negated
    # Named both ways in one message, the genre stays: "spooky but not too gory" still wants Horror,
    # "comedy but not romantic comedy" keeps Comedy and drops Romance.
    out.excluded = [g for g in out.excluded if g not in out.genres]
    out.additive = bool(out.genres) and bool(_ADDITIVE.search(m.s))
    return out


def _negations(window: str, extra: re.Pattern[str] | None) -> tuple[list[int], int | None]:
    """Offsets of the negation words in `window` (positive phrases such as "don't mind" removed first),
    and where the first cue of either kind starts (None when there is none): the span the query loses."""
    positive = [h.start() for h in _POSITIVE.finditer(window)]
    cleaned = _POSITIVE.sub(lambda h: " " * len(h.group(0)), window)
    hits = [(h.start(), h.group(0)) for h in _NEGATION_WORD.finditer(cleaned)]
    neg = [at for at, word in hits if not (word == "too" and cleaned[max(0, at - 4) : at] == "not ")]  # "not too"
    if extra is not None:
        neg += [h.start() for h in extra.finditer(cleaned)]
    first = min([*neg, *positive], default=None)
    return sorted(neg), first


# Descriptions the embedder compares leftover words with; written as a person would describe a film.
GENRE_DESCRIPTIONS = {
    "Action": "an action movie full of fights, chases and explosions",
    "Adventure": "an adventure movie, an epic journey or quest",
    "Animation": "an animated cartoon movie",
    "Children's": "a movie for children and families",
    "Comedy": "a funny comedy that makes you laugh, light and cheerful",
    "Crime": "a crime movie about gangsters, heists and police",
    "Documentary": "a documentary about real events",
    "Drama": "a sad, moving drama that makes you cry",
    "Fantasy": "a fantasy movie with magic, dragons and wizards",
    "Film-Noir": "a dark film noir with a cynical detective",
    "Horror": "a scary horror movie, frightening and gory",
    "Musical": "a musical with songs and dancing",
    "Mystery": "a mystery, a puzzle to solve, a whodunit",
    "Romance": "a romantic love story",
    "Sci-Fi": "a science fiction movie about space, aliens, robots and the future",
    "Thriller": "a tense suspense thriller that keeps you on the edge of your seat",
    "War": "a war movie about soldiers and battles",
    "Western": "a western with cowboys and gunfights in the old west",
}


class MoodGuesser:
    """Genre guesses for mood-like words no rule knows, by embedding similarity to genre descriptions.

    Args:
        embedder: anything with `encode(list[str]) -> unit-norm rows` (`reasonrec.retrieval.Embedder`).
        genres: the catalogue's genres (only those with a description are guessed).
        min_score: cosine similarity the best genre needs.
        min_margin: how far the best genre must be ahead of the second.

    Why strict thresholds: MiniLM puts "uproarious" nearest Horror (0.60) and "relaxing" nearest
    Thriller (0.59); a wrong genre becomes a hard filter, so only clear winners such as "eerie" -> Horror
    (0.68, 0.15 ahead) count.
    """

    def __init__(self, embedder: Any, genres: Sequence[str], min_score: float = 0.62, min_margin: float = 0.06):
        self.embedder = embedder
        self.names = [g for g in genres if g in GENRE_DESCRIPTIONS]
        self.min_score, self.min_margin = min_score, min_margin
        self._desc: Any = None
        self._cache: dict[str, str | None] = {}

    def guess(self, words: Iterable[str]) -> dict[str, str]:
        """word -> genre for the words with a clear winner (results are cached per word)."""
        words = list(dict.fromkeys(words))
        todo = [w for w in words if w not in self._cache]
        if todo and self.names:
            if self._desc is None:
                self._desc = self.embedder.encode([GENRE_DESCRIPTIONS[g] for g in self.names])
            scores = self.embedder.encode([f"a {w} movie" for w in todo]) @ self._desc.T
            for w, row in zip(todo, scores, strict=True):
                order = row.argsort()[::-1]
                best, second = float(row[order[0]]), float(row[order[1]]) if len(order) > 1 else 0.0
                ok = best >= self.min_score and best - second >= self.min_margin
                self._cache[w] = self.names[int(order[0])] if ok else None
        return {w: g for w in words if (g := self._cache.get(w))}


def mood_candidates(m: Message, stop: frozenset[str]) -> list[str]:
    """Unread words that could carry a mood: adjective-shaped, 4+ letters, not stop words (at most 6).

    Why adjectives only: moods are said with adjectives ("eerie", "spine-tingling"), while a noun names
    a topic the free-text query already carries ("robots" is Sci-Fi to MiniLM, but asked no genre).
    """
    return [w for w in _CANDIDATE.findall(m.s) if w not in stop and _ADJECTIVE.fullmatch(w)][:6]
