"""The methods every evaluation compares, defined once.

A method is *how* a persona is imposed: which target is sampled (or scored) and with which sampler.
Each harness (questionnaire, lm-eval plugin, free-form judge, fidelity) turns a method name plus a
persona into a `Target` here, then either samples it,

    engine.generate(prompts, target=mbti_target(engine, m, "ENTJ"), **generate_kwargs(m))

or scores continuations under it (`mpg.likelihood`, mode `METHODS[m].likelihood_mode`).

MBTI methods (persona = a type such as ENTJ):
- base           the base model under the plain prompt;
- prompt         the base under ONE system prompt holding the four trait descriptions (TRAITS, joined);
- expert_EI ...  one axis expert alone: the adapter under the context of the type's side of that axis
                 (the numerator that mpg.personas.expert_mbti builds);
- fused_product  the four axis experts composed with the product aggregator (MOD-style baseline);
- fused_mixture  the same experts, mixture aggregator (the MPG paper's), sampled token by token;
- speculative    the mixture target, drafted by the anchor and corrected exactly (targets p_1);
- scr_k2/4/8     the mixture target sampled by SCR with chunks of k tokens (targets p_k);
- billy          the base steered by the merged persona vector of the type's letters (BILLY);
                 "billy:alpha=4" fixes the steering strength in the name (the benchmarks' sweeps).
- compose:SPEC   the four axis experts under any mpg.composition.Composition, e.g.
                 "compose:product,lam=0.5,weights=spread,anchor=prompt" (fused; the benchmarks' sweeps);
                 anchor=prompt tilts the multi-trait prompt (the `prompt` method) instead of the base.
- via:SAMPLER/PROPOSAL/K[xC]:SPEC  the compose:SPEC target sampled by another sampler, e.g.
                 "via:scr/anchor/4:product,lam=1,plausibility=0.1" (SCR, drafts from the anchor, chunks
                 of 4, 8 candidates): the benchmarks' sampler comparisons at one target;
- one:AXIS:SPEC  ONE axis expert (the type's side of AXIS) under a composition, e.g.
                 "one:EI:product,lam=1,plausibility=0.1": what the composition does to that axis alone
                 (anchor=prompt: the base under that one letter's trait prompt).
Role-play methods (persona = profile + personality): base (= prompt: the role-play prompt already names
both), expert_personality, expert_profile, and the composed ones above, over the two role-play experts.

A "policy" or "steered" method samples one policy P alone: Target.single(P) (one row, nothing composed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..composition import Composition, apply_ratio, apply_weight_rule
from ..personas import (
    AXES,
    NEUTRAL,
    TRAITS,
    attribute_spreads,
    expert_mbti,
    multi_trait_policy,
    opposite_spec,
    parse_mbti,
    roleplay,
)
from ..policies import Attribute, Policy, Target
from ..samplers import SAMPLERS
from ..steering import Steer

__all__ = [
    "KINDS",
    "MBTI_METHODS",
    "METHODS",
    "ONE",
    "VIA",
    "ROLEPLAY_METHODS",
    "Method",
    "alone",
    "composed_target",
    "generate_kwargs",
    "get_method",
    "mbti_attributes",
    "mbti_target",
    "merged_vector_name",
    "prompt_policy",
    "register_merged_vector",
    "roleplay_target",
]

KINDS = ("policy", "composed", "steered")


@dataclass(frozen=True)
class Method:
    """name: the method's id; sampler: "fused" | "speculative" | "scr"; aggregator of composed targets;
    chunk_size: k for speculative/scr; kind: "policy" (one policy alone), "composed", "steered"."""

    name: str
    sampler: str
    aggregator: str = "product"
    chunk_size: int = 1
    kind: str = "composed"
    candidates: int = 1  # scr: chunks drafted and validated together per round (a speed knob)
    composition: Composition | None = None  # composed methods: None = lam 1, weights as given, base anchor
    alpha: float | None = None  # steered methods: the steering strength (None: the caller's alpha)
    axis: str | None = None  # one:AXIS: methods: the one axis (of AXES) whose attribute is composed
    proposal: str | None = None  # via: methods: the proposal the drafting sampler draws from

    @property
    def likelihood_mode(self) -> str:
        """How a continuation is scored under this method (mpg.likelihood): "chunk" for SCR (the
        unnormalised chunk-level target it weighs), "token" (exact log p_1) for everything else."""
        return "chunk" if self.sampler == "scr" else "token"


_ALL = [
    Method("base", "fused", kind="policy"),
    Method("prompt", "fused", kind="policy"),
    *(Method(f"expert_{axis}", "fused", kind="policy") for axis in AXES),
    Method("expert_personality", "fused", kind="policy"),
    Method("expert_profile", "fused", kind="policy"),
    Method("fused_product", "fused", "product"),
    Method("fused_mixture", "fused", "mixture"),
    Method("speculative", "speculative", "mixture", chunk_size=4),
    # 8 candidates per round: faster than one on the shipped experts (docs/results.md#speed), same law
    # up to the bound being taken from before the round (mpg/samplers/scr.py)
    *(Method(f"scr_k{k}", "scr", "mixture", chunk_size=k, candidates=8) for k in (2, 4, 8)),
    Method("billy", "fused", kind="steered"),
]
METHODS: dict[str, Method] = {m.name: m for m in _ALL}
MBTI_METHODS = (
    "base",
    "prompt",
    *(f"expert_{a}" for a in AXES),
    "fused_product",
    "fused_mixture",
    "speculative",
    "scr_k2",
    "scr_k4",
    "scr_k8",
    "billy",
)
ROLEPLAY_METHODS = (
    "base",
    "expert_personality",
    "expert_profile",
    "fused_product",
    "fused_mixture",
    "speculative",
    "scr_k2",
    "scr_k4",
    "scr_k8",
)

# experts: "shipped" | "prompted" | a folder of adapters | a callable letter -> Attribute (tests, custom
# attributes). For role-play, the callable maps (profile, personality) -> (attributes, anchor).
Experts = str | Path | Callable


COMPOSE = "compose:"
VIA = "via:"
ONE = "one:"
BILLY_AT = "billy:alpha="


def get_method(method: Method | str) -> Method:
    if isinstance(method, Method):
        return method
    if isinstance(method, str) and method.startswith(COMPOSE):
        comp = Composition.parse(method[len(COMPOSE) :])
        return Method(COMPOSE + comp.name, "fused", comp.aggregator, composition=comp)
    if isinstance(method, str) and method.startswith(VIA):
        how, _, spec = method[len(VIA) :].partition(":")
        parts = how.split("/")
        k, _, c = parts[-1].partition("x") if parts else ("", "", "")
        if len(parts) != 3 or parts[0] not in SAMPLERS or not k.isdigit() or not (c.isdigit() or not c):
            raise ValueError(
                f"{method!r}: give {VIA}SAMPLER/PROPOSAL/K[xCANDIDATES]:COMPOSITION, e.g. "
                f"{VIA}scr/anchor/4:product (scr: 8 candidates unless given)"
            )
        sampler, proposal = parts[0], parts[1]
        candidates = int(c) if c else 8 if sampler == "scr" else 1
        comp = Composition.parse(spec)
        return Method(
            f"{VIA}{how}:{comp.name}",
            sampler,
            comp.aggregator,
            chunk_size=int(k),
            candidates=candidates,
            composition=comp,
            proposal=proposal,
        )
    if isinstance(method, str) and method.startswith(ONE):
        axis, _, spec = method[len(ONE) :].partition(":")
        if axis not in AXES:
            raise ValueError(f"{method!r}: give {ONE}AXIS:COMPOSITION with AXIS one of {', '.join(AXES)}")
        comp = Composition.parse(spec)
        return Method(f"{ONE}{axis}:{comp.name}", "fused", comp.aggregator, composition=comp, axis=axis)
    if isinstance(method, str) and method.startswith(BILLY_AT):
        try:
            alpha = float(method[len(BILLY_AT) :])
        except ValueError:
            raise ValueError(
                f"{method!r}: the steering strength after {BILLY_AT!r} must be a number"
            ) from None
        return Method(f"{BILLY_AT}{alpha:g}", "fused", kind="steered", alpha=alpha)
    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(METHODS)}, {COMPOSE}<composition>, "
            f"{ONE}<axis>:<composition> or {BILLY_AT}<strength>"
        )
    return METHODS[method]


def composed_target(
    attributes: list[Attribute],
    composition: Composition,
    mbti_type: str | None,
    experts: Experts = "shipped",
    *,
    anchor: Policy | None = None,
    opposite_sides: list[Attribute] | None = None,
) -> Target:
    """The attributes composed as `composition` says (weight rule, lam, anchor, plausibility, guard,
    ratio). anchor: a fixed anchor that wins over the composition's (role-play's own prompt); else the
    base, or with anchor=prompt the base under the MBTI type's multi-trait prompt. opposite_sides:
    each attribute's other side, built the same way (ratio=opposite)."""
    spreads = attribute_spreads(attributes, experts) if composition.weights == "spread" else None
    attrs = apply_weight_rule(attributes, composition.weights, spreads)
    if anchor is None:
        anchor = prompt_policy(mbti_type) if composition.anchor == "prompt" else Policy()
    return Target(
        tuple(apply_ratio(attrs, composition.ratio, anchor, opposite_sides)),
        composition.aggregator,
        lam=composition.lam,
        anchor=anchor,
        plausibility=composition.plausibility,
        guard=composition.guard,
    )


