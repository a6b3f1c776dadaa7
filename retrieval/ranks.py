"""Where each source would rank a given item over the whole catalogue (its "global" rank).

A fused source knows an item's rank in a source only when that source returned it among its top
`depth`. Lists built elsewhere (a caller's own candidates, the cand20 protocol's random negatives) hold
items no source returned, and their retrieval features would all read 0: the fused score could not tell
a near-miss at rank 120 from the catalogue's worst item. `global_ranks` scores the whole catalogue with
each source's own scoring function and counts how many eligible items beat the given one, so
rank = 1 + #(items not in the history with a higher score). For an item inside the source's top list
this is the rank the source gave it (same scores, same exclusions), so features computed from these
ranks extend the top-`depth` ones instead of replacing them.

Kept apart from the sources' classes on purpose: it reads only their public scoring members
(`ScoredSource.scores` of co-occurrence and EASE, the SASRec model's `encode` / `item_vectors`, the text
source's `profile` / `stored_matrix`), so a source gains global ranks without a new method in its protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reasonrec.errors import DataError

from .candidates import CandidateGenerator
from .collaborative import CollaborativeSource
from .scored import ScoredSource


def global_ranks(source: Any, history: Sequence[str], items: Sequence[str], query: str | None = None) -> dict[str, int]:
    """Item -> 1-based rank `source` gives it over the catalogue minus `history`.

    Items the source cannot score are left out: not in its model (cold items), or, for co-occurrence,
    a score of 0 (it never returns those). A source type it does not know returns {}.

    Raises:
        DataError: the source cannot score this history (cold start), as its `candidates` would.
    """
    inner = getattr(source, "source", source)  # agent.candidates.LazySource wraps the text source
    if isinstance(inner, ScoredSource):  # co-occurrence, EASE
        scores = inner.scores(history)
        return _ranks(scores, inner.ids, inner.index, history, items, positive_only=inner.positive_only)
    if isinstance(inner, CollaborativeSource):
        vector = np.asarray(inner.user_vector(history), dtype=np.float32)
        model = inner.model
        return _ranks(model.item_vectors() @ vector, model.info.item_ids, model.index, history, items)
    if isinstance(inner, CandidateGenerator):
        ids, matrix = inner.stored_matrix()  # what its `candidates` can return: the indexed items
        scores = matrix @ inner.profile(list(history), query)
        return _ranks(scores, ids, {i: n for n, i in enumerate(ids)}, history, items)
    return {}


def _ranks(
    scores: np.ndarray,
    ids: Sequence[str],
    index: dict[str, int],
    history: Sequence[str],
    items: Sequence[str],
    positive_only: bool = False,
) -> dict[str, int]:
    eligible = np.ones(len(ids), dtype=bool)
    for h in history:
        if h in index:
            eligible[index[h]] = False
    if positive_only:
        eligible &= scores > 0
    pool = np.sort(scores[eligible])  # ascending: rank = 1 + how many eligible scores are higher
    out: dict[str, int] = {}
    for item in items:
        row = index.get(item)
        if row is None or not eligible[row]:
            continue
        out[item] = 1 + int(len(pool) - np.searchsorted(pool, scores[row], side="right"))
    return out


def safe_global_ranks(source: Any, history: Sequence[str], items: Sequence[str], query: str | None) -> dict[str, int]:
    """`global_ranks`, with {} where the source cannot serve this history (the fusion skips it too)."""
    try:
        return global_ranks(source, history, items, query)
    except DataError:
        return {}
