"""Leave-one-out split by time (shared/protocols.md): per user, last item = test, second-to-last = valid.

`Dataset.histories` already sorts each user's interactions by (timestamp, item id), so ties are broken
the same way everywhere (RecBole's peer run is fed the same order, see bench/recbole_peer.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reasonrec.errors import ConfigError, UnknownUserError
from reasonrec.retrieval.types import Dataset, natural_key

Stage = Literal["valid", "test"]
MIN_INTERACTIONS = 3  # one train item + validation + test


@dataclass(frozen=True)
class UserSplit:
    """One user's items: `train` oldest first, then the validation and the test item."""

    train: tuple[str, ...]
    valid: str
    test: str


@dataclass
class Split:
    """Per-user leave-one-out split of a dataset."""

    dataset: str
    dataset_sha256: str
    users: dict[str, UserSplit]
    n_dropped: int = 0  # users with fewer than MIN_INTERACTIONS interactions
    _train_counts: Counter[str] | None = field(default=None, repr=False)

    def user_ids(self) -> list[str]:
        """Kept user ids in natural order ("2" before "10")."""
        return sorted(self.users, key=natural_key)

    def get(self, user: str) -> UserSplit:
        """The split of one user.

        Raises:
            UnknownUserError: the user is not in the split (unknown, or dropped for too few interactions).
        """
        try:
            return self.users[str(user)]
        except KeyError:
            raise UnknownUserError(
                f"user {user!r} is not in the split of {self.dataset!r} ({len(self.users)} users; "
                f"{self.n_dropped} dropped for having fewer than {MIN_INTERACTIONS} interactions)"
            ) from None

    def eval_history(self, user: str, stage: Stage) -> list[str]:
        """The history the model sees when predicting `stage`'s item.

        Args:
            user: user id.
            stage: "valid" -> the train items; "test" -> train items + the validation item.

        Returns:
            Item ids oldest first.

        Raises:
            ConfigError: stage is neither "valid" nor "test".
            UnknownUserError: the user is not in the split.
        """
        s = self.get(user)
        if stage == "valid":
            return list(s.train)
        if stage == "test":
            return [*s.train, s.valid]
        raise ConfigError(f"`stage` must be 'valid' or 'test', got {stage!r}")

    def target(self, user: str, stage: Stage) -> str:
        """The held-out item of `stage` for `user`."""
        s = self.get(user)
        if stage not in ("valid", "test"):
            raise ConfigError(f"`stage` must be 'valid' or 'test', got {stage!r}")
        return s.valid if stage == "valid" else s.test

    def seen(self, user: str) -> frozenset[str]:
        """Every item the user interacted with, in any stage (cand20 negatives must avoid these)."""
        s = self.get(user)
        return frozenset((*s.train, s.valid, s.test))

    def train_counts(self) -> Counter[str]:
        """Interaction counts per item from the train side only (no validation or test item).

        Why not count validation items on test: the brief for popularity is "train-side counts only";
        it keeps the classical baselines on exactly what RecBole's models are trained on.
        """
        if self._train_counts is None:
            self._train_counts = Counter(i for s in self.users.values() for i in s.train)
        return self._train_counts


def user_seed(seed: int, user: str) -> int:
    """A per-user seed derived from (seed, user id), stable across runs, subsets and Python versions.

    Why a hash and not `hash()`: Python salts str hashes per process.
    """
    digest = hashlib.sha256(f"{seed}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def leave_one_out(dataset: Dataset) -> Split:
    """Split every user's time-ordered history into train / validation / test.

    Args:
        dataset: a loaded Dataset; its `histories` are sorted by (timestamp, item id).

    Returns:
        The Split; users with fewer than 3 interactions are dropped and counted in `n_dropped`.
    """
    users: dict[str, UserSplit] = {}
    dropped = 0
    for user, rows in dataset.histories.items():
        ids = [r.item_id for r in rows]
        if len(ids) < MIN_INTERACTIONS:
            dropped += 1
            continue
        users[user] = UserSplit(train=tuple(ids[:-2]), valid=ids[-2], test=ids[-1])
    return Split(dataset=dataset.name, dataset_sha256=dataset.sha256, users=users, n_dropped=dropped)


def cand20_candidates(split: Split, user: str, catalogue: list[str], seed: int, n: int = 20) -> list[str]:
    """The protocol-cand20 list: the test item + (n-1) never-seen items, uniformly drawn, shuffled.

    The generator is seeded from (seed, user id), so a user's list does not depend on which other users
    are evaluated (a 100-user subset sees the same lists as the full run).

    Args:
        split: the split (the target is the user's test item; every seen item is excluded).
        user: user id.
        catalogue: all item ids, in a fixed order (the draw indexes into it).
        seed: the run's seed.
        n: list length.

    Returns:
        n distinct item ids containing the target exactly once.

    Raises:
        ConfigError: fewer than n-1 unseen items exist.
    """
    seen = split.seen(user)
    pool = [i for i in catalogue if i not in seen]
    if len(pool) < n - 1:
        raise ConfigError(f"user {user!r} has only {len(pool)} unseen items; cand20 needs {n - 1}")
    rng = np.random.default_rng(user_seed(seed, user))
    picks = rng.choice(len(pool), size=n - 1, replace=False)
    cands = [split.get(user).test, *(pool[int(i)] for i in picks)]
    return [cands[int(i)] for i in rng.permutation(n)]
