"""API contract: schemathesis against `reasonrec serve`'s /openapi.json with every check.

    .venv/bin/python bench/api_contract.py                       # -n 20: ~900 requests, ~2 min on 2 cores
    .venv/bin/python bench/api_contract.py --max-examples 3 --out /tmp/contract.json   # a quick run

Starts `reasonrec serve --mode scoring --threads 1` (real SmolLM2, real ML-100K, a temporary session
database) as a child process, runs `schemathesis run URL/openapi.json --checks all` with a fixed seed
and an NDJSON event report, and writes `bench/results/api_contract.json`: the command, the number of
requests, failures, the outcome of each check, and the status codes seen. Bounded: schemathesis gets
`--timeout` seconds, then it is stopped and the run counts as failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

RESULTS = Path(__file__).parent / "results" / "api_contract.json"


class ContractReport(BaseModel):
    """What one schemathesis run found (protocols.md: `commit`, `command`, `requests`, `failures`, `by_check`)."""

    command: str = Field(description="The schemathesis command line, with the server's URL.")
    requests: int = Field(description="HTTP requests schemathesis sent (every generated case, all phases).")
    failures: int = Field(description="Failed check results (a case failing two checks counts twice).")
    by_check: dict[str, dict[str, int]] = Field(description="check -> {'success': n, 'failure': n, 'skip': n}.")
    status_counts: dict[str, int] = Field(description="HTTP status -> responses.")
    failed_cases: list[dict[str, object]] = Field(default_factory=list, description="Up to 20 failing requests.")
    exit_code: int
    wall_s: float
    schemathesis_version: str = ""


def schemathesis_command(url: str, max_examples: int, seed: int, report: Path, phases: str | None = None) -> list[str]:
    """The `schemathesis run` argument list (the CLI next to this Python)."""
    exe = str(Path(sys.executable).with_name("schemathesis"))
    cmd = [exe, "run", f"{url}/openapi.json", "--checks", "all", "-n", str(max_examples), "--seed", str(seed)]
    # max_response_time (part of `all`) defaults to 10 s; on a 2-core CPU shared with other jobs one scoring
    # request has been seen to take longer, so the bound is 30 s (and is part of the recorded command).
    cmd += ["--max-response-time", "30", "--request-timeout", "120"]
    cmd += ["--report", "ndjson", "--report-ndjson-path", str(report)]
    return cmd + (["--phases", phases] if phases else [])


def run_contract(
    url: str, max_examples: int = 20, seed: int = 0, timeout_s: float = 900, phases: str | None = None
) -> ContractReport:
    """Run schemathesis against a live server and count what it saw.

    Args:
        url: the server, e.g. http://127.0.0.1:8000.
        max_examples: hypothesis examples per operation and phase (`-n`).
        seed: schemathesis seed (same seed, same cases).
        timeout_s: stop schemathesis after this long (the report then has exit_code 124).
        phases: e.g. "examples,fuzzing"; None runs them all.
    """
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.ndjson"
        cmd = schemathesis_command(url, max_examples, seed, events, phases)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmp)
            code, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            code, out = 124, str(e.stdout or "")
        wall = time.perf_counter() - t0
        report = parse_events(events) if events.is_file() else {}
    if code != 0 and not report.get("failures"):
        print(out[-3000:], file=sys.stderr)  # an error that is no check failure: show schemathesis's words
    shown = " ".join(["schemathesis", *cmd[1:]]).replace(str(events), "events.ndjson")
    return ContractReport(command=shown, exit_code=code, wall_s=round(wall, 1), **_defaults(report))


def _defaults(report: dict[str, object]) -> dict[str, object]:
    keys = ("requests", "failures", "by_check", "status_counts", "failed_cases", "schemathesis_version")
    empty: dict[str, object] = {"requests": 0, "failures": 0, "by_check": {}, "status_counts": {}, "failed_cases": []}
    return {k: report.get(k, empty.get(k, "")) for k in keys}


def parse_events(path: Path) -> dict[str, object]:
    """Requests, failures, per-check outcomes and statuses from schemathesis's NDJSON event stream."""
    by_check: dict[str, Counter[str]] = {}
    statuses: Counter[str] = Counter()
    failed: list[dict[str, object]] = []
    requests, version = 0, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if "Initialize" in event:
            version = event["Initialize"].get("schemathesis_version", "")
        scenario = event.get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario["recorder"]
        for case_id, interaction in recorder.get("interactions", {}).items():
            requests += 1
            response = interaction.get("response") or {}
            statuses[str(response.get("status_code", "no response"))] += 1
            for check in recorder.get("checks", {}).get(case_id, []):
                by_check.setdefault(check["name"], Counter())[check["status"]] += 1
                if check["status"] == "failure" and len(failed) < 20:
                    failed.append(_case(recorder["label"], check["name"], interaction))
    failures = sum(c["failure"] for c in by_check.values())
    return {
        "requests": requests,
        "failures": failures,
        "by_check": {name: dict(sorted(c.items())) for name, c in sorted(by_check.items())},
        "status_counts": dict(sorted(statuses.items())),
        "failed_cases": failed,
        "schemathesis_version": version,
    }


def _case(label: str, check: str, interaction: dict[str, object]) -> dict[str, object]:
    request = interaction.get("request") or {}
    body = request.get("body") if isinstance(request, dict) else None
    if isinstance(body, dict) and "$base64" in body:
        body = base64.b64decode(body["$base64"]).decode("utf-8", "replace")[:500]
    response = interaction.get("response") or {}
    status = response.get("status_code") if isinstance(response, dict) else None
    return {"operation": label, "check": check, "body": body, "status": status}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._server import ServerProcess
    from reasonrec.finetune.evaluation.report import default_machine, git_commit

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-examples", type=int, default=20, help="schemathesis -n (examples per operation/phase).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900, help="Seconds schemathesis may run.")
    p.add_argument("--phases", default=None, help="schemathesis --phases (default: all).")
    p.add_argument("--machine", default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        args = ["--mode", "scoring", "--threads", "1", "--sessions", str(Path(tmp) / "sessions.sqlite3")]
        with ServerProcess(args, startup_timeout_s=600, log=Path(tmp) / "server.log") as srv:
            print(f"server up at {srv.url}; running schemathesis -n {a.max_examples} --seed {a.seed}")
            report = run_contract(srv.url, a.max_examples, a.seed, a.timeout, a.phases)
    out = {
        "commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": a.machine or default_machine(),
        "server": "reasonrec serve --mode scoring --threads 1 (SmolLM2-135M, ML-100K, fresh session store)",
        **report.model_dump(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("command", "requests", "failures", "exit_code", "wall_s")}, indent=1))
    print(f"written to {a.out}")
    sys.exit(0 if report.failures == 0 and report.exit_code == 0 else 1)


if __name__ == "__main__":
    main()
