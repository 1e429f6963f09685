"""A steering file for lm-evaluation-harness's `steered` model (lm_eval/models/hf_steered.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...extract import PersonaVectors
from ...steering import decoder_layers

__all__ = ["export_lm_eval_steer", "lm_eval_hookpoint"]


def lm_eval_hookpoint(model, layer: int) -> str:
    """lm-eval's name for decoder block `layer`: its name in `model.base_model.named_modules()`
    (e.g. "layers.20" for Llama/Qwen/SmolLM, "h.20" for GPT-2), where lm-eval looks hookpoints up."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    block = decoder_layers(m)[layer]
    for name, module in m.base_model.named_modules():
        if module is block:
            return name
    raise ValueError(f"decoder block {layer} is not under {type(m).__name__}.base_model")


def export_lm_eval_steer(
    vectors: PersonaVectors,
    path: str | Path,
    names: list[str],
    weights: list[float] | None = None,
    layer: int = 20,
    alpha: float = 2.0,
    model=None,
) -> dict:
    """Write a `.pt` steering file for lm-eval's `steered` model (lm_eval/models/hf_steered.py):

        {hookpoint: {"steering_vector": [H] float32, "steering_coefficient": alpha, "action": "add",
                     "bias": None, "head_index": None}}

    lm-eval adds `steering_coefficient * steering_vector` to the output of that module at every
    position, which is what `Steer(name, layer, alpha)` does with the merged vector. The hookpoint is
    named from `model` (see `lm_eval_hookpoint`); without a model it is "layers.{layer}". Use with
    `lm_eval --model steered --model_args pretrained=BASE,steer_path=PATH` (no `peft=`: under PEFT
    the module names change)."""
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(f"lm-eval reads steering files ending in .pt or .pth, not {path.name!r}")
    merged = vectors.merge(names, weights)  # [n_layers, H]
    if not 0 <= layer < merged.shape[0]:
        raise ValueError(f"layer {layer} out of range for vectors with {merged.shape[0]} layers")
    hookpoint = lm_eval_hookpoint(model, layer) if model is not None else f"layers.{layer}"
    config = {
        hookpoint: {
            "steering_vector": merged[layer].clone().contiguous(),  # [H]
            "steering_coefficient": float(alpha),
            "action": "add",
            "bias": None,
            "head_index": None,
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(config, path)
    return config
