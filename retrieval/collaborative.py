"""Collaborative candidates: SASRec item vectors served from a Chroma collection beside the text one.

The item vectors of the trained model (`retrieval/sasrec.py`) live in a second collection,
`<retrieval.collection>-sasrec`, in inner-product space, with the same metadata as the text collection
(`item_metadata`), so every `where` filter and `exclude` works as it does for the text source. A user's
vector is computed from the history at request time, so a chat-built history or a new user's three likes
get collaborative candidates without retraining.

Staleness: the collection records the model key it holds; opening it with another model (new
interactions, settings or cornac version) rewrites it (1.7k vectors: well under a second).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasonrec.errors import ConfigError, DataError, RetrievalError

from .candidates import Candidate
from .config import CollaborativeConfig, RetrievalConfig
from .metadata import item_metadata
from .sasrec import SASRecModel, load_or_train
from .types import Dataset, Item, natural_key
from .where import validate_where

SUFFIX = "-sasrec"
# Chroma's ip distance is 1 - dot. ef_search 500 returned the exact brute-force top-50 for every user
# (shared/collaborative.md); at 1.7k items it costs ~1 ms a query.
HNSW = {"space": "ip", "ef_search": 500, "ef_construction": 200, "max_neighbors": 32}


class CollaborativeSource:
    """`CandidateSource` over a SASRec model whose item vectors are held in Chroma.

    Build with `CollaborativeSource.build` (trains or loads the model, fills the collection).

    Args:
        model: the trained SASRec.
        retrieval: where Chroma is (`persist_dir` / `chroma_url`) and the text collection's name.
        items: the catalogue, for metadata.
        collection: the vector collection's name; None = `<retrieval.collection>-sasrec`.
    """

    def __init__(
        self,
        model: SASRecModel,
        retrieval: RetrievalConfig,
        items: Mapping[str, Item],
        collection: str | None = None,
    ):
        self.model = model
        self.retrieval = retrieval
        self.items = dict(items)
        self.name = collection or _collection_name(retrieval.collection)
        self._client = _connect(retrieval)
        self._col = self._sync()

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        retrieval: RetrievalConfig | None = None,
        config: CollaborativeConfig | None = None,
        sequences: Mapping[str, Sequence[str]] | None = None,
        cache_dir: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
        on_epoch: Callable[[int, float, float], None] | None = None,
        collection: str | None = None,
        refit: bool = False,
    ) -> CollaborativeSource:
        """Train (only when the interactions or settings changed) or load the model, then serve it.

        What `reasonrec index` calls: it passes a tqdm-backed `progress`.

        Args:
            dataset: the catalogue and, unless `sequences` is given, the interactions.
            retrieval: Chroma location and text collection name; None = defaults.
            config: SASRec settings; None = defaults.
            sequences: user -> item ids oldest first, to train on something other than every
                interaction (the benchmarks pass the train side of a split).
            cache_dir: where trained models are kept; None = <REASONREC_HOME>/collaborative.
            progress: progress(batches done, batches at most) while training.
            on_epoch: on_epoch(epoch, loss, validation NDCG@10) while training.
            collection: the vector collection's name; None = `<retrieval.collection>-sasrec`.
            refit: after the holdout run has picked the epoch count, train again on every item for
                that many epochs and serve that model (about twice the training time; both are cached).

        Raises:
            DataError: too few interactions to train. ConfigError: cornac missing or bad settings.
            RetrievalError: Chroma failed.
        """
        if sequences is None:
            sequences = {u: dataset.history(u) for u in dataset.users()}
        model, _ = load_or_train(sequences, config, cache_dir=cache_dir, progress=progress, on_epoch=on_epoch)
        if refit and model.config.holdout:
            again = model.config.model_copy(
                update={"max_epochs": model.info.best_epoch, "patience": 0, "holdout": False}
            )
            model, _ = load_or_train(sequences, again, cache_dir=cache_dir, progress=progress, on_epoch=on_epoch)
        return cls(model, retrieval or RetrievalConfig(), dataset.items, collection=collection)

    # --- CandidateSource ----------------------------------------------------------------------------

    def candidates(
        self,
        history: list[str],
        n: int,
        query: str | None = None,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> list[Candidate]:
        """The items whose SASRec vectors score highest against the history's user vector.

        Args:
            history: item ids, oldest first; never returned. Items the model has no vector for (cold
                items, ids from after training) are skipped when encoding.
            n: candidates wanted.
            query: ignored (no text in this model); the fusion adds the semantic source.
            where: Chroma metadata filter (same keys as the text collection).
            exclude: further item ids never returned.

        Returns:
            min(n, eligible items with a vector) candidates, score = user . item, best first (ties by id).

        Raises:
            ConfigError: n < 1 or a bad filter. DataError: no history item has a vector (cold start).
            RetrievalError: Chroma failed.
        """
        if n < 1:
            raise ConfigError(f"`n` must be >= 1, got {n}")
        if where is not None:
            validate_where(where)
        vector = self.user_vector(history)
        banned = set(history) | set(exclude)
        k = min(n + len(banned), self.count())
        try:
            res = self._col.query(query_embeddings=[vector], n_results=k, where=where, include=["distances"])
        except ValueError as e:
            raise ConfigError(f"invalid `where` filter {where!r}: {e}") from e
        except Exception as e:
            raise RetrievalError(f"Chroma query failed on collection {self.name!r}: {type(e).__name__}: {e}") from e
        hits = [
            Candidate(item_id=i, score=1.0 - float(d))
            for i, d in zip(res["ids"][0], res["distances"][0], strict=True)
            if i not in banned
        ]
        hits.sort(key=lambda c: (-c.score, natural_key(c.item_id)))
        return hits[:n]

    def user_vector(self, history: Sequence[str]) -> list[float]:
        """The SASRec encoding of a history (latest `max_len` known items).

        Raises:
            DataError: empty history, or none of its items has a vector.
        """
        if not history:
            raise DataError("the collaborative source needs a non-empty history (cold start: use the semantic source)")
        if not self.model.known(history):
            raise DataError(
                f"none of the {len(history)} history items has a collaborative vector (items without "
                "interactions when the model was trained): use the semantic source"
            )
        return self.model.encode([list(history)])[0].tolist()

    def count(self) -> int:
        """Vectors in the collection."""
        return int(self._col.count())

    @property
    def collection(self) -> Any:
        """The underlying chromadb Collection."""
        return self._col

    # --- plumbing -----------------------------------------------------------------------------------

    def _sync(self) -> Any:
        """Open the collection; (re)write it when it holds another model's vectors or is incomplete."""
        key = self.model.info.key
        try:
            col = self._client.get_collection(self.name, embedding_function=None)
        except Exception:
            col = None
        if col is not None and (col.metadata or {}).get("model_key") == key and col.count() == self.model.pad:
            return col
        if col is not None:
            self._client.delete_collection(self.name)
        try:
            col = self._client.create_collection(
                self.name,
                configuration={"hnsw": HNSW},
                metadata={
                    "model_key": key,
                    "library": self.model.info.library,
                    "library_version": self.model.info.library_version,
                },
                embedding_function=None,
            )
            ids = self.model.info.item_ids
            vectors = self.model.item_vectors()
            metas = [item_metadata(self.items[i]) if i in self.items else {"in_catalogue": False} for i in ids]
            step = max(1, min(5000, int(self._client.get_max_batch_size())))
            for s in range(0, len(ids), step):
                col.add(ids=ids[s : s + step], embeddings=vectors[s : s + step], metadatas=metas[s : s + step])
        except Exception as e:
            raise RetrievalError(f"cannot write collection {self.name!r}: {type(e).__name__}: {e}") from e
        return col

    def __repr__(self) -> str:
        return f"CollaborativeSource(collection={self.name!r}, items={self.model.pad})"


