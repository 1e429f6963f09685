"""The policy table: the distinct policies of a target, their contexts and the target's rows, built once.

Every consumer that scores policies -- the engine's batched scorer (`mpg.scoring`), the teacher-forcing
likelihood scorer (`mpg.eval.likelihood`) and the MOD-style reference -- takes its inputs from here, so
they agree on which policies are "the same" (scored once), what context each one sees, which rows form
the target, and which policies are valid for an engine.

Identity: two policies are one row when they run the same weights (model, adapter), the same steering
and the same rendered context token ids for every prompt; a different system prompt that renders the
same ids is the same policy. Order: anchor, then numerators, then denominators, first seen first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .aggregators import token_target_logits
from .distributions import temper
from .policies import Policy, Target

__all__ = ["PolicyTable", "TargetRows", "check_policy", "is_peft", "render_context"]


def is_peft(model) -> bool:
    """PEFT models choose the adapter per row (`adapter_names`); plain models take no such argument."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def check_policy(engine, policy: Policy) -> None:
    """A clear error if the policy names a model, adapter or steering vector the engine does not have."""
    if policy.model not in engine.models:
        raise ValueError(
            f"policy refers to unknown model {policy.model!r}; registered: {', '.join(engine.models)}"
        )
    loaded = engine.adapters.get(policy.model, set())
    if policy.adapter is not None and policy.adapter not in loaded:
        have = ", ".join(sorted(loaded)) or "none"
        raise ValueError(
            f"unknown adapter {policy.adapter!r} on model {policy.model!r}; loaded adapters: {have}"
        )
    for st in policy.steering or ():
        if st.vector not in engine.vectors:
            have = ", ".join(sorted(engine.vectors)) or "none"
            raise ValueError(f"unknown steering vector {st.vector!r}; registered: {have}")


def render_context(engine, policy: Policy, prompt: str) -> list[int]:
    """The policy's context ids for this prompt (`Engine.context_ids`). An empty context becomes one BOS
    (else EOS) token, as lm-eval conditions an unconditioned text: every row needs a token to predict from."""
    ids = list(engine.context_ids(policy, prompt))
    if ids:
        return ids
    tok = engine.tokenizer
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if prefix is None:
        raise ValueError("the context is empty and the tokenizer has no BOS or EOS token to condition on")
    return [int(prefix)]


@dataclass
class TargetRows:
    """Where the target's policies sit among the table's rows, and how to combine them (SPEC section 2)."""

    anchor: int
    num: list[int]
    den: list[int]
    weights: torch.Tensor  # [n] as the aggregator uses them (mixture weights sum to 1)
    aggregator: str
    lam: float
    plausibility: float = 0.0

    def token_logprobs(self, lp: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
        """lp: [P, T, V] policy log-probs -> [T, V] log p_1 after temperature and top-p."""
        logits = token_target_logits(
            lp[self.anchor],
            lp[self.num].transpose(0, 1),
            lp[self.den].transpose(0, 1),
            self.weights.to(lp.device),
            self.aggregator,
            self.lam,
            self.plausibility,
        )  # [T, V]
        return temper(logits, temperature, top_p)


@dataclass(frozen=True)
class PolicyTable:
    """Distinct policies, their contexts for each prompt, and (for a target) the target's rows.

    policies: [P] distinct policies;  contexts[p][b]: token ids of policy p's context for prompt b
    (+ `extra` response tokens already given);  asked: the policies asked for, duplicates included;
    row_of[i]: the row of asked[i];  rows: the target's anchor / numerator / denominator rows (None
    when built from a policy list).
    """

    policies: tuple[Policy, ...]
    contexts: tuple[tuple[tuple[int, ...], ...], ...]
    asked: tuple[Policy, ...]
    row_of: tuple[int, ...]
    rows: TargetRows | None = None

    @classmethod
    def for_policies(cls, engine, policies: list[Policy], prompts: list[str], *, extra=()) -> "PolicyTable":
        """Validate the policies, render their contexts and merge identical ones."""
        if not prompts:
            raise ValueError("no prompts given")
        keys: dict = {}
        uniq, contexts, row_of = [], [], []
        for p in policies:
            check_policy(engine, p)
            ctx = tuple(tuple(render_context(engine, p, q)) + tuple(extra) for q in prompts)
            key = (p.model, p.adapter, p.steering, ctx)
            if key not in keys:
                keys[key] = len(uniq)
                uniq.append(p)
                contexts.append(ctx)
            row_of.append(keys[key])
        return cls(tuple(uniq), tuple(contexts), tuple(policies), tuple(row_of))

    @classmethod
    def for_target(cls, engine, target: Target, prompts: list[str], *, extra=()) -> "PolicyTable":
        """The table of the target's anchor, numerators and denominators, with the target's rows."""
        n = len(target.attributes)
        asked = [target.anchor, *(a.num for a in target.attributes), *(a.den for a in target.attributes)]
        t = cls.for_policies(engine, asked, prompts, extra=extra)
        rows = TargetRows(
            t.row_of[0],
            list(t.row_of[1 : 1 + n]),
            list(t.row_of[1 + n :]),
            torch.tensor(target.normalised_weights(), dtype=torch.float32),
            target.aggregator,
            float(target.lam),
            float(target.plausibility),
        )
        return cls(t.policies, t.contexts, t.asked, t.row_of, rows)

    def by_model(self) -> list[tuple[str, list[int]]]:
        """[(model name, rows of the policies on it)] in first-seen order: one forward group each."""
        names = dict.fromkeys(p.model for p in self.policies)
        return [(m, [i for i, p in enumerate(self.policies) if p.model == m]) for m in names]

    def index(self) -> dict[Policy, int]:
        """policy -> row, for every policy asked for (merged duplicates included)."""
        return dict(zip(self.asked, self.row_of))

    def labels(self) -> list[str]:
        return [p.label() for p in self.policies]
