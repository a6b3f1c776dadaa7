"""Produce bench/results/{full20,full50,cand20}.*: every classical row on all users + the LLM rows.

    .venv/bin/python bench/run_eval.py                 # zero-shot generative on 100 users
    .venv/bin/python bench/run_eval.py --llm-users 50 --skip-positions

RecBole rows need bench/recbole_peer.py to have run first (scores in ~/.cache/reasonrec/bench/recbole).
"""

from __future__ import annotations

import argparse
import time

from reasonrec.finetune.evaluation.run import EvalConfig, evaluate

CLASSICAL = ["random", "popularity", "itemknn", "retrieval", "recbole-sasrec", "recbole-bpr"]
ALL = ["random-all", "popularity-all", "itemknn-all", "recbole-sasrec-all", "recbole-bpr-all"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--llm-users", type=int, default=100)
    p.add_argument("--llm", nargs="*", default=["reasonrec-zeroshot-generative"])
    p.add_argument("--skip-positions", action="store_true")
    p.add_argument("--only", nargs="*", default=["full20", "cand20", "full50"])
    a = p.parse_args()
    full = CLASSICAL + ALL + a.llm
    runs = {
        "full20": EvalConfig(protocol="full", candidates=20, methods=full, llm_users=a.llm_users),
        "cand20": EvalConfig(
            protocol="cand20", methods=CLASSICAL + a.llm, llm_users=a.llm_users,
            positions=None if a.skip_positions else [1, 5, 10, 20],
        ),
        "full50": EvalConfig(protocol="full", candidates=50, methods=full, llm_users=a.llm_users),
    }  # fmt: skip
    for name in a.only:
        t = time.time()

        def progress(task: str, done: int, total: int, name: str = name, t: float = t) -> None:
            if done == total or done % 40 == 0:
                print(f"[{name}] {task} {done}/{total} {time.time() - t:.0f}s", flush=True)

        report = evaluate(runs[name], progress=progress)
        print(f"[{name}] done in {time.time() - t:.0f}s", flush=True)
        for m, row in report.methods.items():
            met = row.metrics
            print(f"  {m:30s} n={row.n_users:4d} ndcg@10={met['ndcg@10']:.4f} hr@1={met['hr@1']:.4f}")


if __name__ == "__main__":
    main()
