"""cornac's SASRec, trained from interactions, saved as safetensors + JSON, and encoding histories.

Why cornac 3.0.1: best measured quality of the libraries tried on our split (shared/collaborative.md:
NDCG@10 0.092 vs RecTools 0.078, implicit BPR 0.046), it installs beside numpy 2 with plain torch (RecTools
pins numpy<2 and Lightning), and it trains in minutes on 2 cores.

Training (retrieval/sasrec_train.py) runs cornac's own network (`SASRecModel`), batch iterator
(`session_seq_iter`) and loss through a loop that mirrors `SASRec.fit` statement for statement
(tests/test_collaborative.py checks the weights equal cornac's `fit` bit for bit), because `fit`
rebuilds the network on every call and cannot stop early: here each epoch is scored on the held-out
last item of every user (NDCG@10 over the whole catalogue minus the history) and training stops after
`patience` epochs without a gain, keeping the best.

The model reads private cornac members, `SASRecModel._encode` (user vector of a left-padded sequence)
and `item_emb` (item vectors; score = user . item); they are pinned by `LIBRARY_VERSION` and tested.
Artifacts are never pickled: weights in `model.safetensors`, everything needed to rebuild them
(library + version, config, item id map, interactions hash, epochs, validation curve) in `model.json`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from reasonrec.errors import DataError

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


from .sasrec_train import train_sasrec  # noqa: E402  (after the names it imports from here)
