"""BILLY's projection profile: per layer, the activation change (vs the plain prompt) projected onto each
unit persona vector, for a multi-role system prompt, merged-vector steering and each single vector's."""

from __future__ import annotations

from ...extract import PersonaVectors
from ...steering import decoder_layers
from .responses import (
    mean_activations,
    per_layer,
    plain_base,
    progress_bar,
    steered_responses,
    steering_deltas,
    unit_vectors,
)

__all__ = ["multi_role_prompt", "projection_profile"]


def multi_role_prompt(personas: dict[str, list[str]], names: list[str]) -> str:
    """One system prompt naming every role: the first prompt of each persona, joined."""
    return " ".join(personas[n][0] for n in names)


def projection_profile(
    engine,
    vectors: PersonaVectors,
    names: list[str],
    prompt_multi_role: str,
    prompts: list[str],
    layer: int,
    alpha: float,
    *,
    weights: list[float] | None = None,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Per layer L and persona i: (mean activation under a condition - mean activation plain)[L]
    projected onto v_i[L]/|v_i[L]|, for the conditions: the multi-role system prompt (no steering),
    the merged vector at (layer, alpha), and each single vector at (layer, alpha).

    Each condition is measured on its own generated responses (what the model actually writes), the
    plain reference on `Policy()` responses to the same prompts, with the same seeds."""
    model, _ = plain_base(engine)
    n_layers = len(decoder_layers(model))
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} decoder blocks (0-based)")
    units = {n: unit_vectors(per_layer(vectors.vectors[n], n_layers)) for n in names}  # name -> [n_layers, H]
    merged = vectors.merge(names, weights)  # [n_layers, H]
    steer = {"merged": merged, **{f"single:{n}": vectors.vectors[n] for n in names}}
    kw = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    bar = progress_bar(2 + len(steer), "projection profile", progress)

    def step(act):
        if bar:
            bar.update()
        return act

    plain = step(mean_activations(engine, steered_responses(engine, None, 0, 0.0, prompts, **kw)))
    acts = {
        "multi_role_prompt": step(
            mean_activations(
                engine, steered_responses(engine, None, 0, 0.0, prompts, system=prompt_multi_role, **kw)
            )
        )
    }
    for cond, vec in steer.items():
        vec = per_layer(vec, n_layers)
        resp = steered_responses(engine, vec, layer, alpha, prompts, **kw)
        acts[cond] = step(mean_activations(engine, resp, steering_deltas(model, vec, layer, alpha)))
    if bar:
        bar.close()
    conditions = {
        cond: {n: ((act - plain) * units[n]).sum(-1).tolist() for n in names}  # [n_layers] each
        for cond, act in acts.items()
    }
    return {
        "layer": layer,
        "alpha": float(alpha),
        "names": list(names),
        "weights": weights,
        "n_layers": n_layers,
        "prompt_multi_role": prompt_multi_role,
        "prompts": list(prompts),
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
        "vector_norms": {n: vectors.vectors[n].norm(dim=-1).tolist() for n in names},
        "merged_norm": merged.norm(dim=-1).tolist(),
        "conditions": conditions,
    }
