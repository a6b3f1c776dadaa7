"""Training examples from interactions, rendered with the serving template and labels.

For each user and each of its newest `positions_per_user` *train* items (never the validation or test
item: those are what we measure), one rank example: the history before that item, candidates = the
item + negatives from the candidate generator's top-N mixed with random unseen items (LlamaRec trained
on random negatives but served retriever candidates; we mix both so neither protocol is a surprise),
shuffled so the target's label is uniform over positions. The prompt is exactly what
`Prompter.prompt_text` (agent/ranking/prompter.py) builds at serving time (chat template, single-token labels, the "["
prefill). The answer is a ranked list of k lines: the true item first, then the candidates with the
most co-occurrence with the history (item-kNN over train interactions), each with a grounded reason
built from facts (shared genres with a named history title, or "people who watched X also watched
it"). A share of extra examples trains the reason prompt that hybrid mode uses for its second step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from reasonrec.agent.ranking.evidence import ReasonData, assemble, evidence_continuation, evidence_reason
from reasonrec.agent.ranking.reasons import grounded_reason
from reasonrec.finetune.config import TrainConfig
from reasonrec.finetune.evaluation.split import Split, user_seed
from reasonrec.retrieval.cooccurrence import CooccurrenceSource
from reasonrec.retrieval.types import Item, natural_key

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainExample:
    """One supervised example: the prompt as served, and the answer the loss is computed on."""

    kind: Literal["rank", "reason"]
    user: str
    prompt: str  # chat-templated, ends with the answer prefix ("[" for rank prompts)
    answer: str  # what the model should write next; only these tokens carry loss
    label_ids: tuple[int, ...] = ()  # rank: the candidates' label token ids, in prompt order
    target: int = -1  # rank: index into label_ids of the true next item
    offsets: tuple[float, ...] = ()  # rank, with a retrieval offset: fused score per candidate (finetune/offsets.py)


@dataclass(frozen=True)
class ValList:
    """A validation list: the user's validation item among 19 random unseen items (cand20 style)."""

    user: str
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    target: str


def co_liked_reason(item: Item, history: Sequence[Item], knn: Any) -> str:
    """'People who watched <history title> also watched it.' for the history item most co-watched.

    Falls back to the genre/year reason when no history item co-occurs with `item`.
    """
    idx = knn.index
    recent = [h for h in list(history)[-knn.window :] if h.id in idx]
    if item.id in idx and recent:
        sims = knn.sim[[idx[h.id] for h in recent], idx[item.id]]
        best = int(np.argmax(sims))
        if sims[best] > 0:
            return f"People who watched {recent[best].title} also watched it."
    return grounded_reason(item, history)


