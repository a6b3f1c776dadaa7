"""Classical rankers beside the LLM: random, popularity, item-kNN, retrieval order, RecBole score tables.

Every ranker has the same small interface as the LLM methods: given (user, history, candidates, k) it
returns an ordering of the candidates, best first. Classical rankers order *all* the candidates they are
given (callers cut at k), so MRR is computed over the whole list. Ties keep the candidates' given order
(a stable sort), which makes every ranker deterministic.

Nothing here sees a validation or test item except as part of the history the caller passes in: the
statistics (popularity counts, item-item co-occurrence) come from `Split.train_counts` / train sides.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reasonrec.errors import ConfigError, DataError
from reasonrec.finetune.evaluation.split import Split, user_seed
from reasonrec.retrieval.types import natural_key


class Ranker(Protocol):
    """Anything that reorders a given candidate list for one user."""

    name: str

    def rank(self, user: str, history: Sequence[str], candidates: Sequence[str], k: int) -> list[str]:
        """Candidates ordered best first (classical rankers return all of them)."""
        ...


def _order_by(scores: np.ndarray, candidates: Sequence[str]) -> list[str]:
    order = np.argsort(-scores, kind="stable")  # stable: ties keep the given order
    return [candidates[i] for i in order]


class RandomRanker:
    """A uniformly random order per user (seeded from seed + user id)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def rank(self, user: str, history: Sequence[str], candidates: Sequence[str], k: int) -> list[str]:
        rng = np.random.default_rng(user_seed(self.seed + 7919, user))  # offset: not the cand20 stream
        return [candidates[i] for i in rng.permutation(len(candidates))]


class PopularityRanker:
    """Most interacted-with items first, counted on the train side of the split only."""

    name = "popularity"

    def __init__(self, split: Split):
        self.counts = split.train_counts()

    def rank(self, user: str, history: Sequence[str], candidates: Sequence[str], k: int) -> list[str]:
        scores = np.array([self.counts.get(c, 0) for c in candidates], dtype=float)
        return _order_by(scores, candidates)


class ItemKNNRanker:
    """Item-item cosine over train co-occurrence; a candidate scores its summed similarity to the
    user's `window` most recent history items (ties broken by train popularity, then given order).

    Args:
        split: the split whose train sides define co-occurrence.
        items: catalogue ids (the similarity matrix is dense: 1,682 items is 11 MB in float32).
        window: how many of the latest history items vote; recent taste predicts the next item best.
    """

    name = "itemknn"

    def __init__(self, split: Split, items: Sequence[str], window: int = 20):
        if window < 1:
            raise ConfigError(f"`window` must be >= 1, got {window}")
        self.window = window
        self.index = {iid: n for n, iid in enumerate(items)}
        n_items = len(self.index)
        user_rows = [[self.index[i] for i in s.train if i in self.index] for s in split.users.values()]
        x = np.zeros((len(user_rows), n_items), dtype=np.float32)
        for r, cols in enumerate(user_rows):
            x[r, cols] = 1.0
        co = x.T @ x  # co-occurrence counts
        norms = np.sqrt(np.maximum(np.diag(co), 1e-12))
        sim = co / norms[:, None] / norms[None, :]
        np.fill_diagonal(sim, 0.0)
        self.sim = sim.astype(np.float32)
        counts = split.train_counts()
        pop = np.array([counts.get(i, 0) for i in items], dtype=np.float64)
        self._tiebreak = pop / (pop.max() + 1.0) * 1e-6  # smaller than any nonzero similarity step

    def rank(self, user: str, history: Sequence[str], candidates: Sequence[str], k: int) -> list[str]:
        recent = [self.index[h] for h in history[-self.window :] if h in self.index]
        cols = np.array([self.index.get(c, -1) for c in candidates])
        known = cols >= 0
        scores = np.full(len(candidates), -1.0)
        if recent:
            scores[known] = self.sim[np.ix_(recent, cols[known])].sum(axis=0)
        else:
            scores[known] = 0.0
        scores[known] += self._tiebreak[cols[known]]
        return _order_by(scores, candidates)


