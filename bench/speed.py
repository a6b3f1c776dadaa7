"""What a person waits for, end to end: CLI calls, the demo, a chat turn, the server under 8 clients.

    .venv/bin/python bench/speed.py                          # everything, writes bench/results/speed_cpu.json
    .venv/bin/python bench/speed.py --only server --threads 1

Every CLI figure is a child process from start to exit (`reasonrec recommend --user 196 -k 5`, `reasonrec
demo`), warm: one unmeasured run first fills the caches (converted model, Chroma store), then the median
of `--repeats` runs. Each is measured twice: as a person at a terminal runs it (`REASONREC_DAEMON=on`, what
`auto` does on a terminal: the unmeasured run starts the background process of agent/interfaces/cli_daemon.py
and the measured runs hand their request to it, once it answers) and in-process (`REASONREC_DAEMON=off`,
what a script gets). The server figures come from one `reasonrec serve` per mode on 127.0.0.1:
- default mode, 1 client: chat turns through the streaming endpoint, time to the first `cards` event and
  to `done` (the complete answer), p50 over `--turns` messages;
- scoring mode, once per `--workers` count (default 1 and 2, `serve --workers`): `--single` requests one at
  a time (half before, half after), and `--requests` from `--clients` concurrent clients
  (bench/load_test.py) in the same server run: their throughput ratio is what concurrency buys there.
The format is `bench/results/speed_cpu.json` in ../shared/protocols.md, plus the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/_server.py and bench/load_test.py

RESULTS = Path(__file__).parent / "results" / "speed_cpu.json"
REASONREC = str(Path(sys.executable).with_name("reasonrec"))
MESSAGES = ["a funny sci-fi", "no horror", "something older", "more like Fargo", "a thriller from the 90s"]


def timed_cli(args: list[str], repeats: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall seconds of `reasonrec <args>` from process start to exit, after one warm-up run
    (and, with a background process, once it has finished its own warm-up)."""
    walls, loads = [], []
    env = {**os.environ, **env}
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        subprocess.run([REASONREC, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if i:  # run 0 warms the caches
            walls.append(time.perf_counter() - t0)
            loads.append(round(os.getloadavg()[0], 2))  # the shared CPU's load when the run ended
        elif env.get("REASONREC_DAEMON") == "on":
            wait_for_daemons(env)
    return {"median": round(statistics.median(walls), 2), "runs": [round(w, 2) for w in walls], "load_1m": loads}


def wait_for_daemons(env: dict[str, str], timeout: float = 600) -> None:
    """Until every background process in env's REASONREC_DAEMON_DIR answers (its warm-up is done)."""
    status = [REASONREC, "daemon", "status", "--wait", str(timeout)]
    subprocess.run(status, check=True, stdout=subprocess.DEVNULL, env=env, timeout=timeout + 60)


def measure_cli(tmp: Path, a: argparse.Namespace, env: dict[str, str]) -> dict[str, dict]:
    """recommend (scoring, default mode) and demo, each `timed_cli` under `env`."""
    scoring, default = write_config(tmp, "scoring", a), write_config(tmp, None, a)
    rec = ["recommend", "--user", "196", "-k", "5", "--config"]
    configs = (("scoring", scoring), ("hybrid", default))  # hybrid: the default mode
    out = {mode: timed_cli([*rec, str(cfg)], a.repeats, env) for mode, cfg in configs}
    out["demo"] = timed_cli(["demo", "--config", str(default)], max(1, a.repeats - 1), env)
    return out


def write_config(folder: Path, mode: str | None, a: argparse.Namespace) -> Path:
    """The config file of one figure: `--config-json`'s sections, plus the threads and mode it needs."""
    path = folder / f"speed-{mode or 'default'}.json"
    cfg: dict[str, dict[str, object]] = {k: dict(v) for k, v in a.config_json.items()}
    if a.threads:
        cfg.setdefault("model", {})["num_threads"] = a.threads
    if mode:
        cfg.setdefault("ranker", {})["mode"] = mode
    path.write_text(json.dumps(cfg))
    return path


async def chat_turns(url: str, turns: int) -> dict[str, float]:
    """One client: a session for user 196, `turns` messages through the SSE endpoint."""
    import httpx

    first, done = [], []
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        sid = (await http.post("/v1/sessions", json={"user_id": "196"})).json()["id"]
        for i in range(turns):
            t0 = time.perf_counter()
            t_cards = None
            body = {"text": MESSAGES[i % len(MESSAGES)]}
            async with http.stream("POST", f"/v1/sessions/{sid}/messages/stream", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if line == "event: cards" and t_cards is None:
                        t_cards = time.perf_counter()
                    if line in ("event: done", "event: error"):
                        break
            done.append((time.perf_counter() - t0) * 1000)
            first.append(((t_cards or time.perf_counter()) - t0) * 1000)
    return {"p50": round(statistics.median(done), 1), "first_cards_p50": round(statistics.median(first), 1),
            "n": turns, "runs_ms": [round(d) for d in done]}  # fmt: skip


def server_args(mode: str, threads: int | None, tmp: Path, max_queue: int, workers: int = 1) -> list[str]:
    args = ["--mode", mode, "--max-queue", str(max_queue), "--sessions", str(tmp / f"{mode}.sqlite3")]
    args += ["--workers", str(workers)] if workers > 1 else []
    return args + (["--threads", str(threads)] if threads else [])


def measure_server(a: argparse.Namespace, tmp: Path, users: list[str]) -> tuple[dict, dict[str, dict]]:
    from _server import ServerProcess

    args = server_args("hybrid", a.threads, tmp, 8) + ["--config", str(write_config(tmp, "hybrid", a))]
    with ServerProcess(args, startup_timeout_s=900) as srv:
        chat = asyncio.run(chat_turns(srv.url, a.turns))
    by_workers = {str(w): measure_scoring(a, tmp, users, w) for w in a.workers}
    return chat, by_workers


def measure_scoring(a: argparse.Namespace, tmp: Path, users: list[str], workers: int) -> dict:
    """One scoring server with `workers` processes: one at a time, then `--clients` at once, in that run."""
    from _server import ServerProcess
    from load_test import run_load

    with ServerProcess(server_args("scoring", a.threads, tmp, a.clients, workers), startup_timeout_s=900) as srv:
        if len(srv.worker_pids(workers)) < workers:  # else the first worker alone takes the early connections
            raise SystemExit(f"not all {workers} server workers answered within 300 s")
        asyncio.run(run_load(srv.url, users, 4 * workers, workers, seed=99))  # warm-up: first requests, allocator
        # One-at-a-time before and after the concurrent phase: the machine's load drifts during a run.
        singles = [asyncio.run(run_load(srv.url, users, a.single // 2, 1, seed=1))]
        many = asyncio.run(run_load(srv.url, users, a.requests, a.clients, seed=2))
        singles.append(asyncio.run(run_load(srv.url, users, a.single - a.single // 2, 1, seed=3)))
    single_rps = sum(s.answered for s in singles) / sum(s.wall_s for s in singles)
    return {
        "workers": workers, "clients": a.clients, "requests": many.requests, "mode": "scoring",
        "throughput_rps": round(many.throughput_rps, 3), "one_at_a_time_rps": round(single_rps, 3),
        "ratio": round(many.throughput_rps / single_rps, 2) if single_rps else None,
        "p50_ms": round(many.latency_ms.get("p50", 0.0)), "p99_ms": round(many.latency_ms.get("p99", 0.0)),
        "one_at_a_time_rps_before_after": [round(s.throughput_rps, 3) for s in singles],
        "errors": many.requests - many.answered, "status_counts": many.status_counts,
    }  # fmt: skip


def torch_default_threads() -> int:
    """torch's own thread count on this machine (what `model.num_threads: null` runs with)."""
    code = "import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def main() -> None:
    from reasonrec.finetune.evaluation.report import default_machine, git_commit
    from reasonrec.retrieval import load_ml100k

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["cli", "server", "all"], default="all")
    p.add_argument(
        "--threads", type=int, default=0,
        help="torch CPU threads everywhere; 0 (default) = what a user gets: torch's own (one per core).",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="Measured runs per CLI figure (after one warm-up).")
    p.add_argument("--turns", type=int, default=5, help="Chat turns of the 1-client figure.")
    p.add_argument("--single", type=int, default=16, help="One-at-a-time requests (scoring server).")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=80)
    p.add_argument(
        "--workers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
        help="Scoring servers to measure, by `serve --workers` (comma-separated); `server` is the first.",
    )  # fmt: skip
    p.add_argument(
        "--config-json", type=json.loads, default={},
        help='AgentConfig sections every figure runs with, e.g. \'{"ranker": {"lookup_decoding": false}}\'.',
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()

    # A partial run (--only) updates its part of an earlier file; a full run starts afresh, so no figure or
    # note of an earlier run is carried into it.
    result = json.loads(a.out.read_text()) if a.out.is_file() and a.only != "all" else {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if a.only in ("cli", "all"):
            daemon_env = {"REASONREC_DAEMON": "on", "REASONREC_DAEMON_DIR": str(tmp / "run")}
            try:
                served = measure_cli(tmp, a, daemon_env)
            finally:
                subprocess.run([REASONREC, "daemon", "stop"], env={**os.environ, **daemon_env}, check=False)
            alone = measure_cli(tmp, a, {"REASONREC_DAEMON": "off"})
            result["cli_recommend_warm_s"] = {m: served[m]["median"] for m in ("scoring", "hybrid")}
            result["demo_warm_s"] = served["demo"]["median"]
            result["cli_in_process_warm_s"] = {m: v["median"] for m, v in alone.items()}
            for prefix, runs in (("cli_runs", served), ("cli_in_process_runs", alone)):
                result[f"{prefix}_s"] = {m: v["runs"] for m, v in runs.items()}
                result[f"{prefix}_load_1m"] = {m: v["load_1m"] for m, v in runs.items()}
        if a.only in ("server", "all"):
            chat, by_workers = measure_server(a, tmp, load_ml100k().users())
            result["chat_turn_ms"], result["server"] = chat, by_workers[str(a.workers[0])]
            result["server_by_workers"] = by_workers
    parts = ["cli", "server"] if a.only == "all" else [a.only]  # a partial run's file mixes two commits
    result["measured_at"] = {**result.get("measured_at", {}), **{p: git_commit()[:7] for p in parts}}
    result.update(
        commit=git_commit(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=default_machine(), torch_threads=a.threads or f"default ({torch_default_threads()})",
        load_avg_1m={"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
    )  # fmt: skip
    if a.config_json:
        result["config_json"] = a.config_json
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
