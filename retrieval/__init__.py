"""Retrieval: load a catalogue, index it in Chroma, and propose candidates for the LM to rank.

    from reasonrec.retrieval import RetrievalConfig, load_ml100k, build_index, CandidateGenerator

    data = load_ml100k()                                  # recbole's copy of MovieLens-100K
    config = RetrievalConfig()                            # embedded Chroma under REASONREC_HOME
    store, report = build_index(data, config)             # idempotent: re-running adds nothing
    gen = CandidateGenerator(store, store.embedder, data.items, config)
    gen.candidates(data.history("196"), n=20, query="a funny sci-fi film")

Importing this package is cheap: chromadb and sentence-transformers (torch) are imported only inside
the functions that need them.
"""

from __future__ import annotations

from .candidates import Candidate, CandidateGenerator, CandidateSource, build_index
from .collaborative import CollaborativeSource
from .config import DEFAULT_EMBEDDING_MODEL, CollaborativeConfig, CooccurrenceConfig, EaseConfig, RetrievalConfig
from .cooccurrence import AnchorCount, CooccurrenceSource, Evidence
from .ease import EaseSource
from .embed import Embedder
from .fusion import FusedSource, fit_weights, fuse
from .loaders import (
    load_catalogue,
    load_dataset,
    load_interactions,
    load_ml100k,
    split_title_year,
)
from .store import Hit, ItemStore, UpsertReport, genre_key, item_metadata
from .types import Dataset, Interaction, Item, natural_key

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "Candidate",
    "CandidateGenerator",
    "CandidateSource",
    "CollaborativeConfig",
    "CollaborativeSource",
    "CooccurrenceConfig",
    "CooccurrenceSource",
    "Dataset",
    "EaseConfig",
    "EaseSource",
    "Embedder",
    "AnchorCount",
    "Evidence",
    "FusedSource",
    "Hit",
    "Interaction",
    "Item",
    "ItemStore",
    "RetrievalConfig",
    "UpsertReport",
    "build_index",
    "fit_weights",
    "fuse",
    "genre_key",
    "item_metadata",
    "load_catalogue",
    "load_dataset",
    "load_interactions",
    "load_ml100k",
    "natural_key",
    "split_title_year",
]
