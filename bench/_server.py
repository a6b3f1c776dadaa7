"""`reasonrec serve` in a child process on 127.0.0.1, for benchmarks and tests (one copy for both).

    from bench._server import ServerProcess          # tests: via tests/helpers/servers.py
    with ServerProcess(["--mode", "scoring", "--sessions", "s.sqlite3"]) as srv:
        httpx.post(f"{srv.url}/v1/recommend", json={"user_id": "196"})

Lives outside the package: it is a tool for measuring the server, not part of what users import.
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

from reasonrec.errors import ConfigError


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
        cmd = [sys.executable, "-m", "reasonrec.agent.interfaces.server", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port)]
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

    def worker_pids(self, want: int = 1, timeout_s: float = 300) -> set[int]:
        """Pids answering /healthz, each on a new connection (the kernel picks a worker per connection),
        until `want` distinct ones answered or `timeout_s` passed (`serve --workers` starts them one by one).

        A connection the kernel gave a worker that is dying (just killed, its socket not yet closed) is reset:
        that is no answer, and the next connection goes to a live one."""
        import httpx

        pids: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(pids) < want and time.monotonic() < deadline:
            with httpx.Client(timeout=30) as c:
                try:
                    pids.add(c.get(f"{self.url}/healthz").json()["pid"])
                except httpx.TransportError:
                    time.sleep(0.05)
        return pids

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
