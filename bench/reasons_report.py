"""Write bench/results/full20_reasons_<mode>.json from a reasons run's checkpoint, with an independent recount.

    .venv/bin/python bench/reasons_report.py hybrid --commit 1a368e7      # ckpt_hybrid.jsonl of run_reasons_eval.py
    .venv/bin/python bench/reasons_report.py generative --commit 1a368e7

A run that finished (evaluate wrote bench/results/full20_reasons_<mode>.json) keeps its row; the recount, trim
count and a sample are added. A run stopped early gets a PARTIAL row built from the lists its checkpoint holds
(hit@5, latency, the reasons block of finetune.evaluation.reasons.reason_rates), saying how many users it covers.

The recount re-checks every shown reason with claims.InteractionCounts over the users' pre-test items (user
sets intersected here, not the co-occurrence matrices the agent's evidence came from), so a wrong count in
the serving path reads as unfaithful.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.ranking.claims import ClaimChecker, InteractionCounts
from reasonrec.agent.ranking.faithful import degenerate, trim_loop
from reasonrec.agent.ranking.hybrid import clean_reason
from reasonrec.agent.ranking.reasons import restates_question, usable_reason
from reasonrec.agent.schemas import Recommendation, Recommendations
from reasonrec.finetune.evaluation.reasons import reason_rates
from reasonrec.finetune.evaluation.run import select_users
from reasonrec.finetune.evaluation.split import leave_one_out
from reasonrec.prompts.loader import clean_text
from reasonrec.retrieval import load_ml100k
from reasonrec.retrieval.types import Item

CKPT = Path.home() / ".cache" / "reasonrec" / "bench"
_LINE = re.compile(r"\[[A-Za-z0-9]{1,8}\]\s?([^\n]*)")


def raw_reasons(rec: Recommendations, mode: str) -> list[str | None]:
    """The model's own text per shown item, before finalize decided (None: it wrote none for that pick)."""
    raw = rec.raw_output or ""
    if mode == "generative":  # the rank answer's "[label] reason" lines, in pick order
        own = [clean_text(t, 10_000) for t in _LINE.findall(raw)]
    else:  # hybrid: one generated sentence per pick, cleaned as the ranker cleans it
        words = AgentConfig().prompt.max_reason_words
        own = [clean_reason(t, words, words * 12) for t in raw.split("\n")]
    return [own[i] if i < len(own) and (mode == "hybrid" or r.source == "model") else None
            for i, r in enumerate(rec.items)]  # fmt: skip


_RETRY = re.compile(r"^retry (\S+): ", re.M)  # hybrid's second tries, after the k first lines (agent/ranking/retry.py)


def first_try(r: Recommendation, item: Item, own: str | None, hist: list[Item], query: str | None,
              checker: ClaimChecker) -> bool | None:  # fmt: skip
    """Whether the model's first text for pick `r` was faithful, judged as choose_reasons judges (None: not usable)."""
    opener = r.evidence.opener if r.evidence is not None else ""
    text = trim_loop(own, opener) if own else None
    if not (text and usable_reason(text, item) and not restates_question(text)):
        return None
    return checker.check(text, item, hist, query, opener=opener).faithful


