"""HTTP API and web chat: `create_app(agent)` returns a FastAPI app.

    reasonrec serve --port 8000 --mode scoring        # then open http://127.0.0.1:8000/ (docs at /docs)
    curl -s localhost:8000/v1/recommend -H 'content-type: application/json' -d '{"user_id": "196", "k": 5}'

Endpoints: `POST /v1/recommend`, `GET /v1/items/{id}`, `POST|GET /v1/sessions`, `GET|DELETE
/v1/sessions/{id}`, `POST /v1/sessions/{id}/messages`, `POST /v1/sessions/{id}/feedback`, `GET /healthz`,
the page at `/`, the OpenAPI document at `/openapi.json`, rendered offline at `/docs` and `/redoc`.
Every error is `{"error": "...", "type": "..."}` (http_errors.py); every status a route can answer is
listed for it in the OpenAPI document; bodies are strict and bounded (http_schemas.py).

Every call that runs the model or the retriever goes through `ModelGate` (gate.py): one thread, a
bounded queue, an immediate 429 when it is full. Each route is one small function around one
`gate.run(...)` call, so a batching layer can wrap it. `serving_app` also warms up on that thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonrec.agent.interfaces.batching import MicroBatcher
from reasonrec.agent.interfaces.gate import ModelGate
from reasonrec.agent.interfaces.http_errors import (
    BodyGuard,
    Redactor,
    error_responses,
    install_error_handlers,
)
from reasonrec.agent.interfaces.http_schemas import (
    MAX_BODY_BYTES,
    MAX_ID_CHARS,
    Health,
    ItemOut,
    RecommendRequest,
    check_where,
)
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ReasonRecError, UnknownItemError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from reasonrec.agent.api import RecommenderAgent

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
# uvicorn's default keep-alive (5 s) equals httpx's idle expiry: a client reusing a connection just as the
# server closes it gets a dropped request. A longer server-side keep-alive makes that race rare.
KEEP_ALIVE_S = 30
PRELOAD_VECTORS_MAX = 50_000  # items whose vectors a server reads at start-up (384 dims: ~77 MB at most)
UVICORN_OPTIONS: dict[str, Any] = {"log_level": "warning", "access_log": False, "timeout_keep_alive": KEEP_ALIVE_S}


# ---- the app -----------------------------------------------------------------------------------
def create_app(
    agent: RecommenderAgent, store: Any = None, max_queue: int = 8, max_body_bytes: int = MAX_BODY_BYTES
) -> FastAPI:
    """The FastAPI app over one agent.

    Args:
        agent: the agent that answers every request (its model is loaded on first use; call
            `warm_up(agent)` first so the first request is not slow).
        store: a `SessionStore` for chat sessions; default `reasonrec.paths.home()/sessions.sqlite3`.
        max_queue: model jobs allowed to wait behind the running one before 429.
        max_body_bytes: larger request bodies get 413 before any route reads them.

    Returns:
        FastAPI: serve it with uvicorn (`reasonrec serve` does).

    Raises:
        ConfigError: `max_queue` is not an integer >= 0.
    """
    from fastapi import FastAPI
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    from reasonrec.agent.interfaces.sessions_api import add_session_routes, open_store
    from reasonrec.agent.interfaces.streaming import add_stream_routes

    gate = ModelGate(max_queue)
    batcher = MicroBatcher(agent, gate)  # concurrent /v1/recommend requests share one batched forward pass
    store = open_store(store)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        gate.close()

    app = FastAPI(
        title="reasonrec",
        version="0.1.0",
        summary="Recommendations with a reason per item, and a chat that takes critiques.",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets, so the docs render offline
        redoc_url=None,
    )
    app.state.agent, app.state.gate, app.state.store, app.state.batcher = agent, gate, store, batcher
    rc = agent.config.retrieval
    install_error_handlers(app, Redactor([store.path, rc.persist_dir]))
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes)
    _add_recommend_routes(app, agent, gate, batcher)
    add_session_routes(app, agent, gate, store)
    add_stream_routes(app, agent, gate, store)  # the same work as Server-Sent Events (streaming.py)
    _add_docs_routes(app)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app


def _add_recommend_routes(app: FastAPI, agent: RecommenderAgent, gate: ModelGate, batcher: MicroBatcher) -> None:
    from fastapi import Path as PathParam

    @app.get("/healthz", response_model=Health, tags=["meta"])
    async def healthz() -> Health:
        # reported, never loaded, by a health check: the loaded model, else the one the ranker records
        # (scoring with candidates.lm_weight 0 may never load it: agent/model/lazy.py)
        model = getattr(agent, "_model", None) or getattr(getattr(agent, "_ranker", None), "lm", None)
        return Health(
            status="ok",
            model_id=getattr(model, "model_id", None),
            mode=agent.config.ranker.mode,
            pending=gate.pending,
            capacity=gate.capacity,
            pid=os.getpid(),
        )

    @app.post(
        "/v1/recommend", response_model=Recommendations, tags=["recommend"],
        responses=error_responses(400, 404, 409, 413, 415, 422, 429, 503),
    )  # fmt: skip
    async def recommend(body: RecommendRequest) -> Recommendations:
        """Recommend `k` items with a reason each (exactly k, only catalogue items the user has not seen)."""
        if body.where is not None:
            check_where(body.where)  # a client mistake is a 400 naming it, before Chroma sees the filter
        return await batcher.recommend(
            user_id=body.user_id,
            history=body.history or None,  # [] = no history given: the user's own, or the query alone
            query=body.query,
            k=body.k,
            exclude=body.exclude,
            where=body.where,
        )

    @app.get("/v1/items/{item_id}", response_model=ItemOut, tags=["catalogue"], responses=error_responses(404, 422))
    async def item(item_id: str = PathParam(max_length=MAX_ID_CHARS)) -> ItemOut:
        """One catalogue entry by id."""
        it = agent.items.get(item_id)
        if it is None:
            raise UnknownItemError(f"unknown item id {item_id!r} (not in catalogue {agent.dataset.name!r})")
        return ItemOut(item_id=it.id, title=it.title, year=it.year, genres=list(it.genres), description=it.description)


def _add_docs_routes(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their JavaScript and CSS from the `fastapi-offline` package."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = docs_assets_dir()
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    kw = {"openapi_url": "/openapi.json", "title": "reasonrec API"}
    pages = {
        "/docs": lambda: get_swagger_ui_html(
            **kw,
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        ),
        "/redoc": lambda: get_redoc_html(
            **kw,
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        ),
    }

    def endpoint(render: Callable[[], HTMLResponse]) -> Callable[[], Any]:
        async def page() -> HTMLResponse:  # no parameters: nothing of the request reaches `render`
            return render() if assets is not None else HTMLResponse(_NO_ASSETS, 503)

        return page

    for path, render in pages.items():
        app.add_api_route(path, endpoint(render), methods=["GET"], include_in_schema=False)


_NO_ASSETS = (
    "<p>The API docs need the package <code>fastapi-offline</code> (Swagger UI and ReDoc files): "
    "<code>pip install fastapi-offline</code>. The schema itself is at <a href='/openapi.json'>/openapi.json</a>.</p>"
)


def docs_assets_dir() -> Path | None:
    """The folder of Swagger UI / ReDoc files shipped by `fastapi-offline`, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def serving_app(
    agent: RecommenderAgent, store: Any, max_queue: int, start_up: Callable[[RecommenderAgent], None] | None = None
) -> FastAPI:
    """`create_app`, warmed up on its own model thread: `start_up(agent)` (default `warm_up`) runs there.

    Why on that thread: torch's OpenMP runtime (libgomp) keeps a team of helper threads for each thread that
    has run a parallel op, and once a process holds more of them than it has cores it spins only briefly
    before sleeping, so each of the model's many small ops waits for a helper to wake. A server that warmed
    up on the main thread and answered on the model thread held two teams: on the 2-core CPU the helper
    was busy ~45 % of a chat turn instead of ~95 %, and in-process the same 5 turns took 11.1-12.0 s once a
    second thread had run torch against 8.1-8.6 s before (bench notes: docs/profile_cli.md).
    """
    app = create_app(agent, store=store, max_queue=max_queue)
    app.state.gate.call(start_up or warm_up, agent)
    return app


