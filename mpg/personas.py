"""Personas: a spec such as ENTJ (plus an optional role-play profile) -> attributes and anchor.

Two kinds of attribute back an MBTI letter:
- expert (the MPG paper's): the axis adapter (one DPO LoRA per axis) over the base, both under the
  prompt the adapter was trained with, with the asked side named in it (`mpg_expert.json` carries
  these contexts, one per side; `mpg.expert_file` reads it);
- prompted (training-free): the base under a one-line trait system prompt over the base under a
  neutral one (SPEC section 1). The trait texts are our own summaries of the sixteen-type axes.
Role-play personas use the two role-play experts (personality, profile) under the role-play prompt
the experts were trained with; the anchor is then the base under that same prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .composition import Composition, apply_ratio, apply_weight_rule
from .expert_file import expert_contexts, expert_spreads
from .policies import Attribute, Policy, Target

__all__ = [
    "AXES",
    "DEFAULT_COMPOSITION",
    "AXIS_ADAPTERS",
    "NEUTRAL",
    "ROLEPLAY_ADAPTERS",
    "SHIPPED_EXPERTS",
    "TRAITS",
    "Persona",
    "attribute_spreads",
    "expert_mbti",
    "load_experts",
    "multi_trait_policy",
    "opposite_spec",
    "parse_mbti",
    "persona",
    "prompted_mbti",
    "resolve_experts",
    "roleplay",
]

NEUTRAL = "You are a helpful assistant."

TRAITS = {
    "E": "You are an extravert: outgoing, talkative and energised by other people; you think out loud.",
    "I": "You are an introvert: reserved and reflective; you prefer depth, solitude and thinking before speaking.",
    "S": "You are a sensing type: practical, concrete and detail-oriented; you trust facts and experience.",
    "N": "You are an intuitive type: imaginative and abstract; you look for patterns, ideas and possibilities.",
    "T": "You are a thinking type: logical, objective and direct; you decide by analysis and principles.",
    "F": "You are a feeling type: warm, empathetic and tactful; you decide by values and people's feelings.",
    "J": "You are a judging type: organised, decisive and planful; you like structure and closure.",
    "P": "You are a perceiving type: spontaneous, flexible and open-ended; you keep options open.",
}
AXES = ("EI", "SN", "TF", "JP")
AXIS_ADAPTERS = {"EI": "mbti_e_i", "SN": "mbti_s_n", "TF": "mbti_t_f", "JP": "mbti_j_p"}
ROLEPLAY_ADAPTERS = ("roleplay_personality", "roleplay_profile")
SHIPPED_EXPERTS = Path(__file__).parent / "experts"
# The composition persona() (and so the CLI, the server and the main job) uses unless told otherwise:
# the fidelity-fluency frontier's choice (benchmarks/frontier.py; its figures in docs/results.md): the
# best judged fidelity among compositions whose answers stay as fluent as the multi-trait prompt's.
# Without the plausibility constraint the strong points derail the text; with it the same strength
# stays fluent. ratio=opposite scores higher on the per-axis benchmark but is not the default: over
# longer answers it can fall into a loop the cut does not stop (docs/results.md).
DEFAULT_COMPOSITION = Composition("product", 1.0, "given", "base", plausibility=0.1)


@dataclass(frozen=True)
class Persona:
    """What a persona spec resolves to: `engine.generate(prompt, target=p.target())` (or pass the parts:
    `engine.generate(prompt, p.attributes, anchor=p.anchor, aggregator=p.aggregator, lam=p.lam)`).
    The attributes' weights are already the composition's (mpg.composition: weight rule applied)."""

    attributes: tuple[Attribute, ...]
    anchor: Policy = field(default_factory=Policy)
    needs_prompt: bool = True  # False for role-play: its context is complete without a user prompt
    aggregator: str = "product"
    lam: float = 1.0
    plausibility: float = 0.0
    guard: str = "anchor"

    def target(self, **overrides) -> Target:
        """The composed target; `aggregator=` / `lam=` override the composition's."""
        return Target(
            self.attributes,
            overrides.get("aggregator") or self.aggregator,
            lam=self.lam if overrides.get("lam") is None else overrides["lam"],
            anchor=self.anchor,
            plausibility=self.plausibility,
            guard=self.guard,
        )

    def describe(self) -> str:
        return ", ".join(
            f"{a.name}={a.weight:g}({'expert' if a.num.adapter else 'prompted'})" for a in self.attributes
        )


