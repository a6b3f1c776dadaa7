"""Prompt-lookup decoding of hybrid reasons (agent/model/lookup.py) against plain greedy `generate`.

    .venv/bin/python bench/lookup_decoding.py --users 60      # writes bench/results/lookup_decoding_cpu.json

One model, two agents that differ only in `ranker.lookup_decoding`; for each user (random ML-100K
users, seed 0) `recommend(user_id, k=5)` in the default hybrid mode runs in both, in alternating
order, each with its prefix caches dropped first. Reported: wall seconds and model calls per user,
how many lists came out identical (shown reasons, and the raw text with the retries), the users that
differ, the reasons block of each arm (finetune/evaluation/reasons.py: a speed-up that made reasons
worse would show there), and a five-turn chat for user 196 in both arms (turn by turn, alternating).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "lookup_decoding_cpu.json"


def _arm(agent, user: str):
    agent.ranker.forget_prefixes()
    calls = agent.ranker.decoding_calls
    t = time.perf_counter()
    rec = agent.recommend(user_id=user, k=5)
    return time.perf_counter() - t, agent.ranker.decoding_calls - calls, rec


def users_run(agents: dict[bool, object], users: list[str]) -> tuple[dict, dict[bool, list]]:
    secs: dict[bool, list[float]] = {True: [], False: []}
    calls: dict[bool, list[int]] = {True: [], False: []}
    recs: dict[bool, list] = {True: [], False: []}
    same_shown = same_raw = 0
    differ = []
    for i, u in enumerate(users):
        got = {on: _arm(agents[on], u) for on in ((True, False) if i % 2 else (False, True))}
        for on, (s, c, rec) in got.items():
            secs[on].append(s)
            calls[on].append(c)
            recs[on].append(rec)
        shown = [[(r.item_id, r.reason) for r in got[on][2].items] for on in (True, False)]
        same_shown += shown[0] == shown[1]
        same_raw += got[True][2].raw_output == got[False][2].raw_output
        if got[True][2].raw_output != got[False][2].raw_output:
            differ.append({"user": u, "plain": got[False][2].raw_output, "lookup": got[True][2].raw_output})
        print(f"user {u}: plain {got[False][0]:.2f} s {got[False][1]} calls, lookup {got[True][0]:.2f} s "
              f"{got[True][1]} calls, {'same' if shown[0] == shown[1] else 'other reasons'}", flush=True)  # fmt: skip
    out = {
        "users": len(users),
        "plain_s_median": round(statistics.median(secs[False]), 2),
        "lookup_s_median": round(statistics.median(secs[True]), 2),
        "plain_s_total": round(sum(secs[False]), 1), "lookup_s_total": round(sum(secs[True]), 1),
        "ratio_of_totals": round(sum(secs[False]) / sum(secs[True]), 2),
        "plain_calls_total": sum(calls[False]), "lookup_calls_total": sum(calls[True]),
        "identical_shown_lists": same_shown, "identical_raw_output": same_raw,
        "plain_s": [round(s, 2) for s in secs[False]], "lookup_s": [round(s, 2) for s in secs[True]],
        "differing_raw_output": differ[:10],
    }  # fmt: skip
    return out, recs


def chat_run(agents: dict[bool, object]) -> dict:
    """Five turns of one conversation for user 196 in each arm (bench/speed.py's), the arms' turns alternating."""
    from speed import MESSAGES

    from reasonrec.agent.chat.store import SessionStore

    with tempfile.TemporaryDirectory() as tmp:
        sessions = {on: agents[on].chat_session(user_id="196", store=SessionStore(Path(tmp) / f"{on}.sqlite3"))
                    for on in (False, True)}  # fmt: skip
        ms: dict[bool, list[float]] = {True: [], False: []}
        for i, text in enumerate(MESSAGES):
            for on in (True, False) if i % 2 else (False, True):
                t = time.perf_counter()
                sessions[on].send(text)
                ms[on].append(round((time.perf_counter() - t) * 1000))
    return {"messages": MESSAGES, "plain_ms": ms[False], "lookup_ms": ms[True],
            "plain_p50_ms": statistics.median(ms[False]), "lookup_p50_ms": statistics.median(ms[True])}  # fmt: skip


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import bench_args, header, save

    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.finetune.evaluation.reasons import reason_rates

    a = bench_args(__doc__, RESULTS, 60).parse_args()
    load = os.getloadavg()[0]
    on = RecommenderAgent(AgentConfig())
    on.recommend(user_id="196", k=5)  # warm-up: model, store, first generate
    off = RecommenderAgent(AgentConfig.build(ranker={"lookup_decoding": False}), model=on.model, dataset=on.dataset)
    off.recommend(user_id="196", k=5)
    agents = {True: on, False: off}
    users = random.Random(0).sample(sorted(on.dataset.users(), key=int), a.users)
    per_user, recs = users_run(agents, users)
    result = {
        **header(), "dtype": str(on.model.model.dtype).removeprefix("torch."),
        "recommend_hybrid": per_user,
        "reasons": {"plain": reason_rates(recs[False], on.items).model_dump(),
                    "lookup": reason_rates(recs[True], on.items).model_dump()},
        "chat_196": chat_run(agents),
    }  # fmt: skip
    save(a.out, result, load)
    print(json.dumps({k: v for k, v in result.items() if k != "recommend_hybrid"}, indent=1))
    print(json.dumps({k: v for k, v in per_user.items() if k not in ("differing_raw_output",)}, indent=1))


if __name__ == "__main__":
    main()
