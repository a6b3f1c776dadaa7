"""What the interaction-fitted sources share: a score per fitted item, turned into candidates.

`CooccurrenceSource` and `EaseSource` both fit a model on the user sequences and score every fitted item
for a history (`scores`). Taking the top n of those scores, with the history, `exclude` and a Chroma-style
`where` filter applied, is the same for both, so it lives here once; so does the catalogue-wide rank that
retrieval/ranks.py asks of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from reasonrec.errors import ConfigError

from . import cache
from .candidates import Candidate
from .metadata import item_metadata
from .types import Dataset, Item
from .where import compile_where

CACHE_MIN_ROWS = 10_000  # smaller fits take milliseconds: not worth a file


class ScoredSource:
    """Base of the sources that score every fitted item; subclasses fill `ids` / `index` and `scores`.

    Args:
        items: the catalogue (for `where` filters); items without interactions are never candidates.
    """

    # Co-occurrence gives 0 to an item that never co-occurs with the history: it is no evidence at all,
    # so such items are not candidates. A linear model's negative or zero score is still a ranking.
    positive_only: ClassVar[bool] = False

    def __init__(self, items: Mapping[str, Item] | None = None):
        self.items = dict(items or {})
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self._metas: list[dict[str, Any]] | None = None  # item_metadata per fitted item, built for `where`

    @classmethod
    def from_dataset(cls, dataset: Dataset, config: Any = None) -> Any:
        """`fit` on every interaction of a dataset (per-user order: timestamp, then item id)."""
        return cls.fit({u: dataset.history(u) for u in dataset.users()}, config, dataset.items)  # type: ignore[attr-defined]

    def scores(self, history: Sequence[str]) -> np.ndarray:
        """Score of every fitted item (aligned with `self.ids`); history items included."""
        raise NotImplementedError

    def _fit_cached(
        self, kind: str, key_parts: Sequence[Any], sequences: Mapping[str, Sequence[str]], compute: Any
    ) -> None:
        """`compute(sequences)`, or its result from the content-keyed cache (retrieval/cache.py).

        Fits on fewer than `CACHE_MIN_ROWS` interactions take milliseconds and are not kept. The key holds
        the sequences' digest, the settings and `key_parts` (format, library versions, the code's digest).
        The subclass writes and reads its state with `_write(path)` / `_read(path)` (.npz, no pickle).
        """
        key = None
        if sum(len(s) for s in sequences.values()) >= CACHE_MIN_ROWS:
            key = cache.make_key(kind, *key_parts, cache.sequences_digest(sequences), self.config.model_dump())
            hit = cache.lookup(kind, key, ".npz")
            if hit is not None:
                try:
                    self._read(hit)
                    return
                except (OSError, ValueError, KeyError):
                    cache.discard(hit)
        compute(sequences)
        if key is not None:
            cache.store(kind, key, ".npz", self._write)

    def _meta(self, k: int) -> dict[str, Any]:
        """`item_metadata` of the k-th fitted item (built for every item at the first `where` filter)."""
        if self._metas is None:
            self._metas = [item_metadata(self.items[i]) if i in self.items else {} for i in self.ids]
        return self._metas[k]

    def candidates(
        self,
        history: list[str],
        n: int,
        query: str | None = None,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> list[Candidate]:
        """The n best-scored fitted items.

        Args:
            history: item ids, oldest first; never returned. Items without interactions are ignored.
            n: candidates wanted.
            query: ignored (these sources have no notion of text); the fusion adds the semantic source.
            where: Chroma metadata filter, evaluated on `item_metadata` of each item.
            exclude: further item ids never returned.

        Returns:
            Up to n candidates, best first (ties by item id); with `positive_only`, only positive scores.

        Raises:
            ConfigError: n < 1 or a bad filter. DataError: the source cannot score this history (empty,
            or none of its items has interactions: cold start, use the semantic source).
        """
        if n < 1:
            raise ConfigError(f"`n` must be >= 1, got {n}")
        keep = compile_where(where)
        scores = self.scores(history)
        banned = {self.index[i] for i in (*history, *exclude) if i in self.index}
        order = np.argsort(-scores, kind="stable")  # stable: ties stay in natural id order
        out: list[Candidate] = []
        for k in order:
            if len(out) == n or (self.positive_only and scores[k] <= 0):
                break
            if k not in banned and (where is None or keep(self._meta(k))):
                out.append(Candidate(item_id=self.ids[k], score=float(scores[k])))
        return out
