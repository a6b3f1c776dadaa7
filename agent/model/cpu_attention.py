"""Attention over several positions with a padding mask on the CPU, without copying key/value heads.

Why: transformers' `sdpa` attention lets SDPA share a key/value head among its query heads
(`enable_gqa`) only when there is no mask, as CUDA's kernels need; with a mask and more than one
query position it repeats every key/value head for its query heads first (`repeat_kv`: a copy of the
layer's whole cache, every call). Every batched prefill of the reason rows (left-padded, so masked) and
every prompt-lookup step (several positions, agent/model/lookup.py) is such a call. The CPU kernel
takes the mask together with `enable_gqa`, and gives the same bits. Measured on the 2-core CPU (bf16,
5 rows, SmolLM2's 9 query / 3 key-value heads): 127 positions over 349 keys 7.35 -> 5.33 ms a layer,
5 positions over 355 keys 0.73 -> 0.62 ms, outputs equal (tests/test_cpu_kernels.py).

Every other call (one position, which transformers already packs well; no mask; gradients; other
devices; a position bias, soft-capping or attention weights asked for) goes to transformers' own
`sdpa` function unchanged. `model.cpu_grouped_attention: false` turns it off.
"""

from __future__ import annotations

from typing import Any

NAME = "reasonrec_cpu_sdpa"  # the attention implementation's registered name


def use_grouped_attention(model: Any) -> bool:
    """Switch `model` from `sdpa` to this attention; False (nothing changed) for any other implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks `sdpa` gets
    model.set_attn_implementation(NAME)
    return config._attn_implementation == NAME


def _attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
    scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any,
) -> tuple[Any, None]:  # fmt: skip
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    special = any(kwargs.get(k) is not None for k in ("softcap", "position_bias", "s_aux", "sinks"))
    if (
        getattr(module, "num_key_value_groups", 1) == 1
        or query.shape[2] == 1
        or attention_mask is None
        or attention_mask.dtype != torch.bool
        or query.device.type != "cpu"
        or torch.is_grad_enabled()
        or dropout
        or special
        or kwargs.get("output_attentions")
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )  # fmt: skip
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None
