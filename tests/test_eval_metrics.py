"""Metric functions against hand-computed cases (table-driven), plus aggregation and list helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reasonrec.errors import ConfigError
from reasonrec.finetune.evaluation import metrics as M

RANKED = ["a", "b", "c", "d", "e"]

# (ranked, target, k, recall, ndcg) — ndcg = 1/log2(rank+1) within k
CASES = [
    (RANKED, "a", 1, 1.0, 1.0),
    (RANKED, "a", 5, 1.0, 1.0),
    (RANKED, "b", 1, 0.0, 0.0),
    (RANKED, "b", 5, 1.0, 1 / math.log2(3)),
    (RANKED, "c", 5, 1.0, 0.5),  # log2(4) = 2
    (RANKED, "e", 5, 1.0, 1 / math.log2(6)),
    (RANKED, "e", 4, 0.0, 0.0),
    (RANKED, "z", 5, 0.0, 0.0),  # absent target = a miss
    ([], "a", 10, 0.0, 0.0),
]


@pytest.mark.parametrize(("ranked", "target", "k", "recall", "ndcg"), CASES)
def test_recall_and_ndcg(ranked, target, k, recall, ndcg):
    assert M.recall_at_k(ranked, target, k) == recall
    assert M.ndcg_at_k(ranked, target, k) == pytest.approx(ndcg)


@pytest.mark.parametrize(("target", "rr"), [("a", 1.0), ("b", 0.5), ("d", 0.25), ("z", 0.0)])
def test_reciprocal_rank_over_full_list(target, rr):
    assert M.reciprocal_rank(RANKED, target) == rr


def test_user_metrics_keys_and_values():
    m = M.user_metrics(RANKED, "c", [1, 5, 10, 20])
    assert list(m) == M.metric_names([1, 5, 10, 20])
    assert m["recall@1"] == 0.0 and m["hr@1"] == 0.0
    assert m["recall@5"] == 1.0 and m["ndcg@5"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(1 / 3)
    assert "ndcg@1" not in m  # equals hr@1


def test_bad_k_is_config_error():
    with pytest.raises(ConfigError, match="`k` must be >= 1, got 0"):
        M.recall_at_k(RANKED, "a", 0)


def test_aggregate_means_over_users():
    per = [M.user_metrics(RANKED, "a", [1, 5]), M.user_metrics(RANKED, "z", [1, 5])]
    agg = M.aggregate(per)
    assert agg["recall@1"] == 0.5 and agg["mrr"] == 0.5
    with pytest.raises(ConfigError):
        M.aggregate([])


@pytest.mark.parametrize("position", [1, 5, 10, 20])
def test_place_at_fixes_target_position_and_keeps_others(position):
    cands = [str(i) for i in range(20)]
    placed = M.place_at(cands, "7", position)
    assert placed.index("7") == position - 1
    assert sorted(placed) == sorted(cands)
    assert [c for c in placed if c != "7"] == [c for c in cands if c != "7"]


def test_complete_ordering_appends_unranked_in_given_order():
    full, n = M.complete_ordering(["c", "x", "a", "c"], ["a", "b", "c", "d"])
    assert full == ["c", "a", "b", "d"] and n == 2  # off-candidate and duplicate dropped


def test_latency_summary():
    s = M.latency_summary([float(i) for i in range(1, 101)])
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05)
    assert M.latency_summary([])["p50"] == 0.0


def test_calibration_error_by_hand():
    # bin 0.9: 2 users, 1 hit -> |0.5 - 0.9| ; bin 0.1: 2 users, 0 hits -> |0 - 0.1|
    out = M.calibration([0.9, 0.9, 0.1, 0.1], [True, False, False, False])
    assert out["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert out["mean_top1_prob"] == pytest.approx(0.5) and out["hr@1"] == 0.25 and out["n"] == 4
    assert M.calibration([1.0, 0.0], [True, False])["ece"] == 0.0  # p = 1.0 falls in the last bin
    with pytest.raises(ConfigError, match="one correctness flag"):
        M.calibration([0.5], [])
    with pytest.raises(ConfigError, match="probabilities"):
        M.calibration([1.5], [True])


def test_paired_bootstrap_interval_and_a_constant_difference():
    from reasonrec.finetune.evaluation.metrics import paired_bootstrap

    rng = np.random.default_rng(1)
    a, b = rng.random(400), rng.random(400)
    mean, lo, hi = paired_bootstrap(a, b, resamples=500, seed=3)
    assert lo < mean < hi and mean == pytest.approx(float((a - b).mean()))
    assert paired_bootstrap(b + 0.25, b, resamples=200) == pytest.approx((0.25, 0.25, 0.25))  # no spread
    assert paired_bootstrap([], []) == (0.0, 0.0, 0.0)


def test_git_commit_dirty_only_for_the_given_paths(tmp_path):
    import subprocess

    from reasonrec.finetune.evaluation.report import git_commit

    git = lambda *c: subprocess.run(["git", "-C", str(tmp_path), *c], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    for folder in ("code", "other"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "f.txt").write_text("1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    head = git("rev-parse", "HEAD").stdout.decode().strip()
    assert git_commit(tmp_path / "code") == head
    (tmp_path / "other" / "f.txt").write_text("2\n")
    # Paths are read from the repository root, wherever the call runs from.
    assert git_commit(tmp_path / "code", paths=["code"]) == head
    assert git_commit(tmp_path / "code", paths=["other"]) == head + "-dirty"
    assert git_commit(tmp_path / "code") == head + "-dirty"
