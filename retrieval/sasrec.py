"""cornac's SASRec, trained from interactions, saved as safetensors + JSON, and encoding histories.

Why cornac 3.0.1: best measured quality of the libraries tried on our split (shared/collaborative.md:
NDCG@10 0.092 vs RecTools 0.078, implicit BPR 0.046), it installs beside numpy 2 with plain torch (RecTools
pins numpy<2 and Lightning), and it trains in minutes on 2 cores.

Training runs cornac's own network (`SASRecModel`), batch iterator (`session_seq_iter`) and loss through a
loop that mirrors `SASRec.fit` statement for statement (tests/test_collaborative.py checks the weights
equal cornac's `fit` bit for bit), because `fit` rebuilds the network on every call and cannot stop
early: here each epoch is scored on the held-out last item of every user (NDCG@10 over the whole
catalogue minus the history) and training stops after `patience` epochs without a gain, keeping the best.

The model reads private cornac members, `SASRecModel._encode` (user vector of a left-padded sequence)
and `item_emb` (item vectors; score = user . item); they are pinned by `LIBRARY_VERSION` and tested.
Artifacts are never pickled: weights in `model.safetensors`, everything needed to rebuild them
(library + version, config, item id map, interactions hash, epochs, validation curve) in `model.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from reasonrec.errors import ConfigError, DataError

from .config import CollaborativeConfig

LIBRARY = "cornac"
LIBRARY_VERSION = "3.0.1"  # the private members used here (_encode, item_emb, pad_idx) are tested at this version
FORMAT = "sasrec-v1"


class SASRecInfo(BaseModel):
    """What built a trained model; stored as model.json beside the weights."""

    format: str = FORMAT
    library: str = LIBRARY
    library_version: str = LIBRARY_VERSION
    key: str = Field(description="Cache key: hash of interactions hash + config + library version.")
    interactions_hash: str
    config: dict[str, Any]
    item_ids: list[str] = Field(description="Row r of the item embedding is item_ids[r]; row len() is padding.")
    n_users: int
    n_valid_users: int
    epochs_trained: int
    best_epoch: int
    val_ndcg10: list[float] = Field(description="Validation NDCG@10 after each epoch.")
    train_s: float


def sequences_hash(sequences: Mapping[str, Sequence[str]]) -> str:
    """Content hash of per-user item sequences (users sorted, each sequence in its order).

    Why the sequences and not the raw rows: they are exactly what the model is trained on, so the hash
    changes when and only when the training input does.
    """
    h = hashlib.sha256()
    for user in sorted(sequences):
        h.update(json.dumps([user, [str(i) for i in sequences[user]]]).encode())
    return h.hexdigest()[:16]


def model_key(interactions_hash: str, config: CollaborativeConfig) -> str:
    """The cache key of a model trained on these interactions with this config and library version."""
    payload = json.dumps([FORMAT, LIBRARY, LIBRARY_VERSION, interactions_hash, config.cache_fields()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class SASRecModel:
    """A trained SASRec network plus its id map: encodes histories into user vectors.

    Build with `train_sasrec`, `load` or `load_or_train`.
    """

    def __init__(self, net: Any, info: SASRecInfo):
        self.net = net.eval()
        self.info = info
        self.config = CollaborativeConfig(**info.config)
        self.index = {i: r for r, i in enumerate(info.item_ids)}
        self.pad = len(info.item_ids)

    def item_vectors(self) -> np.ndarray:
        """(n_items, dim) float32 item vectors, row r = `info.item_ids[r]` (padding row dropped)."""
        return self.net.item_emb.weight[: self.pad].detach().cpu().numpy().astype(np.float32)

    def encode(self, histories: Sequence[Sequence[str]], batch_size: int = 256) -> np.ndarray:
        """User vectors of histories (oldest first); ids the model does not know are skipped.

        A history with no known item encodes the all-padding sequence; callers that need a real signal
        check `known()` first.

        Returns:
            (len(histories), dim) float32; score of an item = user vector . item vector.
        """
        import torch

        L = self.config.max_len
        rows = []
        for h in histories:
            idx = [self.index[i] for i in h if i in self.index][-L:]
            rows.append([self.pad] * (L - len(idx)) + idx)
        out = []
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                x = torch.tensor(rows[s : s + batch_size], dtype=torch.long)
                out.append(self.net._encode(x).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.config.embedding_dim), np.float32)

    def known(self, history: Sequence[str]) -> list[str]:
        """The history items the model has vectors for."""
        return [i for i in history if i in self.index]

    def save(self, folder: Path) -> Path:
        """Write model.safetensors + model.json into `folder` (created); JSON last, so a crash leaves no valid pair.

        Returns:
            The folder.
        """
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / "model.safetensors"))
        tmp = folder / "model.json.tmp"
        tmp.write_text(self.info.model_dump_json(indent=1))
        tmp.replace(folder / "model.json")
        return folder

    @classmethod
    def load(cls, folder: Path, expect_interactions: str | None = None) -> SASRecModel:
        """Rebuild from model.json + model.safetensors (no pickle involved).

        Args:
            folder: what `save` wrote.
            expect_interactions: the hash of the interactions the caller serves; a different stored hash
                is an error, never a silently stale model.

        Raises:
            DataError: missing/unreadable files, another format or library version, or stale interactions.
        """
        from safetensors.torch import load_file

        meta, weights = folder / "model.json", folder / "model.safetensors"
        if not meta.is_file() or not weights.is_file():
            raise DataError(f"no trained SASRec model in {folder} (expected model.json + model.safetensors)")
        try:
            info = SASRecInfo.model_validate_json(meta.read_text())
        except ValueError as e:
            raise DataError(f"unreadable {meta}: {e}") from e
        if (info.format, info.library, info.library_version) != (FORMAT, LIBRARY, LIBRARY_VERSION):
            raise DataError(
                f"{meta} was written by {info.library} {info.library_version} ({info.format}); this reasonrec "
                f"reads {LIBRARY} {LIBRARY_VERSION} ({FORMAT}): retrain with `reasonrec index`"
            )
        if expect_interactions is not None and info.interactions_hash != expect_interactions:
            raise DataError(
                f"the SASRec model in {folder} was trained on interactions {info.interactions_hash}, but the "
                f"loaded interactions hash to {expect_interactions}: it is stale; retrain with `reasonrec index`"
            )
        net = _build_net(CollaborativeConfig(**info.config), len(info.item_ids))
        net.load_state_dict(load_file(str(weights)), strict=True)
        return cls(net, info)


def train_sasrec(
    sequences: Mapping[str, Sequence[str]],
    config: CollaborativeConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> SASRecModel:
    """Train SASRec, holding out each user's last item (users with >= 3 items) to pick the epoch.

    With `config.holdout` False nothing is held out and exactly `max_epochs` are run (a refit).

    Args:
        sequences: user id -> item ids, oldest first.
        config: model and training settings; None = defaults.
        progress: called as progress(batches done, batches at most) after every batch.
        on_epoch: called as on_epoch(epoch, mean loss, validation NDCG@10) after every epoch.

    Returns:
        The model at its best validation epoch (the last one when no user can be held out).

    Raises:
        DataError: fewer than two items in every sequence. ConfigError: cornac is missing.
    """
    import torch

    try:
        import cornac
        from cornac.data import SequentialDataset
        from cornac.models import SASRec
        from cornac.models.seq_utils import session_seq_iter
        from cornac.models.seq_utils.losses import get_loss_function
    except ImportError as e:
        raise ConfigError(f"the collaborative source needs `pip install cornac=={LIBRARY_VERSION}`") from e
    if cornac.__version__ != LIBRARY_VERSION:
        raise ConfigError(f"cornac {cornac.__version__} is installed; reasonrec needs cornac=={LIBRARY_VERSION}")
    config = config or CollaborativeConfig()
    started = time.perf_counter()
    train, valid = {}, {}
    for user, seq in sequences.items():
        seq = [str(i) for i in seq]
        if len(seq) >= 3 and config.holdout:
            train[user], valid[user] = seq[:-1], seq[-1]
        elif len(seq) >= 2:
            train[user] = seq
    if not train:
        raise DataError("cannot train SASRec: no user has two or more interactions")
    # Row order is the sequence (cornac sorts nothing); positions stand in for timestamps.
    rows = [(u, u, i, t) for u, seq in train.items() for t, i in enumerate(seq)]
    ds = SequentialDataset.build(rows, fmt="USIT", seed=config.seed)
    rec = SASRec(**_cornac_kwargs(config), seed=config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        # --- mirrors cornac 3.0.1 SASRec.fit ---
        super(SASRec, rec).fit(ds)
        torch.manual_seed(config.seed)
        rec.pad_idx = rec.total_items
        net = _build_net(config, rec.total_items, seeded=False)
        rec.model = net
        loss_fn = get_loss_function(config.loss)
        loss_kwargs = dict(bpreg=rec.bpreg, elu_param=rec.elu_param, n_sample=config.n_sample)
        opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate, betas=(0.9, 0.98))
        n_prefixes = sum(len(s) - 1 for s in train.values())
        per_epoch = max(1, math.ceil(n_prefixes / config.batch_size))
        item_ids = [str(i) for i in rec.iid_map]
        info = dict(interactions_hash=sequences_hash(sequences), item_ids=item_ids)
        model = SASRecModel(net, _info(config, info, len(sequences), len(valid), 0, 0, [], 0.0))
        curve: list[float] = []
        best, best_state, best_epoch, done = -1.0, None, 0, 0
        for epoch in range(1, config.max_epochs + 1):
            net.train()
            total, cnt = 0.0, 0
            for _, hist, out in session_seq_iter(
                ds,
                pad_index=rec.pad_idx,
                batch_size=config.batch_size,
                max_len=config.max_len,
                n_sample=config.n_sample,
                sample_alpha=rec.sample_alpha,
                rng=rec.rng,
                shuffle=True,
            ):
                done += 1
                if len(hist) < 2:
                    continue
                hist_t = torch.tensor(hist, dtype=torch.long)
                out_t = torch.tensor(out, dtype=torch.long)
                net.zero_grad()
                loss = loss_fn(net(None, hist_t, out_t), out_iids=out_t, batch_size=len(hist), **loss_kwargs)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(hist)
                cnt += len(hist)
                if progress is not None:
                    progress(min(done, per_epoch * config.max_epochs), per_epoch * config.max_epochs)
            # --- end of the mirrored loop; validation and early stopping are ours ---
            net.eval()
            score = _val_ndcg10(model, train, valid) if valid else float(epoch)
            curve.append(score)
            if on_epoch is not None:
                on_epoch(epoch, total / max(cnt, 1), score)
            if score > best:
                best, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif config.patience and epoch - best_epoch >= config.patience:
                break  # patience 0 = no early stopping: all max_epochs, best kept
        if best_state is not None:
            net.load_state_dict(best_state)
    finally:
        torch.set_num_threads(threads)
    if progress is not None:
        progress(per_epoch * config.max_epochs, per_epoch * config.max_epochs)
    val = curve if valid else []
    elapsed = time.perf_counter() - started
    return SASRecModel(net, _info(config, info, len(sequences), len(valid), len(curve), best_epoch, val, elapsed))


def load_or_train(
    sequences: Mapping[str, Sequence[str]],
    config: CollaborativeConfig | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> tuple[SASRecModel, bool]:
    """The cached model for these interactions and settings, trained (and saved) when there is none.

    The cache folder is named by `model_key`, so changed interactions, settings or cornac version
    select another folder and retrain: a stale model is never served.

    Args:
        sequences: user id -> item ids, oldest first.
        config: settings; None = defaults.
        cache_dir: parent folder; None = <REASONREC_HOME>/collaborative.
        progress, on_epoch: see `train_sasrec`.

    Returns:
        (model, whether it was trained now).
    """
    from reasonrec.paths import home

    config = config or CollaborativeConfig()
    cached = cached_model(sequences, config, cache_dir)
    if cached is not None:
        return cached, False
    folder = (cache_dir or home() / "collaborative") / model_key(sequences_hash(sequences), config)
    model = train_sasrec(sequences, config, progress=progress, on_epoch=on_epoch)
    model.save(folder)
    return model, True


def cached_model(
    sequences: Mapping[str, Sequence[str]], config: CollaborativeConfig | None = None, cache_dir: Path | None = None
) -> SASRecModel | None:
    """The model `load_or_train` would serve for these sequences and settings, or None if it is not trained yet.

    Why: a request must never start minutes of training; `reasonrec index` trains, requests only load.
    """
    from reasonrec.paths import home

    config = config or CollaborativeConfig()
    ih = sequences_hash(sequences)
    folder = (cache_dir or home() / "collaborative") / model_key(ih, config)
    return SASRecModel.load(folder, expect_interactions=ih) if (folder / "model.json").is_file() else None


def _cornac_kwargs(config: CollaborativeConfig) -> dict[str, Any]:
    return dict(
        embedding_dim=config.embedding_dim,
        loss=config.loss,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        n_sample=config.n_sample,
        n_epochs=config.max_epochs,
        max_len=config.max_len,
        num_blocks=config.num_blocks,
        num_heads=config.num_heads,
        dropout=config.dropout,
        use_pos_emb=True,
        use_biases=False,
    )


def _build_net(config: CollaborativeConfig, n_items: int, seeded: bool = True) -> Any:
    """cornac's network with our settings; `seeded=False` draws its init from the global torch RNG (training)."""
    import torch

    from .cornac_net import sasrec_net_class

    Net = sasrec_net_class(LIBRARY_VERSION)  # noqa: N806 (a class)

    def build() -> Any:
        return Net(
            item_num=n_items,
            embedding_dim=config.embedding_dim,
            maxlen=config.max_len,
            n_layers=config.num_blocks,
            n_heads=config.num_heads,
            use_pos_emb=True,
            use_biases=False,
            dropout=config.dropout,
            pad_idx=n_items,
            device="cpu",
        )

    if not seeded:
        return build()
    with torch.random.fork_rng():  # loading must not move the caller's RNG
        return build()


def _val_ndcg10(model: SASRecModel, train: dict[str, list[str]], valid: dict[str, str]) -> float:
    """NDCG@10 of the held-out items over the whole catalogue minus each user's history."""
    users = list(valid)
    U = model.encode([train[u] for u in users])
    scores = U @ model.item_vectors().T
    total = 0.0
    for r, u in enumerate(users):
        t = model.index.get(valid[u])
        if t is None:
            continue  # an item first seen as a held-out item has no vector: a miss
        seen = [model.index[i] for i in train[u] if i in model.index]
        s = scores[r]
        s[seen] = -np.inf
        rank = int((s > s[t]).sum()) + 1
        total += 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0
    return total / len(users)


def _info(config, info, n_users, n_valid, epochs, best_epoch, curve, train_s) -> SASRecInfo:  # noqa: ANN001
    return SASRecInfo(
        key=model_key(info["interactions_hash"], config),
        config=config.model_dump(),
        n_users=n_users,
        n_valid_users=n_valid,
        epochs_trained=epochs,
        best_epoch=best_epoch,
        val_ndcg10=curve,
        train_s=round(train_s, 2),
        **info,
    )
