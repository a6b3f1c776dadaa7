"""Retrieval offsets: LoRA training in which the LM can only add to what retrieval already knows.

With `TrainConfig.retrieval_offset` = b > 0, each rank example's label logits get b x the fused
retrieval score of every candidate (`ranking_features(...)["fusion"]`, the score serving fuses) added
before the label loss: the model is trained on softmax(logit_LM + b * fusion), so its LoRA weights learn
the residual over retrieval instead of re-learning what co-occurrence and SASRec already rank. Serving
the result is the fused score of ranking/fused.py with lm_weight 1 and retrieval_weight b (refit both
with `reasonrec calibrate --fusion`). Validation reports the same sum and, once, the retrieval score
alone, so a curve shows directly whether the LM adds anything.

Why refitted sources: features computed by sources that saw an example's own target would make the
offset look perfect in training and weaker at test time (an in-sample stacking leak). Training examples'
features come from sources fitted on every user's train items minus the newest `positions_per_user`
(the items that become training targets); validation lists' from sources fitted on the train items
(never the validation item). The sequence model joins only when one is cached for those sequences:
training it here would cost minutes per run, so by default the offset is co-occurrence + semantic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonrec.agent.candidates import build_candidate_source, ranking_features
from reasonrec.finetune.evaluation.split import Split
from reasonrec.retrieval.fusion import FusedSource


def offset_sequences(split: Split, positions_per_user: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(sequences for training-example features, for validation-list features): each user's train items
    minus the newest `positions_per_user` (the training targets), and all train items."""
    before_targets = {u: list(split.get(u).train[:-positions_per_user]) for u in split.user_ids()}
    return before_targets, {u: list(split.get(u).train) for u in split.user_ids()}


def offset_sources(agent: Any, split: Split, positions_per_user: int) -> tuple[Any, Any, list[str]]:
    """(source for training examples, source for validation lists, notes on what could not serve)."""
    notes: list[str] = []
    build = lambda seqs: build_candidate_source(  # noqa: E731
        agent.dataset, agent.config, agent._semantic_source, sequences=seqs, train=False, notes=notes
    )
    train_seqs, val_seqs = offset_sequences(split, positions_per_user)
    train_src, val_src = build(train_seqs), build(val_seqs)
    if set(val_src.sources) != set(train_src.sources):  # e.g. a sequence model cached for one side only:
        # validation must measure the offset training saw, so both sides keep the sources they share
        shared = {n: s for n, s in val_src.sources.items() if n in train_src.sources}
        weights = {n: w for n, w in val_src.weights.items() if n in shared}
        val_src = FusedSource(shared, weights=weights, method=val_src.method, k=val_src.k, depth=val_src.depth)
    return train_src, val_src, sorted(set(notes))


def list_offsets(source: Any, history: Sequence[str], candidates: Sequence[str]) -> tuple[float, ...]:
    """The fused retrieval score of each candidate, in `candidates` order (0 where no source scores it)."""
    return tuple(f.get("fusion", 0.0) for f in ranking_features(source, list(history), list(candidates)))
