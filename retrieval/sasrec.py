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
WEIGHTS = "model.safetensors"
ITEM_EMB = "item_emb.weight"  # the item vectors inside the weights (cornac's `item_emb`)
USER_VECTORS = "user_vectors.npz"  # the training histories' user vectors (`save_user_vectors`)
_KNOWN_MAX = 200_000  # user vectors kept in memory per model (a server sees many chat histories)


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

    def __init__(self, net: Any, info: SASRecInfo, folder: Path | None = None):
        self._net = net.eval() if net is not None else None
        self._folder = folder  # where `net` is rebuilt from on first use when it was not given
        self.info = info
        self.config = CollaborativeConfig(**info.config)
        self.index = {i: r for r, i in enumerate(info.item_ids)}
        self.pad = len(info.item_ids)
        self._items: np.ndarray | None = None
        self._known: dict[str, np.ndarray] = {}  # padded index row digest -> user vector (USER_VECTORS)
        # Only a saved model's outputs are remembered: during training the same object is evaluated after
        # every epoch, and a vector kept from epoch 1 would be served at epoch 9.
        self._frozen = folder is not None

    @property
    def net(self) -> Any:
        """The torch network, built from the saved weights on first use (imports torch)."""
        if self._net is None:
            if self._folder is None:
                raise DataError("this SASRec model has neither a network nor a folder to load it from")
            from safetensors.torch import load_file

            net = _build_net(self.config, self.pad)
            net.load_state_dict(load_file(str(self._folder / WEIGHTS)), strict=True)
            self._net = net.eval()
        return self._net

    def item_vectors(self) -> np.ndarray:
        """(n_items, dim) float32 item vectors, row r = `info.item_ids[r]` (padding row dropped).

        Read from the weights file with numpy when the network is not built: serving a known user needs
        no torch at all (see `encode`).
        """
        if self._items is None or not self._frozen:
            if self._net is None and self._folder is not None:
                from safetensors import safe_open

                with safe_open(str(self._folder / WEIGHTS), framework="np") as f:
                    self._items = np.asarray(f.get_tensor(ITEM_EMB)[: self.pad], dtype=np.float32)
            else:
                self._items = self.net.item_emb.weight[: self.pad].detach().cpu().numpy().astype(np.float32)
        return self._items

    def _rows(self, histories: Sequence[Sequence[str]]) -> list[list[int]]:
        L = self.config.max_len
        rows = []
        for h in histories:
            idx = [self.index[i] for i in h if i in self.index][-L:]
            rows.append([self.pad] * (L - len(idx)) + idx)
        return rows

    def encode(self, histories: Sequence[Sequence[str]], batch_size: int = 256) -> np.ndarray:
        """User vectors of histories (oldest first); ids the model does not know are skipped.

        A history with no known item encodes the all-padding sequence; callers that need a real signal
        check `known()` first. A history the model was trained on reads its vector from the table
        `save_user_vectors` wrote beside the weights (the network's own output, kept), so a warm call for
        a known user never imports torch; any other history runs the network.

        Returns:
            (len(histories), dim) float32; score of an item = user vector . item vector.
        """
        rows = self._rows(histories)
        keys = [_row_key(r) for r in rows]
        found = {n: self._known[k] for n, k in enumerate(keys) if self._frozen and k in self._known}
        missing = [n for n in range(len(rows)) if n not in found]
        if missing:
            import torch

            with torch.no_grad():
                for s in range(0, len(missing), batch_size):
                    part = missing[s : s + batch_size]
                    x = torch.tensor([rows[n] for n in part], dtype=torch.long)
                    found.update(zip(part, self.net._encode(x).cpu().numpy().astype(np.float32), strict=True))
            for n in missing:
                if self._frozen and len(self._known) < _KNOWN_MAX:  # bounded: a server meets many histories
                    self._known[keys[n]] = found[n]
        if not rows:
            return np.zeros((0, self.config.embedding_dim), np.float32)
        return np.stack([found[n] for n in range(len(rows))]).astype(np.float32)

    def save_user_vectors(self, sequences: Mapping[str, Sequence[str]], folder: Path) -> None:
        """Encode every training history once and keep the vectors beside the weights (`USER_VECTORS`).

        The vectors are the network's output for those exact histories, so serving them is the same as
        encoding again; they are derived from the interactions, as the weights are, and live and die
        with the model folder.
        """
        seqs = list(sequences.values())
        vectors = self.encode(seqs) if seqs else np.zeros((0, self.config.embedding_dim), np.float32)
        keys = np.asarray([_row_key(r) for r in self._rows(seqs)], dtype=str)
        tmp = folder / (USER_VECTORS + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, keys=keys, vectors=vectors)
        tmp.replace(folder / USER_VECTORS)

    def _load_user_vectors(self, folder: Path) -> None:
        path = folder / USER_VECTORS
        if not path.is_file():
            return
        try:
            with np.load(path, allow_pickle=False) as z:
                self._known.update(zip((str(k) for k in z["keys"]), z["vectors"].astype(np.float32), strict=True))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged table is only a cost: encode again

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
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / WEIGHTS))
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
        meta, weights = folder / "model.json", folder / WEIGHTS
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
        model = cls(None, info, folder)  # the network is built on first use (`net`): a known user needs none
        model._load_user_vectors(folder)
        return model


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
    folder = (cache_dir or home() / "collaborative") / model_key(sequences_hash(sequences), config)
    if cached is not None:
        if not (folder / USER_VECTORS).is_file():  # a model saved before the table existed
            cached.save_user_vectors(sequences, folder)
        return cached, False
    model = train_sasrec(sequences, config, progress=progress, on_epoch=on_epoch)
    model.save(folder)
    model.save_user_vectors(sequences, folder)
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


def _row_key(row: Sequence[int]) -> str:
    """Digest of a padded index row: the whole input of the encoder, so equal keys encode equally."""
    return hashlib.sha256(np.asarray(row, dtype=np.int32).tobytes()).hexdigest()[:24]


from .sasrec_train import train_sasrec  # noqa: E402  (after the names it imports from here)
