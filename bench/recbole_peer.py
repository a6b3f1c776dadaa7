"""Train RecBole SASRec / BPR on ML-100K through RecBole itself and export per-user test scores.

Runs in its own virtualenv (`.venv-bench`, see bench/requirements-recbole.txt): RecBole 1.2.1 needs
pandas<3 and predates numpy 2 / torch>=2.6, so it must not share the main environment. This script
imports nothing from reasonrec; the evaluation harness reads what it writes and computes our own
metrics from the scores (`reasonrec.finetune.recbole_rows`).

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r bench/requirements-recbole.txt
    .venv-bench/bin/pip install --no-deps recbole==1.2.1
    .venv-bench/bin/python bench/recbole_peer.py --model BPR --max-minutes 10
    .venv-bench/bin/python bench/recbole_peer.py --model SASRec --max-minutes 30

Writes, per model, into --out-dir (default ~/.cache/reasonrec/bench/recbole, outside the repo: the
scores are derived from ML-100K, whose licence forbids redistribution):
  <model>.npz   users (tokens), items (tokens), scores [users x items] float32 for the *test* stage
                with RecBole's history mask (-inf), valid/test item per user as RecBole split them
  <model>.json  RecBole's own test metrics, epochs trained, wall time, the split check, the config

What is RecBole's and what is ours: model, training loop, early stopping, evaluator and leave-one-out
split are RecBole's (`Trainer.fit`, `eval_args` LS/TO). We only (1) hand RecBole a copy of the
interactions whose timestamps are replaced by their rank in (timestamp, item id) order, because
RecBole breaks timestamp ties by file order and stores timestamps as float32 (64 s resolution at
ML-100K's epoch values), both of which would move the last/second-to-last item for users with tied
timestamps away from the protocol's split; (2) stop `fit` after --max-minutes, checked after each
validation, since a converged SASRec is about an hour on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# RecBole 1.2.1's Config assigns np.float = np.float_ at import; numpy 2 removed those aliases.
for _alias, _target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _alias):
        setattr(np, _alias, _target)

VALID_METRIC = "ndcg@10"
# Not "ml-100k": RecBole's Config replaces data_path with its bundled copy for that exact name, which
# would silently ignore the rank-timestamped file written by prepare_data.
DATASET = "ml-100k-rankts"


class _TimeUp(Exception):
    """Raised from fit's callback to end training once the time budget is spent."""


def _natural(item: str) -> tuple[int, int | str]:
    # Same tie order as reasonrec.retrieval.types.natural_key: numeric ids numerically.
    return (0, int(item)) if item.isdigit() else (1, item)


