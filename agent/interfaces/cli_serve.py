"""`reasonrec serve`: the HTTP API and web chat.

    reasonrec serve                                   # http://127.0.0.1:8000/ (chat), /docs (OpenAPI)
    reasonrec serve --mode scoring --port 8080 --sessions ./sessions.sqlite3 --max-queue 8
    reasonrec serve --session-idle-days 7            # chat sessions untouched for a week are deleted
    reasonrec serve --mode scoring --workers 2       # two server processes (agent/interfaces/workers.py)
    python -m reasonrec.agent.interfaces.server --port 8080     # the same command

Registered on the main CLI app in `reasonrec.agent.interfaces.cli`. To run it as a child process
(tests, benchmarks) use `bench/_server.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reasonrec.agent.interfaces.cli_common import (
    AdapterOpt,
    ChromaOpt,
    ConfigOpt,
    DatasetOpt,
    ModelOpt,
    StoreOpt,
    build_config,
    ensure_index,
    err_console,
    make_agent,
)

if TYPE_CHECKING:
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.chat.store import SessionStore

DEFAULT_IDLE_DAYS = 30.0
SessionsOpt = Annotated[
    Path | None, typer.Option(help="SQLite file of chat sessions (default: <REASONREC_HOME>/sessions.sqlite3).")
]
IdleDaysOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help=f"Delete chat sessions idle for longer than this many days (default {DEFAULT_IDLE_DAYS:g}; 0 = keep).",
    ),
]


def open_sessions(sessions: Path | None, idle_days: float | None) -> SessionStore:
    """The SessionStore of `--sessions` (default file) with `--session-idle-days` expiry."""
    from reasonrec import paths
    from reasonrec.agent.chat.store import SessionStore

    days = DEFAULT_IDLE_DAYS if idle_days is None else idle_days
    return SessionStore(sessions or paths.home() / "sessions.sqlite3", idle_expiry_s=days * 86400 if days else None)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes it to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    sessions: SessionsOpt = None,
    session_idle_days: IdleDaysOpt = None,
    max_queue: Annotated[int, typer.Option(min=0, help="Model jobs waiting behind the running one; more get 429.")] = 8,
    mode: Annotated[str | None, typer.Option(help="Ranker mode: generative, scoring or hybrid.")] = None,
    k: Annotated[int | None, typer.Option("-k", min=1, help="Default number of recommendations.")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (1 is much faster on a machine busy with other work).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes on the port, each with its own model (memory x N); for more throughput on "
            "a machine with spare cores. Without --threads each gets cores / N torch threads.",
        ),
    ] = 1,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    dataset: DatasetOpt = None,
    chroma_url: ChromaOpt = None,
    store: StoreOpt = None,
) -> None:
    """Serve the HTTP API (POST /v1/recommend, /v1/sessions, ...) and the web chat at /.

    Example: reasonrec serve --mode scoring --port 8000   # then open http://127.0.0.1:8000/
    """
    import uvicorn

    from reasonrec.agent.interfaces.server import UVICORN_OPTIONS, serving_app, warm_up
    from reasonrec.agent.interfaces.workers import claim_port, serve_workers

    bound = claim_port(host, port)  # a taken port is a one-line error now, not after loading the model
    cfg = build_config(config, model, adapter, dataset, chroma_url, store, mode=mode, k=k)
    if threads is not None:
        cfg.model.num_threads = threads
    agent = make_agent(cfg)
    session_store = open_sessions(sessions, session_idle_days)
    session_store.purge()  # expired sessions go at start-up, then at most hourly
    if workers > 1:
        ensure_index(agent)  # once, here: workers must not race to build the same index
        session_store.close()
        del agent  # each worker loads its own
        err_console.print(f"serving on http://{host}:{bound}/ with {workers} worker processes (API docs at /docs)")
        serve_workers(cfg, session_store.path, session_store.idle_expiry_s, max_queue, host, bound, workers)
        return

    def start_up(agent: RecommenderAgent) -> None:  # on the server's model thread (server.serving_app says why)
        ensure_index(agent)
        with err_console.status("loading the model…"):
            warm_up(agent)

    api = serving_app(agent, session_store, max_queue, start_up)
    err_console.print(f"serving on http://{host}:{bound}/ (API docs at /docs); Ctrl-C stops")
    uvicorn.run(api, host=host, port=bound, **UVICORN_OPTIONS)
