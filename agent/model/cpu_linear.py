"""Linear layers of a few rows on the CPU: `W @ x.T` instead of `x @ W.T`.

Why: decoding feeds the model one token per row, so every linear layer multiplies a handful of rows
(the 5 reasons of a hybrid answer, a batch of users) by a weight matrix that no cache holds. Measured on
the 2-core AMD EPYC of this project (torch 2.13, MKL, fp32, weights streamed from memory;
`bench/cpu_linear.py` -> `bench/results/cpu_linear.json`), `mm(W, x.T)` is 1.2-2.5x faster than
`F.linear` for 2-5 rows on SmolLM2's layer shapes and 2-3.5x for its 49,152 x 576 output layer up to 32
rows; with one row both run the same matrix-vector kernel, and from ~64 rows (prefill) `linear` is as
fast or faster, so only 2-32 rows take the other path. A hybrid `recommend` (5 reasons) went from 6.33 to
5.06 s (median of 12 users, alternating) with the same ids and reasons for all 12.

Both compute the same dot products; only the order of the float additions inside them may differ,
so outputs agree to float32 rounding (greedy decoding can differ where two tokens are tied to ~1e-6).
Training is untouched (the path is taken only with gradients off), and so are CUDA, quantised and
non-float32 layers. `model.cpu_small_batch_linear: false` turns it off.
"""

from __future__ import annotations

import types
from typing import Any

MIN_ROWS, MAX_ROWS = 2, 32


def use_small_batch_linears(model: Any) -> int:
    """Route every plain `torch.nn.Linear` of `model` through `_forward`; returns how many.

    Subclasses (bitsandbytes' Linear4bit, PEFT's LoRA wrappers) keep their own forward; a LoRA layer's
    `base_layer` is a plain Linear and is routed.
    """
    import torch

    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = types.MethodType(_forward, module)
            n += 1
    return n


def _forward(self: Any, x: Any) -> Any:
    import torch
    import torch.nn.functional as F

    w = self.weight
    rows = x.numel() // w.shape[1] if x.dim() else 0
    if not (
        MIN_ROWS <= rows <= MAX_ROWS
        and not torch.is_grad_enabled()
        and w.device.type == "cpu"
        and w.dtype == torch.float32
        and x.dtype == torch.float32
    ):
        return F.linear(x, w, self.bias)
    y = torch.mm(w, x.reshape(rows, w.shape[1]).t()).t().contiguous()
    if self.bias is not None:
        y += self.bias
    return y.reshape(*x.shape[:-1], w.shape[0])
