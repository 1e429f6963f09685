"""Fingerprints that tell whether an adapter was trained on this base model and tokenizer.

A LoRA adapter trained on another checkpoint of the same architecture loads without any shape
error and then silently scores nonsense; the fingerprints saved next to it catch that.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["same_weights", "vocab_fingerprint", "weight_fingerprint"]


def vocab_fingerprint(tokenizer) -> str:
    """sha256 of the token -> id map."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256("\n".join(f"{i}\t{t}" for t, i in items).encode("utf-8")).hexdigest()[:16]


@torch.no_grad()
def weight_fingerprint(model) -> list[float]:
    """Norms of 32 embedding rows and of every linear weight in the last decoder block.

    Norms, not hashes, so the same checkpoint matches in float32, bfloat16 or on another device
    (compare with `same_weights`); LoRA wrappers are looked through so a PEFT model and its base agree.
    """
    from .steering import decoder_layers

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb = base.get_input_embeddings().weight[:32].detach().float()  # [32, H]
    norms = emb.norm(dim=-1).tolist()
    linear = {}
    for name, module in decoder_layers(base)[-1].named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:
            linear[name.replace(".base_layer", "")] = float(module.weight.detach().float().norm())
    return [round(x, 4) for x in norms + [linear[k] for k in sorted(linear)]]


def same_weights(a: list[float], b: list[float], rtol: float = 1e-2) -> bool:
    """Whether two `weight_fingerprint`s agree entry by entry within relative tolerance `rtol`."""
    return len(a) == len(b) and all(abs(x - y) <= rtol * max(abs(x), abs(y), 1e-6) for x, y in zip(a, b))