class RetrievalRanker:
    """The candidate generator's own order.

    Args:
        score_fn: None keeps the given order (protocol full: the candidates *are* the retriever's
            ranked top-N); otherwise a function (history, candidates) -> similarity scores, used to
            order candidates that came from elsewhere (cand20).
    """

    name = "retrieval"

    def __init__(self, score_fn: Callable[[Sequence[str], Sequence[str]], Sequence[float]] | None = None):
        self.score_fn = score_fn

    def rank(self, user: str, history: Sequence[str], candidates: Sequence[str], k: int) -> list[str]:
        if self.score_fn is None:
            return list(candidates)
        return _order_by(np.asarray(self.score_fn(history, candidates), dtype=float), candidates)


class FeatureRanker:
    """Orders candidates by one retrieval feature: a source's reciprocal-rank term, or their fused sum.

    Args:
        name: the method name (`source-<name>` or `fusion`).
        source: the agent's fused candidate source.
        feature: the feature key (`collaborative`, `cooccurrence`, `semantic` or `fusion`).
    """

    def __init__(self, name: str, source: Any, feature: str):
        self.name, self.source, self.feature = name, source, feature

    def rank(self, user: str, history: Sequence[str], candidates: Sequence[str], k: int) -> list[str]:
        from reasonrec.agent.candidates import ranking_features

        feats = ranking_features(self.source, list(history), list(candidates))
        return _order_by(np.array([f.get(self.feature, 0.0) for f in feats]), candidates)


RECBOLE_MODELS = {"recbole-sasrec": "SASRec", "recbole-bpr": "BPR"}  # method name -> RecBole model


class ScoreTableRanker:
    """Orders candidates by a trained model's exported test-stage scores (RecBole SASRec / BPR).

    The table comes from bench/recbole_peer.py: per user, RecBole's full-catalogue scores for the
    user's test prediction. The history argument is unused: the model saw the same history through
    RecBole (the split check in `load_score_table` makes sure of that).
    """

    def __init__(self, name: str, users: Sequence[str], items: Sequence[str], scores: np.ndarray):
        self.name = name
        self.row = {u: n for n, u in enumerate(users)}
        self.col = {i: n for n, i in enumerate(items)}
        self.scores = scores

    def rank(self, user: str, history: Sequence[str], candidates: Sequence[str], k: int) -> list[str]:
        r = self.row.get(user)
        if r is None:
            raise DataError(f"{self.name}: no exported scores for user {user!r}; rerun bench/recbole_peer.py")
        cols = [self.col.get(c, -1) for c in candidates]
        s = np.array([self.scores[r, c] if c >= 0 else -np.inf for c in cols], dtype=float)
        s[np.isnan(s)] = -np.inf
        return _order_by(s, candidates)


def load_score_table(path: Path, name: str, split: Split) -> tuple[ScoreTableRanker, dict[str, object]]:
    """Load a RecBole score export and check that RecBole's split is ours.

    Args:
        path: the .npz written by bench/recbole_peer.py.
        name: method name for the ranker ("recbole-sasrec").
        split: our split; RecBole's validation and test item must equal ours for every user.

    Returns:
        (ranker, split check {"n_users", "n_mismatch", "mismatched" (first 20)}).

    Raises:
        ConfigError: the file is missing (with the command that writes it).
    """
    if not path.is_file():
        raise ConfigError(
            f"method {name!r} needs RecBole's exported scores at {path}; create them with "
            f"`.venv-bench/bin/python bench/recbole_peer.py --model {RECBOLE_MODELS.get(name, name)}`"
        )
    with np.load(path) as z:
        users = [str(u) for u in z["users"]]
        items = [str(i) for i in z["items"]]
        scores = z["scores"].astype(np.float32)
        valid = [str(v) for v in z["valid"]]
        test = [str(t) for t in z["test"]]
    theirs = dict(zip(users, zip(valid, test, strict=True), strict=True))
    mismatched = [u for u in split.user_ids() if theirs.get(u) != (split.users[u].valid, split.users[u].test)]
    check = {"n_users": len(split.users), "n_mismatch": len(mismatched), "mismatched": mismatched[:20]}
    return ScoreTableRanker(name, users, items, scores), check


