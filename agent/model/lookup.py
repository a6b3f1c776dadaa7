"""Greedy decoding that checks guesses taken from each row's own prompt: several tokens per forward pass.

Why: a decoding step of the five reason rows costs ~65 ms on the 2-core CPU, nearly all of it reading
the weights, and a step over a few more positions costs little more (5 rows: 1 position 90 ms, 5
positions 124 ms). A reason mostly restates its prompt's facts ("It is a horror and thriller movie from
1996." -> "..., it's a horror and thriller movie from 1996."), so the tokens that followed a row's last
few tokens where they last appeared in its prompt are a good guess of what it writes next ("prompt
lookup decoding"). Each guessed position is then checked in order with the same logits processors
and stopping criteria, called with the same token ids, as in `generate`'s greedy loop; the first
position where a row's greedy choice is not its guess ends the step and that choice is kept. So the
tokens are greedy's own, up to float rounding: a forward pass over several positions sums in another
order than one over one position, and a near tie can go the other way (bench/lookup_decoding.py
counts how often).

All rows accept the same number of tokens per step (lockstep): the processors see the rectangular batch
`generate` would show them (the retry's same-step trigram bans stay exact) and one crop of the cache
serves every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Guess at most this many tokens a step: a wider step costs more when the guess fails (5 rows on the
# 2-core CPU: 4 positions 1.4x a plain step, 8 positions 1.7x), and most matches end within 4.
MAX_GUESS = 4
# The longest n-gram looked up; a guess needs a match of at least 2 tokens (a single token follows too
# many different things to guess from).
MAX_NGRAM = 3


@dataclass
class Decoded:
    """What `generate(..., return_dict_in_generate=True)` gives the caller here, and how it got there."""

    sequences: Any  # [rows, prompt + new] token ids, pad after a row's end (as `generate`)
    cache: Any  # the KV cache over sequences[:, :-1]
    forwards: int  # model calls, the prompt's included
    steps: int  # new tokens per row (plain greedy decoding makes one call for each)


def can_decode(inputs: dict[str, Any], cache_key: str) -> bool:
    """The inputs carry a cache that can be cut back in place (kv_cache.BufferedLayer throughout)."""
    from reasonrec.agent.model.kv_cache import BufferedLayer

    layers = getattr(inputs.get(cache_key), "layers", None)
    return bool(layers) and all(isinstance(layer, BufferedLayer) for layer in layers)


def guess(tokens: list[int], n_max: int = MAX_NGRAM, k: int = MAX_GUESS) -> list[int]:
    """The up to `k` tokens that followed the latest earlier occurrence of `tokens`' last n tokens
    (longest n first, n >= 2); [] when none occurs."""
    for n in range(min(n_max, len(tokens) - 1), 1, -1):
        tail = tokens[-n:]
        for s in range(len(tokens) - n - 1, -1, -1):
            if tokens[s : s + n] == tail:
                return tokens[s + n : s + n + k]
    return []


def greedy_lookup(
    model: Any, inputs: dict[str, Any], *, cache_key: str, max_new_tokens: int, processors: list[Any],
    criteria: list[Any], pad_id: int, eos_ids: set[int],
) -> Decoded:  # fmt: skip
    """Greedy decoding of `inputs` (input_ids, attention_mask and a cache of their first tokens, as for
    `generate`) with prompt-lookup guesses checked as the module docstring says.

    Args:
        model: the causal LM (or PeftModel). cache_key: the cache's name (`prefix.cache_field()`).
        max_new_tokens, processors, criteria, pad_id, eos_ids: as `generate`'s (greedy: no sampling).
    """
    import torch

    ids, mask, cache = inputs["input_ids"], inputs["attention_mask"], inputs[cache_key]
    prompt_len, dev = ids.shape[1], ids.device
    rows = [[t for t, m in zip(r, mr, strict=True) if m] for r, mr in zip(ids.tolist(), mask.tolist(), strict=True)]
    live = torch.ones(ids.shape[0], dtype=torch.bool, device=dev)
    eos = torch.tensor(sorted(eos_ids), device=dev)
    x = ids[:, cache.get_seq_length() :]  # what the cache does not hold yet
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -x.shape[1] :]  # as `generate` computes them
    forwards = 0
    while True:
        alive = [r for r in range(len(rows)) if live[r]]
        room = max_new_tokens - (ids.shape[1] - prompt_len) - 1  # guesses that still fit the budget
        found = [guess(rows[r]) for r in alive]
        width = max(0, min(room, *(len(g) for g in found))) if found else 0
        guessed = torch.full((ids.shape[0], width), pad_id, dtype=torch.long, device=dev)
        for r, g in zip(alive, found, strict=True):
            guessed[r] = torch.tensor(g[:width], dtype=torch.long)
        last_pos = pos[:, -1:]
        if width:
            x = torch.cat([x, guessed], dim=1)
            pos = torch.cat([pos, last_pos + torch.arange(1, width + 1, device=dev)], dim=1)
        full = torch.cat([mask, mask.new_ones((mask.shape[0], width))], dim=1)
        with torch.inference_mode():
            out = model(
                input_ids=x, attention_mask=None if bool(full.all()) else full, position_ids=pos,
                use_cache=True, logits_to_keep=width + 1, **{cache_key: cache},
            )  # fmt: skip
        forwards += 1
        kept = ids.shape[1]  # the cache now holds these tokens and the guesses
        for j in range(width + 1):
            scores = out.logits[:, j].to(copy=True, dtype=torch.float32)
            for p in processors:
                scores = p(ids, scores)
            choice = torch.where(live, scores.argmax(-1), torch.full_like(live, pad_id, dtype=torch.long))
            ids = torch.cat([ids, choice[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            was_live = live.clone()
            done = torch.isin(choice, eos)
            for c in criteria:  # every criterion sees every step, as in `generate` (streaming ones too)
                done = done | c(ids, scores)
            live = live & ~done & (ids.shape[1] - prompt_len < max_new_tokens)
            for r in range(len(rows)):
                if was_live[r]:
                    rows[r].append(int(choice[r]))
            if not live.any() or j == width or not _agrees(choice, guessed[:, j], was_live):
                break
        for layer in cache.layers:  # keep the guesses taken; the newest token is fed next
            layer.truncate(kept + j)
        if not live.any():
            return Decoded(ids, cache, forwards, ids.shape[1] - prompt_len)
        x, pos = ids[:, -1:], last_pos + j + 1


def _agrees(choice: Any, guessed: Any, live: Any) -> bool:
    """Every row still writing chose its guess (finished rows write padding whatever was guessed)."""
    return bool((choice == guessed)[live].all())
