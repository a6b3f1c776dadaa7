"""What the vector store keeps beside each item's vector: title, year, genres, a flag per genre, a content hash.

Apart from the store so that sources which filter on the same metadata without Chroma (`ScoredSource`,
the collaborative index) use these functions without importing the store, and so the layout a `where`
filter sees is defined once.
"""

from __future__ import annotations

from .types import Item, MetaValue

LAYOUT = "v1"  # part of every content hash: bump it when the stored metadata changes shape
_RESERVED = ("content_hash", "title", "year", "genres")


def genre_key(genre: str) -> str:
    """Metadata key of a genre flag: `where={genre_key("Comedy"): True}` keeps comedies only.

    Only True flags are stored; exclude a genre with `{genre_key("Horror"): {"$ne": True}}`.
    """
    return f"genre_{genre}"


def record_hash(item: Item) -> str:
    """The `content_hash` stored with an item (its content hash plus the metadata layout version)."""
    return f"{LAYOUT}:{item.content_hash()}"


def item_metadata(item: Item) -> dict[str, MetaValue]:
    """Chroma metadata of an item: title, year (omitted when unknown), genres, one flag per genre.

    `Item.metadata` fields are stored too, except ones that clash with these keys.
    """
    meta: dict[str, MetaValue] = {
        k: v
        for k, v in item.metadata.items()
        if k not in _RESERVED and not k.startswith(("genre_", "#", "$"))
    }
    meta.update(content_hash=record_hash(item), title=item.title, genres="|".join(item.genres))
    if item.year is not None:  # omitted, not -1: a year filter must never match an unknown year
        meta["year"] = item.year
    meta.update({genre_key(g): True for g in item.genres})
    return meta
