"""Named proposals: the draft policy q a target is sampled with, built from the target itself.

Any q leaves `fused` and `speculative` exact and `scr`'s target unchanged; a q closer to the target
only raises acceptance (SPEC section 1). Three names, for `generate(proposal=...)` and the CLI:

- "anchor" (the default): q = the anchor.
- "merged": the anchor's weights plus ONE LoRA adapter whose delta is the weighted sum of the
  attributes' LoRA deltas, sum_i w_i * lam * (dW_num_i - dW_den_i), w the target's normalised weights
  (plus the anchor's own adapter, if it has one, at 1). A sum of low-rank products is exactly one
  low-rank product of the summed rank (`concat_lora`), so the adapter is exact, needs no training and
  runs in the engine's multi-LoRA kernel like any other. It is applied under the anchor's context: the
  product of experts in weight space, a first-order stand-in for the target's product of ratios.
- "prompt": the anchor's weights under a system prompt naming every trait (the MBTI letters' texts
  from `mpg.personas.TRAITS`, or a prompted attribute's own trait prompt).
- "head": the engine's draft head (`mpg.draft_head`) predicts the composed target's features and
  drafts through the output embedding. Not a policy: the name stays on the target, and the engine
  builds a head drafter for it (or, with no head for its base or a target the head cannot read, drafts
  from the anchor and says so).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from .policies import PROPOSALS, Attribute, Policy, Target

__all__ = [
    "PROPOSALS",
    "merge_coefficients",
    "merged_adapter_name",
    "merged_proposal",
    "prompt_proposal",
    "resolve_proposal",
    "trait_text",
]


def _name(a: Attribute) -> str:
    return a.name or a.num.label()


# ---- merged ----------------------------------------------------------------------------------------
def merge_coefficients(target: Target) -> dict[str, float]:
    """adapter name -> coefficient of its LoRA delta in the merged proposal (zero sums dropped).

    The anchor's own adapter counts 1; attribute i adds +w_i * lam to its numerator's adapter and
    -w_i * lam to its denominator's (a denominator adapter is a negative delta). Attributes with no
    adapter on either side (prompted ones) add nothing: their effect lives in contexts, not weights.
    """
    if not target.attributes:
        raise ValueError("proposal='merged' merges the target's attribute experts; this target has none")
    model = target.anchor.model
    coef: dict[str, float] = {}
    if target.anchor.adapter is not None:
        coef[target.anchor.adapter] = 1.0
    merged_any = False
    for a, w in zip(target.attributes, target.normalised_weights()):
        for side, sign in ((a.num, 1.0), (a.den, -1.0)):
            if side.model != model:
                raise ValueError(
                    f"proposal='merged': attribute {_name(a)!r} runs on model {side.model!r}, not the anchor's "
                    f"{model!r}; only LoRA adapters on the anchor's model can be merged into one adapter"
                )
            if side.adapter is not None:
                coef[side.adapter] = coef.get(side.adapter, 0.0) + sign * w * float(target.lam)
                merged_any = True
    if not merged_any:
        raise ValueError(
            "proposal='merged': no attribute has a LoRA adapter to merge (prompted attributes live in "
            "their contexts); use proposal='prompt' instead"
        )
    coef = {k: v for k, v in coef.items() if v != 0.0}
    if not coef and target.lam != 0:
        # a numerator and a denominator on one adapter (ratio=opposite: the sides differ only in their
        # contexts) cancel in weight space: the merge would be the anchor under another name
        raise ValueError(
            "proposal='merged' adds nothing for this target: each attribute's numerator and denominator "
            "are the same adapter (the sides differ only in context, as under ratio=opposite), so their "
            "deltas cancel; use proposal='anchor', 'prompt' or 'head', or a composition with ratio=trait"
        )
    return coef


def merged_adapter_name(model: str, coef: dict[str, float]) -> str:
    """A name that is the same exactly when the merge is: a hash of the model, adapters and coefficients."""
    key = json.dumps([model, sorted((k, repr(float(v))) for k, v in coef.items())])
    return "mpg_merged_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def merged_proposal(engine, target: Target) -> Policy:
    """The anchor with the attribute experts' LoRA deltas summed into one adapter (see the module doc).

    The adapter is registered on the engine once per merge (its name hashes the adapters and
    coefficients: `Engine.add_lora_sum`), so the multi-LoRA kernel runs it; the anchor's context and
    steering are kept. A merge at lam = 0 is the anchor itself."""
    coef = merge_coefficients(target)
    if not coef:
        return target.anchor
    model = target.anchor.model
    name = merged_adapter_name(model, coef)
    try:
        engine.add_lora_sum(name, coef, model)
    except ValueError as e:
        raise ValueError(f"proposal='merged': {e}") from None
    return dataclasses.replace(target.anchor, adapter=name)


# ---- prompt ------------------------------------------------------------------------------------------
def trait_text(a: Attribute) -> str:
    """The trait an attribute stands for, as one system-prompt line.

    A prompted attribute (no adapters) has its own trait prompt: its numerator's system prompt. An
    attribute named by an MBTI letter (`mpg.personas.expert_mbti`) gets that letter's TRAITS text.
    """
    from .personas import TRAITS

    if a.num.adapter is None and a.den.adapter is None and a.num.system and a.num.system != a.den.system:
        return a.num.system
    if a.name in TRAITS:
        return TRAITS[a.name]
    raise ValueError(
        f"proposal='prompt': attribute {_name(a)!r} has no trait text (it is neither an MBTI letter nor a "
        "prompted attribute with a trait system prompt); use proposal='anchor' or 'merged', or pass a "
        "proposal Policy"
    )


def prompt_proposal(target: Target) -> Policy:
    """The anchor's weights under one system prompt naming every trait of positive weight (after the
    anchor's own system prompt, if any). A negative weight asks for the opposite, which has no text."""
    if not target.attributes:
        raise ValueError("proposal='prompt' names the target's traits; this target has none")
    neg = [_name(a) for a in target.attributes if a.weight < 0]
    if neg:
        raise ValueError(f"proposal='prompt' cannot word a negative weight (attributes: {', '.join(neg)})")
    lines = [trait_text(a) for a in target.attributes if a.weight > 0]
    system = " ".join([target.anchor.system, *lines] if target.anchor.system else lines)
    return dataclasses.replace(target.anchor, system=system)


# ---- by name -----------------------------------------------------------------------------------------
def resolve_proposal(engine, target: Target, name: str) -> Target:
    """The target with its proposal set from a name in PROPOSALS."""
    if name not in PROPOSALS:
        raise ValueError(f"unknown proposal {name!r}; choose one of {', '.join(PROPOSALS)} or pass a Policy")
    if name == "head":
        if not target.attributes:
            return Target.single(target.anchor, "head")
        return dataclasses.replace(target, proposal="head")
    if name == "anchor":
        q = None
    elif name == "merged":
        if engine is None:
            raise ValueError("proposal='merged' is built on an engine's adapters: pass the engine")
        q = merged_proposal(engine, target)
    else:
        q = prompt_proposal(target)
    if not target.attributes:  # Target.single: only "anchor" gets here
        return Target.single(target.anchor, q)
    return dataclasses.replace(target, proposal=q)
