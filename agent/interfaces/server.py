"""HTTP API and web chat: `create_app(agent)` returns a FastAPI app.

    reasonrec serve --port 8000 --mode scoring        # then open http://127.0.0.1:8000/ (docs at /docs)
    curl -s localhost:8000/v1/recommend -H 'content-type: application/json' -d '{"user_id": "196", "k": 5}'

Endpoints: `POST /v1/recommend`, `GET /v1/items/{id}`, `POST /v1/sessions`, `GET /v1/sessions/{id}`,
`POST /v1/sessions/{id}/messages`, `POST /v1/sessions/{id}/feedback`, `GET /healthz`, the page at `/`,
OpenAPI at `/docs` and `/openapi.json`. A `ReasonRecError` becomes its `http_status` with
`{"error": "..."}`; a body of the wrong shape or type becomes 422 with the same `error` key plus
FastAPI's `detail` list.

Why one worker thread: the model is not thread-safe and the CPU has few cores, so every call that
runs the model or the retriever goes through `ModelGate`: one thread, a bounded queue, and an
immediate 429 with `Retry-After` when the queue is full, so overload never piles up unbounded work.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ConfigError, ReasonRecError, UnknownItemError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from reasonrec.agent.api import RecommenderAgent

STATIC_DIR = Path(__file__).parent / "static"
# uvicorn's default keep-alive (5 s) equals httpx's idle expiry: a client reusing a connection just as the
# server closes it gets a dropped request. A longer server-side keep-alive makes that race rare.
KEEP_ALIVE_S = 30
T = TypeVar("T")


class ServerBusyError(ReasonRecError):
    """The model queue is full; the client should retry after `retry_after_s` seconds."""

    http_status = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


# ---- request and response bodies ---------------------------------------------------------------
class _Body(BaseModel):
    # Unknown keys are a client mistake (a misspelled `user_id` would otherwise be silently ignored).
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Body):
    """`POST /v1/recommend`: the arguments of `RecommenderAgent.recommend`."""

    user_id: str | None = Field(None, description="A user of the dataset (their full history is used).")
    history: list[str] | None = Field(None, description="Item ids, oldest first, for a user the dataset lacks.")
    query: str | None = Field(None, max_length=500, description="Free-text request, e.g. 'a funny sci-fi'.")
    k: int | None = Field(None, ge=1, le=50, description="How many items (default: the server's ranker.k).")
    exclude: list[str] = Field(default_factory=list, description="Item ids never to recommend.")
    where: dict[str, Any] | None = Field(None, description="Chroma metadata filter, e.g. {'genre_Comedy': true}.")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": "196", "k": 5, "query": "a funny sci-fi"}]}
    )


class ItemOut(BaseModel):
    """`GET /v1/items/{item_id}`: one catalogue entry."""

    item_id: str
    title: str
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    description: str = ""


class SessionCreate(_Body):
    """`POST /v1/sessions`: start a chat, optionally as a known user (their history seeds it)."""

    user_id: str | None = Field(None, description="A user of the dataset; omit for a new user.")


class MessageIn(_Body):
    """`POST /v1/sessions/{id}/messages`: one user message."""

    text: str = Field(min_length=1, max_length=2000, description="What the user typed.")


class FeedbackIn(_Body):
    """`POST /v1/sessions/{id}/feedback`: thumbs up (liked=true) or down on a recommended item."""

    item_id: str = Field(min_length=1)
    liked: bool


class Health(BaseModel):
    status: str
    model_id: str | None
    mode: str
    pending: int = Field(description="Model jobs running or waiting now.")
    capacity: int = Field(description="Jobs admitted at once (1 running + max_queue waiting); more get 429.")


# ---- the model gate ----------------------------------------------------------------------------
class ModelGate:
    """Runs model work on one thread behind a bounded queue.

    Args:
        max_queue: jobs allowed to wait behind the running one; a job beyond that is refused at
            once with `ServerBusyError` (HTTP 429) instead of waiting unboundedly.
    """

    def __init__(self, max_queue: int):
        if not isinstance(max_queue, int) or max_queue < 0:
            raise ConfigError(f"`max_queue` must be an integer >= 0, got {max_queue!r}")
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reasonrec-model")
        self._pending = 0  # only touched on the event loop's thread, so no lock is needed
        self._service_s = 1.0  # moving average of one job's run time, for Retry-After

    @property
    def capacity(self) -> int:
        return self.max_queue + 1

    @property
    def pending(self) -> int:
        return self._pending

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained by one slot (at least 1)."""
        return max(1, math.ceil(self._service_s))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the model thread.

        Raises:
            ServerBusyError: `capacity` jobs are already running or waiting.
        """
        if self._pending >= self.capacity:
            wait = self.retry_after_s()
            raise ServerBusyError(
                f"server busy: {self._pending} requests are running or queued (max_queue={self.max_queue}); "
                f"retry after {wait} s",
                retry_after_s=wait,
            )
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, functools.partial(self._timed, fn, *args, **kwargs)
            )
        finally:
            self._pending -= 1

    def _timed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---- the app -----------------------------------------------------------------------------------
def validation_message(errors: list[dict[str, Any]]) -> str:
    """'k: Input should be a valid integer; user_id: ...' from pydantic/FastAPI error dicts."""
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(agent: RecommenderAgent, store: Any = None, max_queue: int = 8) -> FastAPI:
    """The FastAPI app over one agent.

    Args:
        agent: the agent that answers every request (its model is loaded on first use; call
            `warm_up(agent)` first so the first request is not slow).
        store: a `SessionStore` for chat sessions; default `reasonrec.paths.home()/sessions.sqlite3`.
        max_queue: model jobs allowed to wait behind the running one before 429.

    Returns:
        FastAPI: serve it with uvicorn (`reasonrec serve` does).

    Raises:
        ConfigError: `max_queue` is not an integer >= 0.
    """
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    gate = ModelGate(max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        gate.close()

    app = FastAPI(
        title="reasonrec",
        version="0.1.0",
        summary="Recommendations with a reason per item, and a chat that takes critiques.",
        lifespan=lifespan,
    )
    app.state.agent = agent
    app.state.gate = gate
    app.state.store = store

    @app.exception_handler(ReasonRecError)
    async def _reasonrec_error(_: Request, exc: ReasonRecError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ServerBusyError) else None
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors())
        return JSONResponse({"error": validation_message(errors), "detail": errors}, 422)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        # A bug in reasonrec, not the client's fault: still JSON, so clients parse every answer alike.
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    @app.get("/healthz", response_model=Health, tags=["meta"])
    async def healthz() -> Health:
        model = getattr(agent, "_model", None)  # reported, never loaded, by a health check
        return Health(
            status="ok",
            model_id=getattr(model, "model_id", None),
            mode=agent.config.ranker.mode,
            pending=gate.pending,
            capacity=gate.capacity,
        )

    @app.post("/v1/recommend", response_model=Recommendations, tags=["recommend"])
    async def recommend(body: RecommendRequest) -> Recommendations:
        """Recommend `k` items with a reason each (exactly k, only catalogue items the user has not seen)."""
        return await gate.run(
            agent.recommend,
            user_id=body.user_id,
            history=body.history,
            query=body.query,
            k=body.k,
            exclude=body.exclude,
            where=body.where,
        )

    @app.get("/v1/items/{item_id}", response_model=ItemOut, tags=["catalogue"])
    async def item(item_id: str) -> ItemOut:
        it = agent.items.get(item_id)
        if it is None:
            raise UnknownItemError(f"unknown item id {item_id!r} (not in catalogue {agent.dataset.name!r})")
        return ItemOut(item_id=it.id, title=it.title, year=it.year, genres=list(it.genres), description=it.description)

    _add_session_routes(app, agent, gate, store)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app


def _add_session_routes(app: FastAPI, agent: RecommenderAgent, gate: ModelGate, store: Any) -> None:
    """Chat sessions: create, read, send a message, thumbs up/down. Every turn is persisted first."""
    from reasonrec.agent.chat.store import ChatTurn, SessionState, SessionStore

    if store is None:
        from reasonrec import paths

        store = SessionStore(paths.home() / "sessions.sqlite3")
    app.state.store = store

    @app.post("/v1/sessions", response_model=SessionState, status_code=201, tags=["chat"])
    def create_session(body: SessionCreate | None = None) -> SessionState:
        """Start a chat session; keep its `id` for the next calls."""
        # Plain `def` routes run on FastAPI's thread pool: no model work, so no place in the model queue
        # (a page reload must not be refused because the model is busy).
        return agent.chat_session(user_id=body.user_id if body else None, store=store).state

    @app.get("/v1/sessions/{session_id}", response_model=SessionState, tags=["chat"])
    def get_session(session_id: str) -> SessionState:
        """A session's state: liked/disliked items, constraints and every turn so far."""
        return store.load(session_id)

    @app.post("/v1/sessions/{session_id}/messages", response_model=ChatTurn, tags=["chat"])
    async def send_message(session_id: str, body: MessageIn) -> ChatTurn:
        """Send one message; the reply carries new recommendations or a clarifying question."""
        return await gate.run(lambda: agent.chat_session(session_id, store=store).send(body.text))

    @app.post("/v1/sessions/{session_id}/feedback", response_model=ChatTurn, tags=["chat"])
    async def feedback(session_id: str, body: FeedbackIn) -> ChatTurn:
        """Thumbs up/down on an item: recorded as a like/dislike, then the list is recommended again."""
        return await gate.run(lambda: agent.chat_session(session_id, store=store).feedback(body.item_id, body.liked))


def warm_up(agent: RecommenderAgent) -> None:
    """Load the dataset, the Chroma store (indexing only what is missing) and the model now.

    Why: otherwise the first request pays 10-30 s and may time out its client.
    """
    _ = agent.candidate_source
    _ = agent.ranker


class BackgroundServer:
    """uvicorn serving `app` on a daemon thread, for tests and notebooks.

        with BackgroundServer(create_app(agent)) as srv:
            httpx.post(f"{srv.url}/v1/recommend", json={"user_id": "196"})

    Args:
        app: the ASGI app.
        host: interface to bind; loopback by default.
        port: 0 picks a free port (read `url` after entering).
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S)
        )
        self._thread = threading.Thread(target=self._server.run, name="reasonrec-http", daemon=True)
        self.host = host
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the HTTP server did not start on {self.host} (port in use?)")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


if __name__ == "__main__":  # python -m reasonrec.agent.interfaces.server [options] == reasonrec serve [options]
    import sys

    from reasonrec.agent.interfaces.cli import main

    main(["serve", *sys.argv[1:]])
