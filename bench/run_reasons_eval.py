"""The reasons runs of issue 15: one reasonrec mode on protocol full20, 300 users, k=5, with a checkpoint.

    .venv/bin/python bench/run_reasons_eval.py hybrid 300       # -> bench/results/full20_reasons_hybrid.*
    .venv/bin/python bench/run_reasons_eval.py generative 300   # -> bench/results/full20_reasons_generative.*

`reasonrec evaluate` with llm_k=5 (the CLI has no flag for it) and bench/configs/reasons_cpu.yaml. Every
batch's Recommendations are appended to ~/.cache/reasonrec/bench/ckpt_<mode>.jsonl as they come, so a run on a
shared CPU that is stopped early still leaves the lists it ranked (the reasons block can be computed
from them with finetune.evaluation.reasons.reason_rates). `bench/reasons_report.py <mode> --commit <sha>` then
writes the results file from that checkpoint (a PARTIAL row when the run was stopped) with an independent
recount of every shown reason against the users' pre-test interactions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from reasonrec.agent.ranking.generative import GenerativeRanker
from reasonrec.agent.ranking.hybrid import HybridRanker
from reasonrec.finetune.evaluation.run import EvalConfig, evaluate


def checkpoint_batches(path: Path) -> None:
    """Append every ranked batch's results to `path` (JSON lines, user order)."""
    path.write_text("")
    for cls in (GenerativeRanker, HybridRanker):
        orig = cls._rank_batch

        def batch(self, reqs, _orig=orig):  # noqa: ANN001, ANN202
            out = _orig(self, reqs)
            with path.open("a") as f:
                f.writelines(r.model_dump_json() + "\n" for r in out)
            return out

        cls._rank_batch = batch


def main() -> None:
    mode, users = sys.argv[1], int(sys.argv[2])
    ckpt = Path.home() / ".cache" / "reasonrec" / "bench" / f"ckpt_{mode}.jsonl"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_batches(ckpt)
    cfg = EvalConfig(
        protocol="full", candidates=20, methods=[f"reasonrec-zeroshot-{mode}"], users=users, llm_users=users,
        llm_k=5, name=f"full20_reasons_{mode}", agent_config=Path("bench/configs/reasons_cpu.yaml"), batch_size=8,
        merge=False,
    )  # fmt: skip
    t = time.time()
    report = evaluate(cfg, progress=lambda task, d, n: print(f"{time.time() - t:7.0f}s {task} {d}/{n}", flush=True))
    for method, row in report.methods.items():
        print(method, row.reasons, flush=True)


if __name__ == "__main__":
    main()
