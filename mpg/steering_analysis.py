"""How far does a steering vector move the model, at what cost in fluency (SPEC section 5, BILLY)?

- `projection_shift`: generate under `alpha * v[layer]` steering and measure the mean projection of
  the steered block's output (what block layer+1 receives) onto the unit vector, over response tokens,
  minus the same for unsteered generation.
- `fluency_ppl`: perplexity of responses under the *unsteered* base model.
- `sweep` / `recommend`: both over a layer x alpha grid, and the strongest setting that stays fluent.
- `projection_profile`: BILLY's projection figure (multi-role prompt vs merged vs single vectors).
- `export_lm_eval_steer`: a steering file for lm-evaluation-harness's `steered` model.

Activations are read by forward hooks registered *inside* `mpg.steering.steered`, hence after the
steering hook, so they see the block output with `alpha * v` already added (transformers 5's
`output_hidden_states` would capture before user hooks). Every forward runs on the base weights with
LoRA adapters disabled: "plain" means no adapter, as in a `Policy()` row.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch

from .extract import PersonaVectors, base_weights, response_activation
from .policies import Policy
from .steering import Steer, decoder_layers, row_deltas, steered
from .tokens import pad_token_id

__all__ = [
    "Response",
    "export_lm_eval_steer",
    "fluency_ppl",
    "lm_eval_hookpoint",
    "mean_activations",
    "multi_role_prompt",
    "projection_profile",
    "projection_shift",
    "recommend",
    "steered_responses",
    "sweep",
]

Response = tuple[list[int], list[int]]  # (context ids, response ids)


# ---- small helpers ----------------------------------------------------------------------------
def _base(engine):
    """The base model and a factory of contexts that turn its LoRA adapters off (plain base weights)."""
    model = engine.models["base"]
    return model, partial(base_weights, model)


def _per_layer(vector: torch.Tensor, n_layers: int) -> torch.Tensor:
    """[H] or [n_layers, H] -> [n_layers, H] float32."""
    v = torch.as_tensor(vector, dtype=torch.float32)
    v = v.unsqueeze(0).expand(n_layers, -1) if v.dim() == 1 else v
    if v.dim() != 2 or v.shape[0] != n_layers:
        raise ValueError(f"steering vector has shape {tuple(vector.shape)}; expected [H] or [{n_layers}, H]")
    return v


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Row-wise unit vectors [..., H]; a zero row stays zero (its projection is reported as 0)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _deltas(model, vector: torch.Tensor, layer: int, alpha: float) -> dict[int, torch.Tensor]:
    """The {layer: [1, H]} delta that `steered` adds for one steered row (the engine's own code path)."""
    return row_deltas(
        [(Steer("v", layer, float(alpha)),)],
        {"v": vector},
        model.config.hidden_size,
        next(model.parameters()).device,
    )


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc)


# ---- generation and measurement ---------------------------------------------------------------
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
    model, plain = _base(engine)
    tok = engine.tokenizer
    device = next(model.parameters()).device
    deltas = (
        {} if vector is None else _deltas(model, _per_layer(vector, len(decoder_layers(model))), layer, alpha)
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
    model, plain = _base(engine)
    acts = []
    for ctx, resp in responses:
        if resp:
            with plain(), steered(model, deltas or {}):  # capture hooks register after steering's
                acts.append(response_activation(model, ctx, resp))  # [n_layers, H]
    if not acts:
        return torch.full((len(decoder_layers(model)), model.config.hidden_size), float("nan"))
    return torch.stack(acts).mean(0)


@torch.inference_mode()
def fluency_ppl(
    engine, texts_or_ids: list[str] | list[list[int]], contexts: list[str] | list[list[int]]
) -> float:
    """Token-weighted perplexity of the responses under the unsteered, adapter-free base model.

    texts_or_ids: response texts (tokenised without special tokens) or response token ids;
    contexts: the context token ids each response followed, or prompts (plain `Policy()` context)."""
    if len(texts_or_ids) != len(contexts):
        raise ValueError(f"{len(texts_or_ids)} responses but {len(contexts)} contexts")
    model, plain = _base(engine)
    tok = engine.tokenizer
    device = next(model.parameters()).device
    nll, n = 0.0, 0
    for resp, ctx in zip(texts_or_ids, contexts):
        resp = tok(resp, add_special_tokens=False).input_ids if isinstance(resp, str) else list(resp)
        ctx = engine.context_ids(Policy(), ctx) if isinstance(ctx, str) else list(ctx)
        if not resp:
            continue
        if not ctx:
            raise ValueError("fluency_ppl needs a non-empty context to score the first response token")
        with plain():
            logits = model(input_ids=torch.tensor([ctx + resp], device=device)).logits[0]  # [T, V]
        logp = torch.log_softmax(logits[len(ctx) - 1 : -1].float(), dim=-1)  # [len(resp), V]
        nll -= float(logp.gather(1, torch.tensor(resp, device=device)[:, None]).sum())
        n += len(resp)
    return math.exp(nll / n) if n else float("nan")


def _projection(mean_act: torch.Tensor, unit: torch.Tensor, layer: int) -> float:
    return float(mean_act[layer] @ unit[layer])


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
    model, _ = _base(engine)
    v = _per_layer(vector, len(decoder_layers(model)))  # [n_layers, H]
    unit = _unit(v)
    base = _projection(
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
            _projection(mean_activations(engine, resp, _deltas(model, v, layer, alpha)), unit, layer) - base
        )
    return shifts


# ---- sweep and recommendation -----------------------------------------------------------------
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
    model, _ = _base(engine)
    n_layers = len(decoder_layers(model))
    bad = [L for L in layers if not 0 <= L < n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the model has {n_layers} decoder blocks (0-based)")
    v = _per_layer(vector, n_layers)
    unit = _unit(v)
    bar = _progress(1 + len(layers) * len(alphas), "steering sweep", progress)
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
            act = mean_activations(engine, resp, _deltas(model, v, layer, alpha))
            ppl = fluency_ppl(engine, [r for _, r in resp], [c for c, _ in resp])
            records.append(
                {
                    "layer": layer,
                    "alpha": float(alpha),
                    "projection_shift": _projection(act, unit, layer) - _projection(base_act, unit, layer),
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


# ---- BILLY's projection profile ---------------------------------------------------------------
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
    model, _ = _base(engine)
    n_layers = len(decoder_layers(model))
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} decoder blocks (0-based)")
    units = {n: _unit(_per_layer(vectors.vectors[n], n_layers)) for n in names}  # name -> [n_layers, H]
    merged = vectors.merge(names, weights)  # [n_layers, H]
    steer = {"merged": merged, **{f"single:{n}": vectors.vectors[n] for n in names}}
    kw = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    bar = _progress(2 + len(steer), "projection profile", progress)

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
        vec = _per_layer(vec, n_layers)
        resp = steered_responses(engine, vec, layer, alpha, prompts, **kw)
        acts[cond] = step(mean_activations(engine, resp, _deltas(model, vec, layer, alpha)))
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


# ---- lm-evaluation-harness export -------------------------------------------------------------
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
