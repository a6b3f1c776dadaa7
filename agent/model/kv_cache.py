"""A key/value cache that grows in place instead of by concatenation.

Why: transformers' `DynamicLayer.update` appends each decoding step's keys/values with `torch.cat`, which
copies the whole cache of every layer at every step. For the five reason rows of a hybrid answer
(a ~340-token prompt, SmolLM2's 30 layers) that copy was 40-55 ms of a ~125 ms decoding step on the
2-core CPU (torch profiler: `aten::cat` 34 % of the step, after `aten::mm`). `BufferedLayer` keeps the
keys/values in a buffer with spare room and writes each step into it; the tensors it returns are views
of the filled part, holding the same numbers `cat` would have produced, so outputs do not change.
"""

from __future__ import annotations

from typing import Any

# Spare positions when a buffer is (re)allocated: at least this many, and at least half the filled length.
_MIN_ROOM = 64


def buffered(cache: Any) -> Any:
    """`cache` (a transformers `DynamicCache`) with its plain full-attention layers growing in place.

    Layers of other types (sliding windows, offloaded or quantised caches) and caches without `layers`
    (older transformers) are returned as they are.
    """
    from transformers.cache_utils import DynamicLayer

    for layer in getattr(cache, "layers", ()):
        if type(layer) is DynamicLayer:
            layer.__class__ = BufferedLayer
    return cache


def empty_cache(model: Any) -> Any:
    """A fresh `DynamicCache` of growing layers for `model`'s `generate` (the default it would build)."""
    from transformers import DynamicCache

    try:
        return buffered(DynamicCache(config=model.config))
    except TypeError:  # transformers without `config=`: its own default cache
        return DynamicCache()


def filled(model: Any, kv: list[tuple[Any, Any]]) -> Any:
    """A `DynamicCache` for `model` holding `kv` (keys, values per layer), growing in place."""
    from transformers import DynamicCache

    try:
        cache = buffered(DynamicCache(config=model.config))
    except TypeError:  # transformers without `config=`
        return DynamicCache(kv)
    if len(cache.layers) != len(kv):
        return DynamicCache(kv)
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.update(k, v)
    return cache


def _layer_base() -> type:
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


class BufferedLayer(_layer_base()):  # type: ignore[misc]
    """A `DynamicLayer` whose `update` writes into a buffer with spare room (see the module docstring)."""

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys = self.keys
        n = keys.shape[-2] if keys is not None and keys.dim() == 4 else 0
        need = n + key_states.shape[-2]
        buf = self.__dict__.get("_buf")
        # Someone else set `keys` (crop, batch selection, a reset), or the room or batch shape is gone: copy
        # what is cached into a new buffer, as `cat` would have.
        if (
            buf is None
            or self.__dict__.get("_view") is not keys
            or buf[0].shape[-2] < need
            or buf[0].shape[:2] != key_states.shape[:2]
        ):
            b, h, _, d = key_states.shape
            cap = need + max(_MIN_ROOM, need // 2)
            kb = key_states.new_empty((b, h, cap, d))
            vb = value_states.new_empty((b, h, cap, value_states.shape[-1]))
            if n:
                kb[:, :, :n] = keys
                vb[:, :, :n] = self.values
            buf = self._buf = (kb, vb)
        buf[0][:, :, n:need] = key_states
        buf[1][:, :, n:need] = value_states
        self.keys, self.values = buf[0][:, :, :need], buf[1][:, :, :need]
        self._view = self.keys
        return self.keys, self.values

    def truncate(self, length: int) -> None:
        """Keep the first `length` positions, in the same buffer: the next `update` writes over the rest
        (a decoding step's rejected guesses, agent/model/lookup.py), with no copy."""
        if self.keys is not None and self.keys.shape[-2] > length:
            self.keys, self.values = self.keys[:, :, :length], self.values[:, :, :length]
            if "_view" in self.__dict__:
                self._view = self.keys

    def reset(self) -> None:
        self.__dict__.pop("_buf", None)
        self.__dict__.pop("_view", None)
        super().reset()
