"""Chat-session routes: create, list, read (paged turns), delete, send a message, thumbs up/down.

A person's chat history and likes are personal data: `DELETE /v1/sessions/{id}` removes the session
with every turn and like (and their bytes, see `SessionStore.delete`), and sessions idle for longer
than the store's `idle_expiry_s` expire. Nothing is sent anywhere; it all lives in one SQLite file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reasonrec.agent.interfaces.http_errors import error_responses
from reasonrec.agent.interfaces.http_schemas import (
    MAX_ID_CHARS,
    FeedbackIn,
    MessageIn,
    SessionCreate,
    SessionPage,
    SessionView,
)
from reasonrec.errors import DataError, UnknownSessionError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.chat.store import SessionStore

MAX_PAGE = 100


class UnknownReferenceError(DataError):
    """The body names an item the catalogue lacks. 409, not 404: on a session route 404 means the session."""

    http_status = 409


def open_store(store: SessionStore | None) -> SessionStore:
    """`store`, or the default `<REASONREC_HOME>/sessions.sqlite3`."""
    from reasonrec.agent.chat.store import SessionStore

    if store is not None:
        return store
    from reasonrec import paths

    return SessionStore(paths.home() / "sessions.sqlite3")


def http_unknown(session_id: str) -> UnknownSessionError:
    """The HTTP wording of an unknown session: what to call, not which Python function or file."""
    return UnknownSessionError(
        f"unknown chat session {session_id[:MAX_ID_CHARS]!r} (never created, deleted, or expired); "
        "start one with POST /v1/sessions"
    )


def add_session_routes(app: FastAPI, agent: RecommenderAgent, gate: Any, store: SessionStore) -> None:
    """Register the session routes on `app`. Every turn is persisted before it is answered."""
    from fastapi import Path, Query, Response

    from reasonrec.agent.chat.store import ChatTurn, SessionState

    SessionId = Path(max_length=MAX_ID_CHARS, description="The `id` returned by POST /v1/sessions.")  # noqa: N806

    def chat(session_id: str) -> Any:
        try:
            return agent.chat_session(session_id, store=store)
        except UnknownSessionError:
            raise http_unknown(session_id) from None

    @app.post(
        "/v1/sessions", response_model=SessionState, status_code=201, tags=["chat"],
        responses=error_responses(400, 404, 413, 415, 422),
    )  # fmt: skip
    def create_session(body: SessionCreate | None = None) -> SessionState:
        """Start a chat session; keep its `id` for the next calls."""
        # Plain `def` routes run on FastAPI's thread pool: no model work, so no place in the model queue
        # (a page reload must not be refused because the model is busy).
        return agent.chat_session(user_id=body.user_id if body else None, store=store).state

    @app.get("/v1/sessions", response_model=SessionPage, tags=["chat"], responses=error_responses(422))
    def list_sessions(
        limit: int = Query(20, ge=1, le=MAX_PAGE, description="Sessions per page."),
        offset: int = Query(0, ge=0, le=2**31, description="Sessions to skip."),
    ) -> SessionPage:
        """Live sessions, most recently active first (summaries: no turns, no item ids)."""
        total = store.count()
        page = store.summaries(limit, offset)
        more = offset + len(page) < total
        return SessionPage(
            sessions=page, total=total, offset=offset, limit=limit, next_offset=offset + limit if more else None
        )

    @app.get(
        "/v1/sessions/{session_id}", response_model=SessionView, tags=["chat"], responses=error_responses(404, 422)
    )
    def get_session(
        session_id: str = SessionId,
        turns_offset: int = Query(0, ge=0, le=2**31, description="Turns to skip, oldest first."),
        turns_limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE, description="Turns to return."),
    ) -> SessionView:
        """A session's state: liked/disliked items, constraints and one page of its turns."""
        try:
            state = store.load(session_id, turns_offset, turns_limit)
        except UnknownSessionError:
            raise http_unknown(session_id) from None
        n = store.n_turns(session_id)
        return SessionView(**dict(state), n_turns=n, turns_offset=turns_offset)

    @app.delete(
        "/v1/sessions/{session_id}", status_code=204, response_class=Response, response_model=None, tags=["chat"],
        responses={204: {"description": "Deleted, with every turn and like."}, **error_responses(404, 422)},
    )  # fmt: skip
    def delete_session(session_id: str = SessionId) -> Response:
        """Delete a session with every stored turn and like; a second DELETE is a 404."""
        if not store.delete(session_id):
            raise http_unknown(session_id)
        return Response(status_code=204)

    @app.post(
        "/v1/sessions/{session_id}/messages", response_model=ChatTurn, tags=["chat"],
        responses=error_responses(400, 404, 409, 413, 415, 422, 429, 503),
    )  # fmt: skip
    async def send_message(body: MessageIn, session_id: str = SessionId) -> ChatTurn:
        """Send one message; the reply carries new recommendations or a clarifying question."""
        return await gate.run(lambda: chat(session_id).send(body.text))

    @app.post(
        "/v1/sessions/{session_id}/feedback", response_model=ChatTurn, tags=["chat"],
        responses=error_responses(400, 404, 409, 413, 415, 422, 429, 503),
    )  # fmt: skip
    async def feedback(body: FeedbackIn, session_id: str = SessionId) -> ChatTurn:
        """Thumbs up/down on an item: recorded as a like/dislike, then the list is recommended again."""
        if body.item_id not in agent.items:
            raise UnknownReferenceError(
                f"unknown `item_id` {body.item_id!r}: not in the catalogue; pass the item_id of a recommendation"
            )
        return await gate.run(lambda: chat(session_id).feedback(body.item_id, body.liked))
