"""Two configs of the default (hybrid) agent on the same users: time, model calls, same lists, reason rates.

    .venv/bin/python bench/config_ab.py --name distinct_first_pass \
        --change '{"ranker": {"distinct_first_pass": true}}' --users 60   # -> bench/results/ab_<name>_cpu.json

One model, two agents: the default config ("base") and the default with `--change` ("changed"). For
each user (random ML-100K users, seed 0) `recommend(user_id, k=5)` runs in both, in alternating order,
each with its prefix caches dropped first. Reported: wall seconds and model calls per user, how many
lists came out identical (shown reasons; the raw text with the retries), the users that differ, the
reasons block of each arm (finetune/evaluation/reasons.py: a change that made reasons worse shows
there), and a five-turn chat for user 196 in both arms (turn by turn, alternating).
bench/lookup_decoding.py is this comparison for `ranker.lookup_decoding`.
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
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _arm(agent: Any, user: str) -> tuple[float, int, Any]:
    agent.ranker.forget_prefixes()
    calls = agent.ranker.decoding_calls
    t = time.perf_counter()
    rec = agent.recommend(user_id=user, k=5)
    return time.perf_counter() - t, agent.ranker.decoding_calls - calls, rec


def users_run(agents: dict[str, Any], users: list[str]) -> tuple[dict, dict[str, list]]:
    """Each user in both arms (the first arm named first on even users); per-arm figures keyed by name."""
    a, b = agents
    secs: dict[str, list[float]] = {a: [], b: []}
    calls: dict[str, list[int]] = {a: [], b: []}
    recs: dict[str, list] = {a: [], b: []}
    same_shown = same_raw = 0
    differ = []
    for i, u in enumerate(users):
        got = {arm: _arm(agents[arm], u) for arm in ((b, a) if i % 2 else (a, b))}
        for arm, (s, c, rec) in got.items():
            secs[arm].append(s)
            calls[arm].append(c)
            recs[arm].append(rec)
        shown = [[(r.item_id, r.reason) for r in got[arm][2].items] for arm in (a, b)]
        same_shown += shown[0] == shown[1]
        same_raw += got[a][2].raw_output == got[b][2].raw_output
        if got[a][2].raw_output != got[b][2].raw_output:
            differ.append({"user": u, a: got[a][2].raw_output, b: got[b][2].raw_output})
        print(f"user {u}: {a} {got[a][0]:.2f} s {got[a][1]} calls, {b} {got[b][0]:.2f} s {got[b][1]} calls, "
              f"{'same' if shown[0] == shown[1] else 'other reasons'}", flush=True)  # fmt: skip
    out: dict[str, Any] = {"users": len(users)}
    out |= {f"{arm}_s_median": round(statistics.median(secs[arm]), 2) for arm in (a, b)}
    out |= {f"{arm}_s_total": round(sum(secs[arm]), 1) for arm in (a, b)}
    out["ratio_of_totals"] = round(sum(secs[a]) / sum(secs[b]), 2)
    out |= {f"{arm}_calls_total": sum(calls[arm]) for arm in (a, b)}
    out |= {"identical_shown_lists": same_shown, "identical_raw_output": same_raw}
    out |= {f"{arm}_s": [round(s, 2) for s in secs[arm]] for arm in (a, b)}
    out["differing_raw_output"] = differ[:10]
    return out, recs


def chat_run(agents: dict[str, Any]) -> dict:
    """Five turns of one conversation for user 196 in each arm (bench/speed.py's), the arms' turns alternating."""
    from speed import MESSAGES

    from reasonrec.agent.chat.store import SessionStore

    a, b = agents
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {arm: agents[arm].chat_session(user_id="196", store=SessionStore(Path(tmp) / f"{arm}.sqlite3"))
                    for arm in (a, b)}  # fmt: skip
        ms: dict[str, list[float]] = {a: [], b: []}
        for i, text in enumerate(MESSAGES):
            for arm in (b, a) if i % 2 else (a, b):
                t = time.perf_counter()
                sessions[arm].send(text)
                ms[arm].append(round((time.perf_counter() - t) * 1000))
    return {"messages": MESSAGES, **{f"{arm}_ms": ms[arm] for arm in (a, b)},
            **{f"{arm}_p50_ms": statistics.median(ms[arm]) for arm in (a, b)}}  # fmt: skip


def compare(agents: dict[str, Any], n_users: int) -> dict[str, Any]:
    """users_run, the reasons block of each arm and chat_run, for the results file."""
    from reasonrec.finetune.evaluation.reasons import reason_rates

    first = next(iter(agents.values()))
    users = random.Random(0).sample(sorted(first.dataset.users(), key=int), n_users)
    per_user, recs = users_run(agents, users)
    return {
        "dtype": str(first.model.model.dtype).removeprefix("torch."),
        "recommend_hybrid": per_user,
        "reasons": {arm: reason_rates(recs[arm], first.items).model_dump() for arm in agents},
        "chat_196": chat_run(agents),
    }


def two_agents(change: dict[str, Any], names: tuple[str, str] = ("base", "changed")) -> dict[str, Any]:
    """The default agent and one with `change`, sharing the dataset and, unless `change` has a model
    section (then each loads its own), the model; both warmed up."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig

    base = RecommenderAgent(AgentConfig())
    base.recommend(user_id="196", k=5)  # warm-up: model, store, first generate
    shared = {} if "model" in change else {"model": base.model}
    other = RecommenderAgent(AgentConfig.build(**change), dataset=base.dataset, **shared)
    other.recommend(user_id="196", k=5)
    return {names[0]: base, names[1]: other}


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import bench_args, header, save

    p = bench_args(__doc__, RESULTS / "ab.json", 60)
    p.add_argument("--name", required=True, help="names the results file: ab_<name>_cpu.json")
    p.add_argument("--change", required=True, help="config sections to change, as JSON")
    a = p.parse_args()
    out = a.out if a.out != RESULTS / "ab.json" else RESULTS / f"ab_{a.name}_cpu.json"
    change = json.loads(a.change)
    load = os.getloadavg()[0]
    result = {**header(), "change": change, **compare(two_agents(change), a.users)}
    save(out, result, load)
    print(json.dumps({k: v for k, v in result.items() if k != "recommend_hybrid"}, indent=1))
    print(json.dumps({k: v for k, v in result["recommend_hybrid"].items() if k != "differing_raw_output"}, indent=1))


if __name__ == "__main__":
    main()