def recount(recs: list[Recommendations], users: list[str], mode: str) -> dict[str, Any]:
    """Shown reasons re-checked against pre-test interactions; how many model reasons were cut by trim_loop; in
    hybrid mode how many reasons were written a second time and how many of those were shown, and the model's
    faithful rate on its first texts (before any retry or replacement)."""
    ds = load_ml100k()
    split = leave_one_out(ds)
    pre = {u: split.eval_history(u, "test") for u in split.user_ids()}
    checker = ClaimChecker(ds.items, InteractionCounts(pre))
    faithful = specific = n = trimmed = n_model = hits = retried = shown_retries = 0
    distinct, first = [], []
    for rec, u in zip(recs, users, strict=True):
        hist = [ds.items[i] for i in pre[u]]
        again = set(_RETRY.findall(rec.raw_output or "")) if mode == "hybrid" else set()
        retried += len(again)
        for r, own in zip(rec.items, raw_reasons(rec, mode), strict=True):
            opener = r.evidence.opener if r.evidence is not None and r.reason_source == "model" else ""
            v = checker.check(r.reason, ds.items[r.item_id], hist, rec.query, opener=opener)
            faithful, specific, n = faithful + v.faithful, specific + v.specific, n + 1
            if mode == "hybrid":
                first.append(first_try(r, ds.items[r.item_id], own, hist, rec.query, checker))
            if r.reason_source == "model":
                n_model += 1
                shown_retries += r.item_id in again
                trimmed += bool(own and degenerate(own)) and r.item_id not in again
        distinct.append(checker.all_distinct([r.reason for r in rec.items]))
        hits += split.get(u).test in {r.item_id for r in rec.items}
    return {
        "faithful_rate_pretest_interactions": faithful / n, "specific_rate": specific / n,
        "distinct_rate": float(np.mean(distinct)), "n_reasons": n, "hit@5": hits / len(recs),
        "model_reasons_cut_by_trim_loop": trimmed, "n_model_reasons_shown": n_model,
        **({"reasons_written_again": retried, "model_reasons_shown_from_retry": shown_retries,
            "faithful_rate_model_first_try": float(np.mean([f for f in first if f is not None]))}
           if mode == "hybrid" and first else {}),
        "how": "shown reasons re-checked with claims.InteractionCounts over the users' pre-test items (user sets "
               "intersected here, an independent recount of the co-watch counts the agent's evidence quoted)",
    }  # fmt: skip


def partial_row(recs: list[Recommendations], hit5: float) -> dict[str, Any]:
    """A results row from the checkpoint alone (what a stopped run ranked)."""
    ms = [rec.timings.get("total", 0.0) for rec in recs]
    rates = reason_rates(recs, load_ml100k().items)
    return {
        "n_users": len(recs), "metrics": {"hit@5": hit5},
        "valid_rate": float(np.mean([rec.valid_output for rec in recs])),
        "latency_ms": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))},
        "reasons": rates.model_dump() if rates else None,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["hybrid", "generative"])
    ap.add_argument("--commit", required=True, help="The commit the run was started from (the tree may move on).")
    ap.add_argument("--planned", type=int, default=300, help="Users the run was started for.")
    ap.add_argument("--note", action="append", default=[], help="Extra note lines.")
    ap.add_argument(
        "--ckpt", type=Path, help="Checkpoint to read (default ~/.cache/reasonrec/bench/ckpt_<mode>.jsonl)."
    )
    ap.add_argument("--out", type=Path, help="File to write (default bench/results/full20_reasons_<mode>.json).")
    args = ap.parse_args()
    ckpt = args.ckpt or CKPT / f"ckpt_{args.mode}.jsonl"
    recs = [Recommendations.model_validate_json(line) for line in ckpt.open()]
    users = select_users(leave_one_out(load_ml100k()), args.planned, 0)[: len(recs)]
    check = recount(recs, users, args.mode)
    out = args.out or Path(f"bench/results/full20_reasons_{args.mode}.json")
    method = f"reasonrec-zeroshot-{args.mode}"
    finished = out.exists() and json.loads(out.read_text())["methods"][method]["n_users"] == len(recs)
    if finished:
        report = json.loads(out.read_text())
    else:
        report = {"protocol": "full", "dataset": "ml-100k", "dataset_sha256": load_ml100k().sha256,
                  "machine": "cpu-2core", "seed": 0, "candidates": 20, "k": 5, "partial": True,
                  "methods": {method: partial_row(recs, check["hit@5"])}}  # fmt: skip
        report["notes"] = [
            f"PARTIAL: {len(recs)} of the {args.planned} seeded users planned (the run was stopped at the session's "
            "deadline); every number here covers those users only, read from the run's per-batch checkpoint",
        ]
    report["commit"] = args.commit
    report["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report.setdefault("notes", []).extend([
        f"command: .venv/bin/python bench/run_reasons_eval.py {args.mode} {args.planned} (full20, k=5, batch 8, "
        "bench/configs/reasons_cpu.yaml, one torch thread, 2-core CPU shared with other jobs)",
        *args.note,
    ])  # fmt: skip
    row = report["methods"][method]
    if row.get("commit", "unknown") in ("", "unknown"):  # evaluate outside a git tree (the frozen copy a run imports)
        row["commit"] = args.commit
    row["recheck"] = check
    row["sample"] = [[[r.title, r.reason_source, r.reason] for r in rec.items] for rec in recs[:5]]
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(out, row["n_users"], row["reasons"], {k: v for k, v in check.items() if k != "how"})


if __name__ == "__main__":
    main()
