"""`reasonrec serve --workers N`: N server processes on one port, each with its own agent.

Why: one server process runs the model and the retrieval on one thread (`ModelGate`), and what a
scoring request costs is Python (fusion, the reasons built from facts and their checks) under the GIL,
so on a machine with more cores a single process stops at one core however many clients wait. With
`--workers N` there are N processes on the port. On Linux each binds it with `SO_REUSEPORT`, so the
kernel spreads new connections over them by a hash (uvicorn's own `--workers` shares one listening
socket, and asyncio's accept loop takes every connection waiting when it wakes: 8 clients connecting at
once all landed on one worker in 1 of 5 runs). Elsewhere uvicorn's supervisor serves them on one shared
socket. Each worker is a whole `create_app`: its own agent (dataset, Chroma client, model), its
own gate and micro-batcher (so `--max-queue` applies per worker) and its own connection to the shared
SQLite session store.

Chat sessions live in that shared file, so any worker continues any session (a worker that did not
answer the previous turn only lacks the kept prompt prefix, a speed matter). Two messages to one session
answered at the same moment by two workers cannot both be stored: the later save is refused with
`SessionConflictError` (HTTP 409, "send it again") instead of dropping a turn.

The parent process does the one-time work before the workers start (indexing the catalogue, purging
expired sessions) so they do not race over it. Each worker stops when the parent is gone, even when the
parent was killed, so no orphan keeps the port.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from reasonrec.agent.interfaces.server import UVICORN_OPTIONS
from reasonrec.errors import ConfigError, ReasonRecError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from reasonrec.agent.config import AgentConfig

SPEC_ENV = "REASONREC_SERVE_WORKER_SPEC"  # how the parent hands each spawned worker its settings
_PARENT_POLL_S = 1.0


class WorkerSpec(BaseModel):
    """What every worker builds its app from (JSON in `SPEC_ENV`)."""

    config: dict[str, Any] = Field(description="The AgentConfig, as JSON data.")
    sessions: str = Field(description="The shared SQLite file of chat sessions.")
    idle_expiry_s: float | None = None
    max_queue: int = 8
    parent_pid: int = Field(description="The process that started the workers; they stop when it is gone.")


def worker_threads(cfg: AgentConfig, workers: int) -> int | None:
    """torch threads per worker: the configured number, else the machine's cores shared out.

    Why: N workers each using torch's default (every core) would oversubscribe the CPU N times over when
    they run the model at once; a number the user set is kept as given.
    """
    if cfg.model.num_threads is not None:
        return cfg.model.num_threads
    return max(1, (os.cpu_count() or 1) // workers)


def serve_workers(
    cfg: AgentConfig, sessions: Path, idle_expiry_s: float | None, max_queue: int, host: str, port: int, workers: int
) -> None:
    """Run `workers` server processes on host:port (already checked by `claim_port`) until Ctrl-C / SIGTERM.

    Raises:
        ConfigError: workers < 2, or a worker failed while starting (its error is printed above by the
            worker itself).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 2:
        raise ConfigError(f"`workers` must be an integer >= 2 here, got {workers!r}")
    cfg = cfg.model_copy(deep=True)
    cfg.model.num_threads = worker_threads(cfg, workers)
    spec = WorkerSpec(
        config=cfg.model_dump(mode="json"), sessions=str(sessions), idle_expiry_s=idle_expiry_s,
        max_queue=max_queue, parent_pid=os.getpid(),
    )  # fmt: skip
    os.environ[SPEC_ENV] = spec.model_dump_json()  # spawned workers inherit the environment
    if sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT"):
        _supervise(host, port, workers)
    else:
        import uvicorn

        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, host=host, port=port, **UVICORN_OPTIONS)


def claim_port(host: str, port: int) -> int:
    """`port` if it can be bound on `host` now (a free one for 0). ConfigError when it is taken.

    Why a plain bind first: sockets with SO_REUSEPORT of the same user share a port silently, so an
    older server still running there would take half of the connections; and a taken port is then found
    before the model loads.
    """
    with _tcp_socket(host) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror}; choose another --port") from None
        return int(s.getsockname()[1])


def _tcp_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _supervise(host: str, port: int, workers: int) -> None:
    """Start the workers, replace one that dies after it served, stop them all on SIGINT/SIGTERM."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch threads

    def start() -> tuple[Any, Any]:
        ready = ctx.Event()  # set by the worker once its app is built (`worker_app`)
        p = ctx.Process(target=_worker_main, args=(host, port, ready), name="reasonrec-worker", daemon=False)
        p.start()
        return p, ready

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = [start() for _ in range(workers)]
    try:
        while not stop.wait(0.5):
            for n, (p, ready) in enumerate(procs):
                if p.is_alive():
                    continue
                if not ready.is_set():  # it failed while starting (model, adapter, memory): it would only repeat
                    raise ConfigError(f"a server worker exited with code {p.exitcode} while starting (see above)")
                procs[n] = start()  # one that crashed after start-up is replaced, as uvicorn's supervisor does
    finally:
        for p, _ in procs:
            if p.is_alive():
                p.terminate()  # uvicorn in the worker shuts down gracefully on SIGTERM
        for p, _ in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_ready: Any = None  # this worker's start-up event (`_worker_main` sets it for `worker_app`)


def _worker_main(host: str, port: int, ready: Any) -> None:
    """One worker process: its own SO_REUSEPORT socket on the shared port, uvicorn on it."""
    import uvicorn

    global _ready
    _ready = ready
    sock = _tcp_socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    config = uvicorn.Config(f"{__name__}:worker_app", factory=True, host=host, port=port, **UVICORN_OPTIONS)
    uvicorn.Server(config).run(sockets=[sock])


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls it in each worker it spawns)."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.chat.store import SessionStore
    from reasonrec.agent.config import AgentConfig
    from reasonrec.agent.interfaces.cli_common import quiet_libraries
    from reasonrec.agent.interfaces.server import serving_app

    raw = os.environ.get(SPEC_ENV)
    if not raw:
        raise ConfigError(f"{SPEC_ENV} is not set: start workers with `reasonrec serve --workers N`")
    spec = WorkerSpec.model_validate_json(raw)
    quiet_libraries()
    _stop_with_parent(spec.parent_pid)
    try:
        agent = RecommenderAgent(AgentConfig.model_validate(spec.config))
        store = SessionStore(spec.sessions, idle_expiry_s=spec.idle_expiry_s)
        app = serving_app(agent, store, spec.max_queue)  # warmed up on its model thread
    except ReasonRecError as e:  # a user's mistake (a bad adapter, model or file): one line, as the CLI prints it
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None  # not an Exception: uvicorn would log it with a traceback
    if _ready is not None:  # None under uvicorn's own supervisor (not Linux)
        _ready.set()
    return app


def _stop_with_parent(parent_pid: int) -> None:
    """Exit this worker once `parent_pid` is no longer its parent (the supervisor died, even by SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_S)
        os._exit(0)  # nothing to flush: sessions are saved in their own transactions as each turn ends

    threading.Thread(target=watch, name="reasonrec-parent-watch", daemon=True).start()
