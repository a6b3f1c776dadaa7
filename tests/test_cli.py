"""The `reasonrec` command: user mistakes are one readable line with exit status 2; demo works."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reasonrec.agent.interfaces.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["recommend", "--user", "999999", "--store", "{store}"], "unknown user"),
        (["recommend", "--user", "196", "-k", "0"], "-k"),
        (["recommend", "--user", "196", "--config", "/no/such.yaml"], "does not exist"),
        (["recommend", "--user", "196", "--dataset", "/no/such.csv,/no/such2.csv"], "such"),
        (["recommend"], "--user"),
        (["recommend", "--user", "196", "--bogus"], "bogus"),
    ],
)
def test_user_mistakes_are_one_line_not_a_traceback(args, fragment, indexed_store_dir):
    args = [a.replace("{store}", str(indexed_store_dir)) for a in args]
    proc = run_cli(*args, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert fragment in proc.stderr


def test_help_lists_the_commands():
    proc = run_cli("--help", timeout=60)
    assert proc.returncode == 0
    for cmd in ("demo", "index", "recommend"):
        assert cmd in proc.stdout


@pytest.mark.slow
def test_demo_prints_five_recommendations_with_reasons(retrieval_config, indexed_store, lm, tmp_path):
    """The README's `make demo`: 5 unseen in-catalogue titles, each with a reason and a source."""
    from reasonrec.retrieval.loaders import load_ml100k

    cfg = tmp_path / "agent.json"  # reuse the session's indexed collection instead of indexing again
    cfg.write_text(json.dumps({"retrieval": json.loads(retrieval_config.model_dump_json())}))
    proc = run_cli("demo", "--user", "196", "-k", "5", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Top 5 for user 196" in out
    data = load_ml100k()
    seen = set(data.history("196"))
    tables = out.split("Top 5 for user 196")[1]
    rows = [
        [c.strip() for c in line.strip().strip("│").split("│")] for line in tables.splitlines() if line.startswith("│")
    ]
    rows = [cells for cells in rows if cells[0].isdigit()]  # wrapped continuation lines have no rank
    assert len(rows) == 5, out
    for cells in rows:
        item_id, title, source, reason = cells[1], cells[2], cells[5], cells[6]
        assert item_id in data.items and item_id not in seen
        assert data.items[item_id].title.startswith(title[:10])
        assert source.rstrip("*") in ("model", "retrieval", "fallback")
        assert reason
