"""Messages not in English: say which language it looks like, and read what the catalogue's words allow.

The parser's rules, the title index and MiniLM are English. Rather than treating "una comedia de los
80" as free text (no constraint, and no word that only English is understood), `detect_language`
names the language from its function words (or its script), and `foreign_lexicon` gives the genre
words, negations, decades and list lengths of five common languages, so a simple request still
becomes constraints and the reply says what was understood.
"""

from __future__ import annotations

import re
import unicodedata

# Function words that are not also English words (so "a", "me", "film", "no" are left out).
_FUNCTION_WORDS = {
    "es": "el la los las una unos unas del que y en por para con sin pero quiero algo película películas peli pelis "
    "gusta gustan como más muy años favor dame busco ver algún alguna ninguna nada",
    "fr": "le la les une des du que et pour avec sans mais je veux quelque chose j'aime comme plus très années "
    "pas voudrais cherche voir donne-moi moi un",
    "de": "der die das ein eine einen und mit ohne aber ich möchte will etwas filme mag wie mehr sehr jahre nicht "
    "kein keine keinen bitte gerne suche zeig mir jahren",
    "it": "il lo gli una di del che e con senza ma voglio qualcosa mi piace come più molto anni non per vorrei "
    "cerco vedere degli",
    "pt": "o os um uma do da que e com sem mas eu quero algo filme filmes gosto como mais muito anos não para "
    "gostaria procuro ver dos",
}
_WORDS = {lang: frozenset(words.split()) for lang, words in _FUNCTION_WORDS.items()}
_ENGLISH = frozenset(
    "the a an and with from something anything movie movies film films like i want no not more some please "
    "show me give good funny about recommend suggest similar but or any watch seen one ones that this".split()
)
NAMES = {"es": "Spanish", "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese"}
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")

# Genre words per language -> catalogue genre. English genre words ("western", "thriller") are read by the
# English lexicon as well.
_GENRES = {
    "Action": "acción accion action azione ação acao actionfilm",
    "Adventure": "aventura aventuras aventure aventures abenteuer abenteuerfilm avventura",
    "Animation": "animación animacion animation zeichentrick animazione animação animacao dibujos",
    "Children's": "infantil niños ninos enfants kinder kinderfilm bambini crianças criancas infantiles",
    "Comedy": "comedia comedias comédie comedie comédies komödie komodie komödien commedia commedie comédia",
    "Crime": "policíaca policiaca policier krimi poliziesco crimen policial",
    "Documentary": "documental documentaire dokumentarfilm dokumentation documentario documentário",
    "Drama": "drame drames dramma",
    "Fantasy": "fantasía fantasia fantastique",
    "Horror": "terror miedo horreur gruselig orrore horrorfilm",
    "Musical": "comédie-musicale",
    "Mystery": "misterio mystère mystere mistero mistério",
    "Romance": "romántica romantica romántico romantique liebesfilm romantico romântico",
    "Sci-Fi": "ciencia-ficción ciencia-ficcion science-fiction fantascienza ficção-científica",
    "War": "guerra guerre kriegsfilm krieg",
    "Western": "vaqueros oeste faroeste",
}
NEGATION = re.compile(r"\b(?:sin|sans|ohne|senza|sem|pas de|kein|keine|keinen|nada de|niente|nicht)\b")
_DECADE = re.compile(
    r"\b(?:de los|des années|der|dos anos|degli anni|anni|años|années|anos)\s+'?(\d0)\b(?:er)?|\b(\d0)er(?:\s+jahre)?\b"
)
_K = re.compile(r"\b(\d{1,2})\s+(?:películas|pelis|films|filme|filmes|film|filmi)\b")


def detect_language(text: str) -> str | None:
    """A language code ("es", "fr", ...) or script name ("Cyrillic") when the message is not English; else None.

    Why counts and not a model: two or more function words of one language, outnumbering the English
    ones, are a reliable sign in short messages; a single "con" or "die" is not.
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    foreign = [c for c in letters if not unicodedata.name(c, "LATIN").startswith("LATIN")]
    if len(foreign) > len(letters) / 2:
        script = unicodedata.name(foreign[0], "UNKNOWN").split()[0]
        return {"CJK": "Chinese or Japanese", "HANGUL": "Korean", "HIRAGANA": "Japanese", "KATAKANA": "Japanese"}.get(
            script, script.capitalize()
        )
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    english = sum(t in _ENGLISH for t in tokens)
    scores = {lang: sum(t in words for t in tokens) for lang, words in _WORDS.items()}
    lang, best = max(scores.items(), key=lambda kv: kv[1])
    return lang if best >= 2 and best > english else None


def language_name(code: str) -> str:
    """'es' -> 'Spanish'; a script name is returned as it is."""
    return NAMES.get(code, code)


def foreign_lexicon() -> dict[str, tuple[str, ...]]:
    """Genre words of the supported languages, phrase -> (genre,), for `moods.genre_lexicon(extra=...)`."""
    out = {w.replace("-", " "): (g,) for g, words in _GENRES.items() for w in words.split() if "-" in w}
    out.update({w: (g,) for g, words in _GENRES.items() for w in words.split()})
    return out


def foreign_decade(text: str) -> tuple[int, int] | None:
    """'de los 80', 'des années 90', '80er Jahre' -> (1980, 1989); None when the message names no decade."""
    m = _DECADE.search(text.lower())
    if m is None:
        return None
    start = 1900 + int(m.group(1) or m.group(2))
    return start, start + 9


def foreign_k(text: str) -> int | None:
    """'5 películas' -> 5 (1 to 50); None when no list length is given."""
    m = _K.search(text.lower())
    return int(m.group(1)) if m and 1 <= int(m.group(1)) <= 50 else None
