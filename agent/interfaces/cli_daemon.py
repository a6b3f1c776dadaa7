"""A per-user background process that keeps the agent loaded for `reasonrec recommend` and `reasonrec demo`.

Why: a one-shot CLI process pays the model's set-up (torch + transformers imports and the weights, ~5 s on
the 2-core CPU) before it can write a reason, more than the request itself. A long-lived process pays it
once; the CLI then only starts Python, sends its request over a local socket and prints the answer.

    reasonrec recommend --user 196 -k 5   # in-process, then starts the background process
    reasonrec recommend --user 196 -k 5   # answered by it (footer: "background process")
    reasonrec daemon status               # this user's background processes
    reasonrec daemon stop                 # stop them now

- When: `REASONREC_DAEMON=auto` (the default) uses and starts one only when stdout is a terminal (a script or
  CI never leaves a process behind); `on` always; `off` never.
- Where: an AF_UNIX socket in `<runtime dir>/reasonrec-<uid>/` (`$XDG_RUNTIME_DIR`, else the temp folder),
  a folder that must be this user's own with mode 0700, else nothing is used; the peer's uid is checked too.
- Which: one process per key: the resolved config, the working folder, the environment variables that
  change results, the Python executable and installed packages, the size and mtime of every serving source
  file (reasonrec, agent, retrieval, prompts), of the dataset files, the adapter and a local model. A change
  gives a new key, so a stale process is never asked (it exits when idle).
- Lifetime: it exits after `REASONREC_DAEMON_IDLE_S` seconds (600) without a request, on `daemon stop`, and
  when `reasonrec index` starts (it rewrites the store and the sequence model a process has open).
- Same results: requests run one at a time through the same `RecommenderAgent` calls, and each starts without
  the prompt-prefix caches of the one before (`forget_prefixes`), so ids, scores and reasons are those of a
  one-shot process. Only `timings` differ (no set-up).
- Falls back: no process, a refused or broken connection, or any failure that is not a `ReasonRecError`
  runs the command in-process as before; a `ReasonRecError` is raised again with its type and message.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

IDLE_S = 600.0
REPLY_TIMEOUT_S = 900.0  # a first request may wait for the model's one-time conversion
_ENV_PREFIXES = ("REASONREC_", "HF_", "TRANSFORMERS_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "TOKENIZERS_")
_NOT_KEYED = "REASONREC_DAEMON"  # this module's own settings (REASONREC_DAEMON*) do not change results

app = typer.Typer(help="The per-user background process that answers `recommend` and `demo` (see `daemon status`).")


def mode() -> str:
    """`REASONREC_DAEMON` as 'on', 'off' or 'auto' (anything else reads as 'auto')."""
    value = os.environ.get("REASONREC_DAEMON", "auto").strip().lower()
    return value if value in ("on", "off") else "auto"


def wanted() -> bool:
    """Whether this CLI call may use or start a background process."""
    if not (hasattr(socket, "AF_UNIX") and hasattr(os, "getuid")):  # e.g. Windows: always in-process
        return False
    m = mode()
    return m == "on" or (m == "auto" and sys.stdout.isatty())


def folder() -> Path | None:
    """This user's socket folder, created 0700; None when it exists with another owner or wider mode."""
    base = os.environ.get("REASONREC_DAEMON_DIR") or os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"reasonrec-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        return None  # someone else's folder, a link, or one others can enter: never trust its sockets
    return path


