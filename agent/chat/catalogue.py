"""What a chat session reads from the agent's catalogue, built once per dataset (or embedder), not per turn.

Why module-level caches: a server opens a new `ChatSession` per request; the title index over 1,682
titles and the genre descriptions' embeddings would otherwise be rebuilt every time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reasonrec.agent.chat.moods import MoodGuesser
from reasonrec.agent.chat.titles import TitleIndex

if TYPE_CHECKING:
    from reasonrec.agent.api import RecommenderAgent

_CATALOGUES: dict[int, tuple[Any, TitleIndex, list[str], list[int]]] = {}
_MOODS: dict[str, MoodGuesser] = {}  # embedding model -> guesser (its genre embeddings and word cache)


def catalogue(agent: RecommenderAgent) -> tuple[TitleIndex, list[str], list[int]]:
    """Title index, genre names and years of the agent's catalogue, built once per dataset object."""
    ds = agent.dataset
    cached = _CATALOGUES.get(id(ds))
    if cached is None or cached[0] is not ds:
        items = ds.items
        genres = sorted({g for it in items.values() for g in it.genres})
        years = sorted(it.year for it in items.values() if it.year is not None) or [0]
        if len(_CATALOGUES) > 8:
            _CATALOGUES.clear()
        cached = _CATALOGUES[id(ds)] = (ds, TitleIndex.from_items(items), genres, years)
    return cached[1], cached[2], cached[3]


def mood_guesser(agent: RecommenderAgent, genres: list[str]) -> MoodGuesser:
    """The mood guesser over MiniLM: the retrieval store's embedder when the source exposes one, else the
    configured embedding model (loaded on the first guess; cached per model name)."""
    from reasonrec.retrieval import Embedder

    rc = agent.config.retrieval
    embedder = getattr(agent.text_store, "embedder", None)
    key = f"{rc.embedding_model}:{id(embedder)}" if embedder is not None else rc.embedding_model
    if key not in _MOODS:
        _MOODS.clear()
        _MOODS[key] = MoodGuesser(embedder or Embedder.from_config(rc), genres)
    return _MOODS[key]
