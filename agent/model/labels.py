"""Candidate labels that the model's tokenizer sees as single tokens.

Why: scoring mode reads the next-token logits after "[" — that only ranks every candidate if each
label is exactly one token in that context, and distinct. Generative mode is also more reliable with
one-token labels. We check this once per tokenizer instead of assuming a vocabulary.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from reasonrec.errors import ModelError
from reasonrec.prompts.loader import ANSWER_PREFIX, default_labels

_POOL = 26 + 26 * 26  # A..Z then AA..ZZ


def label_token_ids(tokenizer: Any, n: int) -> tuple[list[str], list[int]]:
    """The first `n` labels (from A, B, ..., then AA, AB, ...) that are single tokens after "[".

    Returns:
        (labels, token ids), aligned.

    Raises:
        ModelError: the tokenizer has fewer than `n` such labels.
    """
    labels, ids = _single_token_labels(tokenizer)
    if len(labels) < n:
        raise ModelError(
            f"the tokenizer has only {len(labels)} single-token candidate labels; "
            f"lower `retrieval.n_candidates` (got {n})"
        )
    return labels[:n], ids[:n]


@lru_cache(maxsize=8)
def _single_token_labels(tokenizer: Any) -> tuple[list[str], list[int]]:
    prefix = tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    labels, ids, seen = [], [], set()
    for label in default_labels(_POOL):
        enc = tokenizer.encode(ANSWER_PREFIX + label, add_special_tokens=False)
        if len(enc) != len(prefix) + 1 or enc[: len(prefix)] != prefix:
            continue
        tid = enc[-1]
        # The label token must decode back to the label, and two labels may not share a token.
        if tid in seen or tokenizer.decode([tid]).strip() != label:
            continue
        seen.add(tid)
        labels.append(label)
        ids.append(tid)
    return labels, ids