def key(cfg: Any) -> str:
    """What a background process must share with this call to answer it (see the module docstring)."""
    parts: list[Any] = [cfg.model_dump(mode="json"), os.getcwd(), sys.executable, sys.version]
    env = os.environ.items()
    parts.append(sorted((k, v) for k, v in env if k.startswith(_ENV_PREFIXES) and not k.startswith(_NOT_KEYED)))
    parts.append(_stamps(_source_files()))
    inputs = [p.strip() for p in str(cfg.dataset).split(",") if p.strip() != "ml-100k"]
    inputs += [p for p in (cfg.model.adapter, cfg.model.name_or_path) if p]  # a retrained adapter, a local model
    parts.append(_stamps(Path(p) for p in inputs))
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _source_files() -> list[Path]:
    import importlib.util

    roots = [Path(sys.modules["reasonrec"].__file__ or ".").parent]
    for name in ("reasonrec.agent", "reasonrec.retrieval", "reasonrec.prompts"):  # what serving runs
        spec = importlib.util.find_spec(name)
        roots += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    site = [Path(p) for p in sys.path if p.endswith("site-packages")]  # an install or upgrade changes its mtime
    return site + [f for r in roots for f in r.rglob("*") if f.suffix in (".py", ".jinja", ".gguf")]


def _stamps(paths: Any) -> list[tuple[str, int, int]]:
    out = []
    for p in paths:
        files = sorted(p.rglob("*")) if p.is_dir() and p.name != "site-packages" else [p]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
    return out


# ---- the client side ---------------------------------------------------------------------------------


