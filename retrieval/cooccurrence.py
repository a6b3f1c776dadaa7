"""Recency-weighted item-to-item co-occurrence: a cheap collaborative source, and the evidence for reasons.

Two items co-occur for a user when they are at most `window` positions apart in the user's time-ordered
sequence; the count of such users is cosine-normalised by how many users have each item. A user is
scored from the latest `recent` history items, the newest weighing 1 and each older one `decay` times
less. Fitting takes ~1 s on ML-100K on the 2-core CPU, once per process start, so a fit of 10,000 or more
interactions is kept in the content-keyed cache (`retrieval/cache.py`: the sequences' hash in their order,
the settings, this module's code and the numpy/scipy versions; a week at most).

`evidence()` gives what a reason can cite truthfully: for a candidate, the history items that share the
most users with it, with the raw counts ("of the 583 users who have Star Wars, 301 also have it").
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from reasonrec.errors import ConfigError, DataError

from . import cache
from .config import CooccurrenceConfig
from .scored import ScoredSource
from .types import Item, natural_key

KIND = "cooccurrence"
FORMAT = 1
_ARRAYS = ("data", "indices", "indptr", "shape")


class Evidence(BaseModel):
    """Why a candidate fits a history item: counts a sentence can quote.

    "Of the {anchor_users} users who have {anchor}, {co_users} also have {item}."
    """

    model_config = ConfigDict(frozen=True)

    item_id: str = Field(description="The candidate.")
    anchor_id: str = Field(description="The history item it co-occurs with.")
    co_users: int = Field(description="Users who have both items (anywhere in their history).")
    anchor_users: int = Field(description="Users who have the anchor item.")
    item_users: int = Field(description="Users who have the candidate.")
    window_users: int = Field(description="Users who have both within `window` positions of each other.")
    similarity: float = Field(description="co_users / sqrt(anchor_users * item_users).")
    age: int = Field(description="Positions of the anchor before the newest history item (newest = 0).")


class AnchorCount(NamedTuple):
    """`Evidence` without the candidate's own fields and the windowed count (`CooccurrenceSource.anchor_counts`)."""

    anchor_id: str
    co_users: int
    anchor_users: int
    similarity: float
    age: int


