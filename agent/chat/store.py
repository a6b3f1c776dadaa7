"""Chat session state (constraints, likes, turns) and its SQLite store, so a restarted process continues.

    store = SessionStore("~/.cache/reasonrec/sessions.sqlite3")
    state = store.create(user_id="196")
    ...                                   # ChatSession.send() updates the state and logs the turn
    store.save(state)                     # one transaction: the new state and its new turns, or neither
    store.load(state.id).turns            # every ChatTurn so far, from any process

The database runs in WAL mode (readers never block the writer). Each thread gets its own connection,
and every write is one `BEGIN IMMEDIATE` transaction, so a process killed mid-write leaves the previous
state and a FastAPI server may call the store from its worker threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from reasonrec.agent.chat.titles import ItemRef
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import DataError, UnknownSessionError

_M = TypeVar("_M", bound=BaseModel)
__all__ = [
    "ChatConstraints",
    "ChatTurn",
    "PendingChoice",
    "SessionState",
    "SessionStore",
    "UnknownSessionError",
    "constraints_where",
    "describe_constraints",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, turn)
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions(updated_at);
"""


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


class SessionStore:
    """Chat sessions in one SQLite file (WAL mode); safe to share between threads.

    Args:
        path: the database file; its folder is created.

    Raises:
        DataError: the file cannot be opened or is not a reasonrec session database.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn().executescript(_SCHEMA)  # idempotent; concurrent openers wait on the busy timeout
        except (OSError, sqlite3.Error) as e:
            raise DataError(
                f"cannot open the session store at {str(self.path)!r}: {e}; pass a writable file path as `path`"
            ) from e

    # --- verbs -------------------------------------------------------------------------------------------------

    def create(self, user_id: str | None = None) -> SessionState:
        """A new, empty session (saved before it is returned)."""
        state = SessionState(id=uuid.uuid4().hex, user_id=user_id)
        self.save(state)
        return state

    def load(self, session_id: str) -> SessionState:
        """The stored state of a session.

        Raises:
            UnknownSessionError: no session has this id (HTTP 404).
            DataError: the stored row is not a valid state.
        """
        row = self._conn().execute("SELECT state FROM sessions WHERE id = ?", (str(session_id),)).fetchone()
        if row is None:
            raise UnknownSessionError(
                f"unknown chat session {session_id!r} in {str(self.path)!r}; start a new one with "
                "`agent.chat_session()` (no session_id)"
            )
        state = self._parse(SessionState, row[0], session_id)
        state.turns = self.turns(session_id)
        return state

    def save(self, state: SessionState) -> None:
        """Write the state and its turns not stored yet in one transaction: all of it is stored, or nothing.

        Raises:
            DataError: a turn belongs to another session, turn numbers are not 1, 2, 3, ..., or the state
                is stale (more turns are stored than it holds).
        """
        for i, turn in enumerate(state.turns, 1):
            if turn.session_id != state.id or turn.turn != i:
                raise DataError(
                    f"turn {turn.turn} of session {turn.session_id!r} cannot be saved as turn {i} of {state.id!r}"
                )
        state.updated_at = time.time()
        payload = state.model_dump_json(exclude={"turns"})  # turns live in their own table, written once
        with self._tx() as c:
            c.execute(
                "INSERT INTO sessions (id, user_id, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET user_id = excluded.user_id, state = excluded.state, "
                "updated_at = excluded.updated_at",
                (state.id, state.user_id, payload, state.created_at, state.updated_at),
            )
            stored = c.execute("SELECT COALESCE(MAX(turn), 0) FROM turns WHERE session_id = ?", (state.id,)).fetchone()[
                0
            ]
            if stored > len(state.turns):  # another writer took turns since this state was loaded
                raise DataError(
                    f"session {state.id!r} has {stored} turns stored but this state only {len(state.turns)}; "
                    "load it again before saving"
                )
            for turn in state.turns[stored:]:
                self._insert_turn(c, turn)

    def turns(self, session_id: str) -> list[ChatTurn]:
        """Every logged turn of a session, oldest first (empty for a session without turns)."""
        rows = (
            self._conn()
            .execute("SELECT data FROM turns WHERE session_id = ? ORDER BY turn", (str(session_id),))
            .fetchall()
        )
        return [self._parse(ChatTurn, r[0], session_id) for r in rows]

    def list(self, limit: int = 100) -> list[SessionState]:
        """The most recently updated sessions first, at most `limit` (without their turns: `load` one for those)."""
        rows = (
            self._conn()
            .execute("SELECT id, state FROM sessions ORDER BY updated_at DESC LIMIT ?", (int(limit),))
            .fetchall()
        )
        return [self._parse(SessionState, r[1], r[0]) for r in rows]

    def delete(self, session_id: str) -> bool:
        """Remove a session and its turns; False when it did not exist."""
        with self._tx() as c:
            c.execute("DELETE FROM turns WHERE session_id = ?", (str(session_id),))
            return c.execute("DELETE FROM sessions WHERE id = ?", (str(session_id),)).rowcount > 0

    def close(self) -> None:
        """Close every connection this store opened (in all threads)."""
        with self._guard:
            for c in self._connections:
                c.close()
            self._connections.clear()
        self._local = threading.local()

    # --- plumbing ----------------------------------------------------------------------------------------------

    def _insert_turn(self, c: sqlite3.Connection, turn: ChatTurn) -> None:
        c.execute(
            "INSERT INTO turns (session_id, turn, data, created_at) VALUES (?, ?, ?, ?)",
            (turn.session_id, turn.turn, turn.model_dump_json(), time.time()),
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: no implicit transactions; `_tx` opens them explicitly. Each connection is
            # used by its own thread only; check_same_thread=False just lets `close()` close them all.
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlock between writers
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def _parse(self, model: type[_M], text: str, session_id: str) -> _M:
        try:
            return model.model_validate(json.loads(text))
        except (ValueError, ValidationError) as e:
            raise DataError(
                f"session {session_id!r} in {str(self.path)!r} holds an unreadable {model.__name__}: {e}"
            ) from e

    def __repr__(self) -> str:
        return f"SessionStore({str(self.path)!r})"