def generate_kwargs(method: Method | str) -> dict:
    """Keywords for engine.generate(..., target=target, **generate_kwargs(m)) (the target carries the
    aggregator; it is repeated here for callers that pass attributes instead of a target)."""
    m = get_method(method)
    kw = {"sampler": m.sampler, "aggregator": m.aggregator, "chunk_size": m.chunk_size}
    if m.sampler == "scr":
        kw["candidates"] = m.candidates
    if m.proposal is not None:
        kw["proposal"] = m.proposal
    return kw


def alone(policy: Policy) -> Target:
    """The target that is `policy` itself (Target.single: no attribute, nothing composed)."""
    return Target.single(policy)


def prompt_policy(mbti_type: str) -> Policy:
    """The base under one system prompt holding every trait description of the type."""
    return multi_trait_policy(mbti_type)


def merged_vector_name(mbti_type: str) -> str:
    return "mbti:" + "".join(parse_mbti(mbti_type))


def register_merged_vector(engine, vectors, mbti_type: str) -> str:
    """Register the plain average of the type's letter vectors (PersonaVectors keyed "E", "N", ...) on
    the engine (BILLY's merged persona vector); returns its name for `Steer`."""
    letters = list(parse_mbti(mbti_type))
    name = merged_vector_name(mbti_type)
    engine.add_steering_vector(name, vectors.merge(letters))  # [n_layers, H]
    return name