class CooccurrenceSource(ScoredSource):
    """`CandidateSource` ranking items by windowed, recency-weighted co-occurrence with the history.

    Build it with `from_dataset` or `fit`; the constructor is internal.

    Args:
        config: window, recent, decay.
        items: the catalogue (for `where` filters); items without interactions are never candidates.
    """

    positive_only = True  # an item that never co-occurs with the history has no evidence: not a candidate

    def __init__(self, config: CooccurrenceConfig, items: Mapping[str, Item] | None = None):
        super().__init__(items)
        self.config = config
        self.users = np.zeros(0, dtype=np.int64)  # users per item
        self._sim: sp.csr_matrix = sp.csr_matrix((0, 0))  # windowed cosine similarity
        self._window: sp.csr_matrix = sp.csr_matrix((0, 0))  # windowed co-user counts
        self._user_items: sp.csc_matrix = sp.csc_matrix((0, 0))  # users x items, binary

    # --- building -----------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        sequences: Mapping[str, Sequence[str]],
        config: CooccurrenceConfig | None = None,
        items: Mapping[str, Item] | None = None,
    ) -> CooccurrenceSource:
        """Count co-occurrences in per-user item sequences.

        Args:
            sequences: user id -> item ids, oldest first (e.g. the train side of a split).
            config: window, recent, decay; None = defaults.
            items: the catalogue, for `where` filters.

        Returns:
            The fitted source.

        Raises:
            DataError: no sequence holds any item.
        """
        self = cls(config or CooccurrenceConfig(), items)
        parts = (FORMAT, np.__version__, scipy.__version__, cache.code_digest(sys.modules[__name__]))
        self._fit_cached(KIND, parts, sequences, self._count)
        return self

    def _count(self, sequences: Mapping[str, Sequence[str]]) -> None:
        seqs = [_dedupe_keep_last(s) for s in sequences.values()]
        seqs = [s for s in seqs if s]
        if not seqs:
            raise DataError("cannot fit co-occurrence: the interactions hold no items")
        self.ids = sorted({i for s in seqs for i in s}, key=natural_key)
        self.index = {i: k for k, i in enumerate(self.ids)}
        n = len(self.ids)
        flat = np.fromiter((self.index[i] for s in seqs for i in s), dtype=np.int64)
        owner = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        self._user_items = sp.csc_matrix((np.ones(len(flat), dtype=np.float32), (owner, flat)), shape=(len(seqs), n))
        self.users = np.bincount(flat, minlength=n)
        rows, cols = [], []
        for d in range(1, self.config.window + 1):  # pairs d positions apart within one user
            same = owner[:-d] == owner[d:]
            rows.append(flat[:-d][same])
            cols.append(flat[d:][same])
        a, b = np.concatenate(rows), np.concatenate(cols)
        ones = np.ones(2 * len(a), dtype=np.float32)
        # Each item appears once per user (deduped), so a summed pair count is a count of users.
        self._window = sp.csr_matrix((ones, (np.r_[a, b], np.r_[b, a])), shape=(n, n))
        self._window.sort_indices()  # `_window_users` bisects each row
        self._window.sum_duplicates()
        norm = 1.0 / np.sqrt(np.maximum(self.users, 1)).astype(np.float32)
        self._sim = sp.csr_matrix(sp.diags(norm) @ self._window @ sp.diags(norm))

    def _write(self, path: Path) -> None:
        """The fitted arrays as an .npz (no pickle): ids, user counts and the three sparse matrices."""
        arrays: dict[str, np.ndarray] = {"ids": np.asarray(self.ids, dtype=str), "users": self.users}
        for name, m in (("sim", self._sim), ("window", self._window), ("user_items", self._user_items)):
            arrays.update({f"{name}_{a}": np.asarray(getattr(m, a)) for a in _ARRAYS})
        with path.open("wb") as f:
            np.savez(f, **arrays)

    def _read(self, path: Path) -> CooccurrenceSource:
        """The state `_count` leaves, from `_write`'s arrays (the same arrays, so the same scores)."""
        with np.load(path, allow_pickle=False) as z:
            def matrix(name: str, kind: Any) -> Any:
                data, indices, indptr, shape = (z[f"{name}_{a}"] for a in _ARRAYS)
                return kind((data, indices, indptr), shape=tuple(int(x) for x in shape))

            self._sim, self._window = matrix("sim", sp.csr_matrix), matrix("window", sp.csr_matrix)
            self._window.sort_indices()  # `_window_users` bisects each row (a file from before may not be sorted)
            self._user_items = matrix("user_items", sp.csc_matrix)
            self.ids, self.users = [str(i) for i in z["ids"]], z["users"]
        self.index = {i: k for k, i in enumerate(self.ids)}
        return self

    # --- scoring (`candidates` comes from ScoredSource) -------------------------------------------

    def scores(self, history: Sequence[str]) -> np.ndarray:
        """Score of every fitted item (aligned with `self.ids`) for this history; history items included.

        Raises:
            DataError: empty history, or none of its latest `recent` items has interactions.
        """
        if not history:
            raise DataError("co-occurrence needs a non-empty history (cold start: use the semantic source)")
        recent = list(history)[-self.config.recent :]
        idx, w = [], []
        for age, item in enumerate(reversed(recent)):
            if item in self.index:
                idx.append(self.index[item])
                w.append(self.config.decay**age)
        if not idx:
            raise DataError(
                f"none of the latest {len(recent)} history items has interactions, so co-occurrence "
                "cannot score them (cold items: use the semantic source)"
            )
        return np.asarray(self._sim[idx].T @ np.asarray(w, dtype=np.float32)).ravel()

    # --- evidence -----------------------------------------------------------------------------------

    def evidence(self, history: Sequence[str], item_id: str, top: int = 3) -> list[Evidence]:
        """The history items sharing the most users with a candidate, with the counts behind it.

        Anchors are ranked by `similarity` (co-users normalised by both items' user counts, so a
        blockbuster everyone has does not win every time), ties by recency.

        Args:
            history: item ids, oldest first.
            item_id: the candidate.
            top: anchors wanted.

        Returns:
            Up to `top` Evidence records with co_users > 0; [] when the candidate or no history item
            has interactions.

        Raises:
            ConfigError: top < 1.
        """
        if top < 1:
            raise ConfigError(f"`top` must be >= 1, got {top}")
        j = self.index.get(item_id)
        if j is None:
            return []
        nj = int(self.users[j])
        return [
            Evidence(
                item_id=item_id, anchor_id=c.anchor_id, co_users=c.co_users, anchor_users=c.anchor_users,
                item_users=nj, window_users=self._window_users(j, self.index[c.anchor_id]),
                similarity=c.similarity, age=c.age,
            )  # fmt: skip
            for c in self.anchor_counts(history, item_id)[:top]
        ]

    def anchor_counts(self, history: Sequence[str], item_id: str) -> list[AnchorCount]:
        """Every history item sharing users with a candidate, ranked as `evidence` ranks them, with only
        the counts: what a reason's co-watch facts and their checks read, for every anchor of every shown
        reason. Why apart from `evidence`: its records (a validated model each, and a windowed count) were
        ~10 % of a scoring request; these are plain tuples.

        Returns:
            [] when the candidate or no history item has interactions.
        """
        j = self.index.get(item_id)
        if j is None:
            return []
        # Read straight from the CSC arrays: scipy's per-anchor column slicing and `multiply` cost ~40 us
        # each, and this runs for every history item of every shown reason (it was ~60% of a scoring
        # request). Each item is in a user's row at most once (`_dedupe_keep_last`), so the users who have
        # both items are counted by a mask, the same count as summing the product of the binary columns.
        ui = self._user_items
        has_j = np.zeros(ui.shape[0], dtype=bool)
        has_j[ui.indices[ui.indptr[j] : ui.indptr[j + 1]]] = True
        nj = int(self.users[j])
        rows: list[tuple[float, int, str, int, int]] = []  # (-similarity, age, anchor, co, anchor users)
        seen: set[str] = set()
        for age, anchor in enumerate(reversed(list(history))):
            a = self.index.get(anchor)
            if a is None or anchor in seen or anchor == item_id:
                continue
            seen.add(anchor)
            co = int(np.count_nonzero(has_j[ui.indices[ui.indptr[a] : ui.indptr[a + 1]]]))
            if co == 0:
                continue
            na = int(self.users[a])
            rows.append((-(co / float(np.sqrt(na * nj))), age, anchor, co, na))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [AnchorCount(anchor, co, na, -neg_sim, age) for neg_sim, age, anchor, co, na in rows]

    def _window_users(self, j: int, a: int) -> int:
        """Users with both items within `window` positions: entry [j, a] of the windowed counts (symmetric by
        construction, `_count` adds each pair both ways), found by bisecting row j's sorted column indices.
        Why not a dict of the row: building it was ~57 us of a ~65-100 us `evidence` call (rows hold ~480
        entries on ML-100K) for the one to three anchors a reason reads."""
        window = self._window
        lo, hi = int(window.indptr[j]), int(window.indptr[j + 1])
        p = lo + int(np.searchsorted(window.indices[lo:hi], a))
        return int(window.data[p]) if p < hi and window.indices[p] == a else 0

    def __repr__(self) -> str:
        return f"CooccurrenceSource(items={len(self.ids)}, window={self.config.window})"


def _dedupe_keep_last(seq: Sequence[str]) -> list[str]:
    """A sequence with each item once, at its latest position (a re-watch counts as recent)."""
    last = {str(i): k for k, i in enumerate(seq)}
    return sorted(last, key=last.__getitem__)
