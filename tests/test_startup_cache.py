"""Start-up work kept between runs (issue 16): a cached result equals a fresh one, a changed input is never
served stale, entries age out, and loading a trained SASRec does not import the rest of cornac."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from reasonrec.agent.timing import paused_gc
from reasonrec.retrieval import cache, loaders
from reasonrec.retrieval.cooccurrence import CooccurrenceSource

USERS = ["196", "1", "42", "500", "943"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONREC_HOME", str(tmp_path))
    monkeypatch.setenv("REASONREC_CACHE", "on")
    return tmp_path


def fresh(monkeypatch, load):
    """`load()` with the cache switched off: a plain parse or fit."""
    monkeypatch.setenv("REASONREC_CACHE", "off")
    try:
        return load()
    finally:
        monkeypatch.setenv("REASONREC_CACHE", "on")


def assert_same_dataset(a, b):
    assert (a.name, a.sha256, a.skipped) == (b.name, b.sha256, b.skipped)
    assert list(a.items) == list(b.items) and a.items == b.items
    assert all(
        x.model_fields_set == y.model_fields_set for x, y in zip(a.items.values(), b.items.values(), strict=True)
    )
    assert a.interactions == b.interactions
    assert list(a.histories) == list(b.histories) and a.histories == b.histories
    assert a.users() == b.users()


def entries(home, kind):
    folder = home / "cache" / kind
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def test_cached_ml100k_equals_a_fresh_parse(home, monkeypatch):
    parsed = fresh(monkeypatch, loaders.load_ml100k)
    assert entries(home, "datasets") == []
    first, second = loaders.load_ml100k(), loaders.load_ml100k()  # the second reads the entry
    assert len(entries(home, "datasets")) == 1
    assert_same_dataset(first, parsed)
    assert_same_dataset(second, parsed)


def write_user_files(folder, extra_rows=""):
    (folder / "items.csv").write_text("id,title,year,genres,director\nm1,Alpha,1990,Drama|War,Ann\nm2,Beta,,Comedy,\n")
    inter = "user_id,item_id,timestamp,rating\nu1,m1,10,4\nu1,m2,5,\nu2,m9,3,1\nu2,m2,2020-01-01,5\n" + extra_rows
    (folder / "inter.csv").write_text(inter)
    return folder / "items.csv", folder / "inter.csv"


def test_own_files_changed_bytes_are_parsed_again(home, tmp_path, monkeypatch):
    cat, inter = write_user_files(tmp_path)
    a = loaders.load_dataset(cat, inter)
    assert_same_dataset(loaders.load_dataset(cat, inter), a)
    assert any("unknown item 'm9'" in s for s in a.skipped) and a.items["m1"].metadata == {"director": "Ann"}
    write_user_files(tmp_path, extra_rows="u3,m1,7,2\n")  # new bytes: a new key, never the old entry
    b = loaders.load_dataset(cat, inter, name="renamed")
    assert b.name == "renamed" and "u3" in b.histories
    assert_same_dataset(b, fresh(monkeypatch, lambda: loaders.load_dataset(cat, inter, name="renamed")))


def test_an_unreadable_entry_is_discarded_and_rebuilt(home, tmp_path):
    cat, inter = write_user_files(tmp_path)
    a = loaders.load_dataset(cat, inter)
    (entry,) = entries(home, "datasets")
    entry.write_text('{"format": 1, "items": [')
    assert_same_dataset(loaders.load_dataset(cat, inter), a)
    assert json.loads(entry.read_text())["format"] == 1  # rewritten whole


def test_entries_expire_and_a_kind_keeps_a_few(home):
    def write(p):
        p.write_text("x")

    paths = [cache.store("demo", f"k{i}", ".txt", write) for i in range(cache.MAX_ENTRIES + 2)]
    assert len(entries(home, "demo")) == cache.MAX_ENTRIES and paths[-1].exists()
    old = time.time() - cache.MAX_AGE_S - 60
    os.utime(paths[-1], (old, old))
    assert cache.lookup("demo", "k5", ".txt") is None and not paths[-1].exists()  # expired: deleted, not read


def test_cache_off_writes_nothing(home, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONREC_CACHE", "off")
    loaders.load_dataset(*write_user_files(tmp_path))
    assert not (home / "cache").exists()


def test_cached_cooccurrence_fit_equals_a_fresh_fit(home, ml100k, monkeypatch):
    seqs = {u: ml100k.history(u) for u in ml100k.users()}
    plain = fresh(monkeypatch, lambda: CooccurrenceSource.fit(seqs, None, ml100k.items))
    CooccurrenceSource.fit(seqs, None, ml100k.items)
    cached = CooccurrenceSource.fit(seqs, None, ml100k.items)
    assert len(entries(home, "cooccurrence")) == 1
    assert cached.ids == plain.ids and np.array_equal(cached.users, plain.users)
    for name in ("_sim", "_window", "_user_items"):
        x, y = getattr(cached, name), getattr(plain, name)
        assert type(x) is type(y) and (x != y).nnz == 0
    for u in USERS:
        h = ml100k.history(u)
        assert np.array_equal(cached.scores(h), plain.scores(h))
        comedy = {"genre_Comedy": True}
        assert cached.candidates(h, 30, where=comedy) == plain.candidates(h, 30, where=comedy)
        top = plain.candidates(h, 3)
        assert cached.candidates(h, 3) == top
        assert cached.evidence(h, top[0].item_id) == plain.evidence(h, top[0].item_id)


def test_changed_sequences_are_fitted_again(home, ml100k, monkeypatch):
    seqs = {u: ml100k.history(u) for u in ml100k.users()}
    CooccurrenceSource.fit(seqs, None, ml100k.items)
    seqs["196"] = seqs["196"][:-5]  # e.g. the train side of a split
    got = CooccurrenceSource.fit(seqs, None, ml100k.items)
    want = fresh(monkeypatch, lambda: CooccurrenceSource.fit(seqs, None, ml100k.items))
    assert (got._window != want._window).nnz == 0 and len(entries(home, "cooccurrence")) == 2


def test_small_fits_are_not_cached(home):
    CooccurrenceSource.fit({"u": ["a", "b", "c"], "v": ["b", "c"]})
    assert entries(home, "cooccurrence") == []


def test_paused_gc_nests_and_restores():
    assert gc.isenabled()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer build still runs
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_loading_sasrec_leaves_cornac_unimported_and_encodes_the_same(ml100k, tmp_path):
    pytest.importorskip("cornac")
    from reasonrec.retrieval.config import CollaborativeConfig
    from reasonrec.retrieval.sasrec import load_or_train, model_key, sequences_hash

    tiny = CollaborativeConfig(embedding_dim=16, max_len=20, n_sample=128, batch_size=128, max_epochs=1, threads=1)
    seqs = {u: ml100k.history(u) for u in ml100k.users()[:40]}
    model, _ = load_or_train(seqs, tiny, cache_dir=tmp_path)  # training imports cornac: its own class
    folder = tmp_path / model_key(sequences_hash(seqs), tiny)
    histories = [ml100k.history(u)[-12:] for u in USERS]
    code = (
        "import json, sys; from pathlib import Path; from reasonrec.retrieval.sasrec import SASRecModel;"
        f"m = SASRecModel.load(Path({str(folder)!r}));"
        f"print(json.dumps(['cornac' in sys.modules, m.encode({histories!r}).tolist()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    cornac_imported, vectors = json.loads(out.strip().splitlines()[-1])
    assert not cornac_imported
    assert np.array_equal(np.asarray(vectors, dtype=np.float32), model.encode(histories))


def test_file_digest_is_kept_and_follows_a_rewritten_file(home, tmp_path):
    import hashlib

    from reasonrec.agent.model import loading

    f = tmp_path / "model.gguf"
    f.write_bytes(b"a" * 1000)
    assert loading.file_sha256(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(entries(home, "digests")) == 1
    loading._DIGESTS.clear()  # a new process: read from the entry
    assert loading.file_sha256(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    f.write_bytes(b"b" * 1000)  # same size, new mtime
    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert loading.file_sha256(f) == hashlib.sha256(b"b" * 1000).hexdigest()
