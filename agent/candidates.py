"""The agent's candidate source: collaborative + co-occurrence + EASE + semantic retrieval, fused.

`build_candidate_source` assembles the `FusedSource` a config names; the agent uses it unless it is
given another `CandidateSource`. `ranking_features` gives every candidate of a list its per-source
reciprocal-rank terms, so the fused ranking score (ranking/fused.py) can be computed for candidates
that came from elsewhere too (the evaluation protocols hand the ranker their own lists).

The sequence model trains in minutes on a CPU, so it is trained by `reasonrec index`, not by a request:
with `candidates.collaborative: auto` a catalogue whose model is not trained yet is served by the other
sources, and `notes` says so (the CLI prints it).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from reasonrec.agent.config import AgentConfig
from reasonrec.errors import ConfigError
from reasonrec.retrieval.candidates import Candidate, CandidateSource
from reasonrec.retrieval.cooccurrence import CooccurrenceSource
from reasonrec.retrieval.ease import EaseSource
from reasonrec.retrieval.fusion import FusedSource
from reasonrec.retrieval.types import Dataset

log = logging.getLogger(__name__)
NOT_TRAINED = (
    "the collaborative model for these interactions is not trained yet: serving co-occurrence + EASE + semantic "
    "candidates; run `reasonrec index` once (about half an hour on 2 CPU cores) for the sequence model"
)


class LazySource:
    """A `CandidateSource` built on first use (the semantic source loads MiniLM and opens Chroma)."""

    def __init__(self, factory: Callable[[], CandidateSource]):
        self._factory = factory
        self._source: CandidateSource | None = None

    @property
    def source(self) -> CandidateSource:
        if self._source is None:
            self._source = self._factory()
        return self._source

    def candidates(
        self,
        history: list[str],
        n: int,
        query: str | None = None,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> list[Candidate]:
        return self.source.candidates(history, n, query=query, where=where, exclude=exclude)


def build_candidate_source(
    dataset: Dataset,
    config: AgentConfig,
    semantic: Callable[[], CandidateSource],
    sequences: Mapping[str, Sequence[str]] | None = None,
    train: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    notes: list[str] | None = None,
) -> FusedSource:
    """The fused source of `config.candidates`.

    Args:
        dataset: the catalogue and interactions.
        config: the agent config (`candidates`, `retrieval`).
        semantic: builds the text source (called on first use only).
        sequences: user -> item ids to fit the collaborative sources on; None = every interaction
            (evaluation passes the train side of its split, so no test item is ever seen).
        train: train the sequence model if missing; None = `candidates.collaborative == "train"`.
        progress: the sequence model's training progress (batches done, total).
        notes: receives a line when a configured source cannot serve yet.
    """
    cc = config.candidates
    seqs = sequences if sequences is not None else {u: dataset.history(u) for u in dataset.users()}
    sources: dict[str, CandidateSource] = {}
    for name in cc.sources:
        if name == "cooccurrence":
            sources[name] = CooccurrenceSource.fit(seqs, cc.cooccurrence, dataset.items)
        elif name == "ease":
            try:
                sources[name] = EaseSource.fit(seqs, cc.ease, dataset.items)
            except ConfigError as e:  # a catalogue too large for a dense inverse: serve without it
                if notes is not None:
                    notes.append(f"serving without the `ease` source: {e}")
        elif name == "semantic":
            sources[name] = LazySource(semantic)
        elif name == "collaborative" and cc.collaborative != "off":
            model = _sequence_model(seqs, config, cc.collaborative == "train" if train is None else train, progress)
            if model is None:
                if notes is not None:
                    notes.append(NOT_TRAINED)
                continue
            from reasonrec.retrieval.collaborative import CollaborativeSource

            sources[name] = CollaborativeSource(model, config.retrieval, dataset.items)
    weights = {k: v for k, v in cc.weights.items() if k in sources}
    return FusedSource(sources, weights=weights, method=cc.fusion, k=cc.rrf_k, depth=cc.depth)


def _sequence_model(seqs: Mapping[str, Sequence[str]], config: AgentConfig, train: bool, progress: Any) -> Any:
    """The cached SASRec for these sequences and settings; trained now only when `train`."""
    from reasonrec.retrieval import sasrec

    if not train:
        return sasrec.cached_model(seqs, config.candidates.sasrec)
    model, _ = sasrec.load_or_train(seqs, config.candidates.sasrec, progress=progress)
    return model


_RANKS_MAX = 4096  # lists kept per source: every row of an evaluation asks for the same (history, candidates)


def _memo(source: FusedSource, table: str, key: Any, build: Callable[[], Any]) -> Any:
    """`build()`, remembered in an LRU table kept on the source itself.

    Why on the source: a module-level cache keyed by id(source) could hand a new source the ranks of a
    collected one that had the same id.
    """
    cache: OrderedDict[Any, Any] = source.__dict__.setdefault(table, OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = value = build()
    if len(cache) > _RANKS_MAX:
        cache.popitem(last=False)
    return value


def _source_ranks(source: FusedSource, history: list[str], query: str | None) -> dict[str, dict[str, int]]:
    """Item -> {source name: 1-based rank} over each source's top `depth`."""

    def build() -> dict[str, dict[str, int]]:
        ranks: dict[str, dict[str, int]] = {}
        for name, cands in source.collect(history, source.depth, query=query).items():
            for r, c in enumerate(cands, start=1):
                ranks.setdefault(c.item_id, {}).setdefault(name, r)
        return ranks

    return _memo(source, "_rank_cache", (tuple(history), query), build)


