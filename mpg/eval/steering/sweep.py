"""The layer x alpha sweep: how far steering moves the steered block's output along the vector, what it
costs in fluency (perplexity under the unsteered base), and the strongest setting that stays fluent."""

from __future__ import annotations

import math

import torch

from ...steering import decoder_layers
from ..text_metrics import fluency_ppl
from .responses import (
    mean_activations,
    per_layer,
    plain_base,
    progress_bar,
    projection_at,
    steered_responses,
    steering_deltas,
    unit_vectors,
)

__all__ = ["projection_shift", "recommend", "sweep"]


def projection_shift(
    engine,
    vector: torch.Tensor,
    layer: int,
    alphas: list[float],
    prompts: list[str],
    max_new_tokens: int = 48,
    seed: int = 0,
    *,
    temperature: float = 1.0,
) -> list[float]:
    """For each alpha: mean projection of block `layer`'s steered output over response tokens onto
    vector[layer]/|vector[layer]|, minus the same for unsteered generation (the alpha = 0 value).

    It counts both the added alpha * |v| and the change in what the model then writes."""
    model, _ = plain_base(engine)
    v = per_layer(vector, len(decoder_layers(model)))  # [n_layers, H]
    unit = unit_vectors(v)
    base = projection_at(
        mean_activations(
            engine,
            steered_responses(
                engine,
                None,
                layer,
                0.0,
                prompts,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
            ),
        ),
        unit,
        layer,
    )
    shifts = []
    for alpha in alphas:
        resp = steered_responses(
            engine,
            v,
            layer,
            alpha,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
        )
        shifts.append(
            projection_at(
                mean_activations(engine, resp, steering_deltas(model, v, layer, alpha)), unit, layer
            )
            - base
        )
    return shifts


def sweep(
    engine,
    vector: torch.Tensor,
    layers: list[int],
    alphas: list[float],
    prompts: list[str],
    *,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """One record per (layer, alpha): projection shift (as in `projection_shift`), the perplexity of
    the steered responses under the unsteered base, and its ratio to the unsteered responses' own."""
    model, _ = plain_base(engine)
    n_layers = len(decoder_layers(model))
    bad = [L for L in layers if not 0 <= L < n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the model has {n_layers} decoder blocks (0-based)")
    v = per_layer(vector, n_layers)
    unit = unit_vectors(v)
    bar = progress_bar(1 + len(layers) * len(alphas), "steering sweep", progress)
    kw = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    base_resp = steered_responses(engine, None, 0, 0.0, prompts, **kw)
    base_act = mean_activations(engine, base_resp)  # [n_layers, H]
    base_ppl = fluency_ppl(engine, [r for _, r in base_resp], [c for c, _ in base_resp])
    if bar:
        bar.update()
    records = []
    for layer in layers:
        for alpha in alphas:
            resp = steered_responses(engine, v, layer, alpha, prompts, **kw)
            act = mean_activations(engine, resp, steering_deltas(model, v, layer, alpha))
            ppl = fluency_ppl(engine, [r for _, r in resp], [c for c, _ in resp])
            records.append(
                {
                    "layer": layer,
                    "alpha": float(alpha),
                    "projection_shift": projection_at(act, unit, layer)
                    - projection_at(base_act, unit, layer),
                    "added_norm": float(alpha) * float(v[layer].norm()),  # the hook's own share: alpha |v|
                    "residual_norm": float(base_act[layer].norm()),  # unsteered scale at this block
                    "ppl": ppl,
                    "base_ppl": base_ppl,
                    "ppl_ratio": ppl / base_ppl,
                    "mean_new_tokens": sum(len(r) for _, r in resp) / max(len(resp), 1),
                    "example": engine.tokenizer.decode(resp[0][1], skip_special_tokens=True) if resp else "",
                }
            )
            if bar:
                bar.update()
    if bar:
        bar.close()
    return records


def recommend(records: list[dict], max_ppl_ratio: float = 1.5, key: str = "projection_shift") -> dict | None:
    """The record with the largest `key` (default: projection shift) among those with alpha != 0, a
    positive shift and ppl_ratio <= max_ppl_ratio (finite); ties go to the smaller |alpha|, then the
    earlier layer. None when no setting qualifies (steering costs too much fluency everywhere)."""
    ok = [
        r
        for r in records
        if r["alpha"] != 0
        and r[key] > 0
        and math.isfinite(r["ppl_ratio"])
        and r["ppl_ratio"] <= max_ppl_ratio
    ]
    return max(ok, key=lambda r: (r[key], -abs(r["alpha"]), -r["layer"]), default=None)