def parse_mbti(spec: str) -> dict[str, float]:
    """'ENTJ' -> {E:1, N:1, T:1, J:1}; 'E=1.0,N=0.5' -> explicit weights. Raises on unknown letters."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty persona: give an MBTI type such as ENTJ or weights such as E=1,N=0.5")
    weights: dict[str, float] = {}
    if "=" in spec:
        for part in spec.split(","):
            letter, _, value = part.partition("=")
            letter = letter.strip().upper()
            try:
                weights[letter] = float(value)
            except ValueError:
                raise ValueError(f"persona weight {part.strip()!r} is not LETTER=NUMBER") from None
    else:
        weights = {c: 1.0 for c in spec.upper()}
    bad = [c for c in weights if c not in TRAITS]
    if bad:
        raise ValueError(
            f"unknown persona letter(s) {', '.join(bad)} in {spec!r}; MBTI letters are {''.join(TRAITS)}"
        )
    for axis in AXES:
        if axis[0] in weights and axis[1] in weights:
            raise ValueError(f"persona {spec!r} names both sides of the {axis[0]}/{axis[1]} axis")
    return weights


def opposite_spec(spec: str) -> str:
    """Each letter's other side, weights kept: 'ENTJ' -> 'ISFP', 'E=1,N=0.5' -> 'I=1.0,S=0.5'."""
    other = {c: a[1 - a.index(c)] for a in AXES for c in a}
    return ",".join(f"{other[c]}={w}" for c, w in parse_mbti(spec).items())


def prompted_mbti(spec: str) -> list[Attribute]:
    return [Attribute.prompted(TRAITS[c], NEUTRAL, w, name=c) for c, w in parse_mbti(spec).items()]


def _experts_dir(experts: str | Path | None) -> Path:
    d = SHIPPED_EXPERTS if experts in (None, "shipped") else Path(experts)
    if not d.is_dir():
        raise FileNotFoundError(f"experts folder {d} does not exist")
    return d


def _load(engine, name: str, folder: Path) -> dict[str, str]:
    contexts = expert_contexts(folder)  # raises first, with the folder named, if it is missing
    if name not in engine.adapters["base"]:
        engine.load_adapter(name, folder)
    return contexts


def expert_mbti(engine, spec: str, experts: str | Path | None = None) -> list[Attribute]:
    """ENTJ -> four axis-expert attributes (adapters loaded on first use)."""
    d = _experts_dir(experts)
    attrs = []
    for letter, w in parse_mbti(spec).items():
        axis = next(a for a in AXES if letter in a)
        adapter = AXIS_ADAPTERS[axis]
        contexts = _load(engine, adapter, d / adapter)
        if letter not in contexts:
            raise ValueError(
                f"expert {d / adapter} has no context for side {letter!r} (has: {', '.join(contexts)})"
            )
        attrs.append(Attribute.expert(adapter, None, w, name=letter, template=contexts[letter]))
    return attrs


def roleplay(
    engine,
    profile: str,
    personality: str,
    weights: tuple[float, float] = (1.0, 1.0),
    experts: str | Path | None = None,
) -> tuple[list[Attribute], Policy]:
    """Role-play profile + personality -> (two expert attributes, anchor under the role-play prompt)."""
    if not profile.strip() or not personality.strip():
        raise ValueError("role-play needs both a profile and a personality text")
    d = _experts_dir(experts)
    attrs, template = [], None
    for adapter, w in zip(ROLEPLAY_ADAPTERS, weights):
        contexts = _load(engine, adapter, d / adapter)
        if "roleplay" not in contexts:
            raise ValueError(
                f"expert {d / adapter} was not trained on role-play prompts (no 'roleplay' context)"
            )
        template = (
            contexts["roleplay"]
            .replace("{profile}", profile.strip())
            .replace("{personality}", personality.strip())
            + "{prompt}"
        )
        attrs.append(
            Attribute.expert(adapter, None, w, name=adapter.removeprefix("roleplay_"), template=template)
        )
    return attrs, Policy(template=template)


def resolve_experts(experts: str | Path | None) -> str | Path:
    """ "auto" -> "shipped" when the shipped experts are installed, else "prompted"; others as given."""
    if experts == "auto":
        return (
            "shipped"
            if (SHIPPED_EXPERTS / AXIS_ADAPTERS["EI"] / "adapter_config.json").exists()
            else "prompted"
        )
    return experts


