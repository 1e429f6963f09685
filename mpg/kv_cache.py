"""A KV cache that appends in place: transformers' DynamicCache with spare columns.

DynamicLayer appends a feed with torch.cat, which copies the whole cache every decode step: for the
rows of a four-attribute target that showed in the profiles (benchmarks/profile_step.py). Here a
layer's keys and values are views of the first `length` columns of larger buffers; a feed is written
into the spare columns, and only when those run out is a buffer reallocated (with headroom, so the
copies are amortised). Everything else that PolicyGroup does to a layer (crop, gather, select rows,
concatenate groups) either keeps the view on its buffer (crop) or assigns fresh tensors, which the
next update notices (the view no longer starts the buffer) and adopts as a new buffer's first columns.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["GrowingCache", "GrowingLayer"]

MIN_HEADROOM = 64  # spare columns allocated at least, per reallocation


class GrowingLayer(DynamicLayer):
    """keys, values: [N, H, length, D] views of buffers [N, H, capacity, D] (capacity >= length)."""

    _key_buf: torch.Tensor | None = None
    _value_buf: torch.Tensor | None = None

    def _backed(self) -> bool:
        """Whether keys/values are still the leading columns of this layer's buffers (crop keeps them so;
        any assignment of fresh tensors does not)."""
        kb, vb, k, v = self._key_buf, self._value_buf, self.keys, self.values
        return (
            kb is not None
            and k.data_ptr() == kb.data_ptr()
            and v.data_ptr() == vb.data_ptr()
            and k.stride() == kb.stride()
            and v.stride() == vb.stride()
            and k.shape[:2] == kb.shape[:2]
        )

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append key_states, value_states [N, H, W, D]; return the whole cache's keys and values."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        C = self.keys.shape[-2] if self.keys.dim() == 4 else 0
        W = key_states.shape[-2]
        if not self._backed() or C + W > self._key_buf.shape[-2]:
            cap = C + W + max((C + W) // 2, MIN_HEADROOM)
            N, H, _, D = key_states.shape
            kb = key_states.new_empty(N, H, cap, D)  # [N, H, cap, D]
            vb = value_states.new_empty(N, H, cap, value_states.shape[-1])  # [N, H, cap, Dv]
            if C:
                kb[:, :, :C] = self.keys
                vb[:, :, :C] = self.values
            self._key_buf, self._value_buf = kb, vb
        self._key_buf[:, :, C : C + W] = key_states
        self._value_buf[:, :, C : C + W] = value_states
        self.keys = self._key_buf[:, :, : C + W]  # [N, H, C+W, D]
        self.values = self._value_buf[:, :, : C + W]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """A DynamicCache whose layers are GrowingLayer (created lazily, one per decoder layer)."""

    def __init__(self):
        super().__init__()
        self.layer_class_to_replicate = GrowingLayer
