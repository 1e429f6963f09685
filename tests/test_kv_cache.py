"""The growing KV cache holds what transformers' DynamicCache holds, through every operation the scorer
performs on a layer (append, crop, fresh tensors assigned), while appending in place."""

import torch
from transformers import DynamicCache

from mpg.kv_cache import GrowingCache


def test_growing_cache_matches_dynamic_cache_and_appends_in_place():
    g = torch.Generator().manual_seed(0)
    grow, ref = GrowingCache(), DynamicCache()

    def feed(W):
        k, v = torch.randn(3, 2, W, 4, generator=g), torch.randn(3, 2, W, 4, generator=g)  # [N, H, W, D]
        got, want = grow.update(k, v, 0), ref.update(k, v, 0)
        for a, b in zip(got, want):
            assert torch.equal(a, b)

    feed(5)
    ptr = grow.layers[0].keys.data_ptr()
    feed(1)
    feed(2)
    assert grow.layers[0].keys.data_ptr() == ptr  # written into the spare columns, no copy
    grow.crop(-3), ref.crop(-3)
    feed(1)
    assert grow.layers[0].keys.data_ptr() == ptr  # a crop keeps the buffer
    for cache in (grow, ref):  # what select / compaction do: assign fresh tensors
        lay = cache.layers[0]
        lay.keys, lay.values = lay.keys[[2, 0]], lay.values[[2, 0]]
    feed_rows = torch.randn(2, 2, 1, 4, generator=g)
    for a, b in zip(grow.update(feed_rows, -feed_rows, 0), ref.update(feed_rows, -feed_rows, 0)):
        assert torch.equal(a, b)  # adopted the fresh tensors as a new buffer's first columns
    for W in (70, 1):  # past the headroom: reallocated, contents kept
        k = torch.randn(2, 2, W, 4, generator=g)
        for a, b in zip(grow.update(k, k, 0), ref.update(k, k, 0)):
            assert torch.equal(a, b)
    assert grow.get_seq_length() == ref.get_seq_length() == 5 + 1 + 2 - 3 + 1 + 1 + 70 + 1
