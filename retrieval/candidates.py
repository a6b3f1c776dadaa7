"""Candidate generation: the items the LM will rank, retrieved by similarity to the user's profile.

The profile is the recency-weighted mean of the embeddings of the user's latest history items, optionally
mixed with a free-text query. Items the user has already seen are never candidates. The agent depends on
the `CandidateSource` protocol only, so the Chroma-backed `CandidateGenerator` can be swapped (a remote
store, a popularity baseline) without touching the agent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from reasonrec.errors import ConfigError, DataError, UnknownItemError

from .config import RetrievalConfig
from .embed import Embedder
from .store import ItemStore, UpsertReport
from .types import Dataset, Item

QUERY_WEIGHT = 0.5  # share of the free-text query in a mixed profile (the history gets the rest)


class Candidate(BaseModel):
    """An item proposed for ranking, with its source's score (cosine similarity for the text source).

    A fused candidate (`FusedSource`) also carries each source's own score and 1-based rank; a source
    that did not propose the item is absent from both dicts.
    """

    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float
    scores: dict[str, float] = Field(default_factory=dict, description="Per-source score, e.g. {'collaborative': 3.1}.")
    ranks: dict[str, int] = Field(default_factory=dict, description="Per-source 1-based rank.")


@runtime_checkable
class CandidateSource(Protocol):
    """Anything that proposes items for a user: what the agent depends on."""

    def candidates(
        self,
        history: list[str],
        n: int,
        query: str | None = None,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> list[Candidate]:
        """Up to `n` unseen items for a user with this history (oldest first), best first."""
        ...


class CandidateGenerator:
    """Chroma-backed `CandidateSource`: profile vector -> nearest unseen items.

    Args:
        store: the indexed catalogue.
        embedder: the embedder the store was built with (embeds queries and unindexed items).
        items: the catalogue, to embed history items the store does not hold.
        config: `recency_half_life`, `max_profile_items`.
    """

    def __init__(self, store: ItemStore, embedder: Embedder, items: dict[str, Item], config: RetrievalConfig):
        self.store = store
        self.embedder = embedder
        self.items = items
        self.config = config
        self._vectors: dict[str, np.ndarray] = {}  # item id -> unit vector; filled on demand
        self._matrix: tuple[list[str], np.ndarray] | None = None  # stored_matrix(), built at first use

    def candidates(
        self,
        history: list[str],
        n: int,
        query: str | None = None,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> list[Candidate]:
        """Nearest unseen items to the user's profile.

        Args:
            history: item ids the user interacted with, oldest first; never returned.
            n: candidates wanted.
            query: optional free text ("something funny from the 80s") mixed into the profile.
            where: Chroma metadata filter, e.g. {"genre_Comedy": True}.
            exclude: further item ids never returned.

        Returns:
            Exactly min(n, eligible items) candidates by descending similarity; deterministic.

        Raises:
            DataError: empty history and no query (cold start: the agent must fall back).
            UnknownItemError: a history id in neither the catalogue nor the store.
            ConfigError: n < 1 or a bad filter. RetrievalError: the store failed.
        """
        if n < 1:
            raise ConfigError(f"`n` must be >= 1, got {n}")
        profile = self.profile(history, query)
        hits = self.store.query(vector=profile, n=n, where=where, exclude=set(history) | set(exclude))
        return [Candidate(item_id=h.item_id, score=h.score) for h in hits]

    def profile(self, history: list[str], query: str | None = None) -> np.ndarray:
        """The unit profile vector of a history, optionally mixed with a query.

        The latest `max_profile_items` items are averaged with weight 0.5 ** (age / recency_half_life),
        age counted in positions from the newest item (newest = 0).

        Raises:
            DataError: no history and no query. UnknownItemError: an unknown history id.
        """
        query = query.strip() if query else None
        recent = [str(i) for i in history][-self.config.max_profile_items :]
        if not recent and not query:
            raise DataError(
                "cannot build a profile: the history is empty and no `query` was given; pass a query "
                "or use a cold-start fallback (e.g. popular items) for new users"
            )
        parts: list[tuple[float, np.ndarray]] = []
        if recent:
            vecs = self.vectors(recent)
            ages = np.arange(len(recent) - 1, -1, -1, dtype=np.float64)
            weights = 0.5 ** (ages / self.config.recency_half_life)
            mean = (weights[:, None] * np.stack([vecs[i] for i in recent])).sum(0) / weights.sum()
            parts.append((1.0 - QUERY_WEIGHT if query else 1.0, _unit(mean)))
        if query:
            parts.append((QUERY_WEIGHT if recent else 1.0, self.embedder.encode([query])[0]))
        return _unit(sum(w * v for w, v in parts)).astype(np.float32)

    def vectors(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Unit vectors of items: cached, else read from the store, else embedded from the catalogue.

        Raises:
            UnknownItemError: an id in neither the store nor the catalogue.
        """
        ids = list(dict.fromkeys(ids))
        missing = [i for i in ids if i not in self._vectors]
        if missing:
            self._vectors.update(self.store.embeddings(missing))
            to_embed = [i for i in missing if i not in self._vectors]
            unknown = [i for i in to_embed if i not in self.items]
            if unknown:
                raise UnknownItemError(
                    f"unknown item id(s) {', '.join(map(repr, unknown[:5]))} in the history: in neither "
                    f"the catalogue ({len(self.items)} items) nor the store"
                )
            if to_embed:  # catalogue items not indexed yet: embed once, keep
                vecs = self.embedder.encode([self.items[i].text() for i in to_embed])
                self._vectors.update(zip(to_embed, vecs, strict=True))
        return {i: self._vectors[i] for i in ids}

    def preload(self, max_items: int) -> int:
        """Read every stored vector now when the store holds at most `max_items`; returns how many were read.

        Why: a long-running server otherwise pays a store read for the history items of each user the first
        time that user asks (in a fresh server ~3.6 ms of a ~32 ms scoring request went to them), while a
        small catalogue's vectors are a few MB (ML-100K: 1,682 x 384 float32, 2.6 MB).
        """
        if self.store.count() > max_items:
            return 0
        return len(self.vectors(self.store.ids()))

    def stored_matrix(self) -> tuple[list[str], np.ndarray]:
        """(every stored item id, their unit vectors stacked in that order), read once and kept: what its
        `candidates` can return, scored in one product (retrieval/ranks.py) without a store read per call."""
        if self._matrix is None:
            ids = self.store.ids()
            vecs = self.vectors(ids)
            self._matrix = (ids, np.stack([vecs[i] for i in ids]) if ids else np.zeros((0, 0), np.float32))
        return self._matrix

    def clear_cache(self) -> None:
        """Forget cached vectors (after re-indexing changed items)."""
        self._vectors.clear()
        self._matrix = None


