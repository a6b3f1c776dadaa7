"""Streaming answers (Server-Sent Events) for the web chat and any HTTP client.

    curl -N localhost:8000/v1/sessions/$ID/messages/stream -H 'content-type: application/json' -d '{"text": "a comedy"}'
    curl -N localhost:8000/v1/recommend/stream -H 'content-type: application/json' -d '{"user_id": "196", "k": 5}'

The same work as `POST /v1/sessions/{id}/messages` and `POST /v1/recommend` (one model job through the
gate, the same 429 when it is full), answered as `text/event-stream`:

    event: progress  {"stage": "queued" | "ranking"}        at once, and when the model starts on it
    event: cards     {"items": [{item_id, title, year, genres, rank}, ...]}   ranking done, no reasons yet
    event: reason    {"item_id", "rank", "text"}            a reason so far (hybrid: after every token)
    event: done      the full ChatTurn / Recommendations, exactly the plain endpoint's body
    event: error     {"error", "type", "status"}            instead of `done` when the job failed

Streamed reasons are provisional (finalize may replace a model reason by one built from facts); the
`done` body is the answer. A request refused before it starts (full queue, unknown session) is a plain
JSON error with its status, not a stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from reasonrec.agent.interfaces.http_errors import error_responses
from reasonrec.agent.interfaces.http_schemas import MAX_ID_CHARS, MessageIn, RecommendRequest, check_where
from reasonrec.agent.ranking.progress import reporting
from reasonrec.errors import ReasonRecError, UnknownSessionError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from reasonrec.agent.api import RecommenderAgent

MEDIA_TYPE = "text/event-stream"
_SSE_DOC = {200: {"content": {MEDIA_TYPE: {}}, "description": "Server-Sent Events: progress, cards, reason, done."}}


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event (a single `data:` line: the JSON has no newlines)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class EventSink:
    """A `ProgressSink` that turns the ranking's progress into SSE strings on the event loop's queue.

    Called on the model thread; `call_soon_threadsafe` hands each event to the loop. Only the first
    request of a call is streamed (a chat turn and `/v1/recommend` rank one list).

    Reason updates are sent at most every `REASON_EVERY_S` (the latest text of each reason). Why: one
    event per row per generated token woke the event loop ~50 times a second while the model's two torch
    threads had both cores, and each wake-up stalled a thread of the matrix products: a streamed chat turn
    took ~1.5 s longer than the same turn in-process on the 2-core CPU.
    """

    REASON_EVERY_S = 0.1

    def __init__(self, agent: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]):
        self.agent, self.loop, self.queue = agent, loop, queue
        self.ranks: dict[str, int] = {}
        self._pending: dict[str, str] = {}  # item id -> latest reason text not yet sent
        self._lock = threading.Lock()

    def put(self, event: str, data: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, sse(event, data))

    def started(self) -> None:
        self.put("progress", {"stage": "ranking"})

    def cards(self, request_index: int, item_ids: list[str]) -> None:
        if request_index or self.ranks:  # a second list (a re-rank inside one turn) keeps the first cards
            return
        self.ranks = {i: r for r, i in enumerate(item_ids, start=1)}
        items = self.agent.items
        self.put("cards", {"items": [_card(items[i], r) for i, r in self.ranks.items() if i in items]})

    def reason(self, request_index: int, item_id: str, text: str) -> None:
        if request_index == 0 and item_id in self.ranks and text:
            with self._lock:
                first, self._pending[item_id] = not self._pending, text
            if first:  # the loop sends this and whatever follows within the interval in one go
                self.loop.call_soon_threadsafe(self.loop.call_later, self.REASON_EVERY_S, self.flush)

    def flush(self) -> None:
        """Queue the pending reason updates (on the event loop's thread)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for item_id, text in pending.items():
            self.queue.put_nowait(sse("reason", {"item_id": item_id, "rank": self.ranks[item_id], "text": text}))


def _card(item: Any, rank: int) -> dict[str, Any]:
    return {"item_id": item.id, "title": item.title, "year": item.year, "genres": list(item.genres), "rank": rank}


async def stream_job(gate: Any, agent: Any, work: Callable[[], Any]) -> AsyncIterator[str]:
    """Run `work()` as one gate job and yield its progress as SSE, then `done` (or `error`).

    Raises (before the first event, so the route answers a plain JSON error):
        ServerBusyError: the gate is full.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    sink = EventSink(agent, loop, queue)

    def job() -> Any:
        sink.started()
        with reporting(sink):
            return work()

    task = asyncio.ensure_future(gate.run(job))
    await asyncio.sleep(0)  # the gate admits or refuses synchronously at the job's start
    if task.done() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]

    def finished(_: Any) -> None:  # on the loop: the last reason updates, then the end of the stream
        sink.flush()
        queue.put_nowait(None)

    task.add_done_callback(finished)
    return _events(task, queue)


async def _events(task: asyncio.Future[Any], queue: asyncio.Queue[str | None]) -> AsyncIterator[str]:
    yield sse("progress", {"stage": "queued"})
    while (event := await queue.get()) is not None:
        yield event
    while not queue.empty():  # events the model thread sent just before finishing
        event = queue.get_nowait()
        if event is not None:
            yield event
    exc = task.exception()
    if exc is None:
        yield sse("done", task.result().model_dump(mode="json"))
    else:
        status = exc.http_status if isinstance(exc, ReasonRecError) else 500
        message = str(exc) if isinstance(exc, ReasonRecError) else f"internal error ({type(exc).__name__})"
        yield sse("error", {"error": message, "type": type(exc).__name__, "status": status})


def add_stream_routes(app: FastAPI, agent: RecommenderAgent, gate: Any, store: Any) -> None:
    """`POST /v1/sessions/{id}/messages/stream` and `POST /v1/recommend/stream`."""
    from fastapi import Path
    from fastapi.responses import StreamingResponse

    from reasonrec.agent.interfaces.sessions_api import http_unknown

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold the events back

    @app.post(
        "/v1/sessions/{session_id}/messages/stream", tags=["chat"],
        response_class=StreamingResponse, response_model=None,
        responses={**_SSE_DOC, **error_responses(400, 404, 413, 415, 422, 429, 503)},
    )  # fmt: skip
    async def send_message_stream(
        body: MessageIn, session_id: str = Path(max_length=MAX_ID_CHARS, description="The session's `id`.")
    ) -> Any:
        """Send one message; the answer streams: cards once ranked, reasons as written, then the turn."""
        try:
            chat = agent.chat_session(session_id, store=store)  # an unknown session: 404 before any stream
        except UnknownSessionError:
            raise http_unknown(session_id) from None
        events = await stream_job(gate, agent, lambda: chat.send(body.text))
        return StreamingResponse(events, media_type=MEDIA_TYPE, headers=headers)

    @app.post(
        "/v1/recommend/stream", tags=["recommend"], response_class=StreamingResponse, response_model=None,
        responses={**_SSE_DOC, **error_responses(400, 404, 409, 413, 415, 422, 429, 503)},
    )  # fmt: skip
    async def recommend_stream(body: RecommendRequest) -> Any:
        """`/v1/recommend`, streamed: cards once ranked, reasons as written, then the Recommendations."""
        if body.where is not None:
            check_where(body.where)
        work = lambda: agent.recommend(  # noqa: E731
            user_id=body.user_id, history=body.history or None, query=body.query, k=body.k,
            exclude=body.exclude, where=body.where,
        )  # fmt: skip
        events = await stream_job(gate, agent, work)
        return StreamingResponse(events, media_type=MEDIA_TYPE, headers=headers)
