"""`reasonrec serve --workers 2`: two real server processes on one port (scoring mode: no LM load).

What a user of several workers relies on: both answer, connections are spread over them, a chat session
continues on either worker, nothing is left running when the supervisor dies, and a taken port is one
readable line before anything loads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers.servers import ServerProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT supervisor: Linux")


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_two_workers_answer_share_sessions_and_stop_with_the_supervisor(tmp_path):
    srv = ServerProcess(
        ["--mode", "scoring", "--workers", "2", "--sessions", str(tmp_path / "s.sqlite3")],
        startup_timeout_s=600, log=tmp_path / "serve.log",
    )  # fmt: skip
    with srv:
        pids = srv.worker_pids(2)
        assert len(pids) == 2 and srv.pid not in pids, f"only {pids} answered; log: {srv.log}"
        # Sixteen clients connecting at once: both workers get connections (SO_REUSEPORT spreads them by hash;
        # one shared socket gave all of them to one worker in 1 of 5 runs).
        with httpx.Client(timeout=60) as first:
            sid = first.post(f"{srv.url}/v1/sessions", json={}).json()["id"]
        clients = [httpx.Client(timeout=120) for _ in range(16)]
        try:
            seen = {c.get(f"{srv.url}/healthz").json()["pid"] for c in clients}
            answers = [c.post(f"{srv.url}/v1/recommend", json={"user_id": "196", "k": 3}) for c in clients[:2]]
            turns = [c.post(f"{srv.url}/v1/sessions/{sid}/messages", json={"text": t}) for c, t in
                     zip(clients[::8], ["a comedy from the 90s", "not the first one"], strict=True)]  # fmt: skip
        finally:
            for c in clients:
                c.close()
        assert seen == pids
        assert all(r.status_code == 200 and len(r.json()["items"]) == 3 for r in answers)
        assert [r.status_code for r in turns] == [200, 200], [r.text for r in turns]
        with httpx.Client(timeout=60) as c:
            stored = c.get(f"{srv.url}/v1/sessions/{sid}").json()
        assert [t["user_text"] for t in stored["turns"]] == ["a comedy from the 90s", "not the first one"]
        srv.kill()  # SIGKILL: the supervisor runs no clean-up at all
        deadline = time.monotonic() + 20
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in pids), "workers outlived their supervisor"


def test_a_taken_port_is_one_line_before_anything_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            cmd = [sys.executable, "-m", "reasonrec.agent.interfaces.server", "--port", str(port), "--workers", workers]
            t0 = time.monotonic()
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
            assert r.returncode != 0
            assert f"cannot serve on 127.0.0.1:{port}" in r.stderr and "choose another --port" in r.stderr
            assert "Traceback" not in r.stderr + r.stdout
            assert time.monotonic() - t0 < 30  # found before the dataset, the store or a model loads


def test_a_crashed_worker_is_replaced_and_a_failing_start_ends_the_server(tmp_path):
    args = ["--mode", "scoring", "--workers", "2", "--sessions", str(tmp_path / "s.sqlite3")]
    with ServerProcess(args, startup_timeout_s=600, log=tmp_path / "serve.log") as srv:
        pids = srv.worker_pids(2)
        victim = sorted(pids)[0]
        os.kill(victim, 9)  # a crash after start-up
        now = srv.worker_pids(2)  # the replacement answers beside the survivor
        assert victim not in now and len(now - pids) == 1 and srv.proc.poll() is None
    # A worker that cannot start (here: an adapter folder that does not exist, found only when the model
    # loads in the worker) would fail again on every restart: the server stops with one line instead.
    bad = ["--mode", "hybrid", "--adapter", str(tmp_path / "no-such-adapter"), "--workers", "2", "--port", "0"]
    cmd = [sys.executable, "-m", "reasonrec.agent.interfaces.server", *bad, "--sessions", str(tmp_path / "b.sqlite3")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode != 0 and "a server worker exited with code 2 while starting" in r.stderr, r.stderr[-2000:]
    assert "has no adapter_config.json" in r.stderr and "Traceback" not in r.stderr