def brute_force_top(model: SASRecModel, history: Sequence[str], n: int, exclude: Iterable[str] = ()) -> list[str]:
    """Exact top-n by dot product (what the Chroma query must return; used by tests and the benchmark)."""
    scores = model.encode([list(history)])[0] @ model.item_vectors().T
    banned = set(history) | set(exclude)
    order = sorted(range(len(scores)), key=lambda r: (-scores[r], natural_key(model.info.item_ids[r])))
    return [model.info.item_ids[r] for r in order if model.info.item_ids[r] not in banned][:n]


def _collection_name(text_collection: str) -> str:
    return text_collection[: 512 - len(SUFFIX)] + SUFFIX


def _connect(config: RetrievalConfig) -> Any:
    """A Chroma client for the same place as the text store (same settings as `ItemStore`)."""
    from urllib.parse import urlparse

    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    try:
        if config.chroma_url:
            u = urlparse(config.chroma_url)
            port = u.port or (443 if u.scheme == "https" else 80)
            return chromadb.HttpClient(host=u.hostname, port=port, ssl=u.scheme == "https", settings=settings)
        path = config.resolved_persist_dir()
        path.mkdir(parents=True, exist_ok=True)
        try:
            return chromadb.PersistentClient(path=str(path), settings=settings)
        except ValueError:  # this process already opened the path with other settings
            return chromadb.PersistentClient(path=str(path))
    except Exception as e:
        where = config.chroma_url or config.resolved_persist_dir()
        raise RetrievalError(f"cannot open Chroma at {where}: {e}") from e
