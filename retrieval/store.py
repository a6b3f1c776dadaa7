"""The item vector store: one Chroma collection of catalogue items, embedded or on a Chroma server.

A few verbs, each validate -> call -> transform: `upsert`, `query`, `get`, `embeddings`, `delete`,
`count`. Chroma's exceptions are wrapped in `RetrievalError` (a bad `where` filter in `ConfigError`)
with the collection and location in the message.

Each record carries a `content_hash` so re-indexing is idempotent and resumable: unchanged items are
neither re-embedded nor rewritten, and a run killed midway is finished by running it again. The
collection records the embedding model it was built with; reopening it with another model is an error,
because vectors of two models are not comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from reasonrec.errors import ConfigError, DataError, ReasonRecError, RetrievalError

from .config import RetrievalConfig
from .embed import Embedder
from .metadata import LAYOUT, genre_key, item_metadata, record_hash
from .types import Item, MetaValue, natural_key

__all__ = ["Hit", "ItemStore", "UpsertReport", "genre_key", "item_metadata", "record_hash"]


class Hit(BaseModel):
    """One query result; `score` is cosine similarity (1 - Chroma's cosine distance), higher is closer."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float


class UpsertReport(BaseModel):
    """What an `upsert` (or `build_index`) changed."""

    added: int = Field(0, description="Items new to the store.")
    updated: int = Field(0, description="Items whose content changed; re-embedded.")
    unchanged: int = Field(0, description="Items already stored with the same content hash.")
    removed: int = Field(0, description="Stale items deleted (only `build_index(prune=True)`).")


class ItemStore:
    """Catalogue items in a Chroma collection, embedded with `embedder`.

    Args:
        config: where the store is (`persist_dir` or `chroma_url`), the collection, `ef_search`,
            `batch_size`.
        embedder: embeds items and text queries; its `name` is recorded in the collection.

    Raises:
        RetrievalError: Chroma cannot be opened/reached, or the collection was built with another
            embedding model.
    """

    def __init__(self, config: RetrievalConfig, embedder: Embedder):
        self.config = config
        self.embedder = embedder
        self.location = config.chroma_url or str(config.resolved_persist_dir())
        self._client = self._connect()
        self._col = self._open()
        try:  # Chroma caps records per call; ask once (older servers lack the endpoint)
            cap = int(self._client.get_max_batch_size())
        except Exception:
            cap = config.batch_size
        self._batch = max(1, min(config.batch_size, cap))

    # --- verbs --------------------------------------------------------------------------------------

    def upsert(
        self, items: Iterable[Item], progress: Callable[[int, int], None] | None = None
    ) -> UpsertReport:
        """Add new items and re-embed changed ones, in batches of `config.batch_size`.

        Args:
            items: catalogue items; ids must be unique.
            progress: called as progress(done, total) after each batch.

        Returns:
            Counts of added, updated and unchanged items.

        Raises:
            DataError: a non-Item or a duplicate id. RetrievalError: Chroma or the embedder failed.
        """
        items = list(items)
        seen: set[str] = set()
        for it in items:
            if not isinstance(it, Item):
                raise DataError(f"upsert expects Item objects, got {type(it).__name__}")
            if it.id in seen:
                raise DataError(f"duplicate item id {it.id!r} in one upsert; ids must be unique")
            seen.add(it.id)
        report = UpsertReport()
        # Each batch is checked and written on its own, so everything before a crash stays committed.
        for start in range(0, len(items), self._batch):
            batch = items[start : start + self._batch]
            stored = self.get([it.id for it in batch])
            todo = [it for it in batch if stored.get(it.id, {}).get("content_hash") != record_hash(it)]
            report.unchanged += len(batch) - len(todo)
            if todo:
                metas = [item_metadata(it) for it in todo]
                for it, meta in zip(todo, metas, strict=True):  # upsert merges metadata: null stale keys
                    meta.update({k: None for k in stored.get(it.id, {}) if k not in meta})  # type: ignore[misc]
                texts = [it.text() for it in todo]
                self._call(
                    "upsert",
                    self._col.upsert,
                    ids=[it.id for it in todo],
                    embeddings=self.embedder.encode(texts),
                    metadatas=metas,
                    documents=texts,
                )
                report.updated += sum(it.id in stored for it in todo)
                report.added += sum(it.id not in stored for it in todo)
            if progress is not None:
                progress(start + len(batch), len(items))
        return report

    def query(
        self,
        vector: np.ndarray | None = None,
        text: str | None = None,
        n: int = 20,
        where: dict[str, Any] | None = None,
        exclude: Iterable[str] = frozenset(),
    ) -> list[Hit]:
        """Nearest items to a vector or a text, best first.

        Args:
            vector: a query embedding (normalised here); give this or `text`.
            text: free text, embedded with the store's embedder.
            n: hits wanted.
            where: Chroma metadata filter, e.g. {"genre_Comedy": True} or {"year": {"$gte": 1980}}.
            exclude: item ids never returned (over-fetched, so exclusions do not shorten the list).

        Returns:
            Exactly min(n, matching items not excluded) hits, by descending cosine similarity
            (ties by item id).

        Raises:
            ConfigError: bad arguments or filter. RetrievalError: Chroma failed.
        """
        if (vector is None) == (text is None):
            raise ConfigError("query needs exactly one of `vector` or `text`")
        if text is not None and not text.strip():
            raise ConfigError("the query `text` is empty")
        if n < 1:
            raise ConfigError(f"`n` must be >= 1, got {n}")
        if where is not None and (not isinstance(where, dict) or not where):
            raise ConfigError(f"`where` must be a non-empty dict (a Chroma filter) or None, got {where!r}")
        q = self.embedder.encode([text])[0] if text is not None else _unit(vector)
        exclude = set(exclude)
        try:
            res = self._query(q, n + len(exclude), where)
        except ValueError as e:  # raised by Chroma's client-side validation: the caller's filter
            raise ConfigError(f"invalid `where` filter {where!r}: {e}") from e
        except Exception as e:
            raise self._error("query", e) from e
        if res is None:  # an empty collection
            return []
        hits = [
            Hit(item_id=i, score=1.0 - float(d))
            for i, d in zip(res["ids"][0], res["distances"][0], strict=True)
            if i not in exclude
        ]
        hits.sort(key=lambda h: (-h.score, natural_key(h.item_id)))
        return hits[:n]

    def get(self, ids: Iterable[str]) -> dict[str, dict[str, MetaValue]]:
        """Stored metadata of the given ids; ids not in the store are absent from the result.

        Raises:
            RetrievalError: Chroma failed.
        """
        out: dict[str, dict[str, MetaValue]] = {}
        for batch in self._batches(ids):
            res = self._call("get", self._col.get, ids=batch, include=["metadatas"])
            out.update({i: dict(m or {}) for i, m in zip(res["ids"], res["metadatas"], strict=True)})
        return out

    def embeddings(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored vectors (float32, unit norm) of the given ids; missing ids are absent.

        Raises:
            RetrievalError: Chroma failed.
        """
        out: dict[str, np.ndarray] = {}
        for batch in self._batches(ids):
            res = self._call("get", self._col.get, ids=batch, include=["embeddings"])
            out.update(
                {
                    i: np.asarray(e, dtype=np.float32)
                    for i, e in zip(res["ids"], res["embeddings"], strict=True)
                }
            )
        return out

    def ids(self) -> list[str]:
        """Every stored item id, in natural order."""
        out: list[str] = []
        page = max(self._batch, 1000)
        while True:
            res = self._call("get", self._col.get, limit=page, offset=len(out), include=[])
            out.extend(res["ids"])
            if len(res["ids"]) < page:
                return sorted(out, key=natural_key)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete items by id; ids not in the store are ignored.

        Returns:
            How many items were deleted.

        Raises:
            RetrievalError: Chroma failed.
        """
        present = list(self.get(ids))
        for batch in self._batches(present):
            self._call("delete", self._col.delete, ids=batch)
        return len(present)

    def count(self) -> int:
        """Number of items in the store."""
        return int(self._call("count", self._col.count))

    @property
    def collection(self) -> Any:
        """The underlying `chromadb` Collection, for what the verbs here do not cover."""
        return self._col

    def drop(self) -> None:
        """Delete the whole collection (e.g. before re-indexing with another embedding model)."""
        self._call("delete_collection", self._client.delete_collection, self.config.collection)

    # --- plumbing -----------------------------------------------------------------------------------

    def _batches(self, ids: Iterable[str]) -> Iterable[list[str]]:
        ids = list(dict.fromkeys(str(i) for i in ids))  # dedupe, keep order; Chroma rejects duplicates
        for start in range(0, len(ids), self._batch):
            yield ids[start : start + self._batch]

    def _connect(self) -> Any:
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError as e:
            raise RetrievalError("chromadb is not installed: `pip install 'chromadb>=1,<2'`") from e
        settings = Settings(anonymized_telemetry=False)
        try:
            if self.config.chroma_url:
                u = urlparse(self.config.chroma_url)
                port = u.port or (443 if u.scheme == "https" else 80)
                return chromadb.HttpClient(
                    host=u.hostname, port=port, ssl=u.scheme == "https", settings=settings
                )
            path = self.config.resolved_persist_dir()
            path.mkdir(parents=True, exist_ok=True)
            try:
                return chromadb.PersistentClient(path=str(path), settings=settings)
            except ValueError:  # this process already opened the path with Chroma's default settings
                return chromadb.PersistentClient(path=str(path))
        except Exception as e:
            hint = (
                "start a server with `chroma run --path DIR --port PORT`, or unset `retrieval.chroma_url` "
                "to use an embedded store"
                if self.config.chroma_url
                else "check that `retrieval.persist_dir` is a writable folder"
            )
            raise RetrievalError(f"cannot open Chroma at {self.location}: {e}; {hint}") from e

    def _open(self) -> Any:
        from chromadb.errors import NotFoundError

        name, ef = self.config.collection, self.embedder.chroma_function()
        try:
            col = self._client.get_collection(name, embedding_function=ef)
        except NotFoundError:
            return self._call(
                "create_collection",
                self._client.create_collection,
                name,
                # configuration= is what Chroma 1.x reads (legacy "hnsw:*" metadata keys are translated
                # to it). Cosine because the vectors are unit-norm sentence embeddings; ef_search above the
                # default 100 because recall on MiniLM vectors suffers at 100.
                configuration={"hnsw": {"space": "cosine", "ef_search": self.config.ef_search}},
                metadata={"embedding_model": self.embedder.name, "reasonrec_layout": LAYOUT},
                embedding_function=ef,
            )
        except ValueError as e:  # Chroma: "Embedding function conflict"
            raise RetrievalError(
                f"collection {name!r} at {self.location} was built with another embedding function ({e}); "
                "choose another `retrieval.collection` or delete that collection"
            ) from e
        except Exception as e:
            raise self._error("get_collection", e) from e
        stored = (col.metadata or {}).get("embedding_model")
        if stored != self.embedder.name:
            raise RetrievalError(
                f"collection {name!r} at {self.location} was built with embedding model {stored!r}, not "
                f"{self.embedder.name!r}; vectors of different models cannot be mixed: set "
                f"`retrieval.embedding_model` to {stored!r}, choose another `retrieval.collection`, or "
                "call ItemStore.drop() and re-index"
            )
        hnsw = (col.configuration or {}).get("hnsw") or {}
        if hnsw.get("ef_search") not in (None, self.config.ef_search):  # a tunable: follow the config
            self._call("modify", col.modify, configuration={"hnsw": {"ef_search": self.config.ef_search}})
        return col

    def _query(self, q: np.ndarray, k: int, where: dict[str, Any] | None) -> dict[str, Any] | None:
        """Chroma's `k` nearest (it clamps `k` to its size; a `count()` first was ~6 ms of a ~20 ms scoring
        request), clamped here only where a server refuses; None when empty. ValueError: a bad filter."""
        try:
            return self._col.query(query_embeddings=[q], n_results=k, where=where, include=["distances"])
        except ValueError:
            raise
        except Exception:
            if k <= (size := self.count()):
                raise
        if not size:
            return None
        return self._col.query(query_embeddings=[q], n_results=size, where=where, include=["distances"])

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ReasonRecError:
            raise
        except Exception as e:
            raise self._error(what, e) from e

    def _error(self, what: str, e: Exception) -> RetrievalError:
        return RetrievalError(
            f"Chroma {what} failed on collection {self.config.collection!r} at {self.location}: "
            f"{type(e).__name__}: {e}"
        )

    def __repr__(self) -> str:
        return f"ItemStore(collection={self.config.collection!r}, location={self.location!r})"


def _unit(vector: np.ndarray | None) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if v.size == 0 or not np.isfinite(norm) or norm == 0.0:
        raise ConfigError("the query `vector` must be a non-empty, finite, non-zero 1-D array")
    return v / norm
