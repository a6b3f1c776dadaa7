"""Candidate sources alone and fused, on all ML-100K users: full protocol (N = 20, 50) and cand20.

    OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
        .venv/bin/python bench/retrieval_eval.py            # writes bench/results/{full20,full50,cand20}_retrieval.json

Split: leave-one-out by time (shared/protocols.md). Test: history = train + validation item, target = test
item, candidates = each source's top N over the catalogue minus the history. SASRec is trained twice by
`load_or_train` (both cached): a holdout run on the train items that picks the epoch count by validation
NDCG@10 (early stopping), then (unless --no-refit) a refit on train + validation items for that many
epochs, which serves the test rows (the holdout model on test is the extra row
`source-collaborative-holdout`). The co-occurrence source used on test is fitted on train + validation
sequences (never a test item). Chosen on the
validation items (train history, holdout SASRec, co-occurrence fitted on train items only): the
co-occurrence window / recent / decay (by validation recall@20, then NDCG@10), then the fusion weights and
RRF k; the fusion setting with the best validation NDCG@10 becomes the `fusion` row. Latency is one
request of the fused source (four sources + fusion), sequential, per user, on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from reasonrec.finetune.evaluation.metrics import aggregate, latency_summary, paired_bootstrap, user_metrics
from reasonrec.finetune.evaluation.report import git_commit
from reasonrec.finetune.evaluation.split import cand20_candidates, leave_one_out
from reasonrec.retrieval import (
    CandidateGenerator,
    CollaborativeSource,
    CooccurrenceSource,
    FusedSource,
    RetrievalConfig,
    build_index,
    fit_weights,
    fuse,
    load_ml100k,
    natural_key,
)
from reasonrec.retrieval.candidates import Candidate
from reasonrec.retrieval.collaborative import brute_force_top
from reasonrec.retrieval.config import CollaborativeConfig, CooccurrenceConfig, EaseConfig
from reasonrec.retrieval.ease import EaseSource

SOURCES = ("collaborative", "cooccurrence", "ease", "semantic")
EASE_L2 = (50.0, 100.0, 200.0, 500.0, 1000.0)
RRF_KS = (5, 10, 20, 30, 60)
DEPTH = 100
KS = (1, 5, 10, 20)


class Timed:
    """Wraps a source and records the wall time of each `candidates` call."""

    def __init__(self, source):
        self.source, self.ms = source, []

    def candidates(self, *a, **kw):
        t = time.perf_counter()
        try:
            return self.source.candidates(*a, **kw)
        finally:
            self.ms.append((time.perf_counter() - t) * 1000)


def sweep(source_cls, configs, split, valid_hist, items) -> tuple[object, list[dict]]:
    """Fit `source_cls` on train items with each config; pick by validation recall@20, then NDCG@10."""
    rows = []
    for cfg in configs:
        source = source_cls.fit(valid_hist, cfg, items=items)
        per = [
            user_metrics([c.item_id for c in source.candidates(valid_hist[u], 20)], split.target(u, "valid"), KS)
            for u in split.user_ids()
        ]
        m = aggregate(per)
        rows.append(
            {**cfg.model_dump(), "val_recall@20": round(m["recall@20"], 4), "val_ndcg@10": round(m["ndcg@10"], 4)}
        )
    best = max(range(len(rows)), key=lambda n: (rows[n]["val_recall@20"], rows[n]["val_ndcg@10"]))
    return configs[best], rows


def tune_cooccurrence(split, valid_hist, items) -> tuple[CooccurrenceConfig, list[dict]]:
    """Co-occurrence window / recent / decay (see `sweep`)."""
    grid = itertools.product((10, 20, 40), (5, 10, 20), (0.6, 0.7, 0.8, 0.9, 0.95))
    configs = [CooccurrenceConfig(window=w, recent=r, decay=d) for w, r, d in grid]
    return sweep(CooccurrenceSource, configs, split, valid_hist, items)


def tune_ease(split, valid_hist, items) -> tuple[EaseConfig, list[dict]]:
    """EASE's l2 (see `sweep`)."""
    return sweep(EaseSource, [EaseConfig(l2=l2) for l2 in EASE_L2], split, valid_hist, items)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--users", type=int, default=None, help="first N users only (smoke runs)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-refit",
        action="store_true",
        help="serve the test rows with the holdout model, as `reasonrec index` and `reasonrec evaluate` do, "
        "instead of refitting on train + validation items (saves one more training run)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = load_ml100k()
    split = leave_one_out(data)
    users = split.user_ids()[: args.users]
    catalogue = sorted(data.items, key=natural_key)
    test_hist = {u: split.eval_history(u, "test") for u in split.user_ids()}
    valid_hist = {u: split.eval_history(u, "valid") for u in split.user_ids()}
    training: dict = {}

    cfg = RetrievalConfig()
    t = time.perf_counter()
    store, report = build_index(data, cfg)
    training["text_index_s"] = round(time.perf_counter() - t, 2)
    semantic = CandidateGenerator(store, store.embedder, data.items, cfg)

    co_cfg, sweep = tune_cooccurrence(split, valid_hist, data.items)
    training["cooccurrence_sweep"] = sweep
    training["cooccurrence_config"] = co_cfg.model_dump()
    print(f"[cooccurrence] chosen on validation: {co_cfg}", flush=True)
    t = time.perf_counter()
    co_test = CooccurrenceSource.fit(test_hist, co_cfg, items=data.items)
    training["cooccurrence_fit_s"] = round(time.perf_counter() - t, 3)
    co_valid = CooccurrenceSource.fit(valid_hist, co_cfg, items=data.items)
    ease_cfg, ease_sweep = tune_ease(split, valid_hist, data.items)
    training["ease_sweep"] = ease_sweep
    training["ease_config"] = ease_cfg.model_dump()
    print(f"[ease] chosen on validation: {ease_cfg}", flush=True)
    t = time.perf_counter()
    ease_test = EaseSource.fit(test_hist, ease_cfg, items=data.items)
    training["ease_fit_s"] = round(time.perf_counter() - t, 3)
    ease_valid = EaseSource.fit(valid_hist, ease_cfg, items=data.items)

    t = time.perf_counter()
    epochs = []
    # The holdout run (early stopping on the validation items) is trained on train items only: it serves
    # the validation lists the fusion weights are fitted on. The test model is refitted on train +
    # validation items for the epoch count the holdout run chose.
    collab_valid = CollaborativeSource.build(
        data,
        cfg,
        sequences=test_hist,
        collection=f"{cfg.collection}-sasrec-holdout",
        on_epoch=lambda e, loss, v: epochs.append((e, loss, v)),
    )
    hold = collab_valid.model.info
    if args.no_refit:
        collab = collab_valid
    else:
        refit_cfg = CollaborativeConfig(max_epochs=hold.best_epoch, patience=0, holdout=False)
        collab = CollaborativeSource.build(data, cfg, config=refit_cfg, sequences=test_hist)
    info = collab.model.info
    training["collaborative"] = {
        "library": f"{hold.library}=={hold.library_version}",
        "config": hold.config,
        "holdout_train_s": hold.train_s,
        "holdout_epochs_trained": hold.epochs_trained,
        "best_epoch": hold.best_epoch,
        "val_ndcg10_by_epoch": [round(v, 4) for v in hold.val_ndcg10],
        "refit": not args.no_refit,
        "refit_train_s": None if args.no_refit else info.train_s,
        "refit_epochs": None if args.no_refit else info.epochs_trained,
        "train_s_total": round(hold.train_s + (0 if args.no_refit else info.train_s), 1),
        "trained_in_this_run": bool(epochs),
        "build_s_this_run": round(time.perf_counter() - t, 2),
        "items_with_vector": len(info.item_ids),
        "items_with_interactions_before_test": len({i for h in test_hist.values() for i in h}),
        "chroma_collection": collab.name,
    }
    print(f"[setup] {time.perf_counter() - t0:.0f}s {training}", flush=True)

    # --- fusion weights on validation ---
    val_sources = {"collaborative": collab_valid, "cooccurrence": co_valid, "ease": ease_valid, "semantic": semantic}
    val_fused = FusedSource(val_sources, depth=DEPTH)
    val_lists = [val_fused.collect(valid_hist[u], DEPTH) for u in users]
    val_targets = [split.target(u, "valid") for u in users]
    fitted = {}
    for k in RRF_KS:
        w, score = fit_weights(val_lists, val_targets, method="rrf", k=k)
        fitted[f"rrf-k{k}"] = {"method": "rrf", "k": k, "weights": w, "val_ndcg@10": round(score, 4)}
    w, score = fit_weights(val_lists, val_targets, method="linear")
    fitted["linear"] = {"method": "linear", "k": 60, "weights": w, "val_ndcg@10": round(score, 4)}
    _, equal = fit_weights(val_lists, val_targets, method="rrf", rounds=0)
    fitted["rrf-unweighted"] = {
        "method": "rrf",
        "k": 60,
        "weights": dict.fromkeys(SOURCES, 1.0),
        "val_ndcg@10": round(equal, 4),
    }
    best = max((m for m in fitted if m != "rrf-unweighted"), key=lambda m: fitted[m]["val_ndcg@10"])
    chosen = fitted[best]
    print(f"[fusion] {fitted} -> {best}", flush=True)

    # --- test: every source's lists, timed through the fused source ---
    timed = {name: Timed(src) for name, src in zip(SOURCES, (collab, co_test, ease_test, semantic), strict=True)}
    fused = FusedSource(timed, weights=chosen["weights"], method=chosen["method"], k=chosen["k"], depth=DEPTH)
    lists, fused_ms, chroma_exact = {}, [], 0
    for u in users:
        t = time.perf_counter()
        got = fused.collect(test_hist[u], DEPTH)
        fuse(got, fused.weights, fused.method, fused.k)
        fused_ms.append((time.perf_counter() - t) * 1000)
        lists[u] = got
        top = [c.item_id for c in got["collaborative"][:50]]
        chroma_exact += top == brute_force_top(collab.model, test_hist[u], 50)
    rankings = {name: {u: [c.item_id for c in lists[u].get(name, [])] for u in users} for name in SOURCES}
    rankings["fusion"] = {u: [c.item_id for c in fuse(lists[u], fused.weights, fused.method, fused.k)] for u in users}
    for m, row in fitted.items():
        if m != best and m in ("linear", "rrf-k60", "rrf-unweighted"):
            rankings[f"fusion-{m}"] = {
                u: [c.item_id for c in fuse(lists[u], row["weights"], row["method"], row["k"])] for u in users
            }
    hold_lists = {u: collab_valid.candidates(test_hist[u], DEPTH) for u in users}
    rankings["collaborative-holdout"] = {u: [c.item_id for c in hold_lists[u]] for u in users}
    print(f"[test] lists for {len(users)} users in {sum(fused_ms) / 1000:.1f}s", flush=True)

    common = dict(
        dataset="ml-100k",
        dataset_sha256=data.sha256,
        commit=git_commit(paths=["retrieval", "bench/retrieval_eval.py"]),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine=f"cpu-{os.cpu_count()}core (shared with other jobs)",
        seed=args.seed,
    )
    fusion_info = {"chosen": best, "depth": DEPTH, "fitted_on": "validation items", "candidates": fitted}
    latency = {
        "fused_request_ms": latency_summary(fused_ms),
        **{f"{n}_ms": latency_summary(timed[n].ms) for n in SOURCES},
    }
    for N in (20, 50):
        methods, per_user = {}, {}
        for name, ranked in rankings.items():
            rows = [user_metrics(ranked[u][:N], split.target(u, "test"), KS) for u in users]
            per_user[name] = rows
            src_ms = fused_ms if name.startswith("fusion") else timed.get(name, timed["collaborative"]).ms
            method_name = name if name.startswith("fusion") else f"source-{name}"
            methods[method_name] = {
                "n_users": len(users),
                "metrics": aggregate(rows),
                "candidate_recall": float(np.mean([split.target(u, "test") in ranked[u][:N] for u in users])),
                "valid_rate": 1.0,
                "off_catalogue_rate": 0.0,
                "duplicate_rate": float(np.mean([len(set(ranked[u][:N])) < len(ranked[u][:N]) for u in users])),
                "fallback_rate": 0.0,
                "latency_ms": latency_summary(src_ms),
                "users_per_s": len(users) / (sum(src_ms) / 1000),
                "wall_s": round(sum(src_ms) / 1000, 2),
            }
        for metric in ("ndcg@10", "recall@10", "ndcg@20", "recall@20"):
            f = np.array([r[metric] for r in per_user["fusion"]])
            for name in SOURCES:
                s = np.array([r[metric] for r in per_user[name]])
                gain = methods["fusion"].setdefault("gain_vs", {}).setdefault(f"source-{name}", {})
                gain[metric] = list(paired_bootstrap(f, s, args.resamples, args.seed))
        methods["fusion"]["gain_vs_resamples"] = args.resamples
        result = {
            "protocol": "full",
            **common,
            "candidates": N,
            "methods": methods,
            "candidate_recall": {
                str(n): float(np.mean([split.target(u, "test") in rankings["fusion"][u][:n] for u in users]))
                for n in (20, 50)
            },
            "candidate_recall_by_source": {
                name: {
                    str(n): float(np.mean([split.target(u, "test") in rankings[name][u][:n] for u in users]))
                    for n in (20, 50)
                }
                for name in SOURCES
            },
            "fusion": fusion_info,
            "training": training,
            "latency": latency,
            "collaborative_chroma_equals_brute_force_top50": chroma_exact / len(users),
            "notes": [__doc__.strip().split("\n\n", 2)[2].replace("\n", " ")],
        }
        write(args.out / f"full{N}_retrieval.json", result)

    # --- cand20: each source scores the 20 given items ---
    c20 = {name: [] for name in (*SOURCES, "fusion")}
    for u in users:
        h, cands, target = test_hist[u], cand20_candidates(split, u, catalogue, args.seed), split.target(u, "test")
        vec = collab.model.encode([h])[0]
        iv = collab.model.item_vectors()
        col = [float(vec @ iv[collab.model.index[i]]) if i in collab.model.index else None for i in cands]
        lo = min(v for v in col if v is not None) - 1.0
        co = co_test.scores(h)
        ea = ease_test.scores(h)
        prof = semantic.profile(h)
        vecs = semantic.vectors(cands)
        per = {
            "collaborative": [lo if v is None else v for v in col],
            "cooccurrence": [float(co[co_test.index[i]]) if i in co_test.index else 0.0 for i in cands],
            "ease": [float(ea[ease_test.index[i]]) if i in ease_test.index else float(ea.min()) - 1.0 for i in cands],
            "semantic": [float(prof @ vecs[i]) for i in cands],
        }
        src_lists = {}
        for name, vals in per.items():
            order = sorted(range(len(cands)), key=lambda k: (-vals[k], k))
            ranked = [cands[k] for k in order]
            c20[name].append(user_metrics(ranked, target, KS))
            src_lists[name] = [Candidate(item_id=cands[k], score=vals[k]) for k in order]
        ranked = [c.item_id for c in fuse(src_lists, fused.weights, fused.method, fused.k)]
        c20["fusion"].append(user_metrics(ranked, target, KS))
    methods = {}
    for name, rows in c20.items():
        key = name if name == "fusion" else f"source-{name}"
        methods[key] = {
            "n_users": len(users),
            "metrics": aggregate(rows),
            "valid_rate": 1.0,
            "off_catalogue_rate": 0.0,
            "duplicate_rate": 0.0,
            "fallback_rate": 0.0,
        }
    for metric in ("hr@1", "ndcg@10"):
        f = np.array([r[metric] for r in c20["fusion"]])
        for name in SOURCES:
            s = np.array([r[metric] for r in c20[name]])
            gain = methods["fusion"].setdefault("gain_vs", {}).setdefault(f"source-{name}", {})
            gain[metric] = list(paired_bootstrap(f, s, args.resamples, args.seed))
    write(
        args.out / "cand20_retrieval.json",
        {
            "protocol": "cand20",
            **common,
            "candidates": 20,
            "methods": methods,
            "fusion": fusion_info,
            "training": training,
        },
    )
    print(f"[done] {time.perf_counter() - t0:.0f}s", flush=True)
    return 0


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    m = obj["methods"]
    line = ", ".join(
        f"{k}: ndcg@10 {v['metrics']['ndcg@10']:.4f} r@10 {v['metrics']['recall@10']:.4f} "
        f"hr@1 {v['metrics']['hr@1']:.3f}"
        for k, v in m.items()
    )
    print(f"[write] {path}: {line}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
