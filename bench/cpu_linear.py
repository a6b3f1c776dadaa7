"""Small-batch linear layers on the CPU (agent/model/cpu_linear.py): per layer shape, and end to end.

    .venv/bin/python bench/cpu_linear.py --users 12        # writes bench/results/cpu_linear.json

1. Each SmolLM2-135M weight shape (q/o 576x576, k/v 192x576, gate/up 1536x576, down 576x1536, the
   49,152x576 output layer), enough distinct copies that no cache holds them (as in decoding, where
   every step streams all weights), for 1-64 rows: ms per product with `F.linear` and with
   `mm(W, x.T)`, and their ratio.
2. The user's figure: `recommend(user_id, k=5)` in the default hybrid mode, in-process, for `--users`
   users, each run with the plain linears and with the small-batch ones (order alternating per user,
   prefix caches dropped before each), wall seconds and whether the five reasons came out identical.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results" / "cpu_linear.json"
SHAPES = {"q_o": (576, 576), "k_v": (192, 576), "gate_up": (1536, 576), "down": (576, 1536), "lm_head": (49152, 576)}
ROWS = (1, 2, 5, 8, 16, 32, 64)


def per_shape(budget_mb: int = 400) -> dict[str, dict[str, list[float]]]:
    out = {}
    with torch.inference_mode():
        for name, (n, k) in SHAPES.items():
            copies = max(2, budget_mb * 2**20 // (n * k * 4))
            ws = [torch.randn(n, k) for _ in range(copies)]
            row: dict[str, list[float]] = {}
            for m in ROWS:
                x = torch.randn(m, k)
                plain = _ms(lambda x=x, ws=ws: [F.linear(x, w) for w in ws]) / copies
                other = _ms(lambda x=x, ws=ws: [torch.mm(w, x.t()).t().contiguous() for w in ws]) / copies
                row[str(m)] = [round(plain, 4), round(other, 4), round(plain / other, 2)]
            out[name] = row
            print(name, {m: v[2] for m, v in row.items()}, flush=True)
            del ws
    return out


def _ms(f, repeats: int = 3) -> float:
    f()
    t = time.perf_counter()
    for _ in range(repeats):
        f()
    return (time.perf_counter() - t) / repeats * 1000


def end_to_end(n_users: int) -> dict:
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.agent.model.cpu_linear import use_small_batch_linears

    agent = RecommenderAgent(AgentConfig.model_validate({"model": {"cpu_small_batch_linear": False}}))
    agent.recommend(user_id="196", k=5)  # warm-up: model, store, first generate
    linears = [m for m in agent.model.model.modules() if type(m) is torch.nn.Linear]

    def run(user: str, fast: bool) -> tuple[float, list]:
        for m in linears:
            m.__dict__.pop("forward", None)  # back to nn.Linear.forward
        if fast:
            use_small_batch_linears(agent.model.model)
        agent.ranker.forget_prefixes()
        t = time.perf_counter()
        rec = agent.recommend(user_id=user, k=5)
        return time.perf_counter() - t, [(i.item_id, i.reason) for i in rec.items]

    plain_s, fast_s, same = [], [], 0
    for u in range(1, n_users + 1):
        order = (False, True) if u % 2 else (True, False)
        got = {fast: run(str(u), fast) for fast in order}
        plain_s.append(got[False][0])
        fast_s.append(got[True][0])
        same += got[False][1] == got[True][1]
        print(f"user {u}: plain {got[False][0]:.2f} s, small-batch {got[True][0]:.2f} s", flush=True)
    return {
        "users": n_users, "plain_s_median": round(statistics.median(plain_s), 2),
        "small_batch_s_median": round(statistics.median(fast_s), 2),
        "ratio_of_medians": round(statistics.median(plain_s) / statistics.median(fast_s), 2),
        "identical_lists": same, "plain_s": [round(s, 2) for s in plain_s],
        "small_batch_s": [round(s, 2) for s in fast_s],
    }  # fmt: skip


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import bench_args, header, save

    a = bench_args(__doc__, RESULTS, 12).parse_args()
    load = os.getloadavg()[0]
    result = {
        **header(),
        "per_shape_ms": {"columns": "[F.linear ms, mm(W, x.T) ms, ratio] per product, by rows", **per_shape()},
        "recommend_hybrid": end_to_end(a.users),
    }  # fmt: skip
    save(a.out, result, load)
    print(json.dumps(result["recommend_hybrid"], indent=1))


if __name__ == "__main__":
    main()
