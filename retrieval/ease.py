"""EASE: a linear item-to-item model with a closed-form fit, as a fourth candidate source.

Steck, "Embarrassingly Shallow Autoencoders for Sparse Data" (WWW 2019): the item-item weights B minimise
||X - XB||^2 + l2 ||B||^2 subject to diag(B) = 0, for X the users x items matrix of who has what. The
solution is P = (X'X + l2 I)^-1, B = -P / diag(P) column by column, diag(B) = 0; a history scores item j
by the sum of B[h, j] over its items h. Written here from that formula (numpy, a dozen lines), not taken
from a library.

Why a fourth source although it is weaker alone than SASRec or windowed co-occurrence: it sees the whole
history at once (the other two favour the latest items), so it is sometimes right where they are wrong.
Measured on all 943 ML-100K users with the 5-epoch SASRec of that day (bench/retrieval_eval.py, fusion
weights refitted on validation items): fused recall@20 0.293 -> 0.301 and cand20 HR@1 0.481 -> 0.485, at
the cost of recall@50 0.484 -> 0.472 and NDCG@10 0.106 -> 0.102: a small gain, reported as it is.

The fit inverts a dense items x items matrix: ~0.5 s for 1,682 items on the 2-core CPU, out of reach
beyond `EaseConfig.max_items`. A fit on 10,000 or more interactions is kept in the content-keyed cache
(`retrieval/cache.py`, a week at most: B is derived from personal data).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from reasonrec.errors import ConfigError, DataError

from . import cache
from .config import EaseConfig
from .scored import ScoredSource
from .types import Item, natural_key

KIND = "ease"
FORMAT = 1


class EaseSource(ScoredSource):
    """`CandidateSource` scoring items by EASE item-item weights summed over the history.

    Build it with `from_dataset` or `fit`; the constructor is internal.
    """

    def __init__(self, config: EaseConfig, items: Mapping[str, Item] | None = None):
        super().__init__(items)
        self.config = config
        self.weights = np.zeros((0, 0), dtype=np.float32)  # B, items x items, zero diagonal

    @classmethod
    def fit(
        cls,
        sequences: Mapping[str, Sequence[str]],
        config: EaseConfig | None = None,
        items: Mapping[str, Item] | None = None,
    ) -> EaseSource:
        """Fit B on who has what (order does not matter to EASE).

        Args:
            sequences: user id -> item ids (e.g. the train side of a split).
            config: l2, max_items; None = defaults.
            items: the catalogue, for `where` filters.

        Raises:
            DataError: no sequence holds any item.
            ConfigError: more items have interactions than `config.max_items`.
        """
        self = cls(config or EaseConfig(), items)
        parts = (FORMAT, np.__version__, cache.code_digest(sys.modules[__name__]))
        self._fit_cached(KIND, parts, sequences, self._solve)
        return self

    def _solve(self, sequences: Mapping[str, Sequence[str]]) -> None:
        rows = [sorted(set(s)) for s in sequences.values()]
        rows = [r for r in rows if r]
        if not rows:
            raise DataError("cannot fit EASE: the interactions hold no items")
        self.ids = sorted({i for r in rows for i in r}, key=natural_key)
        if len(self.ids) > self.config.max_items:
            raise ConfigError(
                f"EASE is fitted for at most {self.config.max_items:,} items (a dense items x items inverse); "
                f"these interactions have {len(self.ids):,}: leave `ease` out of `candidates.sources` or raise "
                "`candidates.ease.max_items` if the machine has the memory"
            )
        self.index = {i: k for k, i in enumerate(self.ids)}
        cols = np.fromiter((self.index[i] for r in rows for i in r), dtype=np.int64)
        owner = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        x = sp.csr_matrix((np.ones(len(cols)), (owner, cols)), shape=(len(rows), len(self.ids)))
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.config.l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)  # column j divided by -P[j, j]
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)

    def _write(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(f, ids=np.asarray(self.ids, dtype=str), weights=self.weights)

    def _read(self, path: Path) -> EaseSource:
        with np.load(path, allow_pickle=False) as z:
            self.ids, self.weights = [str(i) for i in z["ids"]], z["weights"]
        self.index = {i: k for k, i in enumerate(self.ids)}
        return self

    def scores(self, history: Sequence[str]) -> np.ndarray:
        """Score of every fitted item (aligned with `self.ids`) for this history; history items included.

        Raises:
            DataError: empty history, or none of its items has interactions.
        """
        if not history:
            raise DataError("EASE needs a non-empty history (cold start: use the semantic source)")
        rows = sorted({self.index[i] for i in history if i in self.index})
        if not rows:
            raise DataError(
                "none of the history items has interactions, so EASE cannot score them (cold items: use "
                "the semantic source)"
            )
        return self.weights[rows].sum(axis=0)

    def __repr__(self) -> str:
        return f"EaseSource(items={len(self.ids)}, l2={self.config.l2})"