def load_experts(engine, experts: str | Path | None = "auto") -> list[str]:
    """Load every expert adapter the experts folder has (MBTI axes, role-play) now, instead of on first
    use: a server must not change its model while it serves. Returns the adapter names loaded."""
    experts = resolve_experts(experts)
    if experts == "prompted":
        return []
    d = _experts_dir(experts)
    names = [
        n for n in (*AXIS_ADAPTERS.values(), *ROLEPLAY_ADAPTERS) if (d / n / "adapter_config.json").exists()
    ]
    for name in names:
        _load(engine, name, d / name)
    return names


def persona(
    engine,
    mbti: str | None = "ENTJ",
    *,
    profile: str | None = None,
    personality: str | None = None,
    traits: list[tuple[str, float]] = (),
    experts: str | Path | None = "auto",
    composition: Composition | str | None = None,
) -> Persona:
    """Resolve a persona spec (the CLI takes the same): MBTI letters, role-play, free-text traits.

    experts: "auto" (shipped experts when installed, else prompted), "shipped", "prompted" or a folder
    holding mbti_e_i/ ... roleplay_profile/ adapters.
    composition: a mpg.composition.Composition or its spec ("product,lam=0.5,weights=spread,anchor=prompt");
    None: DEFAULT_COMPOSITION. anchor=prompt anchors on the base under one system prompt naming every
    MBTI letter's and free-text trait (role-play keeps its own anchor, the role-play prompt).
    """
    comp = (
        DEFAULT_COMPOSITION
        if composition is None
        else Composition.parse(composition)
        if isinstance(composition, str)
        else composition
    )
    experts = resolve_experts(experts)
    attrs: list[Attribute] = []
    sides: list[Attribute | None] = []  # each attribute's other side, for ratio=opposite (MBTI letters)
    anchor, needs_prompt = Policy(), True
    if profile is not None or personality is not None:
        if experts == "prompted":
            raise ValueError(
                "role-play personas need the role-play experts; use --experts shipped or a folder"
            )
        rp, anchor = roleplay(engine, profile or "", personality or "", experts=experts)
        attrs += rp
        sides += [None] * len(rp)
        needs_prompt = False
    if mbti:
        letters = prompted_mbti if experts == "prompted" else partial(expert_mbti, engine, experts=experts)
        attrs += letters(mbti)
        sides += letters(opposite_spec(mbti)) if comp.ratio == "opposite" else [None] * len(parse_mbti(mbti))
    for text, w in traits:
        if not text.strip():
            raise ValueError("an empty trait text was given")
        attrs.append(Attribute.prompted(text, NEUTRAL, w, name=text[:24]))
        sides.append(None)
    if not attrs:
        raise ValueError(
            "the persona is empty: give an MBTI type, a role-play profile and personality, or traits"
        )
    spreads = attribute_spreads(attrs, experts) if comp.weights == "spread" else None
    attrs = apply_weight_rule(attrs, comp.weights, spreads)
    if comp.anchor == "prompt" and needs_prompt:
        anchor = multi_trait_policy(mbti, [t for t, _ in traits])
    attrs = apply_ratio(attrs, comp.ratio, anchor, sides)
    return Persona(
        tuple(attrs), anchor, needs_prompt, comp.aggregator, comp.lam, comp.plausibility, comp.guard
    )


def multi_trait_policy(mbti: str | None, traits: list[str] = ()) -> Policy:
    """The base under one system prompt naming every MBTI letter's trait and each free-text trait
    (the `prompt` method, and the anchor of anchor=prompt compositions)."""
    named = [TRAITS[c] for c in (parse_mbti(mbti) if mbti else {})] + list(traits)
    return Policy(system=" ".join(named))


def attribute_spreads(attrs: list[Attribute], experts) -> list[float | None]:
    """Each attribute's measured ratio spread (mpg.composition), from its expert folder's mpg_expert.json
    (None for prompted attributes). `experts` as in `persona`, or a callable carrying a `spreads` dict
    {letter: spread} (tests, custom attributes)."""
    if callable(experts):
        return [getattr(experts, "spreads", {}).get(a.name) for a in attrs]
    if experts == "prompted":
        return [None] * len(attrs)
    d = _experts_dir(experts)
    out = []
    for a in attrs:
        side = "roleplay" if a.num.adapter in ROLEPLAY_ADAPTERS else a.name
        out.append(expert_spreads(d / a.num.adapter).get(side) if a.num.adapter else None)
    return out
