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
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from reasonrec.agent.chat.state import (
    ChatConstraints,
    ChatTurn,
    PendingChoice,
    SessionState,
    SessionSummary,
    constraints_where,
    describe_constraints,
)
from reasonrec.errors import ConfigError, DataError, SessionConflictError, UnknownSessionError

_M = TypeVar("_M", bound=BaseModel)
__all__ = [
    "ChatConstraints",
    "ChatTurn",
    "PendingChoice",
    "SessionState",
    "SessionStore",
    "SessionSummary",
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


class SessionStore:
    """Chat sessions in one SQLite file (WAL mode); safe to share between threads.

    Args:
        path: the database file; its folder is created.
        idle_expiry_s: a session untouched for this many seconds is expired: `load` treats it as unknown,
            `list` skips it, and `purge()` (also run at most hourly by `create`) deletes it. None = never.

    Raises:
        DataError: the file cannot be opened or is not a reasonrec session database.
        ConfigError: `idle_expiry_s` is not a positive number.
    """

    PURGE_EVERY_S = 3600.0  # `create` purges expired sessions at most this often

    def __init__(self, path: str | Path, idle_expiry_s: float | None = None):
        if idle_expiry_s is not None and (isinstance(idle_expiry_s, bool) or not idle_expiry_s > 0):
            raise ConfigError(f"`idle_expiry_s` must be a number of seconds > 0 or None, got {idle_expiry_s!r}")
        self.path = Path(path).expanduser()
        self.idle_expiry_s = idle_expiry_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._last_purge = 0.0
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
        if self.idle_expiry_s is not None and time.time() - self._last_purge > self.PURGE_EVERY_S:
            self.purge()
        state = SessionState(id=uuid.uuid4().hex, user_id=user_id)
        self.save(state)
        return state

    def load(self, session_id: str, turns_offset: int = 0, turns_limit: int | None = None) -> SessionState:
        """The stored state of a session, with its turns (all, or the page `turns_offset`, `turns_limit`).

        Raises:
            UnknownSessionError: no session has this id, or it has expired (HTTP 404).
            DataError: the stored row is not a valid state.
        """
        row = self._conn().execute("SELECT state FROM sessions WHERE id = ?", (str(session_id),)).fetchone()
        if row is None or self._expired(session_id):
            raise UnknownSessionError(
                f"unknown chat session {session_id!r} (never created, deleted, or expired); start a new one with "
                "`agent.chat_session()` (no session_id)"
            )
        state = self._parse(SessionState, row[0], session_id)
        state.turns = self.turns(session_id, turns_offset, turns_limit)
        # Turns are stored numbered 1..n (`save` checks it): a whole list's length is the stored count.
        whole = turns_offset == 0 and turns_limit is None
        state._stored_turns = len(state.turns) if whole else self._max_turn(self._conn(), session_id)
        return state

    def save(self, state: SessionState) -> None:
        """Write the state and its turns not stored yet in one transaction: all of it is stored, or nothing.

        Raises:
            DataError: a turn belongs to another session, or turn numbers are not 1, 2, 3, ...
            SessionConflictError (a DataError, HTTP 409): the state is stale: the store holds another number
                of turns than when it was loaded (another process answered a message meanwhile).
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
            stored = self._max_turn(c, state.id)
            expected = state._stored_turns
            # Another writer took turns since this state was loaded: storing it would drop theirs or ours.
            if stored > len(state.turns) or (expected is not None and stored != expected):
                raise SessionConflictError(
                    f"session {state.id!r} has {stored} turns stored but this state was loaded with "
                    f"{len(state.turns) if expected is None else expected}: another message to it was answered "
                    "meanwhile; load it again (send the message again)"
                )
            for turn in state.turns[stored:]:
                self._insert_turn(c, turn)
        state._stored_turns = len(state.turns)

    def turns(self, session_id: str, offset: int = 0, limit: int | None = None) -> list[ChatTurn]:
        """A session's logged turns, oldest first: all of them, or `limit` from `offset` (0-based)."""
        rows = (
            self._conn()
            .execute(
                "SELECT data FROM turns WHERE session_id = ? ORDER BY turn LIMIT ? OFFSET ?",
                (str(session_id), -1 if limit is None else _count(limit, "limit"), _count(offset, "offset")),
            )
            .fetchall()
        )
        return [self._parse(ChatTurn, r[0], session_id) for r in rows]

    def n_turns(self, session_id: str) -> int:
        """How many turns a session has stored."""
        return self._conn().execute("SELECT COUNT(*) FROM turns WHERE session_id = ?", (str(session_id),)).fetchone()[0]

    def list(self, limit: int = 100, offset: int = 0) -> list[SessionState]:
        """Live sessions, most recently updated first: `limit` from `offset` (without turns: `load` one for those)."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, state FROM sessions WHERE updated_at >= ? ORDER BY updated_at DESC, id LIMIT ? OFFSET ?",
                (self._cutoff(), _count(limit, "limit"), _count(offset, "offset")),
            )
            .fetchall()
        )
        return [self._parse(SessionState, r[1], r[0]) for r in rows]

    def summaries(self, limit: int = 100, offset: int = 0) -> list[SessionSummary]:
        """`list` as one-line summaries with turn counts (`GET /v1/sessions`, `reasonrec sessions list`)."""
        sessions = self.list(limit, offset)
        return [
            SessionSummary(
                id=s.id, user_id=s.user_id, n_turns=self.n_turns(s.id), n_liked=len(s.liked),
                n_disliked=len(s.disliked), created_at=s.created_at, updated_at=s.updated_at,
            )
            for s in sessions
        ]  # fmt: skip

    def count(self) -> int:
        """Live (not expired) sessions."""
        sql = "SELECT COUNT(*) FROM sessions WHERE updated_at >= ?"
        return self._conn().execute(sql, (self._cutoff(),)).fetchone()[0]

    def delete(self, session_id: str) -> bool:
        """Remove a session with every turn and like it stored; False when it did not exist.

        The bytes go too, not just the rows: `secure_delete` zeroes the freed pages and the WAL is
        checkpointed and truncated, so a copy of the file taken afterwards holds nothing of the session.
        """
        return self._delete_where("id = ?", (str(session_id),)) > 0

    def purge(self, idle_s: float | None = None) -> int:
        """Delete every session idle for more than `idle_s` seconds (default: `idle_expiry_s`; 0 = all).

        Returns:
            int: how many sessions were deleted (0 when neither `idle_s` nor `idle_expiry_s` is set).
        """
        idle = self.idle_expiry_s if idle_s is None else idle_s
        self._last_purge = time.time()
        if idle is None:
            return 0
        if isinstance(idle, bool) or not idle >= 0:
            raise ConfigError(f"`idle_s` must be a number of seconds >= 0, got {idle_s!r}")
        return self._delete_where("updated_at < ?", (time.time() - idle if idle > 0 else float("inf"),))

    def close(self) -> None:
        """Close every connection this store opened (in all threads)."""
        with self._guard:
            for c in self._connections:
                c.close()
            self._connections.clear()
        self._local = threading.local()

    # --- plumbing ----------------------------------------------------------------------------------------------

    def _delete_where(self, condition: str, args: tuple[object, ...]) -> int:
        with self._tx() as c:
            ids = [r[0] for r in c.execute(f"SELECT id FROM sessions WHERE {condition}", args).fetchall()]
            for sid in ids:
                c.execute("DELETE FROM turns WHERE session_id = ?", (sid,))
                c.execute("DELETE FROM sessions WHERE id = ?", (sid,))
        if ids:
            # Move the WAL's copies of the deleted pages into the (zeroed) database and empty the WAL. Busy
            # readers may keep part of it for now; the next checkpoint overwrites it.
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(ids)

    def _cutoff(self) -> float:
        return float("-inf") if self.idle_expiry_s is None else time.time() - self.idle_expiry_s

    def _expired(self, session_id: str) -> bool:
        if self.idle_expiry_s is None:
            return False
        row = self._conn().execute("SELECT updated_at FROM sessions WHERE id = ?", (str(session_id),)).fetchone()
        return row is not None and row[0] < self._cutoff()

    @staticmethod
    def _max_turn(c: sqlite3.Connection, session_id: str) -> int:
        row = c.execute("SELECT COALESCE(MAX(turn), 0) FROM turns WHERE session_id = ?", (session_id,)).fetchone()
        return int(row[0])

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
            conn.execute("PRAGMA secure_delete=ON")  # deleted sessions are overwritten, not just unlinked
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
            raise DataError(f"session {session_id!r} holds an unreadable {model.__name__}: {e}") from e

    def __repr__(self) -> str:
        return f"SessionStore({str(self.path)!r})"


def _count(value: int, name: str) -> int:
    """A page bound: an int >= 0 (SQLite would read a negative LIMIT as "no limit")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"`{name}` must be an integer >= 0, got {value!r}")
    return value
