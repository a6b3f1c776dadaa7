"""The leave-one-out split, cand20 candidates and train-only baselines on real ML-100K rows."""

from __future__ import annotations

from collections import Counter

import pytest

from reasonrec.errors import ConfigError
from reasonrec.finetune.evaluation.baselines import ItemKNNRanker, PopularityRanker, RandomRanker
from reasonrec.finetune.evaluation.run import EvalConfig, select_users
from reasonrec.finetune.evaluation.split import Split, UserSplit, cand20_candidates, leave_one_out
from reasonrec.retrieval.types import Dataset, Interaction, Item, natural_key


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    from reasonrec.retrieval.loaders import load_ml100k

    return load_ml100k()


@pytest.fixture(scope="module")
def split(ml100k: Dataset) -> Split:
    return leave_one_out(ml100k)


@pytest.fixture(scope="module")
def catalogue(ml100k: Dataset) -> list[str]:
    return sorted(ml100k.items, key=natural_key)


def test_every_ml100k_user_is_kept(split: Split):
    assert len(split.users) == 943 and split.n_dropped == 0


def test_no_leakage_and_last_two_by_time(ml100k: Dataset, split: Split):
    for user, rows in ml100k.histories.items():
        s = split.get(user)
        assert s.valid not in s.train and s.test not in s.train and s.valid != s.test
        keys = [(r.timestamp, natural_key(r.item_id)) for r in rows]
        assert keys == sorted(keys)
        assert (s.valid, s.test) == (rows[-2].item_id, rows[-1].item_id)
        assert len(s.train) + 2 == len(rows)
        assert split.eval_history(user, "test") == [*s.train, s.valid]
        assert split.eval_history(user, "valid") == list(s.train)


def test_ties_are_broken_by_item_id():
    items = {str(i): Item(id=str(i), title=f"t{i}") for i in (2, 10, 3, 1)}
    inter = [Interaction(user_id="u", item_id=i, timestamp=5.0) for i in ("10", "2", "3")]
    inter.append(Interaction(user_id="u", item_id="1", timestamp=1.0))
    sp = leave_one_out(Dataset(name="toy", items=items, interactions=inter))
    assert sp.get("u") == UserSplit(train=("1", "2"), valid="3", test="10")


def test_users_with_fewer_than_three_interactions_are_dropped():
    items = {i: Item(id=i, title=i) for i in "abc"}
    inter = [Interaction(user_id="short", item_id=i, timestamp=t) for t, i in enumerate("ab")]
    inter += [Interaction(user_id="ok", item_id=i, timestamp=t) for t, i in enumerate("abc")]
    sp = leave_one_out(Dataset(name="toy", items=items, interactions=inter))
    assert list(sp.users) == ["ok"] and sp.n_dropped == 1


def test_cand20_properties(split: Split, catalogue: list[str]):
    for user in split.user_ids()[:200]:
        c = cand20_candidates(split, user, catalogue, seed=0)
        assert len(c) == 20 and len(set(c)) == 20
        assert c.count(split.get(user).test) == 1
        negatives = set(c) - {split.get(user).test}
        assert not negatives & split.seen(user)  # never a negative the user interacted with
        assert c == cand20_candidates(split, user, catalogue, seed=0)  # deterministic
    u = split.user_ids()[0]
    assert cand20_candidates(split, u, catalogue, seed=0) != cand20_candidates(split, u, catalogue, seed=1)


def test_cand20_target_position_is_spread(split: Split, catalogue: list[str]):
    pos = Counter(cand20_candidates(split, u, catalogue, 0).index(split.get(u).test) for u in split.user_ids())
    assert len(pos) == 20 and max(pos.values()) < 100  # shuffled, not always first


def test_popularity_counts_train_side_only(split: Split):
    counts = split.train_counts()
    expected = Counter(i for s in split.users.values() for i in s.train)
    assert counts == expected
    assert sum(counts.values()) == 100_000 - 2 * 943
    # an item seen only as someone's test item is never popular
    test_only = {s.test for s in split.users.values()} - set(expected)
    ranker = PopularityRanker(split)
    for item in test_only:
        assert ranker.counts.get(item, 0) == 0


