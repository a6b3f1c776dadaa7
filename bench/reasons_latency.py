"""Hybrid-mode latency with 5 reasons, before vs after a change, measured in one run, user by user.

    git worktree add /tmp/rr-before <commit before the change>
    .venv/bin/python bench/reasons_latency.py --before /tmp/rr-before --users 20 --threads 1 \\
        --out bench/results/latency_reasons_cpu.json   # [--after /tmp/rr-after: a frozen copy of the change]

Two worker processes load the same SmolLM2: one imports `reasonrec` from the `--before` checkout (the
editable install's path mapping is pointed there before the first import), the other from this
checkout. Each user's protocol-cand20 list (its test item + 19 unseen items, history before the test
item) is ranked with k=5 by the two workers in turn, alternating which goes first, so both see the same
machine load. Latency is the worker's own `agent.rank` wall time (model loaded, one warm-up user).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(tree: str, threads: int) -> None:
    """Serve `user id` lines from stdin with one JSON line each: ms and the reasons shown."""
    import __editable___reasonrec_0_1_0_finder as finder  # the editable install's path mapping

    here = str(Path(finder.MAPPING["reasonrec"]).parent)  # the checkout the editable install points at
    finder.MAPPING.update({k: v.replace(here, tree) for k, v in finder.MAPPING.items()})
    finder.NAMESPACES.update({k: [p.replace(here, tree) for p in v] for k, v in finder.NAMESPACES.items()})
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.finetune.evaluation.split import cand20_candidates, leave_one_out
    from reasonrec.retrieval.types import natural_key

    cfg = AgentConfig()
    cfg.ranker.mode, cfg.model.num_threads = "hybrid", threads
    agent = RecommenderAgent(cfg)
    split = leave_one_out(agent.dataset)
    catalogue = sorted(agent.items, key=natural_key)
    _ = agent.ranker
    print(json.dumps({"ready": tree}), flush=True)
    for line in sys.stdin:
        user = line.strip()
        hist = split.eval_history(user, "test")
        cands = cand20_candidates(split, user, catalogue, 0, 20)
        t = time.perf_counter()
        recs = agent.rank(hist, cands, 5)
        ms = (time.perf_counter() - t) * 1000
        reasons = [[r.reason_source, r.reason] for r in recs.items]
        print(json.dumps({"user": user, "ms": ms, "reasons": reasons}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="checkout of the code before the change")
    ap.add_argument("--after", default=str(ROOT), help="checkout of the code after it (default: this one)")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.threads)
    from reasonrec.finetune.evaluation.run import select_users
    from reasonrec.finetune.evaluation.split import leave_one_out
    from reasonrec.retrieval import load_ml100k

    users = select_users(leave_one_out(load_ml100k()), args.users + 1, 0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    procs = {}
    for name, tree in (("before", str(Path(args.before).resolve())), ("after", str(Path(args.after).resolve()))):
        cmd = [sys.executable, __file__, "--before", args.before, "--worker", tree, "--threads", str(args.threads)]
        procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for p in procs.values():
        json.loads(p.stdout.readline())  # ready
    ms: dict[str, list[float]] = {"before": [], "after": []}
    sample: dict[str, list] = {}
    load = [os.getloadavg()[0]]
    for n, user in enumerate(users):
        order = ["before", "after"] if n % 2 == 0 else ["after", "before"]
        for name in order:
            procs[name].stdin.write(user + "\n")
            procs[name].stdin.flush()
            out = json.loads(procs[name].stdout.readline())
            if n > 0:  # the first user warms both workers up
                ms[name].append(out["ms"])
                sample.setdefault(name, out["reasons"])
        print(f"user {user}: " + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in ms.items() if v), flush=True)
    load.append(os.getloadavg()[0])
    for p in procs.values():
        p.stdin.close()
        p.wait()
    sha = lambda tree: subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True, text=True).stdout  # noqa: E731
    result = {
        "commit": sha(args.after).strip(), "before": sha(args.before).strip(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"cpu-{os.cpu_count()}core", "threads": args.threads, "k": 5, "n_users": len(ms["after"]),
        "load1_start_end": load,
        "ms": {k: {"p50": statistics.median(v), "mean": statistics.fmean(v)} for k, v in ms.items()},
        "ratio_p50": statistics.median(ms["after"]) / statistics.median(ms["before"]),
        "ratio_mean": statistics.fmean(ms["after"]) / statistics.fmean(ms["before"]),
        "sample_reasons": sample,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
