"""CPU latency of the ranker modes with the real SmolLM2 on ML-100K users, 20 candidates each.

    .venv/bin/python bench/latency.py                      # all sections -> bench/results/latency_cpu.json
    .venv/bin/python bench/latency.py --users 30 --sections generative --out bench/results/constrained_cpu.json
    .venv/bin/python bench/latency.py --sections scoring --threads 2 --users 50
    .venv/bin/python bench/latency.py --threads 2 --compact --compile --out bench/results/latency_cpu_compact.json

Users are the first N of the evaluation's seeded permutation (finetune.evaluate.select_users); each gets
the protocol-cand20 list (its test item + 19 unseen items) and its history before the test item, so no
vector store is needed. Sections:

- scoring:     per-user latency at batch size 1 (p50/p90), without (the default) and with the
               shared-prefix KV cache (`ranker.prefix_cache`); with --compact/--compile also the default
               prompt in eager mode, the variants alternating user by user (ratios from one run).
- batched:     scoring users/s at batch sizes 8 and 16.
- hybrid:      per-user latency at batch size 1 with k=5 generated reasons.
- generative:  constrained vs unconstrained generative mode, k=5, batch size 8: valid-output rate,
               off-catalogue and duplicate rates, fallback counts and ms/user.

Other processes share this machine's cores, so every section records the 1-minute load average at its
start and end next to its numbers; compare figures only at similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SECTIONS = ("scoring", "batched", "hybrid", "generative")


def summary(ms: list[float]) -> dict[str, float]:
    """p50 / p90 / mean / n of a list of milliseconds."""
    s = sorted(ms)
    return {
        "p50_ms": statistics.median(s),
        "p90_ms": s[min(len(s) - 1, int(0.9 * len(s)))],
        "mean_ms": statistics.fmean(s),
        "n": float(len(s)),
    }


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def make_agent(lm: Any, dataset: Any, compact: bool = False, **ranker: Any) -> Any:
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig

    return RecommenderAgent(AgentConfig(ranker=ranker, prompt={"compact": compact}), dataset=dataset, model=lm)


def per_user(agent: Any, hists: list[list[str]], cands: list[list[str]], k: int) -> tuple[list[float], list[Any]]:
    """Rank users one at a time (batch size 1); wall ms per call, after one warm-up call."""
    [(ms, recs)] = interleaved([agent], hists, cands, k)
    return ms, recs


def interleaved(
    agents: list[Any], hists: list[list[str]], cands: list[list[str]], k: int
) -> list[tuple[list[float], list[Any]]]:
    """`per_user` for several agents, alternating between them user by user.

    Why: this VM's speed drifts by ~10% over minutes; alternating puts every variant under the same
    drift, so their ratio is measured in one run.
    """
    for agent in agents:
        agent.rank_many(hists[:1], cands[:1], k)  # warm-up (and, with ranker.compile, compilation)
    out: list[tuple[list[float], list[Any]]] = [([], []) for _ in agents]
    for h, c in zip(hists, cands, strict=True):
        for agent, (ms, recs) in zip(agents, out, strict=True):
            t = time.perf_counter()
            recs.extend(agent.rank_many([h], [c], k))
            ms.append((time.perf_counter() - t) * 1000)
    return out


def quality(recs: list[Any]) -> dict[str, float]:
    """Valid-output rate, off-catalogue / duplicate counts and where the items came from."""
    n = len(recs)
    return {
        "valid_rate": sum(r.valid_output for r in recs) / n,
        "off_candidate": float(sum(r.n_off_candidate for r in recs)),
        "duplicates": float(sum(r.n_duplicates for r in recs)),
        "duplicate_items": float(sum(len(r.item_ids()) - len(set(r.item_ids())) for r in recs)),
        "model_items": float(sum(r.n_model for r in recs)),
        "scoring_items": float(sum(r.n_scoring for r in recs)),
        "fallback_items": float(sum(r.n_fallback for r in recs)),
        "model_reason_rate": sum(x.reason_source == "model" for r in recs for x in r.items)
        / max(1, sum(len(r.items) for r in recs)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from reasonrec.agent.config import ModelConfig
    from reasonrec.agent.model.loading import load_model
    from reasonrec.finetune.evaluation.report import git_commit
    from reasonrec.finetune.evaluation.run import select_users
    from reasonrec.finetune.evaluation.split import cand20_candidates, leave_one_out
    from reasonrec.retrieval import load_ml100k
    from reasonrec.retrieval.types import natural_key

    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict[str, Any] = {
        "benchmark": "latency",
        "commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"cpu-{os.cpu_count()}core",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": list(os.getloadavg()),
        "candidates": 20,
        "protocol": "cand20 lists (test item + 19 unseen), history before the test item",
        "compact_prompt": args.compact,
        "compile": args.compile,
        "sections": {},
    }
    lm = load_model(ModelConfig(dtype=args.dtype))
    out.update(model_id=lm.model_id, dtype=lm.dtype)
    dataset = load_ml100k()
    split = leave_one_out(dataset)
    catalogue = sorted(dataset.items, key=natural_key)
    users = select_users(split, args.users, seed=0)
    hists = [split.eval_history(u, "test") for u in users]
    cands = [cand20_candidates(split, u, catalogue, 0, 20) for u in users]
    out["users"] = len(users)
    sections = out["sections"]

    if "scoring" in args.sections:
        agent = make_agent(lm, dataset, args.compact, compile=args.compile, mode="scoring", batch_size=1)
        prompter = agent.ranker._prompter  # the rank prompt every mode renders
        reqs = [agent._request(h, c, args.k, None, None) for h, c in zip(hists, cands, strict=True)]
        n_tok = [len(lm.tokenizer(prompter.prompt_text(r)[0], add_special_tokens=False)["input_ids"]) for r in reqs]
        out["prompt_tokens"] = summary([float(n) for n in n_tok])
        cached = make_agent(lm, dataset, args.compact, compile=args.compile, mode="scoring", batch_size=1,
                            prefix_cache=True)  # fmt: skip
        variants = {"scoring_bs1": agent, "scoring_bs1_prefix_cache": cached}
        if args.compact or args.compile:  # the default prompt, eager, as the reference of the same run
            variants["scoring_bs1_reference"] = make_agent(lm, dataset, mode="scoring", batch_size=1)
        l0 = load1()
        timed = interleaved(list(variants.values()), hists, cands, args.k)
        for (key, a), (ms, recs) in zip(variants.items(), timed, strict=True):
            sections[key] = {**summary(ms), **quality(recs), "prefix_tokens": a.ranker.last_prefix_len,
                             "load_start": l0, "load_end": load1()}  # fmt: skip
            print(key, json.dumps(sections[key]), flush=True)
        if "scoring_bs1_reference" in sections:
            ref = sections["scoring_bs1_reference"]["p50_ms"]
            sections["scoring_bs1_speedup_vs_reference"] = {
                key: ref / sections[key]["p50_ms"] for key in ("scoring_bs1", "scoring_bs1_prefix_cache")
            }
    if "batched" in args.sections:
        for bs in (8, 16):
            agent = make_agent(lm, dataset, args.compact, compile=args.compile, mode="scoring", batch_size=bs)
            agent.rank_many(hists[:bs], cands[:bs], args.k)  # warm-up
            l0, t = load1(), time.perf_counter()
            recs = agent.rank_many(hists, cands, args.k)
            wall = time.perf_counter() - t
            sections[f"scoring_bs{bs}"] = {"users_per_s": len(users) / wall, "ms_per_user": wall * 1000 / len(users),
                                           **quality(recs), "load_start": l0, "load_end": load1()}  # fmt: skip
            print(f"scoring_bs{bs}", json.dumps(sections[f"scoring_bs{bs}"]), flush=True)
    if "hybrid" in args.sections:
        agent = make_agent(lm, dataset, args.compact, compile=args.compile, mode="hybrid", batch_size=1)
        n = min(len(users), args.hybrid_users)
        l0 = load1()
        ms, recs = per_user(agent, hists[:n], cands[:n], 5)
        reason_ms = [r.timings.get("reason_ms", 0.0) for r in recs]
        sections["hybrid_bs1_k5"] = {**summary(ms), **quality(recs), "reason_p50_ms": statistics.median(reason_ms),
                                     "load_start": l0, "load_end": load1()}  # fmt: skip
        print("hybrid_bs1_k5", json.dumps(sections["hybrid_bs1_k5"]), flush=True)
    if "generative" in args.sections:
        n = min(len(users), args.generative_users)
        for constrained in (True, False):
            agent = make_agent(
                lm,
                dataset,
                args.compact,
                compile=args.compile,
                mode="generative",
                constrained=constrained,
                batch_size=8,
            )
            l0, t = load1(), time.perf_counter()
            recs = agent.rank_many(hists[:n], cands[:n], 5)
            wall = time.perf_counter() - t
            key = "generative_bs8_k5_" + ("constrained" if constrained else "unconstrained")
            sections[key] = {"ms_per_user": wall * 1000 / n, "users": n, **quality(recs),
                             "load_start": l0, "load_end": load1()}  # fmt: skip
            print(key, json.dumps(sections[key]), flush=True)
    out["load_avg_end"] = list(os.getloadavg())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=50, help="users for the scoring sections")
    p.add_argument("--hybrid-users", type=int, default=20, help="users for the hybrid section")
    p.add_argument("--generative-users", type=int, default=30, help="users for the generative section")
    p.add_argument("--k", type=int, default=10, help="items ranked in the scoring sections")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--compact", action="store_true", help="prompt.compact: no candidate years, short instruction")
    p.add_argument("--compile", action="store_true", help="ranker.compile: torch.compile the scoring forward")
    p.add_argument("--out", type=Path, default=Path("bench/results/latency_cpu.json"))
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
