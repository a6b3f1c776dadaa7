"""`reasonrec serve`: the HTTP API and web chat, plus a launcher for running it as a child process.

    reasonrec serve                                   # http://127.0.0.1:8000/ (chat), /docs (OpenAPI)
    reasonrec serve --mode scoring --port 8080 --sessions ./sessions.sqlite3 --max-queue 8
    python -m reasonrec.agent.interfaces.server --port 8080     # the same command

Registered on the main CLI app in `reasonrec.agent.interfaces.cli`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

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
from reasonrec.errors import ConfigError


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 exposes it to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    sessions: Annotated[
        Path | None, typer.Option(help="SQLite file of chat sessions (default: <REASONREC_HOME>/sessions.sqlite3).")
    ] = None,
    max_queue: Annotated[int, typer.Option(min=0, help="Model jobs waiting behind the running one; more get 429.")] = 8,
    mode: Annotated[str | None, typer.Option(help="Ranker mode: generative, scoring or hybrid.")] = None,
    k: Annotated[int | None, typer.Option("-k", min=1, help="Default number of recommendations.")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (1 is much faster on a machine busy with other work).")
    ] = None,
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

    from reasonrec.agent.interfaces.server import KEEP_ALIVE_S, create_app, warm_up

    cfg = build_config(config, model, adapter, dataset, chroma_url, store, mode=mode, k=k)
    if threads is not None:
        cfg.model.num_threads = threads
    agent = make_agent(cfg)
    ensure_index(agent)
    with err_console.status("loading the model…"):
        warm_up(agent)
    session_store = None
    if sessions is not None:
        from reasonrec.agent.chat.store import SessionStore

        session_store = SessionStore(sessions)
    api = create_app(agent, store=session_store, max_queue=max_queue)
    err_console.print(f"serving on http://{host}:{port}/ (API docs at /docs); Ctrl-C stops")
    uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=KEEP_ALIVE_S)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`reasonrec serve` in a child process on 127.0.0.1, for tests, benchmarks and scripts.

        with ServerProcess(["--mode", "scoring", "--sessions", "s.sqlite3"]) as srv:
            httpx.post(f"{srv.url}/v1/recommend", json={"user_id": "196"})

    Args:
        args: extra `reasonrec serve` options (not --host/--port).
        port: TCP port; default a free one.
        startup_timeout_s: how long to wait for /healthz to answer (model load included).
        log: file that receives the server's stdout and stderr (default: discarded).
    """

    def __init__(
        self, args: list[str], port: int | None = None, startup_timeout_s: float = 180, log: Path | None = None
    ):
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Start the server and wait until /healthz answers.

        Raises:
            ConfigError: it exited or did not answer within `startup_timeout_s` (the log says why).
        """
        cmd = [sys.executable, "-m", "reasonrec.agent.interfaces.server", "--host", "127.0.0.1", "--port", str(self.port)]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen([*cmd, *self.args], stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"`reasonrec serve` exited with {self.proc.returncode}; see the log {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise ConfigError(f"`reasonrec serve` did not answer on {self.url} within {self.startup_timeout_s} s")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ConfigError("the server process has not been started; call start() first")
        return self.proc.pid

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident memory (Linux VmHWM), or None where /proc is unavailable."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run (a crash, as far as the server can tell)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
