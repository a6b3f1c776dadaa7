"""Reuse the KV cache of the prompt prefix that every request shares.

Every rank prompt starts with the same tokens: the chat template's opening, the system message and the
start of the user turn. `SharedPrefix` runs that prefix through the model once, keeps its keys and
values, and builds the inputs of a batched forward pass that only computes each row's remainder:

    [shared prefix (cached)] [left padding] [row's own tokens]

The attention mask has a hole where the padding sits and positions come from its cumulative sum, so
each row sees exactly the positions and keys of its unpadded prompt. Within one batch the prefix is
extended to the longest common prefix of all rows when that is long (the P permutations of one user
share the whole history part), for that batch only.

Only caches made entirely of plain `DynamicLayer`s (full attention) are reused; other cache types
(sliding windows, hybrid models) fall back to a full forward pass.
"""

from __future__ import annotations

from typing import Any

# Extend the shared prefix within a batch only when it saves at least this many tokens per row.
_MIN_EXTENSION = 32


def cache_field() -> str:
    """The name transformers gives the KV cache, as a forward argument and an output field.

    Why: transformers 5.x renamed `past_key_values` to `cache` (the old name warns on every call, and
    goes away in 5.40); older versions know only `past_key_values`.
    """
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def common_prefix_len(rows: list[list[int]]) -> int:
    """Length of the longest common prefix of token id lists (0 for no rows)."""
    if not rows:
        return 0
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return n


class SharedPrefix:
    """Cached keys/values of one token prefix for `model`, and forward-pass inputs that reuse them.

    Args:
        model: a causal LM (or PeftModel) whose forward takes a KV cache (`cache_field()`).
        pad_id: the tokenizer's pad token id.
    """

    def __init__(self, model: Any, pad_id: int):
        self.model = model
        self.pad_id = pad_id
        self._ids: tuple[int, ...] = ()
        self._kv: list[tuple[Any, Any]] | None = None
        self.supported = self._supported()

    def _supported(self) -> bool:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cfg = getattr(self.model, "config", None)
        try:
            layers = DynamicCache(config=cfg).layers if cfg is not None else []
        except Exception:  # an unusual config: no reuse, plain forward passes still work
            return False
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def inputs(self, rows: list[list[int]], prefix_ids: list[int]) -> tuple[dict[str, Any], int]:
        """Keyword arguments for one left-padded forward pass over `rows`, reusing `prefix_ids`' cache.

        Args:
            rows: the token ids of each prompt (unpadded).
            prefix_ids: the tokens every prompt is expected to start with (only the part that every
                row really shares is used; nothing is reused when that is empty or unsupported).

        Returns:
            (kwargs with input_ids, use_cache, and attention_mask/position_ids unless no row is padded and
            nothing is cached, plus the cache (`cache_field()`) when something is; number of prefix tokens cached).
        """
        import torch

        device = self.model.device
        shortest = min(len(r) for r in rows)
        shared = common_prefix_len([list(prefix_ids), *rows]) if self.supported else 0
        shared = min(shared, shortest - 1)  # every row keeps >= 1 token: its last position is read
        kv = self._prefix_kv(rows[0][:shared]) if shared > 0 else None
        batch_lcp = min(common_prefix_len(rows), shortest - 1)
        if kv is not None and len(rows) > 1 and batch_lcp - shared >= _MIN_EXTENSION:
            kv = self._extend(kv, rows[0][shared:batch_lcp], shared)
            shared = batch_lcp
        tails = [r[shared:] for r in rows]
        width = max(len(t) for t in tails)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for i, t in enumerate(tails):
            ids[i, width - len(t) :] = torch.tensor(t, dtype=torch.long)
            mask[i, shared + width - len(t) :] = 1
        # Positions as `generate` computes them: padding never shifts a row's positions.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "position_ids": position_ids.to(device),
        }
        if kv is None:
            kwargs["use_cache"] = False
            if all(len(t) == width for t in tails):
                # No padding and no cache: without a mask, SDPA takes its causal fast path (~5% of a
                # bs-1 forward on the 2-core CPU); the default positions are these ones.
                del kwargs["attention_mask"], kwargs["position_ids"]
        else:
            from reasonrec.agent.model.kv_cache import filled

            n = len(rows)  # decoding appends to this cache in place (kv_cache.py), not by concatenation
            rows_kv = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv]
            kwargs[cache_field()] = filled(self.model, rows_kv)
            kwargs["use_cache"] = True
        return kwargs, shared

    def generate_inputs(self, rows: list[list[int]]) -> dict[str, Any]:
        """Keyword arguments for `generate` over `rows` that reuse the keys/values of their common prefix.

        `generate` takes the whole sequences, the cache of their first tokens (it feeds only the uncached
        rest) and the mask over both: [common prefix][left padding][row's own tokens]. The reason prompts
        of one user share their long history part, so that is computed once instead of once per pick.
        """
        import torch

        kwargs, shared = self.inputs(rows, rows[0])
        tails = kwargs["input_ids"]
        if shared == 0:
            from reasonrec.agent.model.kv_cache import empty_cache

            mask = kwargs.get("attention_mask", torch.ones_like(tails))
            if not self.supported:
                return {"input_ids": tails, "attention_mask": mask}
            return {"input_ids": tails, "attention_mask": mask, cache_field(): empty_cache(self.model)}
        prefix = torch.tensor([rows[0][:shared]], device=tails.device).expand(len(rows), -1)
        return {
            "input_ids": torch.cat([prefix, tails], dim=1),
            "attention_mask": kwargs["attention_mask"],
            cache_field(): kwargs[cache_field()],
        }

    def _prefix_kv(self, ids: list[int]) -> list[tuple[Any, Any]]:
        """Keys/values of `ids` (batch 1), computed once per distinct prefix and kept.

        What `ids` shares with the kept prefix (at least `_MIN_EXTENSION` tokens, or all of the shorter) is
        sliced from it, and only the rest is computed. Why: hybrid mode's second try at a reason (retry.py)
        asks for a longer prefix of the same user's history right after the first pass, and each chat turn's
        reason prompts share the user's history with the turn before and differ from the request on;
        recomputing from the first token cost a full prompt (~0.3 s on the 2-core CPU).
        """
        if self._kv is not None and self._ids:
            n = common_prefix_len([list(self._ids), ids])
            if n == len(ids) == len(self._ids):
                return self._kv
            if n == len(ids):  # a prefix of the kept one
                return [(k[:, :, :n], v[:, :, :n]) for k, v in self._kv]
            if n == len(self._ids) or n >= _MIN_EXTENSION:
                kept = [(k[:, :, :n], v[:, :, :n]) for k, v in self._kv]
                self._kv, self._ids = self._extend(kept, ids[n:], n), tuple(ids)
                return self._kv
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.model.device), use_cache=True, logits_to_keep=1)
        self._kv = [(layer.keys, layer.values) for layer in getattr(out, cache_field()).layers]
        self._ids = tuple(ids)
        return self._kv

    def _extend(self, kv: list[tuple[Any, Any]], ids: list[int], start: int) -> list[tuple[Any, Any]]:
        """The cache of prefix + `ids` (batch 1), for this batch only."""
        import torch
        from transformers import DynamicCache

        past = DynamicCache([(k, v) for k, v in kv])
        pos = torch.arange(start, start + len(ids), device=self.model.device)[None]
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([ids], device=self.model.device),
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **{cache_field(): past},
            )
        return [(layer.keys, layer.values) for layer in getattr(out, cache_field()).layers]