def test_classical_rankers_return_permutations(split: Split, catalogue: list[str]):
    u = split.user_ids()[5]
    cands = cand20_candidates(split, u, catalogue, 0)
    hist = split.eval_history(u, "test")
    for r in (RandomRanker(0), PopularityRanker(split), ItemKNNRanker(split, catalogue)):
        out = r.rank(u, hist, cands, 10)
        assert sorted(out) == sorted(cands)
        assert out == r.rank(u, hist, cands, 10)


def test_user_subset_is_seeded_and_stable(split: Split):
    a, b = select_users(split, 100, 0), select_users(split, 100, 0)
    assert a == b and len(set(a)) == 100 and select_users(split, 50, 0) == a[:50]
    assert sorted(select_users(split, None, 0)) == sorted(split.user_ids())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["nope"]}, "unknown method"),
        ({"protocol": "cand20", "candidates": 50}, "candidates"),
        ({"protocol": "cand20", "methods": ["popularity-all"]}, "unknown method"),
        ({"positions": [1, 5]}, "cand20 only"),
        ({"protocol": "cand20", "positions": [21]}, "positions"),
        ({"methods": ["reasonrec-lora-generative"]}, "adapter"),
        ({"users": 0}, "users"),
        ({"bogus": 1}, "unknown option"),
    ],
)
def test_eval_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EvalConfig.build(**kwargs)


def test_evaluate_writes_the_protocol_json(tmp_path):
    import json

    from reasonrec.finetune.evaluation.run import evaluate

    cfg = EvalConfig(
        protocol="cand20",
        methods=["random", "popularity", "itemknn"],
        users=30,
        positions=[1, 20],
        out_dir=tmp_path,
    )
    report = evaluate(cfg)
    data = json.loads((tmp_path / "cand20.json").read_text())
    for key in (
        "protocol",
        "dataset",
        "dataset_sha256",
        "commit",
        "created",
        "machine",
        "seed",
        "candidates",
    ):
        assert key in data
    assert data["protocol"] == "cand20" and data["candidates"] == 20 and data["dataset"] == "ml-100k"
    row = data["methods"]["popularity"]
    for key in ("n_users", "metrics", "valid_rate", "off_catalogue_rate", "duplicate_rate", "fallback_rate"):
        assert key in row
    assert {"p50", "p95"} <= set(row["latency_ms"]) and row["n_users"] == 30
    assert {"ndcg@10", "recall@10", "hr@1", "mrr"} <= set(row["metrics"])
    assert row["valid_rate"] == 1.0 and row["fallback_rate"] == 0.0
    assert set(report.positions["itemknn"]) == {"1", "20"}
    for suffix in (".md", "_metrics.png", "_latency.png"):
        assert (tmp_path / f"cand20{suffix}").stat().st_size > 0


def test_evaluate_llm_scoring_row_reports_validity_and_calibration(tmp_path):
    """The real SmolLM2 on 4 users: rates, the calibration of its top-1 probabilities, the md column."""
    from reasonrec.finetune.evaluation.run import evaluate

    agent = tmp_path / "agent.json"  # the row, not the sequence model: no SASRec training inside a test
    agent.write_text('{"candidates": {"collaborative": "off"}}')
    cfg = EvalConfig(
        protocol="cand20", methods=["random", "reasonrec-zeroshot-scoring"], users=4, out_dir=tmp_path, llm_k=5,
        agent_config=agent,
    )  # fmt: skip
    row = evaluate(cfg).methods["reasonrec-zeroshot-scoring"]
    assert row.n_users == 4 and row.valid_rate == 1.0 and row.off_catalogue_rate == row.duplicate_rate == 0.0
    cal = row.calibration
    assert cal is not None and cal["n"] == 4 and 0.0 <= cal["ece"] <= 1.0 and 0.0 < cal["mean_top1_prob"] <= 1.0
    assert cal["hr@1"] == row.metrics["hr@1"]
    assert "| ECE |" in (tmp_path / "cand20.md").read_text()
