"""HTTP load test on loopback: N requests from C concurrent clients at `POST /v1/recommend`.

    .venv/bin/python bench/load_test.py                                   # 500 requests, 16 clients, queue 8
    .venv/bin/python bench/load_test.py --requests 100 --concurrency 8 --max-queue 2 --out /tmp/load.json

Starts `reasonrec serve` (scoring mode, real SmolLM2, real ML-100K) as a child process on
127.0.0.1, fires the requests for varied users (seeded), and writes `bench/results/load.json`:
status counts, p50/p99 latency of answered and of refused requests, throughput and the server's
peak RSS. Every response must be a 200 with k items or a clean 429/503 (JSON `error` and a
`Retry-After` header); anything else is counted under `unclean`. Clients honour `Retry-After`
(capped at 5 s) by default, as a polite client would; `--no-retry-after` hammers instead.
Bounded: at most `--requests` requests and `--max-seconds` of wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

RESULTS = Path(__file__).parent / "results" / "load.json"


class LoadReport(BaseModel):
    """What one load run measured (client side; `peak_rss_mb` is filled in by the caller)."""

    requests: int = Field(description="Requests sent (answered, refused and failed).")
    concurrency: int
    status_counts: dict[str, int] = Field(description="HTTP status (or 'error:<exception>') -> count.")
    answered: int = Field(description="200 responses with exactly k items.")
    refused: int = Field(description="Clean 429/503: JSON `error` and a Retry-After header.")
    unclean: int = Field(description="Anything else: other statuses, bad bodies, transport errors, timeouts.")
    latency_ms: dict[str, float] = Field(description="Answered requests: p50, p90, p99, mean, max.")
    refused_latency_ms: dict[str, float] = Field(description="Refused requests: p50, p99 (should be ~ms).")
    throughput_rps: float = Field(description="Answered requests per second of wall time.")
    wall_s: float
    honour_retry_after: bool
    examples: dict[str, str] = Field(default_factory=dict, description="One body per non-200 status, truncated.")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, max(0, round(p * (len(v) - 1))))]

    return {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "mean": statistics.fmean(v), "max": v[-1]}


async def run_load(
    url: str,
    users: list[str],
    requests: int = 500,
    concurrency: int = 16,
    k: int = 5,
    honour_retry_after: bool = True,
    max_seconds: float = 900,
    request_timeout_s: float = 300,
    seed: int = 0,
) -> LoadReport:
    """Fire `requests` POST /v1/recommend from `concurrency` clients; classify every response.

    Args:
        url: server base URL (loopback).
        users: user ids to draw from (seeded).
        requests: total requests, refused ones included.
        concurrency: clients sending at once; each waits for its answer before the next request.
        k: items per request; a 200 must carry exactly k.
        honour_retry_after: a refused client sleeps for Retry-After (capped at 5 s) before its next request.
        max_seconds: stop sending new requests after this much wall time.
        request_timeout_s: a request taking longer counts as unclean.
        seed: user order.

    Returns:
        LoadReport: counts and latencies.
    """
    import httpx

    rng = random.Random(seed)
    queue = [rng.choice(users) for _ in range(requests)]
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    ok_ms: list[float] = []
    refused_ms: list[float] = []
    unclean = 0
    t_start = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal unclean
        while queue and time.perf_counter() - t_start < max_seconds:
            user = queue.pop()
            t0 = time.perf_counter()
            try:
                r = await http.post("/v1/recommend", json={"user_id": user, "k": k})
                key = str(r.status_code)
            except httpx.HTTPError as e:
                counts[f"error:{type(e).__name__}"] = counts.get(f"error:{type(e).__name__}", 0) + 1
                unclean += 1
                continue
            ms = (time.perf_counter() - t0) * 1000
            counts[key] = counts.get(key, 0) + 1
            try:
                body = r.json()
            except ValueError:
                body = None
            if r.status_code != 200:
                examples.setdefault(key, r.text[:300])
            if r.status_code == 200 and isinstance(body, dict) and len(body.get("items", [])) == k:
                ok_ms.append(ms)
            elif r.status_code in (429, 503) and isinstance(body, dict) and body.get("error"):
                retry = r.headers.get("retry-after", "")
                if not retry.isdigit():
                    unclean += 1
                    continue
                refused_ms.append(ms)
                if honour_retry_after:
                    await asyncio.sleep(min(int(retry), 5))
            else:
                unclean += 1

    # Idle connections expire well before the server's keep-alive ends, so none is reused as it closes.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout_s, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - t_start
    return LoadReport(
        requests=sum(counts.values()),
        concurrency=concurrency,
        status_counts=dict(sorted(counts.items())),
        answered=len(ok_ms),
        refused=len(refused_ms),
        unclean=unclean,
        latency_ms=percentiles(ok_ms),
        refused_latency_ms={k_: v for k_, v in percentiles(refused_ms).items() if k_ in ("p50", "p99")},
        throughput_rps=len(ok_ms) / wall if wall else 0.0,
        wall_s=wall,
        honour_retry_after=honour_retry_after,
        examples=examples,
    )


def main() -> None:
    from _server import ServerProcess  # bench/_server.py (this script runs from bench/)

    from reasonrec.finetune.evaluation.report import default_machine, git_commit
    from reasonrec.retrieval import load_ml100k

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-queue", type=int, default=8, help="Server queue: jobs waiting behind the running one.")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", default="scoring", help="Ranker mode of the server.")
    p.add_argument("--threads", type=int, default=None, help="Server's torch CPU threads (default: torch's).")
    p.add_argument("--max-seconds", type=float, default=900)
    p.add_argument("--no-retry-after", action="store_true", help="Clients do not wait after a 429.")
    p.add_argument("--machine", default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()

    users = load_ml100k().users()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        args = ["--mode", a.mode, "--max-queue", str(a.max_queue), "--sessions", str(Path(tmp) / "s.sqlite3")]
        args += ["--threads", str(a.threads)] if a.threads else []
        t0 = time.perf_counter()
        with ServerProcess(args, startup_timeout_s=600, log=log) as srv:
            startup_s = time.perf_counter() - t0
            print(f"server up in {startup_s:.1f} s at {srv.url}; firing {a.requests} requests x{a.concurrency}")
            report = asyncio.run(
                run_load(srv.url, users, a.requests, a.concurrency, a.k, not a.no_retry_after, a.max_seconds)
            )
            peak_rss = srv.peak_rss_mb()
            load_after = os.getloadavg()[0]
    result = {
        "name": "load",
        "commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": a.machine or default_machine(),
        "server": {
            "mode": a.mode,
            "max_queue": a.max_queue,
            "k": a.k,
            "torch_threads": a.threads or "default",
            "model": "SmolLM2-135M-Instruct",
        },
        "startup_s": round(startup_s, 1),
        "peak_rss_mb": peak_rss,
        # Why: on a shared 2-core machine other processes change latency a lot; record how busy it was.
        "load_avg_1m": {"before": load_before, "after": load_after},
        **report.model_dump(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("status_counts", "latency_ms", "throughput_rps", "peak_rss_mb")}))
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
