"""What a chat session remembers (constraints, likes, turns), as pydantic models stored as JSON.

`SessionStore` (store.py) persists these; `ChatSession` (session.py) updates them turn by turn.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from reasonrec.agent.chat.titles import ItemRef
from reasonrec.agent.schemas import Recommendations


class ChatConstraints(BaseModel):
    """The active constraints of a chat session; they become a Chroma `where` filter."""

    genres: list[str] = Field(default_factory=list, description="Required genres (catalogue names, e.g. 'Sci-Fi').")
    excluded_genres: list[str] = Field(default_factory=list, description="Genres an item must not have.")
    year_min: int | None = Field(None, description="Earliest release year, inclusive.")
    year_max: int | None = Field(None, description="Latest release year, inclusive.")
    query: str | None = Field(None, description="Free-text preference carried into retrieval and the prompt.")
    k: int = Field(5, ge=1, le=50, description="How many items each answer lists.")


def constraints_where(c: ChatConstraints) -> dict[str, Any] | None:
    """The Chroma `where` filter of the constraints, None when there is none.

    Required genres are `genre_<Name>: True` flags, excluded ones `{"$ne": True}` (only True flags are
    stored, so an item without the genre has no key and passes), years a `$gte`/`$lte` range; several
    conditions are joined with `$and`.
    """
    from reasonrec.retrieval.store import genre_key

    conds: list[dict[str, Any]] = [{genre_key(g): True} for g in c.genres]
    conds += [{genre_key(g): {"$ne": True}} for g in c.excluded_genres]
    if c.year_min is not None:
        conds.append({"year": {"$gte": c.year_min}})
    if c.year_max is not None:
        conds.append({"year": {"$lte": c.year_max}})
    if not conds:
        return None
    return conds[0] if len(conds) == 1 else {"$and": conds}


def describe_constraints(c: ChatConstraints, domain: str = "movie", plural: bool = True) -> str:
    """'Comedy and Sci-Fi movies from the 1980s, without Horror' — used in replies and cold-start queries."""
    noun = domain + ("s" if plural else "")
    parts = [" and ".join(c.genres) + " " + noun if c.genres else noun]
    lo, hi = c.year_min, c.year_max
    if lo is not None and hi is not None:
        if lo == hi:
            parts.append(f"from {lo}")
        elif lo % 10 == 0 and hi == lo + 9:
            parts.append(f"from the {lo}s")
        else:
            parts.append(f"from {lo} to {hi}")
    elif lo is not None:
        parts.append(f"from {lo} on")
    elif hi is not None:
        parts.append(f"from {hi} or earlier")
    text = " ".join(parts)
    if c.excluded_genres:
        text += ", without " + " or ".join(c.excluded_genres)
    return text


class PendingChoice(BaseModel):
    """A clarifying question waiting for its answer: which of `options` the user meant by `phrase`."""

    phrase: str
    polarity: Literal["like", "dislike"] = "like"
    options: list[ItemRef]


class ChatTurn(BaseModel):
    """One exchange: what the user said, what the agent answered, and the state it left."""

    session_id: str
    turn: int = Field(description="1-based.")
    user_text: str
    reply: str = Field(description="Assistant text shown to the user.")
    recommendations: Recommendations | None = Field(None, description="None when the turn asks a question.")
    clarification: list[ItemRef] | None = Field(None, description="Options when a title was ambiguous.")
    constraints: ChatConstraints
    relaxed: list[str] = Field(default_factory=list, description="Constraints dropped because nothing matched.")
    timings: dict[str, float] = Field(default_factory=dict, description="Milliseconds per stage and 'total_ms'.")


class SessionState(BaseModel):
    """Everything a chat session remembers between turns (stored as JSON)."""

    id: str
    user_id: str | None = Field(None, description="A user of the dataset (their history seeds the profile).")
    liked: list[str] = Field(default_factory=list, description="Item ids liked in this chat; join the history.")
    disliked: list[str] = Field(default_factory=list, description="Item ids rejected; never recommended again.")
    recommended: list[str] = Field(default_factory=list, description="Every item id shown so far, oldest first.")
    last: list[str] = Field(default_factory=list, description="The last answer in rank order ('not the second').")
    constraints: ChatConstraints = Field(default_factory=ChatConstraints)
    pending: PendingChoice | None = Field(None, description="An open clarifying question.")
    turns: list[ChatTurn] = Field(default_factory=list, description="Every turn so far, oldest first.")
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    # Turns in the store when this state was loaded or last saved (None: never stored). `SessionStore.save`
    # refuses the state when the store holds a different number by then: another process took a turn.
    _stored_turns: int | None = PrivateAttr(default=None)


class SessionSummary(BaseModel):
    """One line of a session listing: who, how much, when (no turns, no item ids)."""

    id: str
    user_id: str | None = None
    n_turns: int = Field(description="Turns stored.")
    n_liked: int = 0
    n_disliked: int = 0
    created_at: float = Field(description="Unix time.")
    updated_at: float = Field(description="Unix time of the last turn; expiry counts idle time from here.")