def ask(cfg: Any, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The background process's answer to `op`, or None (none running, not wanted, or it failed).

    Raises:
        ReasonRecError: the request's own error, as the in-process call would have raised it.
    """
    if not wanted() or (where := folder()) is None:
        return None
    sock = where / f"{key(cfg)}.sock"
    try:
        reply = _exchange(sock, {"op": op, "args": args}, REPLY_TIMEOUT_S)
    except (OSError, ValueError):
        return None
    if "error" in reply:
        raise _rebuild(reply["error"])
    return reply if reply.get("ok") else None


def start(cfg: Any, op: str, args: dict[str, Any]) -> None:
    """Start the background process for `cfg` (it first answers `op` once, unseen, to warm up); never raises."""
    if not wanted() or (where := folder()) is None:
        return
    k = key(cfg)
    try:
        with (where / f"{k}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reasonrec.agent.interfaces.cli_daemon", str(where / f"{k}.sock")],
                stdin=subprocess.PIPE, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"config": cfg.model_dump(mode="json"), "warm": {"op": op, "args": args}}).encode())
        proc.stdin.close()
    except OSError:
        return
    from reasonrec.agent.interfaces.cli_common import err_console

    idle = float(os.environ.get("REASONREC_DAEMON_IDLE_S", IDLE_S))
    err_console.print(f"[dim]started background process {proc.pid} for the next calls: it exits after {idle:.0f} s "
                      "idle (`reasonrec daemon stop` now; REASONREC_DAEMON=off never starts one)[/dim]")  # fmt: skip


def _exchange(path: Path, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        s.connect(str(path))
        s.settimeout(timeout)
        s.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                raise ValueError("the background process closed the connection")
            data += chunk
    return json.loads(data)


def _rebuild(error: dict[str, str]) -> Exception:
    from reasonrec import errors

    cls = getattr(errors, error.get("type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ReasonRecError)):
        cls = errors.ReasonRecError
    return cls(error.get("message", ""))


def sockets() -> list[Path]:
    where = folder()
    return sorted(where.glob("*.sock")) if where is not None else []


def stop_all() -> int:
    """Ask every background process of this user to exit; how many answered."""
    n = 0
    for sock in sockets():
        try:
            n += bool(_exchange(sock, {"op": "stop"}, 10.0).get("ok"))
        except (ConnectionRefusedError, FileNotFoundError):
            sock.unlink(missing_ok=True)  # nobody listens: a process that was killed left it
        except (OSError, ValueError):
            pass  # busy with a request: it reads the stop when that is done
    return n


@app.command("status")
def status_cmd(
    wait: float = typer.Option(10.0, "--wait", help="Seconds to wait for a busy (e.g. warming up) process."),
) -> None:
    """List this user's background processes (pid, requests answered, idle seconds).

    Example: reasonrec daemon status --wait 60
    """
    found = False
    for sock in sockets():
        try:
            info = _exchange(sock, {"op": "status"}, wait)
        except (OSError, ValueError):
            continue
        found = True
        typer.echo(f"pid {info['pid']} · {info['mode']} · {info['served']} answered · idle {info['idle_s']:.0f} s "
                   f"(exits at {info['idle_limit_s']:.0f} s) · {sock.name}")  # fmt: skip
    if not found:
        typer.echo(f"no background process (REASONREC_DAEMON={mode()})")


@app.command("stop")
def stop_cmd() -> None:
    """Stop this user's background processes now.

    Example: reasonrec daemon stop
    """
    typer.echo(f"stopped {stop_all()} background process(es)")


# ---- the background process --------------------------------------------------------------------------


def serve(path: Path, config: dict[str, Any], warm: dict[str, Any] | None, idle_s: float) -> None:
    """Answer requests on `path` one at a time until idle for `idle_s` or told to stop."""
    srv = _bind(path)
    if srv is None:
        return  # another process of the same key got there first
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.agent.interfaces.cli_handlers import handle

    ino = os.stat(path).st_ino
    agent = RecommenderAgent(AgentConfig.model_validate(config))
    state = {"served": 0, "last": time.monotonic(), "idle_limit_s": idle_s}
    try:
        if warm:  # the call that started us, once, unseen: every lazy part is built before the next one
            try:
                handle(agent, warm["op"], warm["args"])
            except Exception as e:  # its caller has already seen the same outcome in-process
                print(f"warm-up failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        srv.settimeout(idle_s)
        while True:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                break
            with conn:
                try:
                    if _same_user(conn) and not _answer(conn, agent, state):
                        break
                except (OSError, ValueError):  # a client that went away or sent garbage: the next one
                    pass
            state["last"] = time.monotonic()
    finally:
        srv.close()
        if os.path.exists(path) and os.stat(path).st_ino == ino:  # a newer process may own the name now
            path.unlink()


def _answer(conn: socket.socket, agent: Any, state: dict[str, Any]) -> bool:
    """Read one request, write one reply; False when told to stop."""
    from reasonrec.agent.interfaces.cli_handlers import handle
    from reasonrec.errors import ReasonRecError

    conn.settimeout(30.0)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            return True
        data += chunk
    msg = json.loads(data)
    op = msg.get("op")
    reply: dict[str, Any]
    if op == "stop":
        reply = {"ok": True}
    elif op == "status":
        idle = time.monotonic() - state["last"]
        reply = {"ok": True, "pid": os.getpid(), "mode": agent.config.ranker.mode, "served": state["served"],
                 "idle_s": idle, "idle_limit_s": state["idle_limit_s"]}  # fmt: skip
    else:
        try:
            reply = {"ok": True, "pid": os.getpid(), **handle(agent, op, msg.get("args") or {})}
            state["served"] += 1
        except ReasonRecError as e:
            reply = {"error": {"type": type(e).__name__, "message": str(e)}}
        except Exception as e:  # a bug: the CLI runs the command in-process and shows it there
            reply = {"ok": False, "message": f"{type(e).__name__}: {e}"}
    try:
        conn.settimeout(REPLY_TIMEOUT_S)
        conn.sendall(json.dumps(reply).encode() + b"\n")
    except OSError:  # the client went away (a stop still stops)
        pass
    return op != "stop"


def _same_user(conn: socket.socket) -> bool:
    try:
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except (OSError, AttributeError):  # no SO_PEERCRED (not Linux): the 0700 folder is the guard
        return True
    return uid == os.getuid()


def _bind(path: Path) -> socket.socket | None:
    """A listening socket at `path`; None when a live process already listens there."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(str(path))
    except OSError:
        try:
            _exchange(path, {"op": "status"}, 5.0)
            srv.close()
            return None
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # left by a killed process
            srv.bind(str(path))
    os.chmod(path, 0o600)
    srv.listen(16)
    return srv


if __name__ == "__main__":
    from reasonrec.agent.interfaces.cli_common import quiet_libraries

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()
    spec = json.loads(sys.stdin.read() or "{}")
    serve(Path(sys.argv[1]), spec["config"], spec.get("warm"), float(os.environ.get("REASONREC_DAEMON_IDLE_S", IDLE_S)))
