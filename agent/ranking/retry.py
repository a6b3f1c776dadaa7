"""A second try before the fallback: a model reason that would be replaced is written once more.

Why: at 300 users hybrid mode showed the model's own reason for only 0.791 of its picks, and 285 of
the 313 it replaced were near-duplicates of an earlier reason of the same list ("Like Volcano, it is a
drama and thriller movie from 1996." / "Like Jerry Maguire, it is a drama and war movie from 1996."):
the model writes one shape of sentence, and the picks of one list often share genres and year. Such a
reason is a true statement in the wrong place, so before the reason built from facts takes its place
the row is generated once more with the token trigrams of the list's other reasons banned
(`ListTrigramBan`, after the faithful guard): it has to be phrased differently, and differently from
the list's other retries too. The second text is checked
exactly like the first (`choose_reasons` in finalize); when it fails too, the fact-based reason is shown.

What is not banned: the opener (it is part of the prompt, not of the generated tokens) and trigrams
ending in a digit or a sentence end. A year or a co-watch count is a true fact the evidence allows and
banning its digits would push the model to drop it; a banned full stop would make it run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reasonrec.agent.ranking.evidence import ItemEvidence, ReasonData
from reasonrec.agent.ranking.faithful import Trie, _digit_tokens, _sentence_ends, choose_reasons
from reasonrec.retrieval.types import Item

# A retry may write this many tokens more than the longest first reason of its batch. Why: the banned
# phrasings push the small model to run on ("a dramatic movie from the 1995 film Casino that is a film
# about a murder that is not a film"); the decoding steps of such a row were most of the retry's cost
# (hybrid with 5 reasons went 1.33x slower), and a reason that long is rarely one a person would keep.
RETRY_SLACK = 4


@dataclass(frozen=True)
class Retry:
    """How a batch of second tries is written: per row the trigrams it may not write and its list, and the
    token budget (a row that has not ended its sentence within it is not used: `finished`)."""

    avoid: list[Trie]
    groups: list[int]
    max_new: int

    def finished(self, tokens: Sequence[int]) -> bool:
        """The row stopped on its own (sentence end or end token) before the budget cut it."""
        return len(tokens) < self.max_new


def to_retry(
    items: Sequence[Item], texts: Sequence[str | None], evidence: Sequence[ItemEvidence], history: Sequence[Item],
    query: str | None, data: ReasonData, domain: str,
) -> list[int]:  # fmt: skip
    """Positions of the list whose model text `choose_reasons` would not show (it decides; nothing is copied).

    Args:
        items, texts, evidence: one list in rank order, the model's (cleaned) text per item, its evidence.
        history, query, data, domain: as for `choose_reasons`.
    """
    shown = choose_reasons(items, texts, evidence, history, query, data, domain)
    return [i for i, (s, t) in enumerate(zip(shown, texts, strict=True)) if s.source != "model" and t]


def list_trigrams(rows: Sequence[Sequence[int]]) -> Trie:
    """(a, b) -> the tokens c with "a b c" in one of `rows` (the generated tokens of a list's reasons)."""
    out: dict[tuple[int, ...], set[int]] = {}
    for row in rows:
        for a, b, c in zip(row, row[1:], row[2:], strict=False):
            out.setdefault((a, b), set()).add(c)
    return {k: frozenset(v) for k, v in out.items()}


class ListTrigramBan:
    """Bans, per row, the trigrams of its list's other reasons, and those of the retries before it in its list.

    Rows of one list are written in lockstep, so a trigram the row before writes at this very step would
    not be seen; under greedy decoding that row's choice is its best remaining score, so it is known
    here (rows are processed in batch order) and banned for the rows after it in the same step.

    Args:
        tokenizer: the model's tokenizer (digit and sentence-end tokens stay free, see the module docstring).
        prompt_len: padded prompt length (generated tokens start there).
        avoid: per row, the trigrams of its list's first reasons (`list_trigrams`).
        groups: per row, its list (rows of one list with the same value, in rank order).
        greedy: decoding is greedy (the lockstep choices above are then exact).
    """

    def __init__(self, tokenizer: Any, prompt_len: int, avoid: Sequence[Trie], groups: Sequence[int], greedy: bool):
        self.prompt_len, self.avoid, self.groups, self.greedy = prompt_len, list(avoid), list(groups), greedy
        self.free = frozenset(_digit_tokens(tokenizer)) | _sentence_ends(tokenizer)
        self.n_banned = 0  # tokens banned so far (how often a retry was steered)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        written: dict[int, dict[tuple[int, int], set[int]]] = {}  # list -> trigrams its earlier rows wrote
        for r in range(input_ids.shape[0]):
            gen = input_ids[r, self.prompt_len :].tolist()
            peers = written.setdefault(self.groups[r], {})
            if len(gen) >= 2:
                ctx = (gen[-2], gen[-1])
                ban = (set(self.avoid[r].get(ctx, ())) | peers.get(ctx, set())) - self.free
                keep = scores[r].clone()
                if ban:
                    scores[r, torch.tensor(sorted(ban))] = float("-inf")
                    if torch.isinf(scores[r]).all():  # never leave a row nothing to write
                        scores[r] = keep
                    else:
                        self.n_banned += len(ban)
            for a, b, c in zip(gen, gen[1:], gen[2:], strict=False):
                peers.setdefault((a, b), set()).add(c)
            if self.greedy and len(gen) >= 2:
                peers.setdefault((gen[-2], gen[-1]), set()).add(int(scores[r].argmax()))
        return scores


def reason_tokens(ids: Sequence[int], tokenizer: Any) -> list[int]:
    """A generated row's tokens up to its first newline, without padding or end tokens."""
    stop = {tokenizer.pad_token_id, tokenizer.eos_token_id}
    newline = tokenizer.encode("\n", add_special_tokens=False)
    out = []
    for t in ids:
        if t in newline:
            break
        if t not in stop:
            out.append(int(t))
    return out
