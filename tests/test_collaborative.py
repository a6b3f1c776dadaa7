"""SASRec collaborative source: cornac parity, safetensors round trip, staleness, Chroma ip = brute force.

A tiny model (real ML-100K rows of 40 users, 16-d, one epoch) keeps this file at a few seconds; the
full-size model is trained by bench/retrieval_eval.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from reasonrec.errors import ConfigError, DataError
from reasonrec.retrieval import CandidateSource, RetrievalConfig
from reasonrec.retrieval.collaborative import CollaborativeSource, brute_force_top
from reasonrec.retrieval.config import CollaborativeConfig
from reasonrec.retrieval.sasrec import SASRecModel, load_or_train, sequences_hash, train_sasrec

pytest.importorskip("cornac")

TINY = CollaborativeConfig(
    embedding_dim=16, max_len=20, n_sample=128, batch_size=128, max_epochs=1, patience=0, threads=1
)


@pytest.fixture(scope="module")
def seqs(ml100k):
    return {u: ml100k.history(u) for u in ml100k.users()[:40]}


@pytest.fixture(scope="module")
def tiny(seqs, tmp_path_factory):
    model, trained = load_or_train(seqs, TINY, cache_dir=tmp_path_factory.mktemp("collab-cache"))
    assert trained
    return model


@pytest.fixture(scope="module")
def source(tiny, ml100k, tmp_path_factory):
    cfg = RetrievalConfig(persist_dir=tmp_path_factory.mktemp("collab-chroma"), collection="collab-test")
    return CollaborativeSource(tiny, cfg, ml100k.items)


def test_training_mirrors_cornac_fit_and_score(seqs):
    """Our loop gives cornac's own `fit` weights bit for bit; encode . item_emb equals cornac's `score`.

    Pins the private members used (`_encode`, `item_emb`, `pad_idx`) at cornac 3.0.1.
    """
    import torch
    from cornac.data import SequentialDataset
    from cornac.models import SASRec

    few = dict(list(seqs.items())[:15])
    ours = train_sasrec(few, TINY)
    rows = [(u, u, i, t) for u, s in few.items() for t, i in enumerate(s[:-1] if len(s) >= 3 else s)]
    threads = torch.get_num_threads()
    torch.set_num_threads(TINY.threads)  # float sums depend on the thread count
    try:
        rec = SASRec(
            embedding_dim=16, max_len=20, n_sample=128, batch_size=128, n_epochs=1, use_biases=False, seed=0
        ).fit(SequentialDataset.build(rows, fmt="USIT", seed=0))
    finally:
        torch.set_num_threads(threads)
    theirs = rec.model.state_dict()
    assert set(theirs) == set(ours.net.state_dict())
    assert all(torch.equal(theirs[k], v) for k, v in ours.net.state_dict().items())
    assert ours.info.item_ids == [str(i) for i in rec.iid_map] and rec.pad_idx == ours.pad
    history = next(iter(few.values()))[:-1]
    cornac_scores = rec.score(0, [rec.iid_map[i] for i in history])
    np.testing.assert_allclose(ours.encode([history])[0] @ ours.item_vectors().T, cornac_scores, atol=1e-5)


def test_every_trained_item_has_a_vector(tiny, seqs):
    trained_on = {i for s in seqs.values() for i in (s[:-1] if len(s) >= 3 else s)}
    assert trained_on == set(tiny.info.item_ids)
    assert tiny.item_vectors().shape == (len(trained_on), 16)


def test_save_load_round_trip_without_pickle(tiny, tmp_path):
    folder = tiny.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    assert not (folder / "model.safetensors").read_bytes().startswith(b"\x80")  # not a pickle stream
    meta = json.loads((folder / "model.json").read_text())
    assert meta["library"] == "cornac" and meta["library_version"] == "3.0.1"
    assert meta["interactions_hash"] == tiny.info.interactions_hash and meta["epochs_trained"] == 1
    back = SASRecModel.load(folder, expect_interactions=tiny.info.interactions_hash)
    np.testing.assert_array_equal(back.item_vectors(), tiny.item_vectors())
    hs = [tiny.info.item_ids[:5], tiny.info.item_ids[10:40]]
    np.testing.assert_array_equal(back.encode(hs), tiny.encode(hs))


def test_stale_interactions_are_detected(tiny, seqs, tmp_path):
    folder = tiny.save(tmp_path / "m")
    changed = dict(seqs)
    first = next(iter(changed))
    changed[first] = [*changed[first], "1682"]
    assert sequences_hash(changed) != sequences_hash(seqs)
    with pytest.raises(DataError, match="stale"):
        SASRecModel.load(folder, expect_interactions=sequences_hash(changed))
    (folder / "model.json").write_text((folder / "model.json").read_text().replace('"3.0.1"', '"2.0.0"'))
    with pytest.raises(DataError, match="retrain"):
        SASRecModel.load(folder)


def test_cache_reuses_and_retrains_on_change(tiny, seqs, tmp_path):
    tiny.save(tmp_path / tiny.info.key)
    again, trained = load_or_train(seqs, TINY, cache_dir=tmp_path)
    assert not trained and again.info.key == tiny.info.key
    few = dict(list(seqs.items())[:10])
    other, trained = load_or_train(few, TINY, cache_dir=tmp_path)
    assert trained and other.info.key != tiny.info.key
    assert len(list(tmp_path.iterdir())) == 2


def test_chroma_ip_query_equals_brute_force(source, tiny, seqs):
    assert isinstance(source, CandidateSource)
    assert source.count() == len(tiny.info.item_ids)
    for user in list(seqs)[:10]:
        history = seqs[user][:-1]
        got = [c.item_id for c in source.candidates(history, n=20, exclude={"50"})]
        assert got == brute_force_top(tiny, history, 20, exclude={"50"})
        assert not set(got) & (set(history) | {"50"})
    cands = source.candidates(seqs[list(seqs)[0]], n=5)
    vec = np.asarray(source.user_vector(seqs[list(seqs)[0]]))
    row = tiny.index[cands[0].item_id]
    assert cands[0].score == pytest.approx(float(vec @ tiny.item_vectors()[row]), abs=1e-4)


def test_new_user_with_three_liked_items_gets_collaborative_candidates(source, ml100k):
    liked = ["50", "172", "181"]  # Star Wars, The Empire Strikes Back, Return of the Jedi: no such user
    assert all(i in source.model.index for i in liked)
    cands = source.candidates(liked, n=10)
    assert len(cands) == 10 and not {c.item_id for c in cands} & set(liked)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)


def test_where_filter_and_metadata(source, ml100k, seqs):
    history = seqs[list(seqs)[1]]
    comedies = source.candidates(history, n=10, where={"genre_Comedy": True})
    assert comedies and all("Comedy" in ml100k.items[c.item_id].genres for c in comedies)
    old = source.candidates(history, n=10, where={"$and": [{"year": {"$lt": 1980}}, {"genre_Drama": True}]})
    assert all(ml100k.items[c.item_id].year < 1980 for c in old)
    with pytest.raises(ConfigError, match=r"\$like"):
        source.candidates(history, n=5, where={"year": {"$like": 1}})


def test_cold_start_raises_data_error(source):
    with pytest.raises(DataError, match="non-empty"):
        source.candidates([], 5)
    with pytest.raises(DataError, match="none of"):
        source.candidates(["no-such-item"], 5)
    with pytest.raises(ConfigError, match="`n`"):
        source.candidates(["50"], 0)


def test_collection_follows_the_model(source, tiny, seqs, ml100k):
    """Reopening with another model rewrites the collection instead of serving stale vectors."""
    few = dict(list(seqs.items())[:12])
    other = train_sasrec(few, TINY)
    swapped = CollaborativeSource(other, source.retrieval, ml100k.items)
    assert swapped.collection.metadata["model_key"] == other.info.key
    assert swapped.count() == len(other.info.item_ids)
    back = CollaborativeSource(tiny, source.retrieval, ml100k.items)
    assert back.collection.metadata["model_key"] == tiny.info.key and back.count() == len(tiny.info.item_ids)


def test_refit_without_holdout_trains_on_every_item(seqs):
    few = dict(list(seqs.items())[:8])
    refit = train_sasrec(few, TINY.model_copy(update={"holdout": False}))
    assert set(refit.info.item_ids) == {i for s in few.values() for i in s}
    assert refit.info.n_valid_users == 0 and refit.info.epochs_trained == TINY.max_epochs
    assert refit.info.key != train_sasrec(few, TINY).info.key


def test_build_with_refit_serves_the_refitted_model(ml100k, seqs, tmp_path):
    few = dict(list(seqs.items())[:8])
    cfg = RetrievalConfig(persist_dir=tmp_path / "chroma", collection="refit-test")
    src = CollaborativeSource.build(ml100k, cfg, TINY, sequences=few, cache_dir=tmp_path / "cache", refit=True)
    assert not src.model.config.holdout and src.model.info.epochs_trained == 1
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the holdout run and the refit, both cached
    assert src.name == "refit-test-sasrec" and src.count() == len(src.model.info.item_ids)


def test_a_trained_history_is_served_from_the_saved_vectors_without_torch(seqs, tiny, ml100k, tmp_path_factory):
    """`load_or_train` keeps the training histories' vectors beside the weights; a fresh process serves those
    histories (and the item vectors) without importing torch, equal to the network's own output, and still
    runs the network for a history it was not trained on."""
    import subprocess
    import sys

    from reasonrec.retrieval.sasrec import USER_VECTORS, model_key

    cache = tmp_path_factory.mktemp("collab-vectors")
    model, _ = load_or_train(seqs, TINY, cache_dir=cache)
    folder = cache / model_key(sequences_hash(seqs), TINY)
    assert (folder / USER_VECTORS).is_file()
    known = [seqs[u] for u in list(seqs)[:5]]
    unseen = [ml100k.history(u)[:7] for u in ml100k.users()[100:103]]
    code = (
        "import json, sys; from pathlib import Path; from reasonrec.retrieval.sasrec import SASRecModel;"
        f"m = SASRecModel.load(Path({str(folder)!r}));"
        f"k = m.encode({known!r}).tolist(); iv = m.item_vectors().tolist(); before = 'torch' in sys.modules;"
        f"u = m.encode({unseen!r}).tolist();"
        "print(json.dumps([before, 'torch' in sys.modules, k, iv, u]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    torch_before, torch_after, k, iv, u = json.loads(out.strip().splitlines()[-1])
    assert not torch_before and torch_after  # the unseen histories needed the network
    assert np.allclose(k, model.encode(known), atol=1e-5)
    assert np.array_equal(np.asarray(iv, dtype=np.float32), model.item_vectors())
    assert np.allclose(u, model.encode(unseen), atol=1e-5)
    (folder / USER_VECTORS).write_bytes(b"not an npz")  # a damaged table is dropped, never an error
    again = SASRecModel.load(folder)
    assert np.allclose(again.encode(known), model.encode(known), atol=1e-5) and not (folder / USER_VECTORS).exists()
