"""Typed records for catalogue items, interactions and a loaded dataset.

Items and interactions are pydantic models so that user-supplied files are validated once, at the
edge, and everything downstream can trust their fields.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator

MetaValue = str | int | float | bool


class Item(BaseModel):
    """One catalogue entry. `id` is a string everywhere (ML-100K ids are "1".."1682")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="Stable item id, unique in the catalogue.")
    title: str = Field(min_length=1, description="Human-readable title.")
    year: int | None = Field(default=None, description="Release year, when known.")
    genres: tuple[str, ...] = Field(default=(), description="Genre / category tags.")
    description: str = Field(default="", description="Free text used for embedding and prompts.")
    metadata: dict[str, MetaValue] = Field(default_factory=dict, description="Extra scalar fields.")

    @field_validator("id", "title", mode="before")
    @classmethod
    def _strip(cls, v: object) -> object:
        return v.strip() if isinstance(v, str) else v

    def text(self) -> str:
        """The text that is embedded: title + year + genres + description."""
        parts = [self.title + (f" ({self.year})" if self.year else "")]
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres) + ".")
        if self.description:
            parts.append(self.description)
        return " ".join(parts)

    def content_hash(self) -> str:
        """Hash of everything that affects the embedding and the stored metadata.

        Why: re-indexing compares this with the hash stored in Chroma, so an unchanged catalogue
        adds nothing and a changed item is re-embedded.
        """
        payload = json.dumps(self.model_dump(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


class Interaction(BaseModel):
    """A user consumed / rated an item at a time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    timestamp: float
    rating: float | None = None


def natural_key(item_id: str) -> tuple[int, int | str]:
    """Sort numeric ids numerically ("2" < "10") and others lexically, numeric first."""
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


@dataclass
class Dataset:
    """A catalogue plus interactions, with per-user histories sorted by time (ties by item id)."""

    name: str
    items: dict[str, Item]
    interactions: list[Interaction]
    sha256: str = ""
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" for rows not loaded

    @cached_property
    def histories(self) -> dict[str, list[Interaction]]:
        by_user: dict[str, list[Interaction]] = defaultdict(list)
        for it in self.interactions:
            by_user[it.user_id].append(it)
        for rows in by_user.values():
            rows.sort(key=lambda r: (r.timestamp, natural_key(r.item_id)))
        return dict(by_user)

    def users(self) -> list[str]:
        """User ids in natural order."""
        return sorted(self.histories, key=natural_key)

    def history(self, user_id: str) -> list[str]:
        """Item ids the user interacted with, oldest first. Raises UnknownUserError."""
        from reasonrec.errors import UnknownUserError

        rows = self.histories.get(str(user_id))
        if rows is None:
            raise UnknownUserError(
                f"unknown user {user_id!r}: the interactions of dataset {self.name!r} have "
                f"{len(self.histories)} users (e.g. {', '.join(self.users()[:3])})"
            )
        return [r.item_id for r in rows]
