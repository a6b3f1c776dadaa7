"""A ranking's progress while it runs, for interfaces that stream (agent/interfaces/streaming.py).

Nothing is reported unless a caller installs a sink with `reporting(sink)` around the call (it lives
in a context variable of the thread that runs the model, so concurrent calls never mix and the
library API pays nothing). Two moments are reported:

- `cards`: the ranked item ids of a request, as soon as the order is decided (before any reason);
- `reason`: a reason's text so far, after each generated token (hybrid mode), through a stopping
  criterion that never stops, so `generate` itself is unchanged.

What is streamed is provisional: `finalize` may still replace a model reason by one built from facts,
and the final result is the truth.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol


class ProgressSink(Protocol):
    """Receives a ranking's progress; called on the model's thread, so it must be quick."""

    def cards(self, request_index: int, item_ids: list[str]) -> None: ...

    def reason(self, request_index: int, item_id: str, text: str) -> None: ...


_SINK: ContextVar[ProgressSink | None] = ContextVar("reasonrec_progress_sink", default=None)


@contextmanager
def reporting(sink: ProgressSink) -> Iterator[None]:
    """Report the progress of every ranking run inside this block (on this thread) to `sink`."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def report_picks(picks: Sequence[Any]) -> None:
    """`cards` for each request's picks (objects with `.parsed.entries[].item_id`), when a sink listens."""
    sink = _SINK.get()
    if sink is not None:
        for u, p in enumerate(picks):
            sink.cards(u, [e.item_id for e in p.parsed.entries])


def reason_criteria(tokenizer: Any, prompt_len: int, rows: Sequence[tuple[Any, str, str]]) -> list[Any]:
    """Extra `stopping_criteria` for a batched reason `generate`: [] unless a sink listens.

    Args:
        tokenizer: decodes each row's new tokens.
        prompt_len: the padded prompt width (new tokens start there).
        rows: per generated row, (its request, item id, opener the reason starts with); rows are grouped
            by request in batch order, so a request's index is its order of first appearance.
    """
    sink = _SINK.get()
    if sink is None:
        return []
    index: dict[int, int] = {}
    numbered = [(index.setdefault(id(req), len(index)), item_id, opener) for req, item_id, opener in rows]
    return [_ReasonProgress(sink, tokenizer, prompt_len, numbered)]


class _ReasonProgress:
    """Reports each row's reason text when it changes; never asks `generate` to stop."""

    def __init__(self, sink: ProgressSink, tokenizer: Any, prompt_len: int, rows: list[tuple[int, str, str]]):
        self.sink, self.tok, self.prompt_len, self.rows = sink, tokenizer, prompt_len, rows
        self.last = [""] * len(rows)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        for i, (u, item_id, opener) in enumerate(self.rows):
            text = opener + self.tok.decode(input_ids[i, self.prompt_len :], skip_special_tokens=True)
            text = text.split("\n", 1)[0].strip()
            if text != self.last[i]:
                self.last[i] = text
                self.sink.reason(u, item_id, text)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
