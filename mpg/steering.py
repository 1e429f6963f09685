"""Activation steering: add alpha * v to the output of one decoder block (SPEC section 5).

A steered policy is `Policy(steering=(Steer("name", layer, alpha), ...))`, with the vectors
registered on the engine by name. In a batched forward only the rows of steered policies move: each
row carries its own additive delta [H] per steered layer (zero for unsteered rows).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["Steer", "decoder_layers", "row_deltas", "steered"]


@dataclass(frozen=True)
class Steer:
    """Add `alpha * vectors[vector][layer]` to the output of decoder block `layer` (0-based)."""

    vector: str
    layer: int
    alpha: float = 1.0


def decoder_layers(model) -> torch.nn.ModuleList:
    """The ModuleList of decoder blocks of a (possibly PEFT-wrapped) causal LM."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj = m
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the decoder blocks of {type(m).__name__} to steer")


def row_deltas(
    steering: list[tuple[Steer, ...] | None], vectors: dict[str, torch.Tensor], hidden: int, device
) -> dict[int, torch.Tensor]:
    """Per steered layer, the additive delta of every row: {layer: [R, H]} (empty if nothing is steered)."""
    R = len(steering)
    out: dict[int, torch.Tensor] = {}
    for r, steers in enumerate(steering):
        for s in steers or ():
            v = vectors[s.vector]  # [n_layers, H]
            if v.shape[-1] != hidden:
                raise ValueError(
                    f"steering vector {s.vector!r} has size {v.shape[-1]}, the model's hidden size is {hidden}"
                )
            if not 0 <= s.layer < v.shape[0]:
                raise ValueError(
                    f"steering layer {s.layer} is out of range for vector {s.vector!r} ({v.shape[0]} layers)"
                )
            delta = out.setdefault(s.layer, torch.zeros(R, hidden, device=device))
            delta[r] += s.alpha * v[s.layer].to(device, torch.float32)
    return out


@contextmanager
def steered(model, deltas: dict[int, torch.Tensor]):
    """While active, decoder block L's output gets deltas[L] [R, H] added row-wise at every position."""
    if not deltas:
        yield
        return
    layers = decoder_layers(model)

    def make_hook(delta):
        def hook(module, args, output):
            # .to(device): with a sharded base (device_map) the block may live on another device
            if isinstance(output, tuple):
                h = output[0]
                return (h + delta.to(h.device, h.dtype).unsqueeze(1),) + output[1:]
            return output + delta.to(output.device, output.dtype).unsqueeze(1)

        return hook

    handles = [layers[L].register_forward_hook(make_hook(d)) for L, d in deltas.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