def prepare_data(data_root: Path) -> dict[str, tuple[str, str]]:
    """Write a rank-timestamped copy of ml-100k.inter and return the protocol's (valid, test) per user."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("recbole is not installed in this interpreter; see bench/requirements-recbole.txt")
    src = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k" / "ml-100k.inter"
    lines = src.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [ln.split("\t") for ln in lines[1:] if ln.strip()]
    rows.sort(key=lambda r: (float(r[3]), _natural(r[1]), _natural(r[0])))
    per_user: dict[str, list[str]] = {}
    for r in rows:
        per_user.setdefault(r[0], []).append(r[1])
    out = data_root / DATASET
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{DATASET}.inter", "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for rank, r in enumerate(rows):
            f.write(f"{r[0]}\t{r[1]}\t{r[2]}\t{rank}\n")
    return {u: (h[-2], h[-1]) for u, h in per_user.items() if len(h) >= 3}


def _stage_items(loader, dataset) -> dict[str, str]:
    """The single positive item per user in a full-sort eval loader, as tokens."""
    uid_f, iid_f = dataset.uid_field, dataset.iid_field
    feat = loader._dataset.inter_feat
    users = dataset.id2token(uid_f, feat[uid_f].numpy())
    items = dataset.id2token(iid_f, feat[iid_f].numpy())
    out: dict[str, str] = {}
    for u, i in zip(users, items, strict=True):
        if u in out:  # leave-one-out gives exactly one row per user and stage
            raise RuntimeError(f"user {u} has more than one item in an evaluation stage")
        out[str(u)] = str(i)
    return out


def run(model_name: str, out_dir: Path, max_minutes: float, max_epochs: int, seed: int, patience: int) -> dict:
    """Train one model with RecBole, evaluate on test, export scores; returns the meta record."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    work = out_dir / f"work-{model_name}"
    work.mkdir(parents=True, exist_ok=True)
    reference = prepare_data(work / "data")
    os.chdir(work)  # RecBole writes log_tensorboard/ and saved/ relative to the working directory
    sequential = model_name == "SASRec"
    config_dict = {
        "data_path": str(work / "data"),
        "checkpoint_dir": str(work / "saved"),
        "use_gpu": False,
        "seed": seed,
        "epochs": max_epochs,
        "stopping_step": patience,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "normalize_all": False,  # keep the rank timestamps exact
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG", "MRR", "Hit"],
        "topk": [1, 5, 10, 20],
        "valid_metric": "NDCG@10",
        "show_progress": False,
    }
    if sequential:
        config_dict.update({"train_neg_sample_args": None, "loss_type": "CE"})
    config = Config(model=model_name, dataset=DATASET, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    valid_items, test_items = _stage_items(valid_data, dataset), _stage_items(test_data, dataset)
    mismatches = sorted(u for u, (v, t) in reference.items() if valid_items.get(u) != v or test_items.get(u) != t)
    print(f"[{model_name}] split check: {len(mismatches)} of {len(reference)} users differ", flush=True)

    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.monotonic()

    def _budget(epoch_idx: int, valid_score: float) -> None:
        print(
            f"[{model_name}] epoch {epoch_idx} valid {VALID_METRIC}={valid_score:.4f} "
            f"t={time.monotonic() - start:.0f}s",
            flush=True,
        )
        if time.monotonic() - start > max_minutes * 60:
            raise _TimeUp

    stopped_by = ""
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=_budget)
    except _TimeUp:
        stopped_by = f"time_budget_{max_minutes:g}min"
    train_s = time.monotonic() - start
    epochs = len(trainer.train_loss_dict)
    stopped_by = stopped_by or ("early_stopping" if epochs < max_epochs else "max_epochs")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # RecBole's own checkpoint, written above
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    users, scores = _export_scores(trainer, test_data, dataset)
    item_tokens = [str(t) for t in dataset.id2token(dataset.iid_field, np.arange(1, dataset.item_num))]
    np.savez_compressed(
        out_dir / f"{model_name.lower()}.npz",
        users=np.array(users),
        items=np.array(item_tokens),
        scores=scores,
        valid=np.array([valid_items[u] for u in users]),
        test=np.array([test_items[u] for u in users]),
    )
    meta = {
        "model": model_name,
        "recbole_version": __import__("recbole").__version__,
        "recbole_test_metrics": {k.lower(): float(v) for k, v in dict(test_result).items()},
        "best_valid": {k.lower(): float(v) for k, v in dict(trainer.best_valid_result or {}).items()},
        "epochs_trained": epochs,
        "max_epochs": max_epochs,
        "stopped_by": stopped_by,
        "patience": patience,
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.monotonic() - start, 1),
        "split_check": {
            "n_users": len(reference),
            "n_mismatch": len(mismatches),
            "mismatched": mismatches[:20],
        },
        "timestamp_note": "timestamps replaced by their rank in (timestamp, item id) order for RecBole",
        "config": {k: config[k] for k in ("seed", "train_batch_size", "learning_rate", "eval_args", "topk")},
        "threads": __import__("torch").get_num_threads(),
    }
    (out_dir / f"{model_name.lower()}.json").write_text(json.dumps(meta, indent=2, default=str))
    return meta


def _export_scores(trainer, test_data, dataset) -> tuple[list[str], np.ndarray]:
    """Full-catalogue test scores per user, exactly as RecBole's evaluator sees them.

    RecBole masks seen items (-inf) for general models (BPR) but not for sequential ones (SASRec); the
    harness excludes the user's history itself, as the protocol says.
    """
    import torch

    trainer.model.eval()
    trainer.tot_item_num = dataset.item_num
    trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    users: list[str] = []
    rows: list[np.ndarray] = []
    with torch.no_grad():
        for batch in test_data:
            interaction, scores, _, _ = trainer._full_sort_batch_eval(batch)
            uids = interaction[dataset.uid_field].cpu().numpy()
            users.extend(str(u) for u in dataset.id2token(dataset.uid_field, uids))
            rows.append(scores[:, 1:].cpu().numpy().astype(np.float32))  # column 0 is RecBole's padding id
    return users, np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["SASRec", "BPR"], action="append", required=True)
    p.add_argument("--out-dir", type=Path, default=Path.home() / ".cache/reasonrec/bench/recbole")
    p.add_argument("--max-minutes", type=float, default=15.0, help="training time cap per model")
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=10, help="RecBole stopping_step on valid NDCG@10")
    p.add_argument("--seed", type=int, default=2020)
    args = p.parse_args(argv)
    out_dir = args.out_dir.expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.model:
        meta = run(name, out_dir, args.max_minutes, args.max_epochs, args.seed, args.patience)
        print(
            json.dumps(
                {
                    k: meta[k]
                    for k in (
                        "model",
                        "epochs_trained",
                        "stopped_by",
                        "train_wall_s",
                        "recbole_test_metrics",
                        "split_check",
                    )
                },
                indent=1,
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
