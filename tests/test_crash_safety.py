"""Crash safety (issue 7.4): indexing killed mid-way and run again ends with exactly the catalogue.

The store writes batch by batch and skips items whose content hash is already stored, so a re-run
finishes the job: no duplicates, none missing, and the vector index answers for every item. The other
crash tests live with their modules: test_server.py::test_session_survives_sigkill,
test_sessions.py::test_a_process_killed_mid_write_leaves_the_previous_state and
test_finetune.py::test_killed_training_resumes_to_the_same_final_step.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from reasonrec.retrieval import ItemStore, RetrievalConfig, build_index
from reasonrec.retrieval.types import Dataset, natural_key


def test_killed_midway_then_rerun_ends_with_exactly_the_catalogue(ml100k, retrieval_config, embedder):
    """In-process: an exception after two batches, then the same upsert again."""
    items = [ml100k.items[str(i)] for i in range(100, 260)]
    store = ItemStore(retrieval_config.model_copy(update={"collection": "killed-midway", "batch_size": 32}), embedder)

    class Killed(Exception):
        pass

    def kill_after_two_batches(done, total):
        if done >= 64:
            raise Killed

    with pytest.raises(Killed):
        store.upsert(items, progress=kill_after_two_batches)
    assert store.count() == 64
    seen = []
    report = store.upsert(items, progress=lambda done, total: seen.append((done, total)))
    assert (report.added, report.unchanged) == (len(items) - 64, 64)
    assert seen[-1] == (len(items), len(items)) and len(seen) == 5
    ids = store.ids()
    assert store.count() == len(items) == len(ids) == len(set(ids))
    assert ids == sorted((it.id for it in items), key=natural_key)


def _stored_rows(sqlite_file) -> int:
    """Rows in Chroma's embeddings table, read-only from outside the writing process (0 until it exists)."""
    try:
        with sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True, timeout=0.5) as con:
            return int(con.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    except sqlite3.Error:  # not created yet, or locked by the writer this instant
        return 0


def test_sigkilled_reasonrec_index_then_rerun(tmp_path, ml100k, embedder):
    """A real `reasonrec index` process is SIGKILLed after some batches are committed, then run again."""
    items = [ml100k.items[str(i)] for i in range(1, 401)]
    catalogue, events = tmp_path / "films.csv", tmp_path / "events.csv"
    with catalogue.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "title", "year", "genres"])
        writer.writerows([it.id, it.title, it.year or "", "|".join(it.genres)] for it in items)
    events.write_text("user_id,item_id,timestamp\nu1,1,100\nu1,2,101\n")
    config = tmp_path / "agent.json"
    retrieval = {"persist_dir": str(tmp_path / "store"), "collection": "films", "batch_size": 32}
    config.write_text(json.dumps({"retrieval": retrieval}))
    args = ["index", "--dataset", f"{catalogue},{events}", "--config", str(config)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reasonrec.agent.interfaces.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    sqlite_file = tmp_path / "store" / "chroma.sqlite3"
    try:
        deadline = time.monotonic() + 240
        while _stored_rows(sqlite_file) < 64 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"indexing ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    rc = RetrievalConfig(**retrieval)
    store = ItemStore(rc, embedder)
    survived = store.count()
    assert 64 <= survived < len(items)  # killed mid-way, after at least two committed batches
    survivors = set(store.ids())
    assert len(survivors) == survived and survivors <= {it.id for it in items}

    dataset = Dataset("films", {it.id: it for it in items}, [])
    store, report = build_index(dataset, rc, embedder=embedder)  # what `reasonrec index` runs
    assert (report.added, report.updated, report.unchanged) == (len(items) - survived, 0, survived)
    ids = store.ids()
    assert ids == sorted((it.id for it in items), key=natural_key)  # exactly the catalogue: none twice, none missing
    assert store.count() == len(items)
    hits = store.query(text="a film", n=len(items))  # the vector index, not only the metadata, has every item
    assert sorted((h.item_id for h in hits), key=natural_key) == ids
    vectors = store.embeddings(ids)
    assert len(vectors) == len(items)
    for it in items[::50]:  # re-embedding gives the stored vector: the killed run left no torn record
        assert float(vectors[it.id] @ embedder.encode([it.text()])[0]) > 0.999
