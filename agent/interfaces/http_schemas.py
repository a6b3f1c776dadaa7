"""Request and response bodies of the HTTP API, with the limits a client can read in /openapi.json.

Request bodies are strict (no `true` -> 1, no `"5"` -> 5, no `0` -> False, no unknown keys) and
bounded (history, ids, query, message length), and `where` is described by the exact grammar the
server accepts (`where_schema`), checked by `check_where` before Chroma ever sees it. Whatever the
schema allows the server serves, or answers with a documented 404/409/429/503; whatever it forbids
is a 400/413/415/422.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from reasonrec.agent.chat.state import SessionState, SessionSummary
from reasonrec.agent.schemas import OutputText
from reasonrec.errors import ConfigError

MAX_BODY_BYTES = 256 * 1024  # well above the largest body the limits below allow (~140 KB)
MAX_HISTORY = 1000  # item ids; the prompt keeps the newest `prompt.max_history` anyway
MAX_ID_CHARS = 64
MAX_QUERY_CHARS = 500
MAX_MESSAGE_CHARS = 2000
MAX_WHERE_DEPTH = 3  # nested $and/$or levels
MAX_WHERE_BRANCHES = 10  # filters in one $and/$or
MAX_WHERE_LIST = 100  # values in one $in/$nin
MAX_WHERE_NUMBER = 1e15  # Chroma compares 64-bit numbers; a bound keeps huge JSON integers out
MAX_WHERE_STRING = 200
NON_BLANK = r"\S"  # Python's \S: exactly what str.strip() keeps

ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


# ---- the `where` grammar -----------------------------------------------------------------------
def _scalar() -> dict[str, Any]:
    num = {"type": "number", "minimum": -MAX_WHERE_NUMBER, "maximum": MAX_WHERE_NUMBER}
    return {"anyOf": [{"type": "string", "maxLength": MAX_WHERE_STRING}, num, {"type": "boolean"}]}


def _one_key(properties: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "minProperties": 1, "maxProperties": 1, **extra}
    if properties is not None:
        out |= {"properties": properties, "additionalProperties": False}
    return out


def where_schema(depth: int = MAX_WHERE_DEPTH) -> dict[str, Any]:
    """JSON schema of a Chroma `where` filter with at most `depth` nested `$and`/`$or` levels."""
    num = {"type": "number", "minimum": -MAX_WHERE_NUMBER, "maximum": MAX_WHERE_NUMBER}
    lists = [
        {"type": "array", "minItems": 1, "maxItems": MAX_WHERE_LIST, "items": item}
        for item in ({"type": "string", "maxLength": MAX_WHERE_STRING}, num, {"type": "boolean"})
    ]
    ops = {op: _scalar() for op in ("$eq", "$ne")} | {op: num for op in ("$gt", "$gte", "$lt", "$lte")}
    ops |= {op: {"anyOf": lists} for op in ("$in", "$nin")}
    names = {"minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": r"^[^$]"}
    field = _one_key(propertyNames=names, additionalProperties={"anyOf": [_scalar(), _one_key(ops)]})
    if depth == 0:
        return field
    branches = {"type": "array", "minItems": 2, "maxItems": MAX_WHERE_BRANCHES, "items": where_schema(depth - 1)}
    return {"anyOf": [field, _one_key({"$and": branches, "$or": branches})]}


def check_where(where: Any, depth: int = MAX_WHERE_DEPTH) -> None:
    """Enforce `where_schema` (Chroma's grammar via `validate_where`, plus this API's bounds).

    Raises:
        ConfigError: the filter breaks the grammar or a bound (HTTP 400); the message names the part.
    """
    from reasonrec.retrieval.where import validate_where

    def bounds(node: Any, level: int) -> None:
        ((key, value),) = node.items()
        if key in ("$and", "$or"):
            if level >= depth:
                raise ConfigError(f"`where` nests `$and`/`$or` deeper than {depth} levels")
            if len(value) > MAX_WHERE_BRANCHES:
                raise ConfigError(f"`{key}` takes at most {MAX_WHERE_BRANCHES} filters, got {len(value)}")
            for sub in value:
                bounds(sub, level + 1)
            return
        if not 1 <= len(key) <= MAX_ID_CHARS:
            raise ConfigError(f"`where` field names have 1 to {MAX_ID_CHARS} characters, got {key[:80]!r}")
        operand = next(iter(value.values())) if isinstance(value, dict) else value
        for v in operand if isinstance(operand, list) else [operand]:
            if isinstance(v, str) and len(v) > MAX_WHERE_STRING:
                raise ConfigError(f"`where` strings have at most {MAX_WHERE_STRING} characters (field {key!r})")
            if isinstance(v, int | float) and not isinstance(v, bool) and not abs(v) <= MAX_WHERE_NUMBER:
                raise ConfigError(f"`where` numbers must be within ±{MAX_WHERE_NUMBER:g} (field {key!r})")
        if isinstance(operand, list) and len(operand) > MAX_WHERE_LIST:
            raise ConfigError(f"`$in`/`$nin` take at most {MAX_WHERE_LIST} values (field {key!r})")

    try:
        validate_where(where)
    except RecursionError:
        raise ConfigError(f"`where` nests `$and`/`$or` deeper than {depth} levels") from None
    except ConfigError as e:
        raise ConfigError(f"invalid `where` filter: {e}") from None
    bounds(where, 0)


def is_blank(text: str | None) -> bool:
    return text is None or re.search(NON_BLANK, text) is None


Where = Annotated[dict[str, Any], WithJsonSchema(where_schema())]


# ---- request bodies ----------------------------------------------------------------------------
class _Body(BaseModel):
    # Unknown keys are a client mistake (a misspelled `user_id` would otherwise be silently ignored);
    # strict: JSON `true` is not the integer 1 and "5" is not 5.
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(_Body):
    """`POST /v1/recommend`: the arguments of `RecommenderAgent.recommend`. Give a user, a history or a query."""

    user_id: ItemId | None = Field(None, description="A user of the dataset (their full history is used).")
    history: list[ItemId] | None = Field(
        None, max_length=MAX_HISTORY, description="Item ids, oldest first, for a user the dataset lacks."
    )
    query: str | None = Field(None, max_length=MAX_QUERY_CHARS, description="Free-text request, e.g. 'a funny sci-fi'.")
    k: int | None = Field(
        None, ge=1, le=50, strict=False, description="How many items (default: the server's ranker.k)."
    )
    exclude: list[ItemId] = Field(
        default_factory=list, max_length=MAX_HISTORY, description="Item ids never to recommend."
    )
    where: Where | None = Field(
        None, description="Chroma metadata filter, e.g. {'genre_Comedy': true} or {'year': {'$lt': 1990}}."
    )

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"user_id": "196", "k": 5, "query": "a funny sci-fi"}],
            # What the agent needs to start from; a body with none of them is a 400.
            "anyOf": [
                {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
                {"required": ["history"], "properties": {"history": {"type": "array", "minItems": 1}}},
                {"required": ["query"], "properties": {"query": {"type": "string", "pattern": NON_BLANK}}},
            ],
        },
    )

    @field_validator("k", mode="before")
    @classmethod
    def _whole_number(cls, v: Any) -> Any:
        # JSON Schema's integer: 5 and 5.0 are the same number; true and "5" are not numbers at all.
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise PydanticCustomError("int_type", "Input should be a valid integer")
        return v


class SessionCreate(_Body):
    """`POST /v1/sessions`: start a chat, optionally as a known user (their history seeds it)."""

    user_id: ItemId | None = Field(None, description="A user of the dataset; omit for a new user.")


class MessageIn(_Body):
    """`POST /v1/sessions/{id}/messages`: one user message."""

    text: str = Field(
        min_length=1,
        max_length=MAX_MESSAGE_CHARS,
        json_schema_extra={"pattern": NON_BLANK},
        description="What the user typed.",
    )


class FeedbackIn(_Body):
    """`POST /v1/sessions/{id}/feedback`: thumbs up (liked=true) or down on a recommended item."""

    item_id: ItemId
    liked: bool


# ---- response bodies ---------------------------------------------------------------------------
class ItemOut(BaseModel):
    """`GET /v1/items/{item_id}`: one catalogue entry."""

    item_id: str
    title: OutputText
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    description: OutputText = ""


class Health(BaseModel):
    status: str
    model_id: str | None
    mode: str
    pending: int = Field(description="Model jobs running or waiting now.")
    capacity: int = Field(description="Jobs admitted at once (1 running + max_queue waiting) per worker; more get 429.")
    pid: int = Field(description="The server process that answered (one of several with `serve --workers`).")


class SessionPage(BaseModel):
    """`GET /v1/sessions`: live sessions, most recently active first."""

    sessions: list[SessionSummary]
    total: int = Field(description="Live sessions in all.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="Pass as `offset` for the next page; null on the last page.")


class SessionView(SessionState):
    """`GET /v1/sessions/{id}`: the state with one page of its turns (`turns_offset`, `turns_limit`)."""

    n_turns: int = Field(description="Turns stored in all; `turns` holds the requested page of them.")
    turns_offset: int = 0
