"""Keep prompts inside the model's context window by dropping the oldest history items.

`PromptConfig` bounds each part of the prompt (`max_history` up to 10,000 items, titles up to 10,000
characters), so a user with an enormous history, or a generous config, can render a prompt longer than
the model can read (the rank prompt shows titles; the reason prompt of hybrid mode shows genres on each
history line, so it is longer still). A transformer fed more positions than it was built for either fails
or degrades silently; instead, `fit_history` keeps the newest history items that fit, so a prompt always
shows the most recent taste. Counting is delegated to the caller (`count_tokens`), because only
the agent knows the tokenizer and chat template; this module imports nothing of ours but errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reasonrec.errors import ConfigError

# Tokenizers that do not know their limit report a huge sentinel (transformers uses int(1e30)).
_NO_LIMIT = 1_000_000


def context_limit(model_max_length: Any = None, max_position_embeddings: Any = None) -> int | None:
    """The number of positions a model can read, from its tokenizer and config values.

    Args:
        model_max_length: `tokenizer.model_max_length` (a huge sentinel when the tokenizer does not know).
        max_position_embeddings: `model.config.max_position_embeddings`.

    Returns:
        The smallest meaningful value, or None when neither is known.
    """
    known = [int(v) for v in (model_max_length, max_position_embeddings) if isinstance(v, int) and 0 < v < _NO_LIMIT]
    return min(known) if known else None


def fit_history(
    history: Sequence[Any],
    render: Callable[[Sequence[Any]], list[dict[str, str]]],
    count_tokens: Callable[[list[dict[str, str]]], int],
    budget: int,
    max_history: int,
) -> int:
    """How many of the newest history items a prompt can show within `budget` tokens.

    Args:
        history: the user's items, oldest first.
        render: renders the prompt's chat messages for a slice of the history, e.g.
            `lambda h: render_rank_messages(h, candidates, k, query, config)`.
        count_tokens: tokens of rendered chat messages (chat template included).
        budget: tokens the prompt may use (context window minus what the model will generate).
        max_history: the template shows at most this many newest items (`PromptConfig.max_history`).

    Returns:
        n, such that `render(history[len(history) - n:])` fits; n is at most min(len(history),
        max_history) and equals it whenever that prompt fits.

    Raises:
        ConfigError: the prompt does not fit even with no history (too many or too long items).
    """
    items = list(history)

    def size(n: int) -> int:
        return count_tokens(render(items[len(items) - n :] if n else []))

    shown = min(len(items), max_history)
    if size(shown) <= budget:  # the common case: one render, one count
        return shown
    if size(0) > budget:
        raise ConfigError(
            f"the prompt needs {size(0)} tokens with no history at all, over the model's budget of {budget}; "
            "lower `retrieval.n_candidates`, `prompt.max_title_chars` or `prompt.max_description_chars`, or "
            "use a model with a longer context"
        )
    lo, hi = 0, shown  # size(lo) fits, size(hi) does not; prompt length grows with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) <= budget else (lo, mid)
    return lo