def _list_ranks(
    source: FusedSource, history: list[str], candidates: Sequence[str], query: str | None
) -> dict[str, dict[str, int]]:
    """`_source_ranks`, plus, for candidates a source did not return among its top `depth`, the rank it
    would give them over the whole catalogue (retrieval/ranks.py): a caller's own list is scored by every
    source."""
    from reasonrec.retrieval.ranks import safe_global_ranks

    def build() -> dict[str, dict[str, int]]:
        out = {item: dict(r) for item, r in _source_ranks(source, history, query).items()}
        for name, src in source.sources.items():
            missing = [c for c in candidates if name not in out.get(c, {})]
            if missing:
                for item, r in safe_global_ranks(src, history, missing, query).items():
                    out.setdefault(item, {})[name] = r
        return out

    return _memo(source, "_list_rank_cache", (tuple(history), query, tuple(candidates)), build)


def ranking_features(
    source: CandidateSource,
    history: list[str],
    candidates: Sequence[str],
    query: str | None = None,
    known: Sequence[Candidate] | None = None,
) -> list[dict[str, float]]:
    """Per candidate: each source's weighted reciprocal-rank term (x k, so a source's top item is ~1) and
    their sum under "fusion". A candidate a source did not return among its `depth` gets the rank that
    source gives it over the whole catalogue; a source that cannot score it at all contributes 0.

    `known`: the candidates as the fused source returned them (their `ranks` are reused, no query runs;
    a source that did not propose one of them contributes 0, as in the fused order the user was shown).
    """
    if not isinstance(source, FusedSource):
        return [{} for _ in candidates]
    ranks: dict[str, dict[str, int]]
    fused: dict[str, float] = {}
    if known is not None:  # the fused score as the source computed it (query-adjusted weights included)
        ranks = {c.item_id: dict(c.ranks) for c in known}
        scale = source.k if source.method == "rrf" else 1.0
        fused = {c.item_id: scale * c.score for c in known}
    else:
        ranks = _list_ranks(source, history, candidates, query)
    out = []
    for item in candidates:
        terms = {
            name: source.k * source.weights.get(name, 1.0) / (source.k + r) for name, r in ranks.get(item, {}).items()
        }
        out.append({**terms, "fusion": fused.get(item, sum(terms.values()))})
    return out
