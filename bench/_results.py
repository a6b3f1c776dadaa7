"""What every benchmark's results file starts and ends with (shared/protocols.md): where and when it ran."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def bench_args(doc: str, out: Path, users: int) -> argparse.ArgumentParser:
    """The parser of a per-user benchmark: `--users` and `--out` (a script adds its own options)."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--users", type=int, default=users)
    p.add_argument("--out", type=Path, default=out)
    return p


def header() -> dict[str, Any]:
    """commit, created, machine, torch_threads: the fields each results file opens with."""
    import torch

    from reasonrec.finetune.evaluation.report import default_machine, git_commit

    return {
        "commit": git_commit(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": default_machine(), "torch_threads": torch.get_num_threads(),
    }  # fmt: skip


def save(path: Path, result: dict[str, Any], load_before: float) -> None:
    """Write `result` with the 1-minute load average before the run and now."""
    result["load_avg_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
