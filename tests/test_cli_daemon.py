"""The CLI's background process (agent/interfaces/cli_daemon.py): same answers as in-process, errors kept,
status/stop/idle exit, and a socket folder it refuses to trust. Real ML-100K, Chroma store and SmolLM2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasonrec.agent.interfaces import cli_daemon


def cli(env: dict[str, str], *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reasonrec.agent.interfaces.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200", **env})  # fmt: skip


def daemon_env(tmp_path: Path, idle_s: float = 120) -> dict[str, str]:
    return {"REASONREC_DAEMON": "on", "REASONREC_DAEMON_DIR": str(tmp_path / "run"),
            "REASONREC_DAEMON_IDLE_S": str(idle_s)}  # fmt: skip


def config_file(tmp_path: Path, retrieval_config, mode: str) -> str:
    path = tmp_path / f"{mode}.json"  # the session's indexed collection, one torch thread
    cfg = {"retrieval": json.loads(retrieval_config.model_dump_json()), "ranker": {"mode": mode},
           "model": {"num_threads": 1}}  # fmt: skip
    path.write_text(json.dumps(cfg))
    return str(path)


def wait_ready(env: dict[str, str], timeout: float = 300) -> list[dict]:
    """Status of every background process once each answers (after its warm-up)."""
    folder = Path(env["REASONREC_DAEMON_DIR"]) / f"reasonrec-{os.getuid()}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        socks = sorted(folder.glob("*.sock"))
        if socks:
            try:
                return [cli_daemon._exchange(s, {"op": "status"}, timeout) for s in socks]
            except OSError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"no background process answered in {timeout} s")


def without_timings(text: str) -> dict:
    d = json.loads(text)
    d.pop("timings", None)
    for it in d["items"]:
        it.pop("confidence", None)
    return d


@pytest.mark.slow
def test_hybrid_answers_equal_in_process_ones(tmp_path, retrieval_config, indexed_store, lm):
    """Same items, scores and model-written reasons from the background process as from a one-shot process."""
    env, cfg = daemon_env(tmp_path), config_file(tmp_path, retrieval_config, "hybrid")
    try:
        first = cli(env, "recommend", "--user", "196", "-k", "5", "--json", "--config", cfg)  # starts it
        assert first.returncode == 0, first.stderr[-2000:]
        assert wait_ready(env)[0]["served"] == 0  # the warm-up is not counted
        for user in ("196", "42"):
            alone = cli({"REASONREC_DAEMON": "off"}, "recommend", "--user", user, "-k", "5", "--json", "--config", cfg)
            served = cli(env, "recommend", "--user", user, "-k", "5", "--json", "--config", cfg)
            assert alone.returncode == served.returncode == 0, served.stderr[-2000:]
            assert without_timings(served.stdout) == without_timings(alone.stdout)
            assert json.loads(served.stdout)["timings"].get("setup_ms", 0) == 0  # set-up paid once, earlier
        assert wait_ready(env)[0]["served"] == 2
        table = cli(env, "recommend", "--user", "196", "-k", "5", "--config", cfg)
        assert "background process" in table.stdout and "Recommendations for 196" in table.stdout
        demo = cli(env, "demo", "--user", "196", "-k", "5", "--config", cfg, timeout=300)  # indexes, never trains
        assert demo.returncode == 0, demo.stderr[-2000:]
        assert "last 5 of" in demo.stdout and "Top 5 for user 196" in demo.stdout
        assert "background process" in demo.stdout
        assert "index: 0 added" in demo.stderr
    finally:
        cli(env, "daemon", "stop", timeout=60)


def test_errors_status_stop_and_idle_exit(tmp_path, retrieval_config, indexed_store):
    env, cfg = daemon_env(tmp_path, idle_s=300), config_file(tmp_path, retrieval_config, "scoring")
    try:
        first = cli(env, "recommend", "--user", "1", "-k", "3", "--config", cfg)
        assert first.returncode == 0 and "started background process" in first.stderr  # it says so, once
        (info,) = wait_ready(env)
        bad = cli(env, "recommend", "--user", "999999", "--config", cfg)  # answered by it: the same one line
        assert bad.returncode == 2 and "unknown user" in bad.stderr and "Traceback" not in bad.stderr
        assert "answered" in cli(env, "daemon", "status").stdout
        assert "stopped 1" in cli(env, "daemon", "stop").stdout
        _wait_gone(info["pid"])
        assert "no background process" in cli(env, "daemon", "status").stdout
        # A short idle limit: the process exits on its own after its warm-up.
        short = daemon_env(tmp_path, idle_s=1)
        assert cli(short, "recommend", "--user", "1", "-k", "3", "--config", cfg).returncode == 0
        (info,) = wait_ready(short)
        _wait_gone(info["pid"])
        assert not list((tmp_path / "run" / f"reasonrec-{os.getuid()}").glob("*.sock"))  # it removed its socket
    finally:
        cli(env, "daemon", "stop", timeout=60)


def test_untrusted_folder_and_stale_socket_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONREC_DAEMON", "on")
    monkeypatch.setenv("REASONREC_DAEMON_DIR", str(tmp_path))
    mine = cli_daemon.folder()
    assert mine is not None and (mine.stat().st_mode & 0o777) == 0o700
    mine.chmod(0o755)  # others could enter: its sockets are not trusted
    assert cli_daemon.folder() is None
    mine.chmod(0o700)
    stale = mine / "x.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # a socket file nobody listens on, as a killed process leaves it
    with pytest.raises(ConnectionRefusedError):
        cli_daemon._exchange(stale, {"op": "status"}, 1.0)
    srv = cli_daemon._bind(stale)  # a new process takes the name over
    assert srv is not None
    srv.close()
    monkeypatch.setenv("REASONREC_DAEMON", "off")
    assert not cli_daemon.wanted()
    monkeypatch.setenv("REASONREC_DAEMON", "auto")
    assert cli_daemon.wanted() == sys.stdout.isatty()


def _wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < deadline:
        try:  # gone, or a zombie nobody reaps (it was started in its own session; its parent has exited)
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.2)
    raise AssertionError(f"background process {pid} still runs after {timeout} s")
