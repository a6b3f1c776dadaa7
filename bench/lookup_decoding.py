"""Prompt-lookup decoding of hybrid reasons (agent/model/lookup.py) against plain greedy `generate`.

    .venv/bin/python bench/lookup_decoding.py --users 60      # writes bench/results/lookup_decoding_cpu.json

One model, two agents that differ only in `ranker.lookup_decoding`; for each user (random ML-100K
users, seed 0) `recommend(user_id, k=5)` in the default hybrid mode runs in both, in alternating
order, each with its prefix caches dropped first. Reported: wall seconds and model calls per user,
how many lists came out identical (shown reasons, and the raw text with the retries), the users that
differ, the reasons block of each arm (finetune/evaluation/reasons.py: a speed-up that made reasons
worse would show there), and a five-turn chat for user 196 in both arms (turn by turn, alternating):
bench/config_ab.py's comparison with the arms named plain and lookup.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "lookup_decoding_cpu.json"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import bench_args, header, save
    from config_ab import compare, two_agents

    a = bench_args(__doc__, RESULTS, 60).parse_args()
    load = os.getloadavg()[0]
    made = two_agents({"ranker": {"lookup_decoding": False}}, names=("lookup", "plain"))
    result = {**header(), **compare({"plain": made["plain"], "lookup": made["lookup"]}, a.users)}
    save(a.out, result, load)
    print(json.dumps({k: v for k, v in result.items() if k != "recommend_hybrid"}, indent=1))
    print(json.dumps({k: v for k, v in result["recommend_hybrid"].items() if k != "differing_raw_output"}, indent=1))


if __name__ == "__main__":
    main()