def build_index(
    dataset_or_items: Dataset | dict[str, Item] | Iterable[Item],
    config: RetrievalConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    embedder: Embedder | None = None,
    prune: bool = False,
) -> tuple[ItemStore, UpsertReport]:
    """Open (or create) the store of `config` and make it hold the catalogue.

    Args:
        dataset_or_items: a Dataset, a {id: Item} dict, or an iterable of Items.
        config: retrieval settings; None = defaults.
        progress: called as progress(done, total) after each batch.
        embedder: reuse an embedder; None builds one from `config`.
        prune: also delete stored items that are not in the catalogue (reported as `removed`).

    Returns:
        (the store, what was added / updated / unchanged / removed).

    Raises:
        RetrievalError: the store or the embedder failed. DataError: bad or duplicate items.
    """
    config = config or RetrievalConfig()
    embedder = embedder or Embedder.from_config(config)
    if isinstance(dataset_or_items, Dataset):
        items = list(dataset_or_items.items.values())
    elif isinstance(dataset_or_items, dict):
        items = list(dataset_or_items.values())
    else:
        items = list(dataset_or_items)
    store = ItemStore(config, embedder)
    report = store.upsert(items, progress=progress)
    if prune:
        keep = {it.id for it in items}
        report.removed = store.delete([i for i in store.ids() if i not in keep])
    return store, report


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v
