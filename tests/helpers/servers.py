"""Servers for tests: `BackgroundServer` (uvicorn on a thread, in-process) and `ServerProcess`
(`reasonrec serve` as a child process; its one copy lives in bench/_server.py, which benchmarks use too).

    from helpers.servers import BackgroundServer, ServerProcess
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from reasonrec.agent.interfaces.server import KEEP_ALIVE_S
from reasonrec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the repository root
    sys.path.insert(0, str(ROOT))

from bench._server import ServerProcess, free_port  # noqa: E402

__all__ = ["BackgroundServer", "ServerProcess", "free_port"]


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