def build_examples(
    agent: Any,
    split: Split,
    cfg: TrainConfig,
    knn: Any,
    prompter: Any,
    progress: Progress | None = None,
    offsets: Callable[[list[str], list[str]], tuple[float, ...]] | None = None,
) -> list[TrainExample]:
    """Every training example of the run, deterministic for a given config and dataset.

    Args:
        agent: RecommenderAgent (items, candidate generator, prompt config, tokenizer via `prompter`).
        split: leave-one-out split; only `train` items become targets.
        cfg: the run's TrainConfig.
        knn: finetune.baselines.ItemKNNRanker over the split's train side (orders picks 2..k).
        prompter: the `Prompter` whose `prompt_text` renders served rank prompts.
        progress: called as progress(done_users, total_users).
        offsets: (history ids, candidate ids) -> each candidate's retrieval offset; None = no offsets.

    Returns:
        Rank examples for each (user, position), plus about `reason_share` as many reason examples.
    """
    from reasonrec.agent.model.labels import label_token_ids
    from reasonrec.agent.ranking.request import RankRequest

    items = agent.items
    catalogue = sorted(items, key=natural_key)
    tok = prompter.lm.tokenizer
    labels, label_tok = label_token_ids(tok, cfg.n_candidates)
    token_of = dict(zip(labels, label_tok, strict=True))
    users = _select(split.user_ids(), cfg.train_users, cfg.seed)
    reason_data: ReasonData | None = None  # fitted at the first reason example (a rank-only run never pays)
    domain = prompter.config.prompt.domain
    out: list[TrainExample] = []
    for n, user in enumerate(users):
        rng = np.random.default_rng(user_seed(cfg.seed, f"train:{user}"))
        train = split.get(user).train
        seen = split.seen(user)
        for j in range(max(1, len(train) - cfg.positions_per_user), len(train)):
            hist_ids, target = list(train[:j]), train[j]
            cands = _candidates(agent, hist_ids, target, seen, catalogue, cfg, rng)
            history = [items[i] for i in hist_ids]
            req = RankRequest(history=history, candidates=[items[c] for c in cands], k=cfg.k)
            prompt, label_map = prompter.prompt_text(req)
            by_item = {iid: lab for lab, iid in label_map.items()}
            picks = [target, *[c for c in knn.rank(user, hist_ids, cands, cfg.k) if c != target]][: cfg.k]
            lines = []
            for rank, iid in enumerate(picks):
                it = items[iid]
                why = grounded_reason(it, history) if rank == 0 else co_liked_reason(it, history, knn)
                lines.append(f"{by_item[iid]}] {why}")
            answer = "\n[".join(lines) + "\n"
            ids = tuple(token_of[by_item[c]] for c in cands)
            off = offsets(hist_ids, cands) if offsets else ()
            out.append(TrainExample("rank", user, prompt, answer, ids, cands.index(target), off))
            if rng.random() < cfg.reason_share:
                item = items[picks[int(rng.integers(len(picks)))]]
                reason_data = reason_data or _reason_data(items, split)
                ev = assemble([item], history, None, reason_data, domain)[0]
                text, opener = prompter.reason_text(history, item, None, ev)
                # serving starts the reason with this opener and the same facts: learn to continue it
                why = evidence_continuation(ev, domain) if opener else evidence_reason(ev, domain)
                out.append(TrainExample("reason", user, text, why + "\n"))
        if progress:
            progress(n + 1, len(users))
    return out


def _reason_data(items: dict[str, Item], split: Split) -> ReasonData:
    """Reason targets state the evidence serving conditions on, with co-watch counts from the train side only."""
    train = {u: list(split.get(u).train) for u in split.user_ids()}
    return ReasonData(items, CooccurrenceSource.fit(train, items=items))


def _select(user_ids: list[str], n: int | None, seed: int) -> list[str]:
    order = [user_ids[i] for i in np.random.default_rng(seed).permutation(len(user_ids))]
    return sorted(order if n is None else order[:n], key=natural_key)


def _candidates(
    agent: Any, hist: list[str], target: str, seen: frozenset[str], catalogue: list[str], cfg: TrainConfig, rng: Any
) -> list[str]:
    """The target + retrieved negatives + random unseen negatives, shuffled (uniform target position)."""
    n_neg = cfg.n_candidates - 1
    n_ret = int(round(n_neg * cfg.retrieved_share))
    negs: list[str] = []
    if n_ret and hist:
        retrieved = agent.candidate_source.candidates(hist, n_ret + 1, exclude=frozenset(seen))
        negs = [c.item_id for c in retrieved if c.item_id != target][:n_ret]
    taken = set(negs) | seen
    pool = [i for i in catalogue if i not in taken]
    picks = rng.choice(len(pool), size=n_neg - len(negs), replace=False)
    cands = [target, *negs, *(pool[int(i)] for i in picks)]
    return [cands[int(i)] for i in rng.permutation(len(cands))]


def validation_users(split: Split, n: int, seed: int) -> list[str]:
    """The `n` users whose validation item training and `reasonrec calibrate` rank (seeded, stable)."""
    ids = split.user_ids()
    return [ids[i] for i in np.random.default_rng(seed + 7).permutation(len(ids))[:n]]


