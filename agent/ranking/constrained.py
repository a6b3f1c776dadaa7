"""Constrained decoding for generative mode: whatever the model writes, the answer parses.

The rank prompt asks for k lines `[label] reason`, and the ranker prefills "[". `RankLogitsProcessor`
masks the next-token scores of every row with a small state machine over what that row has generated
so far, so the only possible outputs are

    L1] reason one\\n[L2] reason two\\n ... [Lk] reason k<eos>

where every L is a single-token label (agent/labels.py) of a candidate of that row not used before,
and every reason has between `min_reason_tokens` and `max_reason_tokens` tokens containing no newline,
no bracket, no parenthesis and no dash that would let the model copy a listing line ("Title (1995) —
Comedy"). Within those bounds the model still chooses every token itself.

Why our own processor instead of a grammar library (outlines 1.3.3 was the candidate): "no repeated
label" is not a regular language of manageable size (a regex over 20 labels without repeats has
~20!/15! paths for k=5), while here it is one Python set per row. The mask for reason tokens is one
boolean vector per tokenizer, built once (~0.3 s for SmolLM2's 49k tokens), and each decoding step
costs one masked_fill per batch; no extra dependency, no index compilation per prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from reasonrec.errors import ConfigError, ModelError
from reasonrec.prompts.loader import ANSWER_PREFIX, clean_text
from reasonrec.prompts.parser import ParsedEntry, ParsedRanking

# Characters a reason token may not contain: line structure ("\n", "[", "]") and what a copied
# candidate line needs ("(1995) — Comedy"); usable_reason() rejects such echoes anyway.
_FORBIDDEN_IN_REASON = ("\n", "\r", "[", "]", "(", ")", "—", "–", "<|", "|>")
MIN_REASON_TOKENS = 3
_LINE = re.compile(r"\[([A-Za-z0-9]{1,8})\]\s?(.*)")


@dataclass(frozen=True)
class RankGrammar:
    """Token ids that the rank answer is built from, for one tokenizer."""

    close_id: int  # "]"
    newline_id: int  # "\n"
    open_id: int  # "["
    eos_id: int
    reason_ok: Any  # torch.BoolTensor [len(tokenizer)]: tokens allowed inside a reason


@lru_cache(maxsize=8)
def rank_grammar(tokenizer: Any) -> RankGrammar:
    """The grammar's token ids for `tokenizer` (cached per tokenizer object).

    Raises:
        ModelError: "]", "[" or "\\n" is not a single token, or the tokenizer has no EOS token.
    """
    import torch

    def single(text: str) -> int:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ModelError(f"constrained decoding needs {text!r} to be one token; this tokenizer gives {ids}")
        return ids[0]

    if tokenizer.eos_token_id is None:
        raise ModelError("constrained decoding needs a tokenizer with an EOS token; set `ranker.constrained` false")
    n = len(tokenizer)
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    ok = [i not in special and bool(t) and not any(c in t for c in _FORBIDDEN_IN_REASON) for i, t in enumerate(texts)]
    return RankGrammar(
        close_id=single("]"),
        newline_id=single("\n"),
        open_id=single(ANSWER_PREFIX),
        eos_id=int(tokenizer.eos_token_id),
        reason_ok=torch.tensor(ok, dtype=torch.bool),
    )


@dataclass
class _Row:
    labels: list[int]  # label token ids of this row's candidates
    k: int
    openers: dict[int, list[int]] = field(default_factory=dict)  # label token -> forced first reason tokens
    used: set[int] = field(default_factory=set)
    phase: str = "label"  # label -> close -> reason -> open -> label ... -> done
    lines: int = 0
    reason_len: int = 0
    last: int = -1  # the label token of the current line
    pending: list[int] = field(default_factory=list)  # opener tokens still to be written
    bias: dict[int, float] = field(default_factory=dict)  # label token -> added to its logit (fused.label_bias)
    bias_t: Any = None  # (ids, values) tensors of `bias`, built at the first decoding step, reused at every other


class RankLogitsProcessor:
    """A transformers LogitsProcessor that keeps each row of a batch inside the rank grammar.

    Args:
        grammar: from `rank_grammar(tokenizer)`.
        row_labels: per batch row, the label token ids of that row's candidates.
        ks: per batch row, how many lines to write (1 <= k <= number of labels).
        prompt_len: length of the (padded) prompt; generated tokens start there.
        max_reason_tokens: a reason ends (newline, or EOS after line k) after this many tokens.
        min_reason_tokens: a reason cannot end before this many tokens.
        row_openers: per batch row, label token id -> token ids every reason for that label starts
            with (agent.reasons.reason_opener: "Like <closest history title>, it"); they are forced
            and do not count against `max_reason_tokens`.
        row_label_bias: per batch row, label token id -> a value added to that label's logit whenever
            the row picks a label (the fused retrieval score, fused.label_bias); greedy decoding then
            writes the fused order unless the LM's own margin is larger.

    Raises:
        ConfigError: inconsistent rows, k out of range or token bounds < 1.
    """

    def __init__(
        self,
        grammar: RankGrammar,
        row_labels: list[list[int]],
        ks: list[int],
        prompt_len: int,
        max_reason_tokens: int,
        min_reason_tokens: int = MIN_REASON_TOKENS,
        row_openers: list[dict[int, list[int]]] | None = None,
        row_label_bias: list[dict[int, float]] | None = None,
    ):
        if len(row_labels) != len(ks):
            raise ConfigError(f"`row_labels` and `ks` must have one entry per row, got {len(row_labels)} and {len(ks)}")
        for r, (labels, k) in enumerate(zip(row_labels, ks, strict=True)):
            if not 1 <= k <= len(set(labels)):
                raise ConfigError(f"row {r}: `k` must be between 1 and {len(set(labels))} distinct labels, got {k}")
        if not 1 <= min_reason_tokens <= max_reason_tokens:
            raise ConfigError(
                f"need 1 <= min_reason_tokens <= max_reason_tokens, got {min_reason_tokens} and {max_reason_tokens}"
            )
        self.g = grammar
        openers = row_openers if row_openers is not None else [{} for _ in ks]
        if len(openers) != len(ks):
            raise ConfigError(f"`row_openers` must have one entry per row, got {len(openers)} for {len(ks)} rows")
        biases = row_label_bias if row_label_bias is not None else [{} for _ in ks]
        if len(biases) != len(ks):
            raise ConfigError(f"`row_label_bias` must have one entry per row, got {len(biases)} for {len(ks)} rows")
        self.rows = [
            _Row(list(lab), k, dict(op), bias=dict(b))
            for lab, k, op, b in zip(row_labels, ks, openers, biases, strict=True)
        ]
        self.prompt_len = prompt_len
        self.consumed = prompt_len
        self.max_reason = max_reason_tokens
        self.min_reason = min_reason_tokens

    @staticmethod
    def max_new_tokens(k: int, max_reason_tokens: int) -> int:
        """Tokens a full answer of k lines can take: label, "]", reason, "\\n" (or EOS), "[" per line."""
        return k * (max_reason_tokens + 4)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for pos in range(self.consumed, input_ids.shape[1]):
            for row, tok in zip(self.rows, input_ids[:, pos].tolist(), strict=True):
                self._advance(row, tok)
        self.consumed = input_ids.shape[1]
        allow = torch.zeros_like(scores, dtype=torch.bool)
        reason_ok = self.g.reason_ok.to(scores.device)
        width = min(reason_ok.shape[0], scores.shape[1])  # the head may be wider than the tokenizer
        for r, row in enumerate(self.rows):
            if row.phase == "reason" and row.pending:
                allow[r, row.pending[0]] = True
                continue
            if row.phase == "reason" and row.reason_len < self.max_reason:
                allow[r, :width] = reason_ok[:width]
            allow[r, self._forced(row)] = True
        out = scores.masked_fill(~allow, float("-inf"))
        for r, row in enumerate(self.rows):
            if row.phase == "label" and row.bias:
                if row.bias_t is None:
                    ids, values = list(row.bias), list(row.bias.values())
                    row.bias_t = (torch.tensor(ids, device=out.device),
                                  torch.tensor(values, dtype=out.dtype, device=out.device))  # fmt: skip
                out[r, row.bias_t[0]] += row.bias_t[1]
        return out

    def _forced(self, row: _Row) -> list[int]:
        """Token ids allowed in this phase besides ordinary reason tokens."""
        end = self.g.eos_id if row.lines + 1 >= row.k else self.g.newline_id
        if row.phase == "label":
            return [t for t in row.labels if t not in row.used]
        if row.phase == "close":
            return [self.g.close_id]
        if row.phase == "reason":
            return [end] if row.reason_len >= self.min_reason else []
        if row.phase == "open":
            return [self.g.open_id]
        return [self.g.eos_id]  # done: generate pads these rows anyway

    def _advance(self, row: _Row, tok: int) -> None:
        if row.phase == "label":
            row.used.add(tok)
            row.phase, row.last = "close", tok
        elif row.phase == "close":
            row.phase, row.reason_len = "reason", 0
            row.pending = list(row.openers.get(row.last, ()))
        elif row.phase == "reason":
            if row.pending and tok == row.pending[0]:
                row.pending.pop(0)
            elif tok == self.g.newline_id:
                row.lines += 1
                row.phase = "open"
            elif tok == self.g.eos_id:
                row.lines += 1
                row.phase = "done"
            else:
                row.reason_len += 1
        elif row.phase == "open":
            row.phase = "label"


def parse_constrained(text: str, label_map: dict[str, str], k: int, max_reason_chars: int) -> ParsedRanking:
    """Read an answer written under `RankLogitsProcessor`: one `[label] reason` per line, nothing else.

    Why not `parse_ranking`: its leniency is for free text. A reason made only of label-like words
    ("[C] A, B") reads there as three picks; under the grammar the label is the token after "[" and
    everything up to the line end is the reason, so this reading is exact.

    Args:
        text: the answer including the "[" prefill.
        label_map: label -> item id of the candidates, in retriever order (the fill-up order).
        k: picks expected.
        max_reason_chars: reasons are cut to this length at a word boundary.

    Returns:
        A ParsedRanking with k entries: the model's picks, then retriever order for a short answer.
    """
    entries: list[ParsedEntry] = []
    seen: set[str] = set()
    off: list[str] = []
    dups: list[str] = []
    for line in text.split("\n"):
        m = _LINE.fullmatch(line.strip())
        if not m:
            continue  # a line cut off by the token limit or time limit
        label, reason = m.group(1), clean_text(m.group(2), max_reason_chars) or None
        if label not in label_map:
            off.append(label)
        elif label in seen:
            dups.append(label)
        elif len(entries) < k:
            seen.add(label)
            entries.append(ParsedEntry(label=label, item_id=str(label_map[label]), reason=reason, source="model"))
    n_model = len(entries)
    for label, item_id in label_map.items():
        if len(entries) >= k:
            break
        if label not in seen:
            entries.append(ParsedEntry(label=label, item_id=str(item_id), source="fallback"))
    missing = sum(e.reason is None for e in entries[:n_model])
    return ParsedRanking(
        entries=entries,
        n_model=n_model,
        n_fallback=k - n_model,
        off_candidate=off,
        duplicates=dups,
        missing_reasons=missing,
        format="lines" if n_model else "empty",
        valid=n_model == k and not (off or dups),
    )
