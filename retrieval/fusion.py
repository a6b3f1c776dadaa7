"""Candidate fusion: one list from several sources, each candidate carrying every source's score and rank.

Sources are asked for their top `depth` items; the lists are merged by reciprocal-rank fusion (RRF,
score = sum over sources of w / (k + rank), k = 60 after Cormack et al. 2009) or by a weighted sum of
per-source z-scored scores ("linear"). RRF needs no score calibration between sources whose scales differ
(dot products, cosines, co-occurrence sums); "linear" keeps how far ahead an item is within a source.

A source that raises `DataError` for this request (empty history, only cold items) is skipped, so a new
user with no history gets semantic candidates only; an unknown item id (`UnknownItemError`) still fails.
A free-text `query` is read only by the semantic source, so when one is given the semantic source's weight
is raised to the sum of the others' (the request counts as much as the history).

`fit_weights` picks the weights by coordinate search on validation NDCG@10 (the leave-one-out validation
items, never the test items).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from reasonrec.errors import ConfigError, DataError, UnknownItemError

from .candidates import Candidate, CandidateSource
from .types import natural_key

Method = Literal["rrf", "linear"]
SEMANTIC = "semantic"  # the source name that reads `query`
DEFAULT_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)


class FusedSource:
    """`CandidateSource` merging named sources, e.g. {"collaborative": ..., "cooccurrence": ..., "semantic": ...}.

    Args:
        sources: name -> source; the names key `Candidate.scores` / `.ranks` and `weights`.
        weights: name -> weight (missing names weigh 1.0); a 0 weight still fetches the source, so its
            ranks are reported, but it does not move the order.
        method: "rrf" (default) or "linear".
        k: the RRF constant.
        depth: items fetched per source (at least `n`); deeper lists let a candidate ranked lower by one
            source but agreed on by others enter the fused top-n.

    Raises:
        ConfigError: no sources, an unknown method or weight name, a negative weight, k or depth < 1.
    """

    def __init__(
        self,
        sources: Mapping[str, CandidateSource],
        weights: Mapping[str, float] | None = None,
        method: Method = "rrf",
        k: float = 60.0,
        depth: int = 100,
    ):
        if not sources:
            raise ConfigError("`sources` must name at least one candidate source")
        if method not in ("rrf", "linear"):
            raise ConfigError(f"`method` must be 'rrf' or 'linear', got {method!r}")
        weights = dict(weights or {})
        unknown = set(weights) - set(sources)
        if unknown:
            raise ConfigError(f"weights for unknown source(s) {sorted(unknown)}; sources are {sorted(sources)}")
        if any(not w >= 0 for w in weights.values()):
            raise ConfigError(f"weights must be >= 0, got {weights}")
        if k < 1 or depth < 1:
            raise ConfigError(f"`k` and `depth` must be >= 1, got k={k}, depth={depth}")
        self.sources = dict(sources)
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.sources}
        self.method = method
        self.k = float(k)
        self.depth = depth

    def candidates(
        self,
        history: list[str],
        n: int,
        query: str | None = None,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> list[Candidate]:
        """The fused top-n over every source that can serve this request.

        Args:
            history: item ids, oldest first; never returned.
            n: candidates wanted.
            query: free text, read by the semantic source only (and raising its weight, see module doc).
            where: Chroma metadata filter, passed to every source.
            exclude: further item ids never returned.

        Returns:
            Up to n candidates by fused score (ties by best single-source rank, then id); `scores` and
            `ranks` hold each source's own score and 1-based rank for the sources that proposed it.

        Raises:
            ConfigError: n < 1 or a bad filter. DataError: no source can serve the request (the first
            source's error is re-raised). UnknownItemError: a history id no source knows.
        """
        if n < 1:
            raise ConfigError(f"`n` must be >= 1, got {n}")
        lists = self.collect(history, max(n, self.depth), query=query, where=where, exclude=exclude)
        return fuse(lists, self._weights(query, lists), self.method, self.k)[:n]

    def collect(
        self,
        history: list[str],
        depth: int,
        query: str | None = None,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> dict[str, list[Candidate]]:
        """Each source's own list (sources that raise `DataError` left out).

        Raises:
            DataError: every source raised it (the first one's error). UnknownItemError: always re-raised.
        """
        exclude = frozenset(exclude)
        lists: dict[str, list[Candidate]] = {}
        errors: list[DataError] = []
        for name, source in self.sources.items():
            try:
                lists[name] = source.candidates(history, depth, query=query, where=where, exclude=exclude)
            except UnknownItemError:
                raise
            except DataError as e:  # cold start for this source: the others may still answer
                errors.append(e)
        if not lists and errors:
            raise errors[0]
        return lists

    def _weights(self, query: str | None, lists: Mapping[str, Any]) -> dict[str, float]:
        w = {name: self.weights[name] for name in lists}
        if query and query.strip() and SEMANTIC in w:
            others = sum(v for name, v in w.items() if name != SEMANTIC)
            w[SEMANTIC] = max(w[SEMANTIC], others, 1.0)
        return w

    def __repr__(self) -> str:
        return f"FusedSource({self.method}, weights={self.weights})"


def fuse(
    lists: Mapping[str, Sequence[Candidate]],
    weights: Mapping[str, float] | None = None,
    method: Method = "rrf",
    k: float = 60.0,
) -> list[Candidate]:
    """Merge ranked lists into one, best first.

    Args:
        lists: source name -> its candidates, best first.
        weights: source name -> weight (missing = 1.0).
        method: "rrf": sum of w / (k + rank); "linear": sum of w * z, z the score standardised within the
            source's list, and an item a source did not return gets that list's lowest z minus 1.
        k: RRF constant.

    Returns:
        Every candidate of any list once, with fused `score`, per-source `scores` and `ranks`.
    """
    weights = weights or {}
    table: dict[str, tuple[dict[str, float], dict[str, int]]] = {}
    for name, cands in lists.items():
        for rank, c in enumerate(cands, start=1):
            scores, ranks = table.setdefault(c.item_id, ({}, {}))
            if name not in ranks:
                scores[name], ranks[name] = float(c.score), rank
    z = {name: _zscores([c.score for c in cands]) for name, cands in lists.items()} if method == "linear" else {}
    out = []
    for item, (scores, ranks) in table.items():
        total = 0.0
        for name in lists:
            w = float(weights.get(name, 1.0))
            if method == "rrf":
                total += w / (k + ranks[name]) if name in ranks else 0.0
            else:
                zs = z[name]
                total += w * (zs[ranks[name] - 1] if name in ranks else (zs.min() - 1.0 if len(zs) else 0.0))
        out.append(Candidate(item_id=item, score=total, scores=scores, ranks=ranks))
    out.sort(key=lambda c: (-c.score, min(c.ranks.values()), natural_key(c.item_id)))
    return out


def fit_weights(
    lists: Sequence[Mapping[str, Sequence[Candidate]]],
    targets: Sequence[str],
    method: Method = "rrf",
    k: float = 60.0,
    grid: Sequence[float] = DEFAULT_GRID,
    rounds: int = 3,
    cutoff: int = 10,
) -> tuple[dict[str, float], float]:
    """Coordinate search of fusion weights maximising mean NDCG@cutoff of held-out items.

    Call it with each validation user's source lists (`FusedSource.collect` on the train history) and
    validation item; the first source's weight is fixed at 1 (only ratios matter).

    Returns:
        (weights, the NDCG@cutoff they reach on these users).

    Raises:
        ConfigError: no users, or lists and targets of different lengths.
    """
    if not lists or len(lists) != len(targets):
        raise ConfigError(f"need one target per user's lists, got {len(lists)} lists and {len(targets)} targets")
    names = sorted({name for user in lists for name in user})
    feats = [_features(user, names, method, k) for user in lists]
    prepared = []
    for (items, X), target in zip(feats, targets, strict=True):
        t = items.get(target)
        prepared.append((X, t))

    def ndcg(w: np.ndarray) -> float:
        total = 0.0
        for X, t in prepared:
            if t is None:
                continue
            s = X @ w
            rank = int((s > s[t]).sum()) + 1
            if rank <= cutoff:
                total += 1.0 / math.log2(rank + 1)
        return total / len(prepared)

    w = np.ones(len(names))
    best = ndcg(w)
    for _ in range(rounds):
        improved = False
        for j in range(1, len(names)):
            for v in grid:
                trial = w.copy()
                trial[j] = v
                score = ndcg(trial)
                if score > best + 1e-12:
                    best, w, improved = score, trial, True
        if not improved:
            break
    return {name: float(w[j]) for j, name in enumerate(names)}, best


def _features(lists: Mapping[str, Sequence[Candidate]], names: list[str], method: Method, k: float):  # noqa: ANN202
    """(item -> row, matrix rows x sources) of per-source fusion terms, so fused score = X @ w."""
    items: dict[str, int] = {}
    for name in names:
        for c in lists.get(name, ()):
            items.setdefault(c.item_id, len(items))
    X = np.zeros((len(items), len(names)))
    for j, name in enumerate(names):
        cands = lists.get(name, ())
        if method == "linear":
            zs = _zscores([c.score for c in cands])
            X[:, j] = zs.min() - 1.0 if len(zs) else 0.0
        for r, c in enumerate(cands):
            X[items[c.item_id], j] = 1.0 / (k + r + 1) if method == "rrf" else zs[r]
    return items, X


def _zscores(scores: Sequence[float]) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if len(a) == 0:
        return a
    sd = a.std()
    return (a - a.mean()) / sd if sd > 0 else np.zeros_like(a)
