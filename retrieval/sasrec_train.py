"""Training cornac's SASRec with our validation and early stopping (the model itself: retrieval/sasrec.py).

Kept apart from sasrec.py so that serving a trained model never reads this code, and both stay small;
`reasonrec.retrieval.sasrec.train_sasrec` is this function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from reasonrec.errors import ConfigError, DataError

from .config import CollaborativeConfig
from .sasrec import LIBRARY_VERSION, SASRecInfo, SASRecModel, _build_net, model_key, sequences_hash


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
