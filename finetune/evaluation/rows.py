"""One evaluation row: rank every user's candidates with one method and measure it (metrics, rates, timings).

Split from run.py, which owns the protocol (users, candidates, which rows, gains, files); this module owns
what a row reads off a ranker: classical rankers return an order, ours return `Recommendations`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from reasonrec.finetune.evaluation import metrics as M
from reasonrec.finetune.evaluation.reasons import reason_rates
from reasonrec.finetune.evaluation.report import MethodResult


def run_row(method, runner, users, hist, cands, target, config, progress) -> tuple[MethodResult, dict, dict]:
    """Rank every user's candidates with one method; metrics, rates and timings as one row."""
    is_llm = hasattr(runner, "rank_many")
    info: dict[str, Any] = {}
    orders: dict[str, list[str]] = {}
    lat: list[float] = []
    rates = {"valid": 0.0, "off": 0.0, "dup": 0.0, "fallback": 0.0}
    stage: dict[str, float] = {}
    appended: list[int] = []
    reasons = {"model": 0, "items": 0}
    grounded: list[float] = []  # per user: the model's own grounded share, before invalid reasons are replaced
    top1: list[tuple[float, bool]] = []  # per user: (probability of the top-1 item, is it the target)
    if is_llm:  # load the model before the clock starts: latency and users/s are about ranking
        t_load = time.perf_counter()
        _ = runner.ranker
        stage["model_load_ms"] = (time.perf_counter() - t_load) * 1000
    t0 = time.perf_counter()
    if is_llm:
        k = config.llm_k
        recs = runner.rank_many(
            [hist[u] for u in users], [cands[u] for u in users], k,
            progress=(lambda d, t: progress(method, d, t)) if progress else None, with_retrieval=True,
        )  # fmt: skip
        for u, r in zip(users, recs, strict=True):
            orders[u], n_app = M.complete_ordering(r.item_ids(), cands[u])
            appended.append(n_app)
            lat.append(float(r.timings.get("total", 0.0)))
            rates["valid"] += float(r.valid_output)
            rates["off"] += r.n_off_candidate / k
            rates["dup"] += r.n_duplicates / k
            rates["fallback"] += r.n_fallback / k
            reasons["items"] += len(r.items)
            reasons["model"] += sum(item.reason_source == "model" for item in r.items)
            if r.grounded_rate is not None:
                grounded.append(r.grounded_rate)
            if r.items and r.items[0].score is not None:
                top1.append((r.items[0].score, r.items[0].item_id == target[u]))
            for key, v in r.timings.items():
                if key.endswith("_ms") or key in ("total", "tokens_per_s"):
                    stage[key] = stage.get(key, 0.0) + v / len(users)
        for key in rates:
            rates[key] /= len(users)
        if recs:
            info = {"model_id": recs[0].model_id, "template_version": recs[0].template_version,
                    "mode": recs[0].mode, "batch_size": runner.config.ranker.batch_size}  # fmt: skip
    else:
        rates["valid"] = 1.0
        for n, u in enumerate(users):
            t = time.perf_counter()
            orders[u] = runner.rank(u, hist[u], cands[u], config.candidates)
            lat.append((time.perf_counter() - t) * 1000)
            if progress and (n % 100 == 0 or n + 1 == len(users)):
                progress(method, n + 1, len(users))
        stage["rank_ms"] = float(np.mean(lat)) if lat else 0.0
    wall = time.perf_counter() - t0
    # reasons: the protocol's `reasons` block over the reasons as shown (evaluation/reasons.py)
    why = reason_rates(recs, runner.items) if is_llm else None
    k_eff = config.llm_k if is_llm else min(10, config.candidates)
    per_user = {u: M.user_metrics(orders[u], target[u], config.k_list) for u in users}
    row = MethodResult(
        n_users=len(users), metrics=M.aggregate(list(per_user.values())), valid_rate=rates["valid"],
        off_catalogue_rate=rates["off"], duplicate_rate=rates["dup"], fallback_rate=rates["fallback"],
        latency_ms=M.latency_summary(lat), users_per_s=len(users) / max(wall, 1e-9), wall_s=wall,
        stage_ms=stage, appended_mean=float(np.mean(appended)) if appended else 0.0,
        note=", ".join(f"{k} {v}" for k, v in info.items()) or None,
        input_order_rate=float(np.mean([orders[u][:k_eff] == list(cands[u][:k_eff]) for u in users])),
        grounded_rate=float(np.mean(grounded)) if grounded else None,
        model_reason_rate=reasons["model"] / reasons["items"] if reasons["items"] else None,
        calibration=M.calibration([p for p, _ in top1], [c for _, c in top1]) if top1 else None,
        reasons=why.model_dump() if why else None,
    )  # fmt: skip
    return row, per_user, info
