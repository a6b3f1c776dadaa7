"""Packed oneDNN linear layers on the CPU (agent/model/cpu_linear.py): per layer shape, and end to end.

    .venv/bin/python bench/cpu_linear.py --users 12        # writes bench/results/cpu_linear.json

1. Each SmolLM2-135M weight shape (q/o 576x576, k/v 192x576, gate/up 1536x576, down 576x1536, the
   49,152x576 output layer), enough distinct copies that no cache holds them (as in decoding, where
   every step streams all weights), in the dtype the model runs in here, for 1-650 rows: ms per product
   with `F.linear`, with `mm(W, x.T)` (the earlier float32 path) and with oneDNN on the packed weight,
   and whether the packed product equals `F.linear`'s bit for bit; then the same in float32.
2. The user's figure: `recommend(user_id, k=5)` in the default hybrid mode, in-process, for `--users`
   users, each run with the plain linears and with the packed ones (order alternating per user,
   prefix caches dropped before each), wall seconds and whether the raw output and the five shown
   reasons came out identical.
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
ROWS = (1, 2, 5, 8, 16, 32, 64, 130, 650)


def per_shape(dtype: torch.dtype, budget_mb: int = 400) -> dict[str, dict[str, list]]:
    pointwise, reorder = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
    out = {}
    with torch.inference_mode():
        for name, (n, k) in SHAPES.items():
            copies = max(2, budget_mb * 2**20 // (n * k * dtype.itemsize))
            ws = [torch.randn(n, k, dtype=dtype) for _ in range(copies)]
            packed = [reorder(w, 5) for w in ws]
            row: dict[str, list] = {}
            for m in ROWS:
                x = torch.randn(m, k, dtype=dtype)
                plain = _ms(lambda x=x, ws=ws: [F.linear(x, w) for w in ws]) / copies
                mm = _ms(lambda x=x, ws=ws: [torch.mm(w, x.t()).t().contiguous() for w in ws]) / copies
                fast = _ms(lambda x=x, ps=packed: [pointwise(x, p, None, "none", [], "") for p in ps]) / copies
                same = torch.equal(F.linear(x, ws[0]), pointwise(x, packed[0], None, "none", [], ""))
                row[str(m)] = [round(plain, 4), round(mm, 4), round(fast, 4), round(plain / fast, 2), same]
            out[name] = row
            print(name, {m: v[3:] for m, v in row.items()}, flush=True)
            del ws, packed
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
    from reasonrec.agent.model.cpu_linear import use_packed_linears

    agent = RecommenderAgent(AgentConfig.model_validate({"model": {"cpu_packed_linear": False}}))
    agent.recommend(user_id="196", k=5)  # warm-up: model, store, first generate
    linears = [m for m in agent.model.model.modules() if type(m) is torch.nn.Linear]

    def run(user: str, fast: bool) -> tuple[float, list]:
        for m in linears:
            m.__dict__.pop("forward", None)  # back to nn.Linear.forward
        if fast:
            use_packed_linears(agent.model.model)
        agent.ranker.forget_prefixes()
        t = time.perf_counter()
        rec = agent.recommend(user_id=user, k=5)
        return time.perf_counter() - t, [(i.item_id, i.reason) for i in rec.items], rec.raw_output

    plain_s, fast_s, same, same_raw = [], [], 0, 0
    for u in range(1, n_users + 1):
        order = (False, True) if u % 2 else (True, False)
        got = {fast: run(str(u), fast) for fast in order}
        plain_s.append(got[False][0])
        fast_s.append(got[True][0])
        same += got[False][1] == got[True][1]
        same_raw += got[False][2] == got[True][2]
        print(f"user {u}: plain {got[False][0]:.2f} s, packed {got[True][0]:.2f} s", flush=True)
    return {
        "users": n_users, "plain_s_median": round(statistics.median(plain_s), 2),
        "packed_s_median": round(statistics.median(fast_s), 2),
        "ratio_of_medians": round(statistics.median(plain_s) / statistics.median(fast_s), 2),
        "ratio_of_totals": round(sum(plain_s) / sum(fast_s), 2),
        "identical_lists": same, "identical_raw_output": same_raw, "plain_s": [round(s, 2) for s in plain_s],
        "packed_s": [round(s, 2) for s in fast_s],
    }  # fmt: skip


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import bench_args, header, save

    from reasonrec.agent.config import ModelConfig
    from reasonrec.agent.model.loading import pick_device_dtype

    a = bench_args(__doc__, RESULTS, 12).parse_args()
    load = os.getloadavg()[0]
    dtype = pick_device_dtype(ModelConfig())[1]
    columns = "[F.linear ms, mm(W, x.T) ms, packed oneDNN ms, F.linear / packed, packed == F.linear] per product"
    result = {
        **header(), "dtype": str(dtype).removeprefix("torch."),
        "per_shape_ms": {"columns": f"{columns}, by rows", "dtype": str(dtype).removeprefix("torch."),
                         **per_shape(dtype)},
        "per_shape_ms_float32": {"columns": f"{columns}, by rows", **per_shape(torch.float32)},
        "recommend_hybrid": end_to_end(a.users),
    }  # fmt: skip
    save(a.out, result, load)
    print(json.dumps(result["recommend_hybrid"], indent=1))


if __name__ == "__main__":
    main()
