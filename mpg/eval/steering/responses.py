"""The plain base's answers under activation steering, and its block outputs measured on them.

A generation path of its own, not `Engine.generate(prompts, policy=Policy(steering=Steer(...)))`: it
samples with transformers' `generate()` (whose defaults keep the top 50 tokens), prompt i under torch
seed `seed + i` whatever the steering, so settings differ only by the steering (common random numbers)
and alpha = 0 reproduces the unsteered tokens exactly. The engine samples the untruncated law from its
own random streams; switching would change what the recorded sweeps measured.

Activations are read by forward hooks registered *inside* `mpg.steering.steered`, hence after the
steering hook, so they see the block output with `alpha * v` already added (transformers 5's
`output_hidden_states` would capture before user hooks). The steering itself is the engine's code path
(`mpg.steering.row_deltas`).
"""

from __future__ import annotations

from functools import partial

import torch

from ...extract import base_weights, response_activation
from ...policies import Policy
from ...steering import Steer, decoder_layers, row_deltas, steered
from ...tokens import pad_token_id

__all__ = [
    "Response",
    "mean_activations",
    "per_layer",
    "plain_base",
    "progress_bar",
    "projection_at",
    "steered_responses",
    "steering_deltas",
    "unit_vectors",
]

Response = tuple[list[int], list[int]]  # (context ids, response ids)


def plain_base(engine):
    """The base model and a factory of contexts that turn its LoRA adapters off (plain base weights)."""
    model = engine.models["base"]
    return model, partial(base_weights, model)


def per_layer(vector: torch.Tensor, n_layers: int) -> torch.Tensor:
    """[H] or [n_layers, H] -> [n_layers, H] float32."""
    v = torch.as_tensor(vector, dtype=torch.float32)
    v = v.unsqueeze(0).expand(n_layers, -1) if v.dim() == 1 else v
    if v.dim() != 2 or v.shape[0] != n_layers:
        raise ValueError(f"steering vector has shape {tuple(vector.shape)}; expected [H] or [{n_layers}, H]")
    return v


def unit_vectors(v: torch.Tensor) -> torch.Tensor:
    """Row-wise unit vectors [..., H]; a zero row stays zero (its projection is reported as 0)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def steering_deltas(model, vector: torch.Tensor, layer: int, alpha: float) -> dict[int, torch.Tensor]:
    """The {layer: [1, H]} delta that `steered` adds for one steered row (the engine's own code path)."""
    return row_deltas(
        [(Steer("v", layer, float(alpha)),)],
        {"v": vector},
        model.config.hidden_size,
        next(model.parameters()).device,
    )


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar, or None when progress is off or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc)


def steered_responses(
    engine,
    vector: torch.Tensor | None,
    layer: int,
    alpha: float,
    prompts: list[str],
    *,
    system: str | None = None,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[Response]:
    """Answer every prompt with the plain base under `alpha * vector[layer]` (vector None: unsteered).

    Prompt i is sampled with torch seed `seed + i` whatever the steering, so settings differ only by
    the steering (common random numbers) and alpha = 0 reproduces the unsteered tokens exactly."""
    model, plain = plain_base(engine)
    tok = engine.tokenizer
    device = next(model.parameters()).device
    deltas = (
        {}
        if vector is None
        else steering_deltas(model, per_layer(vector, len(decoder_layers(model))), layer, alpha)
    )
    pad = pad_token_id(tok)
    out: list[Response] = []
    for i, prompt in enumerate(prompts):
        ctx = engine.context_ids(Policy(system=system), prompt)
        torch.manual_seed(seed + i)
        with torch.inference_mode(), plain(), steered(model, deltas):
            ids = model.generate(
                torch.tensor([ctx], device=device),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                pad_token_id=pad,
            )
        out.append((ctx, ids[0, len(ctx) :].tolist()))
    return out


def mean_activations(
    engine, responses: list[Response], deltas: dict[int, torch.Tensor] | None = None
) -> torch.Tensor:
    """Mean over responses of each block's (steered) output averaged over response tokens: [n_layers, H].

    Empty responses are skipped; all empty gives NaN."""
    model, plain = plain_base(engine)
    acts = []
    for ctx, resp in responses:
        if resp:
            with plain(), steered(model, deltas or {}):  # capture hooks register after steering's
                acts.append(response_activation(model, ctx, resp))  # [n_layers, H]
    if not acts:
        return torch.full((len(decoder_layers(model)), model.config.hidden_size), float("nan"))
    return torch.stack(acts).mean(0)


def projection_at(mean_act: torch.Tensor, unit: torch.Tensor, layer: int) -> float:
    """The projection of the mean activation [n_layers, H] at `layer` onto the unit vectors [n_layers, H]."""
    return float(mean_act[layer] @ unit[layer])