def warm_up(agent: RecommenderAgent) -> None:
    """Load the dataset, the Chroma store (indexing only what is missing), the embedder and the model now,
    and answer one request unseen.

    Why: otherwise the first request pays 10-30 s and may time out its client, and the first chat turn
    still paid ~1.2 s more than the next ones in hybrid mode (the first `generate`'s kernels; 3.77 vs 2.55 s
    in-process for the same turn) and MiniLM's load for its message. A catalogue of at most
    `PRELOAD_VECTORS_MAX` items also has its item vectors read now, once (`CandidateGenerator.preload`).
    """
    from reasonrec.retrieval import CandidateGenerator

    for source in getattr(agent.candidate_source, "sources", {}).values():
        inner = getattr(source, "source", None)  # a LazySource (the semantic one) opens Chroma now
        if isinstance(inner, CandidateGenerator):
            inner.preload(PRELOAD_VECTORS_MAX)
            inner.embedder.encode(["warm-up"])  # chat messages are embedded: MiniLM now, not in a turn
    _ = agent.ranker
    users = agent.dataset.users()
    if users:
        try:  # its answer is dropped; a failure here is the first real request's to report
            agent.recommend(user_id=users[0], k=min(agent.config.ranker.k, 5))
        except ReasonRecError as e:
            log.warning("warm-up request failed (%s); serving anyway", e)
    agent.setup_clock.take()  # paid at start-up, not by the first request: its setup_ms stays 0


if __name__ == "__main__":  # python -m reasonrec.agent.interfaces.server [options] == reasonrec serve [options]
    import sys

    from reasonrec.agent.interfaces.cli import main

    main(["serve", *sys.argv[1:]])
