"""Ranking metrics for one held-out target per user, and their aggregation over users.

With a single relevant item, Recall@K = HR@K (1 if the target is in the top K, else 0), NDCG@K =
1/log2(rank + 1) when rank <= K (the ideal DCG is 1), and MRR = 1/rank over the whole ranked list given;
a target that is absent from the list counts 0 at every K (protocols.md: "a miss").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from reasonrec.errors import ConfigError

DEFAULT_K = (1, 5, 10, 20)


def target_rank(ranked: Sequence[str], target: str) -> int | None:
    """1-based position of `target` in `ranked`, or None when it is absent."""
    for i, item in enumerate(ranked):
        if item == target:
            return i + 1
    return None


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"`k` must be >= 1, got {k}")


def recall_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1.0 if the target is among the first k items, else 0.0 (equals HR@k for one target).

    Raises:
        ConfigError: k < 1.
    """
    _check_k(k)
    r = target_rank(ranked, target)
    return 1.0 if r is not None and r <= k else 0.0


def ndcg_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1/log2(rank + 1) if the target is at rank <= k, else 0.0.

    Raises:
        ConfigError: k < 1.
    """
    _check_k(k)
    r = target_rank(ranked, target)
    return 1.0 / math.log2(r + 1) if r is not None and r <= k else 0.0


def reciprocal_rank(ranked: Sequence[str], target: str) -> float:
    """1/rank over the full list; 0.0 when the target is absent."""
    r = target_rank(ranked, target)
    return 1.0 / r if r is not None else 0.0


def metric_names(k_list: Iterable[int] = DEFAULT_K) -> list[str]:
    """Keys produced by `user_metrics`: recall@K, ndcg@K (K > 1), hr@1, mrr."""
    ks = sorted(set(k_list))
    return [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks if k > 1] + ["hr@1", "mrr"]


def user_metrics(ranked: Sequence[str], target: str, k_list: Iterable[int] = DEFAULT_K) -> dict[str, float]:
    """Every metric of `metric_names(k_list)` for one user.

    Args:
        ranked: the method's ordering, best first (any length; items after the target do not matter).
        target: the held-out item.
        k_list: cut-offs.

    Returns:
        {"recall@1": ..., "ndcg@5": ..., "hr@1": ..., "mrr": ...}. NDCG@1 equals HR@1 and is left out.

    Raises:
        ConfigError: a cut-off < 1.
    """
    ks = sorted(set(k_list))
    for k in ks:
        _check_k(k)
    r = target_rank(ranked, target)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = 1.0 if r is not None and r <= k else 0.0
    for k in ks:
        if k > 1:
            out[f"ndcg@{k}"] = 1.0 / math.log2(r + 1) if r is not None and r <= k else 0.0
    out["hr@1"] = 1.0 if r == 1 else 0.0
    out["mrr"] = 1.0 / r if r is not None else 0.0
    return out


def aggregate(per_user: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over users (every user weighs the same).

    Raises:
        ConfigError: no users, or users with different metric keys.
    """
    if not per_user:
        raise ConfigError("cannot aggregate metrics over 0 users")
    keys = list(per_user[0])
    if any(list(m) != keys for m in per_user):
        raise ConfigError("per-user metric dicts have different keys; compute them with one k_list")
    return {k: float(np.mean([m[k] for m in per_user])) for k in keys}


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 (the reported pair) plus p5 / p25 / p75 / mean of per-user latencies in ms.

    The extra percentiles let the latency plot be redrawn from the results file alone.
    """
    if not ms:
        return {"p50": 0.0, "p95": 0.0, "p5": 0.0, "p25": 0.0, "p75": 0.0, "mean": 0.0}
    a = np.asarray(ms, dtype=float)
    out = {f"p{q}": float(np.percentile(a, q)) for q in (50, 95, 5, 25, 75)}
    out["mean"] = float(a.mean())
    return out


def place_at(candidates: Sequence[str], target: str, position: int) -> list[str]:
    """Move `target` to 1-based `position`, keeping the other candidates in their relative order.

    Why: the position-sensitivity runs (LLMRank's order bias) ask the same question with the target
    fixed at positions 1, 5, 10, 20; everything else about the candidate list stays the same.

    Raises:
        ConfigError: target not in candidates, or position outside 1..len(candidates).
    """
    if target not in candidates:
        raise ConfigError(f"target {target!r} is not among the {len(candidates)} candidates")
    if not 1 <= position <= len(candidates):
        raise ConfigError(f"`position` must be in 1..{len(candidates)}, got {position}")
    rest = [c for c in candidates if c != target]
    return [*rest[: position - 1], target, *rest[position - 1 :]]


def complete_ordering(ranked: Sequence[str], candidates: Sequence[str]) -> tuple[list[str], int]:
    """Append the candidates a method did not rank, in their given order, after its own ranking.

    Why: metrics@20 over 20 candidates need a full ordering, while a ranker may return k < N items;
    the tail keeps the retriever's (or the shuffled cand20) order, and the count is reported.

    Returns:
        (full ordering restricted to the candidates, without duplicates; number of items appended).
    """
    cand = set(candidates)
    seen: set[str] = set()
    head = []
    for item in ranked:
        if item in cand and item not in seen:
            seen.add(item)
            head.append(item)
    tail = [c for c in candidates if c not in seen]
    return head + tail, len(tail)


def calibration(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> dict[str, float]:
    """Expected calibration error of top-1 probabilities: how far "p = 0.8" is from 80% hits.

    Args:
        confidence: per user, the probability the ranker gave its top-1 item.
        correct: per user, whether that item is the target.
        bins: equal-width probability bins.

    Returns:
        {"ece": sum over bins of (users in bin / users) * |hit rate - mean confidence|,
         "mean_top1_prob": mean confidence, "hr@1": hit rate, "n": users}.

    Raises:
        ConfigError: no users, different lengths, or a probability outside [0, 1].
    """
    if not confidence or len(confidence) != len(correct):
        raise ConfigError(f"need one correctness flag per confidence, got {len(confidence)} and {len(correct)}")
    p = np.asarray(confidence, dtype=float)
    y = np.asarray(correct, dtype=float)
    if ((p < 0) | (p > 1)).any():
        raise ConfigError("confidences must be probabilities in [0, 1]")
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(y[which == b].mean() - p[which == b].mean()) * (which == b).mean() for b in np.unique(which))
    return {"ece": float(ece), "mean_top1_prob": float(p.mean()), "hr@1": float(y.mean()), "n": float(len(p))}


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a - b over paired per-user values, with a 95% percentile bootstrap interval over users."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
