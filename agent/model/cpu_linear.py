"""Linear layers on the CPU through oneDNN, each weight packed once into oneDNN's own layout.

Why: decoding streams every weight at every step for a handful of rows (the 5 reasons of a hybrid
answer), and `F.linear` does that badly here. Measured on this project's 2-core AMD EPYC (Zen 4, torch
2.13; `bench/cpu_linear.py` -> `bench/results/cpu_linear.json`): all of SmolLM2-135M's linear layers for 5
rows took 30.3 ms in bf16 with `F.linear`, 8.9 GB/s of the 27 GB/s this memory gives, and 15.6 ms with
`torch.ops.mkldnn._linear_pointwise` on weights reordered once by `_reorder_linear_weight` (what
torch.compile's CPU backend does with frozen weights). It is faster at prefill sizes too (650 rows:
-5 to -10 %), and in bf16 its outputs are bit-identical to `F.linear`'s for 1-650 rows (both accumulate
the same products in float32). In float32 it replaces the earlier `mm(W, x.T)` path (2-2.5x faster than
`F.linear` at 5 rows; outputs equal up to float rounding, as that path's were).

The packed copy is a second copy of the weights (~270 MB for SmolLM2-135M in bf16). It is made on a
layer's first call without gradients and made again when the weight changes (a new tensor, or an
in-place update, which bumps the tensor's version counter), so training (gradients on) keeps
`F.linear` and a validation pass after an optimizer step multiplies by the new weights. CUDA,
quantised layers and other dtypes keep `F.linear`; where oneDNN cannot pack a weight (no oneDNN build,
a CPU without the instructions) the layer keeps `F.linear` too. `model.cpu_packed_linear: false` turns
it off.
"""

from __future__ import annotations

import types
from typing import Any

_PACKED = "_reasonrec_packed"  # the layer attribute holding its `_Packed`
ROW_HINT = 5  # the row count oneDNN is told to expect (the reasons of one answer); any count works


def use_packed_linears(model: Any) -> int:
    """Route every plain `torch.nn.Linear` of `model` through `_forward`; returns how many.

    Subclasses (bitsandbytes' Linear4bit, PEFT's LoRA wrappers) keep their own forward; a LoRA layer's
    `base_layer` and its A/B matrices are plain Linears and are routed.
    """
    import torch

    if not torch.backends.mkldnn.is_available():
        return 0
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
    if (
        torch.is_grad_enabled()
        or w.device.type != "cpu"
        or w.dtype not in (torch.bfloat16, torch.float32)
        or x.dtype != w.dtype
        or (self.bias is not None and self.bias.dtype != w.dtype)
    ):
        return F.linear(x, w, self.bias)
    packed = _packed(self, w)
    if packed is None:
        return F.linear(x, w, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")


class _Packed:
    """A layer's packed weight and the weight version it was made from. A copy or a pickle of the layer
    (`copy.deepcopy`, a worker process) starts empty and packs its own weights: oneDNN's opaque tensors
    can be neither copied nor pickled."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None  # (weight, its data pointer, its version)
        self.weight: Any = None  # None: not packed (or oneDNN cannot take this weight)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Packed:
        return _Packed()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return _Packed, ()


def _packed(layer: Any, w: Any) -> Any:
    """`w` in oneDNN's layout, made once per version of `w`; None where oneDNN cannot take it."""
    import torch

    held = layer.__dict__.get(_PACKED)
    if held is None:
        held = layer.__dict__[_PACKED] = _Packed()
    key = (w.data_ptr(), w._version)
    if held.key is not None and held.key[0] is w and held.key[1:] == key:
        return held.weight
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), ROW_HINT)
        probe = torch.zeros(1, w.shape[1], dtype=w.dtype)  # fails here, once, rather than in a request
        torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
    except (RuntimeError, NotImplementedError):
        packed = None
    held.key, held.weight = (w, *key), packed
    return packed