def mbti_attributes(engine, mbti_type: str, experts: Experts = "shipped") -> list[Attribute]:
    """One attribute per letter of the type (spec order), as mpg.personas builds them."""
    letters = parse_mbti(mbti_type)
    if callable(experts):
        attrs = []
        for letter, w in letters.items():
            a = experts(letter)
            if not isinstance(a, Attribute):
                raise TypeError(f"experts({letter!r}) returned a {type(a).__name__}, not an mpg.Attribute")
            attrs.append(replace(a, weight=w) if w != a.weight else a)
        return attrs
    if experts == "prompted":
        return [Attribute.prompted(TRAITS[c], NEUTRAL, w, name=c) for c, w in letters.items()]
    return expert_mbti(engine, mbti_type, experts)


def mbti_target(
    engine,
    method: Method | str,
    mbti_type: str,
    *,
    experts: Experts = "shipped",
    vector_name: str | None = None,
    layer: int = 20,
    alpha: float = 2.0,
) -> Target:
    """The target a method samples for an MBTI type (see the module docstring).

    billy steers with `vector_name` (default: the name `register_merged_vector` gives the type), which
    must already be registered on the engine."""
    m = get_method(method)
    if m.name == "base":
        return alone(Policy())
    if m.name == "prompt":
        return alone(prompt_policy(mbti_type))
    if m.kind == "steered":
        name = vector_name or merged_vector_name(mbti_type)
        if name not in engine.vectors:
            raise ValueError(f"steering vector {name!r} is not registered; call register_merged_vector first")
        return alone(Policy(steering=Steer(name, layer, alpha if m.alpha is None else m.alpha)))
    if m.name.startswith("expert_") and m.name[len("expert_") :] in AXES:
        axis = m.name[len("expert_") :]
        letter = next((c for c in parse_mbti(mbti_type) if c in axis), None)
        if letter is None:
            raise ValueError(f"type {mbti_type!r} has no letter on the {axis[0]}/{axis[1]} axis for {m.name}")
        attr = next(a for a in mbti_attributes(engine, letter, experts))
        return alone(attr.num)
    if m.kind == "composed" and m.composition is not None and m.axis is not None:
        letter = next((c for c in parse_mbti(mbti_type) if c in m.axis), None)
        if letter is None:
            raise ValueError(
                f"type {mbti_type!r} has no letter on the {m.axis[0]}/{m.axis[1]} axis for {m.name}"
            )
        mbti_type = letter
    if m.kind == "composed" and m.composition is not None:
        opposite = (
            mbti_attributes(engine, opposite_spec(mbti_type), experts)
            if m.composition.ratio == "opposite"
            else None
        )
        return composed_target(
            mbti_attributes(engine, mbti_type, experts),
            m.composition,
            mbti_type,
            experts,
            opposite_sides=opposite,
        )
    if m.kind == "composed":
        return Target(tuple(mbti_attributes(engine, mbti_type, experts)), m.aggregator, anchor=Policy())
    raise ValueError(f"method {m.name!r} is not an MBTI method; choose one of {', '.join(MBTI_METHODS)}")


def roleplay_target(
    engine, method: Method | str, profile: str, personality: str, *, experts: Experts = "shipped"
) -> Target:
    """The target a method samples for a role-play persona (profile + personality)."""
    m = get_method(method)
    if (m.name not in ROLEPLAY_METHODS and m.composition is None) or m.axis is not None:
        raise ValueError(
            f"method {m.name!r} is not a role-play method; choose one of {', '.join(ROLEPLAY_METHODS)} "
            f"or {COMPOSE}<composition>"
        )
    if callable(experts):
        attrs, anchor = experts(profile, personality)
    else:
        attrs, anchor = roleplay(engine, profile, personality, experts=experts)
    if m.name == "base":
        return alone(anchor)
    if m.name in ("expert_personality", "expert_profile"):
        i = 0 if m.name == "expert_personality" else 1  # mpg.personas.ROLEPLAY_ADAPTERS order
        return alone(attrs[i].num)
    if m.composition is not None:
        # as persona() composes a role-play persona: the role-play prompt stays the anchor (it already
        # names the profile and the personality), whatever the composition's anchor
        return composed_target(attrs, m.composition, None, experts, anchor=anchor)
    return Target(tuple(attrs), m.aggregator, anchor=anchor)
