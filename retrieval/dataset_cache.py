"""Parsed datasets kept between runs: the loaders' result, keyed by the files' bytes and the parser's code.

Parsing ML-100K validates 100,000 rows one by one (~1.3-2 s of every warm CLI call on the 2-core CPU).
The cached entry holds exactly what the parse returned (items as they were set, interactions in file
order, the skipped-row messages, each user's history order), so a load from it equals a fresh parse:
`tests/test_startup_cache.py` compares the two field by field. The key covers the files' SHA-256, their
resolved paths (the skipped messages name them), the source of `loaders.py`, `readers.py`, `types.py` and this
module, and the pydantic version; entries age out after a week (`retrieval/cache.py`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydantic

from . import cache, readers, types
from .types import Dataset, Interaction, Item

KIND = "datasets"
FORMAT = 1
Parsed = tuple[dict[str, Item], list[Interaction], list[str]]  # items, interactions, skipped rows


def files_sha256(*files: Path) -> str:
    """SHA-256 over the bytes of the files, in order (a `Dataset.sha256`)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def cached_dataset(name: str, files: Sequence[Path], parse: Callable[[], Parsed]) -> Dataset:
    """The dataset `parse()` builds from `files`, read from the cache when these bytes were parsed before.

    Args:
        name: the dataset's name (not part of the entry: one parse serves any name).
        files: the files `parse` reads; their bytes and paths key the entry.
        parse: the loader's own parse (raises `DataError` for unusable files; those are never cached).

    Returns:
        Dataset with `sha256` over `files` and its per-user histories already ordered.
    """
    try:
        sha = files_sha256(*files)
    except OSError:  # a missing file: the parse reports it with its fix
        items, interactions, skipped = parse()
        return Dataset(name, items, interactions, files_sha256(*files), skipped)
    key = cache.make_key(
        KIND, FORMAT, sha, [str(f.resolve()) for f in files], pydantic.VERSION,
        cache.code_digest(sys.modules[parse.__module__], readers, types, sys.modules[__name__]),
    )  # fmt: skip
    hit = cache.lookup(KIND, key, ".json")
    if hit is not None:
        try:
            return _read(hit, name, sha)
        except (OSError, ValueError, KeyError, TypeError, IndexError, pydantic.ValidationError):
            cache.discard(hit)
    items, interactions, skipped = parse()
    dataset = Dataset(name, items, interactions, sha, skipped)
    cache.store(KIND, key, ".json", lambda p: p.write_text(_dump(dataset), encoding="utf-8"))
    return dataset


def _dump(ds: Dataset) -> str:
    position = {id(it): k for k, it in enumerate(ds.interactions)}
    return json.dumps(
        {
            "format": FORMAT,
            # exclude_unset: a rebuilt Item has the same set fields as the parsed one
            "items": [it.model_dump(exclude_unset=True) for it in ds.items.values()],
            "interactions": [[r.user_id, r.item_id, r.timestamp, r.rating] for r in ds.interactions],
            "skipped": ds.skipped,
            # Each user's history as positions in `interactions`: the sort `Dataset.histories` does, done once.
            "histories": [[u, [position[id(r)] for r in rows]] for u, rows in ds.histories.items()],
        },
        ensure_ascii=False,
    )


def _read(path: Path, name: str, sha: str) -> Dataset:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"cache format {data.get('format')!r}, expected {FORMAT}")
    items = {d["id"]: Item(**d) for d in data["items"]}
    rows = [Interaction(user_id=u, item_id=i, timestamp=t, rating=r) for u, i, t, r in data["interactions"]]
    dataset = Dataset(name, items, rows, sha, list(data["skipped"]))
    # `histories` is a cached_property: filling it here skips re-sorting 100,000 rows (same order, same objects).
    dataset.__dict__["histories"] = {u: [rows[k] for k in idx] for u, idx in data["histories"]}
    return dataset
