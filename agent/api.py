"""`RecommenderAgent`: the public Python API.

    from reasonrec import RecommenderAgent, AgentConfig
    agent = RecommenderAgent(AgentConfig())
    recs = agent.recommend(user_id="196", k=5)
    for r in recs.items:
        print(r.rank, r.title, r.source, r.reason)

Data flows one way: retrieval (candidates from Chroma) -> prompt -> model -> parser -> result. The
dataset, the vector store and the model are loaded lazily, on first use, and reused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from reasonrec.agent.candidates import ranking_features
from reasonrec.agent.config import AgentConfig
from reasonrec.agent.inputs import (
    check_argument_types,
    check_collection,
    check_k,
    fit_prompt_history,
    load_dataset_spec,
    new_request,
    resolve_history,
)
from reasonrec.agent.model.lazy import LazyModel
from reasonrec.agent.model.loading import LoadedModel
from reasonrec.agent.ranking.registry import Ranker, make_ranker, may_skip_model, needs_model
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.agent.schemas import Recommendations
from reasonrec.agent.timing import SetupClock, paused_gc, split_timings
from reasonrec.errors import ConfigError, NotEnoughItemsError
from reasonrec.retrieval.candidates import CandidateSource
from reasonrec.retrieval.types import Dataset, Item

if TYPE_CHECKING:  # typing only: importing the chat or the store here would load them on every agent
    from reasonrec.agent.chat.session import ChatSession
    from reasonrec.agent.chat.store import SessionStore
    from reasonrec.retrieval.store import UpsertReport

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class RecommenderAgent:
    """Recommend items with reasons for a known user, a given history, and/or a free-text request.

    Args:
        config: the one configuration object; defaults run SmolLM2 on ML-100K offline.
        dataset: an already loaded dataset (skips `config.dataset`).
        model: an already loaded model (skips `config.model`), e.g. shared by several agents.

    Not thread-safe: call an agent from one thread, best the same one throughout, the loading included.
    Why the same: once a second thread has run torch, torch's OpenMP helpers sleep between the model's
    small ops and a chat turn got ~30 % slower on a 2-core CPU (`interfaces.server.serving_app`).
    """

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        dataset: Dataset | None = None,
        model: LoadedModel | None = None,
        candidate_source: CandidateSource | None = None,
    ):
        self.config = config or AgentConfig()
        self._dataset: Dataset | None = None
        if dataset is not None:
            self._set_dataset(dataset)
        self._model = model
        self._store: Any = None
        self._generator: CandidateSource | None = candidate_source
        self._ranker: Ranker | None = None
        self._reasons: Any = None  # evidence.ReasonData for `_reasons_for` (the candidate source it reads)
        self._reasons_for: Any = None
        self.notes: list[str] = []  # what the agent could not do as configured (shown by the CLI)
        self.setup_clock = SetupClock()  # lazy builds, reported as `setup_ms`, never as request latency

    # ---- lazily built components -------------------------------------------------------------
    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            with self.setup_clock.measure():
                self._set_dataset(load_dataset_spec(self.config.dataset))
        return self._dataset

    def _set_dataset(self, dataset: Dataset) -> None:
        # A collection left at its default ('ml-100k') is named after another catalogue, so one's own
        # items never query ML-100K's collection (and the collaborative `<collection>-sasrec` follows).
        self._dataset = dataset
        rc = self.config.retrieval.for_dataset(dataset.name)
        if rc is not self.config.retrieval:
            self.config = self.config.model_copy(update={"retrieval": rc})

    @property
    def items(self) -> dict[str, Item]:
        return self.dataset.items

    def index(
        self, progress: Progress | None = None, train: bool = True, train_progress: Progress | None = None
    ) -> UpsertReport:
        """Embed the catalogue into Chroma (only new or changed items) and, with `train`, train the
        collaborative model for these interactions if it is not cached yet (minutes on a CPU; retrained
        only when the interactions or its settings change). Returns the text store's UpsertReport."""
        from reasonrec.retrieval.candidates import build_index

        with paused_gc():  # opening Chroma imports it (see paused_gc); not set-up of a request, so not timed
            self._store, report = build_index(self.dataset, self.config.retrieval, progress=progress)
        self._generator = None
        cc = self.config.candidates
        if train and "collaborative" in cc.sources and cc.collaborative != "off":
            self._generator = self._fused_source(train=True, progress=train_progress)
        return report

    @property
    def candidate_source(self) -> CandidateSource:
        """The injected source, else the fused collaborative + co-occurrence + EASE + semantic source (built once)."""
        if self._generator is None:
            with self.setup_clock.measure():
                self._generator = self._fused_source(train=None)
        return self._generator

    @property
    def text_store(self) -> Any:
        """The Chroma text store (title search and mood words in chat), from the semantic source; None without one."""
        source = self.candidate_source
        semantic = getattr(source, "sources", {}).get("semantic")
        inner = getattr(semantic, "source", semantic)  # a LazySource builds the text source here, once
        return getattr(inner, "store", None) or getattr(source, "store", None)

    def _fused_source(self, train: bool | None, progress: Progress | None = None) -> CandidateSource:
        from reasonrec.agent.candidates import build_candidate_source

        return build_candidate_source(
            self.dataset, self.config, self._semantic_source, train=train, progress=progress, notes=self.notes
        )

    def _semantic_source(self) -> CandidateSource:
        """The Chroma text source; a store missing items is completed here, once, and logged."""
        from reasonrec.retrieval.candidates import CandidateGenerator
        from reasonrec.retrieval.embed import Embedder
        from reasonrec.retrieval.store import ItemStore

        rc = self.config.retrieval
        with self.setup_clock.measure():  # built lazily inside the first request's retrieval
            # The embedder loads MiniLM only when text must be embedded (a query, an unindexed item).
            embedder = Embedder(
                rc.embedding_model, device=rc.device, batch_size=rc.batch_size, loading=self.setup_clock.measure
            )
            if self._store is None:
                self._store = ItemStore(rc, embedder)
            stored = self._store.count()
            if stored < len(self.items):
                log.info("indexing %d catalogue items on first use", len(self.items) - stored)
                self._store.upsert(self.items.values())
            check_collection(self._store, self.items, rc.collection, self.dataset.name)
            return CandidateGenerator(self._store, embedder, self.items, rc)

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            from reasonrec.agent.model.loading import load_model

            with self.setup_clock.measure():
                self._model = load_model(self.config.model)
        return self._model

    @property
    def ranker(self) -> Ranker:
        """The ranker for `config.ranker.mode` (generative, scoring or hybrid), built once.

        Where requests may need no model (`may_skip_model`: scoring, `candidates.lm_weight` 0) it is built on
        a LazyModel that loads the model through `self.model` only for a request whose order the LM decides.
        """
        if self._ranker is None:
            with self.setup_clock.measure():
                self._ranker = make_ranker(self._model_handle(), self.config)
        return self._ranker

    def _model_handle(self) -> LoadedModel | LazyModel:
        if self._model is None and may_skip_model(self.config):
            return LazyModel(self.config.model, lambda: self.model)
        return self.model

    # ---- public verbs: validate -> call -> transform -----------------------------------------
    def recommend(
        self,
        user_id: str | int | None = None,
        history: Sequence[str] | None = None,
        query: str | None = None,
        k: int | None = None,
        exclude: Sequence[str] = (),
        where: dict[str, Any] | None = None,
    ) -> Recommendations:
        """Recommend `k` items with reasons.

        Args:
            user_id: a user of the dataset (their full history is used).
            history: item ids, oldest first, for a user the dataset does not know.
            query: optional free-text request ("a funny sci-fi from the 80s").
            k: how many items (default `ranker.k`).
            exclude: item ids never to recommend (besides the history).
            where: Chroma metadata filter, e.g. {"genre_Comedy": True}.

        Returns:
            Recommendations: exactly k items, all candidates the user has not seen.

        Raises:
            ConfigError, DataError, UnknownUserError, UnknownItemError: a caller mistake.
        """
        return self.recommend_many([user_id], [history], [query], k=k, exclude=exclude, where=where)[0]

    def recommend_many(
        self,
        user_ids: Sequence[str | int | None],
        histories: Sequence[Sequence[str] | None] | None = None,
        queries: Sequence[str | None] | None = None,
        k: int | None = None,
        exclude: Sequence[str] = (),
        where: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> list[Recommendations]:
        """`recommend` for many users with batched model calls."""
        k = self._check_k(k)
        check_argument_types(user_ids, histories, queries, exclude)
        n = len(user_ids)
        histories = list(histories) if histories is not None else [None] * n
        queries = list(queries) if queries is not None else [None] * n
        if not (len(histories) == len(queries) == n):
            raise ConfigError("`user_ids`, `histories` and `queries` must have the same length")
        reqs = []
        for uid, hist, q in zip(user_ids, histories, queries, strict=True):
            t0, setup0 = time.perf_counter(), self.setup_clock.ms
            hist_ids = resolve_history(self.dataset, uid, hist, q)
            n_cand = max(self.config.retrieval.n_candidates, k)
            source = self.candidate_source
            cands = source.candidates(hist_ids, n_cand, query=q, where=where, exclude=frozenset(exclude))
            if len(cands) < k:
                raise NotEnoughItemsError(
                    f"`k` is {k} but only {len(cands)} unseen items match"
                    + (" the filter" if where else "")
                    + "; lower k or relax the filter"
                )
            req = self._new_request(hist_ids, [c.item_id for c in cands], k, q, uid)
            req.retrieval_scores = [c.score for c in cands]
            req.features = ranking_features(source, hist_ids, [c.item_id for c in cands], q, known=cands)
            self._fit_history(req)
            # Lazy builds inside this window (dataset, model, store) are set-up, not this request's latency.
            req_ms = (time.perf_counter() - t0) * 1000 - (self.setup_clock.ms - setup0)
            reqs.append((req, max(req_ms, 0.0)))
        return self._run([r for r, _ in reqs], [ms for _, ms in reqs], progress)

    def chat_session(
        self, session_id: str | None = None, user_id: str | None = None, store: SessionStore | None = None
    ) -> ChatSession:
        """Start (or, with `session_id`, continue) a conversation: `.send(text) -> ChatTurn`.

        Args:
            session_id: continue this stored session; None starts a new one.
            user_id: a dataset user whose history seeds a new session; None = a new user (cold start).
            store: a `SessionStore`; default `reasonrec.paths.home()/sessions.sqlite3`.

        Returns:
            ChatSession (see `reasonrec.agent.chat.session`).

        Raises:
            UnknownSessionError: unknown `session_id`. UnknownUserError: unknown `user_id`.
        """
        from reasonrec.agent.chat.session import open_session

        return open_session(self, session_id=session_id, user_id=user_id, store=store)

    def rank(
        self, history: Sequence[str], candidates: Sequence[str], k: int, query: str | None = None
    ) -> Recommendations:
        """Rank a given candidate list, as the evaluation protocols do; its order is the fallback order."""
        return self.rank_many([history], [candidates], k, [query])[0]

    def rank_many(
        self,
        histories: Sequence[Sequence[str]],
        candidate_lists: Sequence[Sequence[str]],
        k: int,
        queries: Sequence[str | None] | None = None,
        progress: Progress | None = None,
        with_retrieval: bool = False,
    ) -> list[Recommendations]:
        """Rank many (history, candidates) pairs with batched model calls.

        With `with_retrieval` each candidate also gets the retrieval sources' scores, so the fused
        ranking score orders them (the evaluation protocols); else the LM alone ranks a given list.
        """
        k = self._check_k(k)
        queries = list(queries) if queries is not None else [None] * len(histories)
        reqs = []
        for hist, cands, q in zip(histories, candidate_lists, queries, strict=True):
            if k > len(cands):
                raise ConfigError(f"`k` must be <= the number of candidates ({len(cands)}), got {k}")
            req = self._new_request(list(hist), list(cands), k, q, None)
            if with_retrieval:
                req.features = ranking_features(self.candidate_source, list(hist), list(cands), q)
            reqs.append(self._fit_history(req))
        return self._run(reqs, [0.0] * len(reqs), progress)

    # ---- helpers ------------------------------------------------------------------------------
    def _check_k(self, k: int | None) -> int:
        return check_k(self.config.ranker.k if k is None else k)

    def _request(self, hist: list[str], cands: list[str], k: int, query: str | None, uid: Any) -> RankRequest:
        """A validated request without retrieval features, its history cut to the model's context."""
        return self._fit_history(self._new_request(hist, cands, k, query, uid))

    def _new_request(self, hist: list[str], cands: list[str], k: int, query: str | None, uid: Any) -> RankRequest:
        return new_request(self.dataset, hist, cands, k, query, uid)

    def _fit_history(self, req: RankRequest) -> RankRequest:
        """`req` with the oldest history dropped where a prompt of it would not fit the model's context.

        A request the model will not see (`needs_model` false) keeps its whole history: no prompt of it is
        rendered, so only the reasons read it, and they are built from facts.
        """
        if needs_model(self.config, req):
            args = (req.history, req.candidates, req.k, req.query)
            req.history = fit_prompt_history(self.model, self.config, self.ranker.prompter, *args)
        return req

    def _run(self, reqs: list[RankRequest], extra_ms: list[float], progress: Progress | None) -> list[Recommendations]:
        data = self._reason_data()
        for req in reqs:  # reasons cite and are checked against the catalogue and co-watch counts (evidence.py)
            req.reason_data = data
        ranker = self.ranker
        setup_ms = self.setup_clock.take()
        out = ranker.rank(reqs, progress=progress)
        for rec, ms in zip(out, extra_ms, strict=True):
            split_timings(rec.timings, ms, setup_ms)
        return out

    def _reason_data(self) -> Any:
        """The catalogue + co-occurrence counts of the current candidate source, built once per source."""
        from reasonrec.agent.ranking.evidence import ReasonData

        source = self.candidate_source
        if self._reasons_for is not source:
            with self.setup_clock.measure():
                self._reasons_for, self._reasons = source, ReasonData.from_source(self.items, source)
        return self._reasons