def validation_lists(split: Split, users: Sequence[str], catalogue: Sequence[str], seed: int, n: int = 20) -> list:
    """cand20-style lists on the *validation* item (the test item stays unseen until evaluation)."""
    out = []
    for user in users:
        seen = split.seen(user)
        pool = [i for i in catalogue if i not in seen]
        rng = np.random.default_rng(user_seed(seed, f"val:{user}"))
        target = split.get(user).valid
        cands = [target, *(pool[int(i)] for i in rng.choice(len(pool), size=n - 1, replace=False))]
        cands = [cands[int(i)] for i in rng.permutation(n)]
        out.append(ValList(user, tuple(split.eval_history(user, "valid")), tuple(cands), target))
    return out


def data_hash(examples: Sequence[TrainExample]) -> str:
    """sha256 over every example: saved with the adapter, and checked when a run resumes."""
    h = hashlib.sha256()
    for ex in examples:
        row = asdict(ex)
        if not row["offsets"]:  # runs without an offset keep the hashes they had before offsets existed
            del row["offsets"]
        h.update(json.dumps(row, sort_keys=True).encode("utf-8"))
    return h.hexdigest()[:16]


@dataclass
class Encoded:
    """Token ids of one example; the answer is the tail, and `n_answer` of its tokens carry loss."""

    ids: list[int]
    n_answer: int
    label_ids: tuple[int, ...]
    target: int
    offsets: tuple[float, ...] = ()


def encode(examples: Sequence[TrainExample], tokenizer: Any) -> list[Encoded]:
    """Tokenise prompt and answer separately, exactly as serving tokenises the prompt.

    Why separately: at serving time the prompt (ending in "[") is tokenised on its own and the model
    continues from there; joint tokenisation could merge "[" with the label into one token.
    """
    eos = tokenizer.eos_token_id
    out = []
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        if ex.kind == "rank":  # the first answer token must be the label token that scoring reads
            rest = ex.answer[ex.answer.index("]") :]
            a = [ex.label_ids[ex.target], *tokenizer(rest, add_special_tokens=False)["input_ids"], eos]
        else:
            a = tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [eos]
        out.append(Encoded(p + a, len(a), ex.label_ids, ex.target, ex.offsets))
    return out


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Left-pad a batch so every answer ends at the last position (one `logits_to_keep` for all rows).

    Returns:
        input_ids, attention_mask, position_ids (following the padding, as in batched serving),
        answer_mask (1 on answer tokens), n_keep, and for rank rows label_ids/target/label_pos and
        offsets (the retrieval offset per label; zeros for examples built without one).
    """
    import torch

    # Widths rounded up to a multiple of 64: on CPU, oneDNN caches kernels per shape and every new
    # length grew the process (14 GB after 45 steps of a real run); a few shapes keep memory flat.
    width = -(-max(len(e.ids) for e in batch) // 64) * 64
    n_keep = max(e.n_answer for e in batch) + 1
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    answer = torch.zeros((len(batch), n_keep - 1), dtype=torch.bool)
    for r, e in enumerate(batch):
        ids[r, width - len(e.ids) :] = torch.tensor(e.ids)
        mask[r, width - len(e.ids) :] = 1
        answer[r, n_keep - 1 - e.n_answer :] = True
    rank_rows = [r for r, e in enumerate(batch) if e.label_ids]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        "answer_mask": answer,
        "n_keep": n_keep,
        "rank_rows": torch.tensor(rank_rows, dtype=torch.long),
        "label_ids": torch.tensor([batch[r].label_ids for r in rank_rows] or [[]], dtype=torch.long),
        "target": torch.tensor([batch[r].target for r in rank_rows], dtype=torch.long),
        "offsets": torch.tensor(
            [batch[r].offsets or (0.0,) * len(batch[r].label_ids) for r in rank_rows] or [[]], dtype=torch.float32
        ),
        # kept-logit index that predicts the first answer token (the label) of each rank row
        "label_pos": torch.tensor([n_keep - 1 - batch[r].n_answer for r in rank_rows], dtype=torch.long),
    }