def cosine_fn(gen: Any) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """(history, candidates) -> cosine of each candidate to the text profile of the history."""

    def cosine(history: Sequence[str], candidates: Sequence[str]) -> list[float]:
        prof, vecs = gen.profile(list(history)), gen.vectors(candidates)
        return [float(prof @ vecs[c]) for c in candidates]

    return cosine


def build_ranker(
    method: str,
    protocol: str,
    split: Split,
    agent: Any,
    agent_cfg: Any,
    *,
    seed: int = 0,
    recbole_dir: Path = Path("~/.cache/reasonrec/bench/recbole"),
    itemknn_window: int = 20,
    batch_size: int | None = None,
    adapter: str | None = None,
) -> tuple[Any, dict[str, Any] | None]:
    """The ranker of one method name (a `-all` suffix changes the candidates, not the ranker).

    Args:
        method: a name from `reasonrec.finetune.evaluation.run.valid_methods`.
        protocol: "full" (retrieval keeps the retriever's order) or "cand20" (retrieval scores by cosine).
        split: the leave-one-out split (train-side statistics; RecBole split check).
        agent: a RecommenderAgent: its dataset, and its candidate source for the retrieval row.
        agent_cfg: the AgentConfig that LLM rows start from.
        seed, recbole_dir, itemknn_window, batch_size, adapter: see `EvalConfig`.

    Returns:
        (a classical `Ranker` or, for reasonrec-* rows, a RecommenderAgent; RecBole's training record
        with our split check for recbole-* rows, else None).

    Raises:
        ConfigError: RecBole scores missing, or RecBole's split differs from ours.
    """
    name = method.removesuffix("-all")
    if name == "random":
        return RandomRanker(seed), None
    if name == "popularity":
        return PopularityRanker(split), None
    if name == "itemknn":
        return ItemKNNRanker(split, sorted(agent.dataset.items, key=natural_key), window=itemknn_window), None
    if name == "fusion" or name.startswith("source-"):
        return FeatureRanker(name, agent.candidate_source, name.removeprefix("source-")), None
    if name == "retrieval":  # the text retriever alone, as in earlier rounds
        gen = agent._semantic_source()
        if protocol == "full":
            return RetrievalRanker(cosine_fn(gen)), None

        return RetrievalRanker(cosine_fn(gen)), None
    if name in RECBOLE_MODELS:
        stem = Path(recbole_dir).expanduser() / RECBOLE_MODELS[name].lower()
        ranker, check = load_score_table(stem.with_suffix(".npz"), name, split)
        meta = _recbole_meta(stem.with_suffix(".json"))
        meta["split_check"] = check  # recomputed here with reasonrec's Split: the authoritative check
        meta["metrics_note"] = _MASK_NOTES[name]
        if check["n_mismatch"]:
            raise ConfigError(f"{name}: RecBole's split differs from ours for {check['n_mismatch']} users")
        return ranker, meta
    from reasonrec.agent.api import RecommenderAgent

    _, kind, mode = method.split("-", 2)  # reasonrec-<zeroshot|lora>-<mode>
    cfg = agent_cfg.model_copy(deep=True)
    cfg.ranker.mode = mode
    if batch_size is not None:  # the flag overrides the agent config only when it was given
        cfg.ranker.batch_size = batch_size
    cfg.model.adapter = adapter if kind == "lora" else None
    # The split's sources (fitted on pre-test items): ranking features and reasons' co-watch counts see no test item.
    return RecommenderAgent(cfg, dataset=agent.dataset, candidate_source=agent.candidate_source), None


_MASK_NOTES = {
    "recbole-sasrec": "RecBole's own evaluator does not mask already-seen items for sequential models, so "
    "recbole_test_metrics let SASRec spend slots on the history; our rows rank unseen items only (the "
    "protocol), hence higher numbers from the same scores",
    "recbole-bpr": "RecBole masks the train and validation items, as our rows do: -all equals its evaluator",
}


def _recbole_meta(path: Path) -> dict[str, Any]:
    keep = ("model", "recbole_version", "epochs_trained", "max_epochs", "stopped_by", "patience",
            "train_wall_s", "total_wall_s", "recbole_test_metrics", "best_valid", "timestamp_note",
            "config", "threads")  # fmt: skip
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: data[k] for k in keep if k in data}
