"""What `Engine.generate` needs besides the engine: its validated settings, its output, and stop strings.

`GenerateConfig` checks every argument once, with an error that names it; `Engine.generate` then only
builds the target, splits the prompts into batches and runs the sampler's step until each finishes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields

from .policies import PROPOSALS, Attribute, Policy, Target
from .samplers import SAMPLERS, SamplerConfig, SequenceStats

__all__ = [
    "GenerateConfig",
    "GenerateOutput",
    "BatchStats",
    "build_target",
    "check_sampler_target",
    "find_stop",
]


@dataclass
class BatchStats:
    """Counts shared by the sequences generated together (each sequence's stats repeat them)."""

    prompts: list[int]  # indices of the prompts in this batch
    forward_passes: dict = field(default_factory=dict)  # policy label -> batched forwards
    model_calls: int = 0  # model forward invocations (a batched pass counts once)
    wall_time_s: float = 0.0


@dataclass
class GenerateOutput:
    texts: list[str]
    token_ids: list[list[int]]
    stats: list[SequenceStats]
    policies: list[str] = field(default_factory=list)  # labels of the unique policies scored
    batches: list[BatchStats] = field(default_factory=list)


@dataclass
class GenerateConfig:
    """Every `generate()` setting besides the prompts and the target, validated on construction."""

    # fused: exact, and at the default composition the fastest sampler on a CPU
    # (docs/results.md#speed); scr, the paper's sampler, stays one keyword away
    sampler: str = "fused"
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    eos_token_id: int | list[int] | None = None  # None: the model's and tokenizer's EOS ids
    batch_size: int = 8
    sampler_config: SamplerConfig = field(default_factory=SamplerConfig)

    @classmethod
    def from_kwargs(cls, config: SamplerConfig | None = None, **kwargs) -> GenerateConfig:
        """generate()'s keywords: its own, plus the samplers' knobs (chunk_size, window, ...) on top of
        `config` (`SamplerConfig.from_flat`)."""
        own = {f.name for f in fields(cls)} - {"sampler_config"}
        knobs = {k: v for k, v in kwargs.items() if k not in own}
        unknown = set(knobs) - SamplerConfig.knob_names()
        if unknown:
            raise TypeError(f"generate() got unknown keyword(s): {', '.join(sorted(unknown))}")
        sampler_config = SamplerConfig.from_flat(config, **knobs)
        return cls(**{k: v for k, v in kwargs.items() if k in own}, sampler_config=sampler_config)

    def __post_init__(self):
        self.sampler_config.validate()
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        t = self.temperature
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        if t == 0 and self.sampler == "scr":
            raise ValueError(
                "temperature=0 is greedy decoding, which has no chunk-level weights; "
                "use sampler='fused' or 'speculative'"
            )
        if not isinstance(self.top_p, (int, float)) or not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if not all(isinstance(s, str) for s in self.stop):
            raise ValueError(f"stop must be a string or a list of strings, got {self.stop!r}")


def check_sampler_target(sampler: str, target: Target) -> None:
    """A clear error where a sampler cannot sample the target's law: scr weighs whole chunks, and its
    chunk-level constraint is the anchor's plausible set alone (drafts are kept to the proposal's own
    set), so a guard that widens the set by other policies' has no chunk-level form there."""
    guard = getattr(target, "guard", "anchor")
    if sampler == "scr" and guard != "anchor":
        raise ValueError(
            f"sampler 'scr' cannot sample a target with guard={guard} (its chunk-level constraint is the "
            "anchor's plausible set); use sampler='fused' or 'speculative'"
        )


def build_target(
    target: Target | None,
    policy: Policy | None,
    attributes: list[Attribute] | None,
    aggregator: str | None,
    lam: float | None,
    anchor: Policy | None,
    proposal: Policy | str | None,
    engine=None,
) -> Target:
    """The target generate() samples: `target` as given, `policy` alone, or one built from the parts.
    Parts that would be ignored (given next to target= or policy= with another value) are an error.
    A proposal named by a string ("anchor", "merged", "prompt": `mpg.proposals`) is built from the
    target, after it (with `engine`, which holds the adapters a merged proposal is made of)."""
    own = getattr(target, "proposal", None)
    if isinstance(proposal, str) or isinstance(own, str):
        from .proposals import resolve_proposal

        if proposal is not None and own is not None and proposal != own:
            raise ValueError(
                f"target= already has a proposal ({own!r}); do not also pass proposal={proposal!r}"
            )
        name = proposal if proposal is not None else own
        if name not in PROPOSALS:  # before the target, so a typo is named as such
            raise ValueError(
                f"unknown proposal {name!r}; choose one of {', '.join(PROPOSALS)} or pass a Policy"
            )
        if target is not None:
            target = dataclasses.replace(target, proposal=None)
        built = build_target(target, policy, attributes, aggregator, lam, anchor, None)
        return resolve_proposal(engine, built, name)
    parts = dict(attributes=attributes, aggregator=aggregator, lam=lam, anchor=anchor, proposal=proposal)
    if target is not None or policy is not None:
        if target is not None and policy is not None:
            raise ValueError("pass either target= or policy=, not both")
        which = "target" if target is not None else "policy"
        given = target if target is not None else Target.single(policy)
        # a part that repeats the target's own value changes nothing; any other would be ignored
        own = dict(
            attributes=given.attributes,
            aggregator=given.aggregator,
            lam=given.lam,
            anchor=given.anchor,
            proposal=given.proposal,
        )
        clash = [
            k for k, v in parts.items() if v is not None and (tuple(v) if k == "attributes" else v) != own[k]
        ]
        if clash:
            raise ValueError(
                f"{which}= already defines the distribution; do not also pass {', '.join(clash)} "
                f"(build the Target with them instead)"
            )
        return given
    return Target(
        tuple(attributes or ()),
        aggregator if aggregator is not None else "product",
        lam if lam is not None else 1.0,
        anchor if anchor is not None else Policy(),
        proposal,
    )


def find_stop(tokenizer, y: list[int], new_from: int, stop: list[str]) -> tuple[int, int] | None:
    """(tokens to keep, characters of the response text to keep) if a stop string ends in y[new_from:].

    Only the newly decoded text, with just enough earlier tokens to catch a stop string that spans the
    boundary, is searched, so a step costs O(new tokens + longest stop string), not O(|y|); the steps
    before already searched the older text. Tokens are kept up to the one where the stop string starts.
    """
    reach = max(len(s) for s in stop) - 1  # characters of old text a stop string can start in
    start = new_from
    while start > 0 and len(tokenizer.decode(y[start:new_from], skip_special_tokens=True)) < reach:
        start -= 1
    text = tokenizer.decode(y[start:], skip_special_tokens=True)
    hits = [text.find(s) for s in stop if s and s in text]
    if not hits:
        return None
    at = min(hits)
    # once per sequence, at its stop: where the searched text starts inside the whole response's text
    # (decoding the two parts apart can drop a separator some tokenizers put between tokens)
    cut = len(tokenizer.decode(y, skip_special_tokens=True)) - len(text) + at
    for n in range(max(new_from, 1), len(y) + 1):  # the shortest token prefix whose text reaches the stop
        if len(tokenizer.decode(y[start:n], skip_special_tokens=True)) > at:
            return n, cut
    return len(y), cut
