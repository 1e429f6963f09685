"""The policy table: the distinct policies of a target, their contexts and the target's rows, built once.

Every consumer that scores policies -- the engine's batched scorer (`mpg.scoring`) and the teacher-forcing
likelihood (`mpg.likelihood`) -- takes its inputs from here, so they agree on which policies are "the
same" (scored once), what context each one sees, and which rows form the target.

Identity: two policies are one row when they run the same weights (model, adapter), the same steering
and the same rendered context token ids for every prompt; a different system prompt that renders the
same ids is the same policy. Order: anchor, then numerators, then denominators, first seen first.

The target's formulas (SPEC section 2) are methods of the rows that hold it: `TargetRows` for one
table's policies, `TargetBatch` for the sequences of a running batch, each with its own target and
sampling settings, over the flat rows of one scorer. Policies are validated where they enter the
engine (`Engine.check_target`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .aggregators import chunk_log_weights, product_features, token_target_logits
from .distributions import temper
from .policies import Policy, Target

__all__ = ["PolicyTable", "TargetBatch", "TargetRows"]


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
    guard: str = "anchor"  # whose plausible sets (mpg.aggregators.guard_cut)

    def law(self) -> tuple:
        """What the target's formula depends on besides the rows (equal laws are computed together)."""
        return (self.aggregator, tuple(self.weights.tolist()), self.lam, self.plausibility, self.guard)

    def token_logprobs(self, lp: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
        """lp: [..., P, T, V] policy log-probs (any leading batch of sequences that share this target's
        table layout) -> [..., T, V] log p_1 after temperature and top-p."""
        logits = token_target_logits(
            lp[..., self.anchor, :, :],
            lp[..., self.num, :, :].transpose(-3, -2),
            lp[..., self.den, :, :].transpose(-3, -2),
            self.weights.to(lp.device),
            self.aggregator,
            self.lam,
            self.plausibility,
            self.guard,
        )  # [..., T, V]
        return temper(logits, temperature, top_p)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """h: [..., P, T, H] the policies' last hidden states -> [..., T, H] the product's composed
        features g (`aggregators.product_features`); W g is the target's logits up to a constant."""
        if self.aggregator != "product":
            raise ValueError("only a product target has composed features (a mixture is not linear in them)")
        return product_features(
            h[..., self.anchor, :, :],
            h[..., self.num, :, :].transpose(-3, -2),
            h[..., self.den, :, :].transpose(-3, -2),
            self.weights.to(h.device, h.dtype),
            self.lam,
        )

    def chunk_log_weights(
        self, tok_lp: torch.Tensor, q_tok: torch.Tensor, temperature: float, anchor_top: torch.Tensor | None
    ) -> torch.Tensor:
        """Cumulative log importance weights a_t of drafted chunks (SPEC section 3, SCR step 2).

        tok_lp: [P, ..., T] each policy's log-prob of the drafted tokens; q_tok: [..., T] the proposal's;
        anchor_top: [..., T] the anchor's top log-prob per position (needed when plausibility > 0)
        -> a: [..., T]"""
        n = tok_lp[self.num].movedim(0, -2)  # [..., n, T]
        d = tok_lp[self.den].movedim(0, -2)  # [..., n, T]
        return chunk_log_weights(
            tok_lp[self.anchor],
            n,
            d,
            q_tok,
            self.weights.to(tok_lp.device),
            self.aggregator,
            self.lam,
            temperature,
            anchor_top,
            self.plausibility,
        )


@dataclass
class TargetBatch:
    """The targets of a batch's sequences over one scorer's flat rows: sequence b's policy p is row
    rows[b][p]; its target is targets[b] (over its own policy order) sampled at temperature[b], top_p[b].

    Sequences whose targets share one law and sampling settings are computed together, with the very
    formulas (and float operations) of one sequence alone."""

    rows: list[list[int]]
    targets: list[TargetRows]
    temperature: list[float]
    top_p: list[float]

    def groups(self) -> list[tuple[list[int], torch.Tensor]]:
        """[(sequences, their rows [B_g, P])] of equal law and settings, in first-seen order."""
        by: dict[tuple, list[int]] = {}
        for b, t in enumerate(self.targets):
            by.setdefault((t.law(), len(self.rows[b]), self.temperature[b], self.top_p[b]), []).append(b)
        return [(seqs, torch.tensor([self.rows[b] for b in seqs])) for seqs in by.values()]

    def token_logprobs(self, lp: torch.Tensor) -> torch.Tensor:
        """lp: [N, T, V] every row's log-probs -> [B, T, V] log p_1 of each sequence (its temperature and
        top-p applied)."""
        out = [None] * len(self.targets)
        for seqs, rows in self.groups():
            b = seqs[0]
            p = self.targets[b].token_logprobs(
                lp[rows.to(lp.device)], self.temperature[b], self.top_p[b]
            )  # [B_g, T, V]
            for i, s in enumerate(seqs):
                out[s] = p[i]
        return torch.stack(out)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """h: [N, ..., H] every row's last hidden states -> [B, ..., H] each sequence's composed features
        (product targets only: `TargetRows.features`)."""
        out = []
        for b, t in enumerate(self.targets):
            rows = torch.tensor(self.rows[b], device=h.device)  # [P]
            out.append(t.features(h[rows].movedim(0, -3)))  # [..., H]
        return torch.stack(out)

    def chunk_log_weights(
        self, tok_lp: torch.Tensor, q_tok: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        """tok_lp: [N, n, T] every row's log-probs of its sequence's drafted tokens; q_tok: [B, n, T] the
        proposal's; logits: [N, n, T, V] the rows' logits there (for the anchors' plausible sets)
        -> a: [B, n, T]."""
        out = [None] * len(self.targets)
        for seqs, rows in self.groups():
            t, b = self.targets[seqs[0]], seqs[0]
            r = rows.to(tok_lp.device)  # [B_g, P]
            top = None
            if t.plausibility > 0:
                lg = logits[r[:, t.anchor]].float()  # [B_g, n, T, V]
                top = lg.amax(-1) - torch.logsumexp(lg, -1)  # [B_g, n, T]
            a = t.chunk_log_weights(
                tok_lp[r].movedim(1, 0), q_tok[torch.tensor(seqs)], self.temperature[b], top
            )  # [B_g, n, T]
            for i, s in enumerate(seqs):
                out[s] = a[i]
        return torch.stack(out)

    def support_rows(self, n_rows: int) -> tuple[torch.Tensor, float, torch.Tensor] | None:
        """(anchor rows [A], alpha, rows needing every logit [N]) for `MultiPolicyScorer.score_rows`:
        sequences whose target is a product kept to its anchor's plausible set are scored on that set
        only (their anchor in full); every other sequence's rows in full, wider guards included (their
        sets come from the numerators' full distributions). None: no sequence qualifies."""
        cut = [
            b
            for b, t in enumerate(self.targets)
            if t.aggregator == "product" and t.plausibility > 0 and t.guard == "anchor"
        ]
        if not cut:
            return None
        full = torch.ones(n_rows, dtype=torch.bool)
        for b in cut:
            full[self.rows[b]] = False
        anchors = torch.tensor([self.rows[b][self.targets[b].anchor] for b in cut])  # [A]
        full[anchors] = True
        return anchors, min(self.targets[b].plausibility for b in cut), full


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
    def for_policies(cls, chat, policies: list[Policy], prompts: list, *, extra=()) -> PolicyTable:
        """Render the policies' contexts (`chat`: a `mpg.chat.ChatRenderer`) and merge identical ones."""
        if not prompts:
            raise ValueError("no prompts given")
        keys: dict = {}
        uniq, contexts, row_of = [], [], []
        for p in policies:
            ctx = tuple(tuple(chat.render(p, q)) + tuple(extra) for q in prompts)
            key = (p.model, p.adapter, p.steering, ctx)
            if key not in keys:
                keys[key] = len(uniq)
                uniq.append(p)
                contexts.append(ctx)
            row_of.append(keys[key])
        return cls(tuple(uniq), tuple(contexts), tuple(policies), tuple(row_of))

    @classmethod
    def for_target(cls, chat, target: Target, prompts: list, *, extra=()) -> PolicyTable:
        """The table of the target's anchor, numerators and denominators, with the target's rows."""
        n = len(target.attributes)
        asked = [target.anchor, *(a.num for a in target.attributes), *(a.den for a in target.attributes)]
        t = cls.for_policies(chat, asked, prompts, extra=extra)
        rows = TargetRows(
            t.row_of[0],
            list(t.row_of[1 : 1 + n]),
            list(t.row_of[1 + n :]),
            torch.tensor(target.normalised_weights(), dtype=torch.float32),
            target.aggregator,
            float(target.lam),
            float(target.plausibility),
            target.guard,
        )
        return cls(t.policies, t.contexts, t.asked, t.row_of, rows)

    @property
    def n_prompts(self) -> int:
        return len(self.contexts[0])

    def sequence(self, b: int) -> list[tuple[Policy, tuple[int, ...]]]:
        """Prompt b's rows: (policy, its context) in table order."""
        return [(p, ctx[b]) for p, ctx in zip(self.policies, self.contexts)]

    def index(self) -> dict[Policy, int]:
        """policy -> row, for every policy asked for (merged duplicates included)."""
        return dict(zip(self.asked, self.row_of))

    def labels(self) -> list[str]:
        return [p.label() for p in self.policies]
