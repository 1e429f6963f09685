"""How attribute experts are composed into one target: aggregator, strength, weight rule and anchor.

A `Composition` names the four choices that SPEC section 2 leaves to the user, so that benchmarks can
sweep them and the CLI, `persona()` and the main job can share one default:

    log p~(c | h) = log anchor(c | h) + A_w'( lam * l_1(c), ..., lam * l_n(c) )

- aggregator: "product" (sum_i w'_i l_i) or "mixture" (log sum_i w'_i exp(l_i), weights summing to 1);
- lam: the strength every log-ratio is multiplied by;
- weights, the rule that turns the user's weights w_i into w'_i:
    "given"   w'_i = w_i;
    "sum1"    w'_i = w_i / sum_j w_j (the product then averages the ratios instead of adding them);
    "spread"  w'_i = w_i * mean_j(s_j) / s_i, where s_i is attribute i's *ratio spread*: the root mean
              square of its per-token log-ratio l_i(y_t) over held-out answers (measured once per expert
              and side by `measure_ratio_spread`, stored in the expert's mpg_expert.json). Experts whose
              ratios are typically large no longer drown the others; the mean keeps the total strength
              comparable with "given", so lam means the same under both rules;
- anchor: "base" (the base model under the user's plain prompt) or "prompt" (the base under one system
  prompt naming every trait of the persona: the multi-trait prompt, which the composition then tilts);
- plausibility alpha (default 0: none): the token-level target is kept to the tokens the anchor gives at
  least alpha times its most likely token's probability (`mpg.aggregators.plausible`), so that a strong
  composition only chooses among continuations the anchor finds fluent;
- guard (with plausibility > 0), whose plausible sets the target is kept to (`mpg.policies.GUARDS`):
    "anchor"  the anchor's (the constraint above);
    "union"   a token stays if the anchor OR some attribute's numerator gives it >= alpha x its own top
              token's probability: the words of the policy that carries an axis are not cut;
    "mixture" a token stays if the mixture (anchor + sum_i num_i) / (n + 1) finds it plausible;
  the wider guards act at token level only (fused, speculative; scr refuses them);
- ratio, each attribute's denominator:
    "trait"   as the attribute was built (an expert: the base under the expert's own trait context);
    "anchor"  the anchor policy itself: l_i = log num_i - log anchor, so one attribute at lam 1 without
              a constraint IS its numerator alone (the expert), and the n denominators cost no rows;
    "opposite" the numerator of the same axis's other side (MBTI letters: E over I, T over F, ...; an
              expert under the other letter's context): what an expert does whichever side it is
              given (its house style, a lean on other axes) cancels, what tells the sides apart stays.
              Attributes with no other side (role-play, free-text traits) keep their trait ratio.

Mixture weights are normalised to sum 1 by the engine whatever the rule (SPEC), so "sum1" and "given"
coincide there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .policies import AGGREGATORS, Attribute, Policy, check_guard, check_plausibility

__all__ = [
    "ANCHORS",
    "RATIOS",
    "WEIGHT_RULES",
    "Composition",
    "apply_weight_rule",
    "apply_ratio",
    "measure_ratio_spread",
]

WEIGHT_RULES = ("given", "sum1", "spread")
ANCHORS = ("base", "prompt")
RATIOS = ("trait", "anchor", "opposite")


@dataclass(frozen=True)
class Composition:
    aggregator: str = "product"
    lam: float = 1.0
    weights: str = "given"
    anchor: str = "base"
    plausibility: float = 0.0
    guard: str = "anchor"
    ratio: str = "trait"

    def __post_init__(self):
        if self.aggregator not in AGGREGATORS:
            raise ValueError(
                f"unknown aggregator {self.aggregator!r}; choose one of {', '.join(AGGREGATORS)}"
            )
        if self.weights not in WEIGHT_RULES:
            raise ValueError(f"unknown weight rule {self.weights!r}; choose one of {', '.join(WEIGHT_RULES)}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"unknown anchor {self.anchor!r}; choose one of {', '.join(ANCHORS)}")
        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        check_plausibility(self.plausibility)
        check_guard(self.guard, self.plausibility)
        if self.ratio not in RATIOS:
            raise ValueError(f"unknown ratio {self.ratio!r}; choose one of {', '.join(RATIOS)}")

    @property
    def name(self) -> str:
        """'product,lam=0.5,weights=spread,anchor=prompt[,plausibility=0.1][,guard=union][,ratio=anchor]'
        (what `parse` reads back; fields at their defaults after anchor are left out)."""
        name = f"{self.aggregator},lam={self.lam:g},weights={self.weights},anchor={self.anchor}"
        name += f",plausibility={self.plausibility:g}" if self.plausibility else ""
        name += f",guard={self.guard}" if self.guard != "anchor" else ""
        return name + (f",ratio={self.ratio}" if self.ratio != "trait" else "")

    @classmethod
    def parse(cls, spec: str) -> "Composition":
        """'product' or 'mixture,lam=0.5,weights=spread,anchor=prompt' (unnamed fields keep defaults)."""
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise ValueError("empty composition: give e.g. 'product,lam=0.5,weights=spread,anchor=prompt'")
        kw: dict = {}
        for p in parts:
            key, eq, value = p.partition("=")
            if not eq:
                key, value = "aggregator", key
            if key not in FIELDS:
                raise ValueError(f"composition field {key!r} is unknown; use {', '.join(FIELDS)}")
            if key in ("lam", "plausibility"):
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"composition {key} {value!r} is not a number") from None
            kw[key] = value
        return cls(**kw)


FIELDS = ("aggregator", "lam", "weights", "anchor", "plausibility", "guard", "ratio")


def apply_ratio(
    attributes: list[Attribute],
    ratio: str,
    anchor: Policy,
    opposite_sides: list[Attribute | None] | None = None,
) -> list[Attribute]:
    """The attributes with their denominators as `ratio` says: "trait" as built, "anchor" the anchor,
    "opposite" the numerator of opposite_sides[i] (attribute i's other side, built the same way; None
    or no list: it has none and keeps its denominator)."""
    if ratio not in RATIOS:
        raise ValueError(f"unknown ratio {ratio!r}; choose one of {', '.join(RATIOS)}")
    if ratio == "trait":
        return list(attributes)
    if ratio == "anchor":
        return [replace(a, den=anchor) for a in attributes]
    sides = [None] * len(attributes) if opposite_sides is None else list(opposite_sides)
    if len(sides) != len(attributes):
        raise ValueError(f"{len(sides)} opposite sides for {len(attributes)} attributes")
    return [a if o is None else replace(a, den=o.num) for a, o in zip(attributes, sides)]


def apply_weight_rule(
    attributes: list[Attribute], rule: str, spreads: list[float | None] | None = None
) -> list[Attribute]:
    """The attributes with their weights turned into w' by `rule` (module docstring). spreads[i]: the
    ratio spread of attribute i (needed, and > 0, for every attribute under "spread")."""
    if rule not in WEIGHT_RULES:
        raise ValueError(f"unknown weight rule {rule!r}; choose one of {', '.join(WEIGHT_RULES)}")
    if rule == "given" or not attributes:
        return list(attributes)
    if rule == "sum1":
        total = sum(a.weight for a in attributes)
        if total <= 0:
            raise ValueError("weights=sum1 needs attribute weights with a positive sum")
        return [replace(a, weight=a.weight / total) for a in attributes]
    spreads = list(spreads or [None] * len(attributes))
    missing = [a.name or a.num.label() for a, s in zip(attributes, spreads) if not s or s <= 0]
    if len(spreads) != len(attributes) or missing:
        raise ValueError(
            f"weights=spread needs each attribute's measured ratio spread; none for {', '.join(missing)} "
            "(run `mpg calibrate-expert` on its expert folder, or use weights=given)"
        )
    mean = sum(spreads) / len(spreads)
    return [replace(a, weight=a.weight * mean / s) for a, s in zip(attributes, spreads)]


def measure_ratio_spread(
    engine, attribute: Attribute, pairs: list[dict], prompt_key: str = "instruction"
) -> float:
    """Root mean square of the attribute's per-token log-ratio l(y_t) = log num - log den over the
    answer tokens of `pairs` (both chosen and rejected), each answer after the pair's prompt."""
    import torch

    from .likelihood import continuation_ids, policy_logprobs

    policies = [attribute.num, attribute.den]
    total, count = 0.0, 0
    for row in pairs:
        options = [continuation_ids(engine, row["chosen"]), continuation_ids(engine, row["rejected"])]
        tok, _, mask = policy_logprobs(engine, policies, row[prompt_key], options, full=False)  # [2, K, T]
        ratio = (tok[0] - tok[1]) * mask  # [K, T]
        total += float((ratio.double() ** 2).sum())
        count += int(mask.sum())
    if not count:
        raise ValueError("no answer tokens to measure a ratio spread on")
    return float(torch.tensor(total / count).sqrt())
