"""Policies, attributes and the target they define (SPEC section 1).

A policy is *what* scores a response: weights (a model in the engine's registry, optionally a LoRA
adapter on it) plus its own context (system prompt and user-message template). An attribute is a
(numerator, denominator, weight) pair whose per-token log ratio is the attribute's implicit reward.
These are plain frozen dataclasses: equal policies are the same policy and are scored once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .steering import Steer

__all__ = ["AGGREGATORS", "GUARDS", "PROPOSALS", "Attribute", "Policy", "Target", "validate_target"]

AGGREGATORS = ("product", "mixture")
# Whose plausible sets a target with plausibility alpha > 0 is kept to (mpg.aggregators.guard_cut):
#   "anchor"   the anchor's alone (contrastive decoding's constraint);
#   "union"    a token stays if the anchor OR any attribute's numerator finds it plausible, each
#              relative to its own top token;
#   "mixture"  a token stays if plausible under the mixture (anchor + sum_i num_i) / (n + 1).
GUARDS = ("anchor", "union", "mixture")
# proposals built from the target by name (mpg.proposals); "head" drafts with the engine's draft head
# (mpg.draft_head) and stays a name on the target: it is not a policy
PROPOSALS = ("anchor", "merged", "prompt", "head")


@dataclass(frozen=True)
class Policy:
    """One scorer of the shared response.

    model:    name of the weights in the engine ("base" is the base model).
    adapter:  name of a LoRA adapter loaded on that model, or None for the bare weights.
    system:   system prompt of this policy's context (None: the tokenizer's default, if any).
    template: the user message; "{prompt}" is replaced by the user's prompt.
    steering: vectors added to the residual stream while this policy scores (Steer, or a tuple).
    """

    model: str = "base"
    adapter: str | None = None
    system: str | None = None
    template: str = "{prompt}"
    steering: tuple[Steer, ...] | None = None

    def __post_init__(self):
        if isinstance(self.steering, Steer):
            object.__setattr__(self, "steering", (self.steering,))
        elif self.steering is not None:
            object.__setattr__(self, "steering", tuple(self.steering) or None)
            if not all(isinstance(s, Steer) for s in self.steering or ()):
                raise TypeError("Policy.steering takes mpg.Steer objects")
        if "{prompt}" not in self.template:
            raise ValueError(
                f"policy template {self.template!r} has no '{{prompt}}' slot for the user's prompt"
            )

    def label(self) -> str:
        weights = self.model + (f"+{self.adapter}" if self.adapter else "")
        ctx = (self.system or "")[:24]
        steer = "".join(f"+{s.alpha:g}*{s.vector}@{s.layer}" for s in self.steering or ())
        return weights + steer + (f"[{ctx}]" if ctx else "")


@dataclass(frozen=True)
class Attribute:
    """One personality dimension: log ratio num/den, weighted by `weight` in the aggregator."""

    num: Policy
    den: Policy
    weight: float = 1.0
    name: str = ""

    @classmethod
    def prompted(
        cls,
        trait_prompt: str,
        neutral_prompt: str | None = None,
        weight: float = 1.0,
        name: str = "",
        model: str = "base",
    ) -> "Attribute":
        """Training-free attribute: base under the trait prompt over base under a neutral prompt."""
        return cls(
            Policy(model=model, system=trait_prompt), Policy(model=model, system=neutral_prompt), weight, name
        )

    @classmethod
    def expert(
        cls,
        adapter: str,
        trait_prompt: str | None = None,
        weight: float = 1.0,
        name: str = "",
        template: str = "{prompt}",
        model: str = "base",
    ) -> "Attribute":
        """MPG attribute: a fine-tuned adapter over its base, both under the same trait context."""
        return cls(
            Policy(model=model, adapter=adapter, system=trait_prompt, template=template),
            Policy(model=model, system=trait_prompt, template=template),
            weight,
            name or adapter,
        )


@dataclass(frozen=True)
class Target:
    """log p~(c|h) = log anchor(c|h) + A_w(lam * l_1(c), ..., lam * l_n(c))   (SPEC section 2)."""

    attributes: tuple[Attribute, ...]
    aggregator: str = "product"
    lam: float = 1.0
    anchor: Policy = field(default_factory=Policy)
    # None: draft from the anchor; a name in PROPOSALS: built from the target by generate()
    proposal: Policy | str | None = None
    # > 0: the target kept to the tokens the anchor gives >= plausibility x its top token's probability
    # (mpg.aggregators.plausible; at chunk level, zero from a chunk's first implausible token)
    plausibility: float = 0.0
    # whose plausible sets (GUARDS); other than "anchor" only at token level (fused, speculative)
    guard: str = "anchor"

    def __post_init__(self):
        object.__setattr__(self, "attributes", tuple(self.attributes))
        validate_target(self)

    @classmethod
    def single(cls, policy: Policy, proposal: Policy | str | None = None) -> "Target":
        """One policy alone: p~ = policy (no attributes, nothing composed), drafted from `proposal`
        (default: the policy itself). The way to sample a base, a prompted or a steered model."""
        t = object.__new__(cls)
        for name, value in (
            ("attributes", ()),
            ("aggregator", "product"),
            ("lam", 1.0),
            ("anchor", policy),
            ("proposal", proposal),
            ("plausibility", 0.0),
            ("guard", "anchor"),
        ):
            object.__setattr__(t, name, value)
        if not isinstance(policy, Policy) or not (proposal in (None, "head") or isinstance(proposal, Policy)):
            raise TypeError('Target.single takes an mpg.Policy (and optionally a proposal Policy, or "head")')
        return t

    def policies(self) -> list[Policy]:
        """The distinct policies the target scores: anchor, numerators, denominators (in that order)."""
        return list(
            dict.fromkeys([self.anchor, *(a.num for a in self.attributes), *(a.den for a in self.attributes)])
        )

    @property
    def draft_policy(self) -> Policy:
        """The policy chunks are drafted from (with proposal "head": the anchor, the head's fallback)."""
        if self.proposal == "head":
            return self.anchor
        if isinstance(self.proposal, str):
            raise ValueError(
                f"proposal {self.proposal!r} is a name: mpg.proposals.resolve_proposal builds it "
                "(generate() does so itself)"
            )
        return self.proposal if self.proposal is not None else self.anchor

    def normalised_weights(self) -> list[float]:
        """Weights as the aggregator uses them: mixture weights sum to 1, product weights as given."""
        w = [float(a.weight) for a in self.attributes]
        if self.aggregator == "mixture":
            total = sum(w)
            return [x / total for x in w]
        return w


def check_plausibility(p) -> None:
    """The plausibility constraint's alpha: a number in [0, 1) (a Target's and a Composition's)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"plausibility must be a number in [0, 1) (0: no constraint), got {p!r}")


def validate_target(t: Target) -> None:
    if not t.attributes:
        raise ValueError(
            "no attributes: a target needs at least one Attribute (a persona with no traits is "
            "just the anchor: sample one policy with Target.single(policy) or generate(policy=...))"
        )
    for i, a in enumerate(t.attributes):
        if not isinstance(a, Attribute):
            raise TypeError(f"attribute {i} is a {type(a).__name__}, not an mpg.Attribute")
    if isinstance(t.proposal, str) and t.proposal not in PROPOSALS:
        raise ValueError(
            f"unknown proposal {t.proposal!r}; choose one of {', '.join(PROPOSALS)} or pass a Policy"
        )
    if not (t.proposal is None or isinstance(t.proposal, (str, Policy))):
        raise TypeError(f"proposal must be an mpg.Policy or one of {', '.join(PROPOSALS)}")
    if t.aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {t.aggregator!r}; choose one of {', '.join(AGGREGATORS)}")
    weights = [a.weight for a in t.attributes]
    for a in t.attributes:
        if not isinstance(a.weight, (int, float)) or not math.isfinite(a.weight):
            raise ValueError(
                f"attribute {a.name or a.num.label()!r} has weight {a.weight!r}; weights must be finite numbers"
            )
    if all(w == 0 for w in weights):
        raise ValueError("all attribute weights are zero: the target would ignore every attribute")
    if t.aggregator == "mixture":
        neg = [a.name or a.num.label() for a in t.attributes if a.weight < 0]
        if neg:
            raise ValueError(
                f"mixture weights must be >= 0 (they are mixing proportions); negative for: {', '.join(neg)}"
            )
    if not isinstance(t.lam, (int, float)) or not math.isfinite(t.lam) or t.lam < 0:
        raise ValueError(f"lam (strength) must be a finite number >= 0, got {t.lam!r}")
    check_plausibility(t.plausibility)
    check_guard(t.guard, t.plausibility)


def check_guard(guard, plausibility) -> None:
    """A guard names whose plausible sets the target keeps to, so it needs a constraint to act on."""
    if guard not in GUARDS:
        raise ValueError(f"unknown guard {guard!r}; choose one of {', '.join(GUARDS)}")
    if guard != "anchor" and not plausibility:
        raise ValueError(f"guard={guard} needs a plausibility constraint (plausibility > 0)")
