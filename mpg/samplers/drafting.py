"""Drafts: where the drafting samplers' candidate chunks come from.

A `Drafter` owns what it drafts from (as transformers' candidate generators own their cache): it is
told the responses, draws chunks with each sequence's own uniforms, and is told what was kept
(`commit`), who left (`select`) and who joined (`absorb`). `PolicyDrafter` drafts from a policy (the
target's anchor, or any proposal policy) with one cache row per sequence.

What a draft is drawn from: the proposal kept to its own plausible tokens at the target's alpha, then
tempered (`proposal_logprobs`). Any q leaves speculative exact; scr's law is p_k restricted to chunks
q can draw, as with top-p.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..aggregators import plausible
from ..distributions import sample, temper
from ..scoring import MultiPolicyScorer
from .state import Sequence

__all__ = ["Draft", "Drafter", "PolicyDrafter", "draft_uniforms", "gather_tokens", "proposal_logprobs"]


def gather_tokens(lp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """lp: [..., T, V], tokens: [..., T] broadcastable on leading dims -> [..., T] log-prob of each token."""
    idx = tokens.to(lp.device).expand(*lp.shape[:-1]).unsqueeze(-1)  # [..., T, 1]
    return lp.gather(-1, idx).squeeze(-1)


def proposal_logprobs(
    logits: torch.Tensor, temperature: float, top_p: float, plausibility: float
) -> torch.Tensor:
    """What drafts are drawn from: the proposal kept to its OWN plausible tokens at the target's alpha,
    then tempered. With the anchor as proposal this is exactly the target's support, so no draft is
    spent on a token the target gives mass 0.

    logits: [..., V] -> [..., V] log-probs (-inf outside the plausible set and the top-p nucleus)
    """
    logits = logits.float()  # [..., V]
    # the rule is relative to the row's own top token, so raw logits serve as their own reference
    return temper(plausible(logits, logits, plausibility), temperature, top_p)


@dataclass
class Draft:
    """n candidate chunks per sequence. tokens [B, n, K]; q [B, n, K, V] the log-probs each token was
    drawn from; lengths[b][i]: the chunk's k_b, or up to and including its first end token."""

    tokens: torch.Tensor
    q: torch.Tensor
    lengths: list[list[int]]


def draft_uniforms(
    seqs: list[Sequence], ks: list[int], ns: list[int], need: list[bool] | None = None
) -> torch.Tensor:
    """[B, max n, max k] uniforms: sequence b's own ns[b] x ks[b] (the rest 0.5, drawn from nobody).
    need[b] False: none drawn and its stream untouched, for a draft that is thrown away for it."""
    u = torch.full((len(seqs), max(ns), max(ks)), 0.5)  # [B, n, K]
    for b, (s, k, n) in enumerate(zip(seqs, ks, ns)):
        if need is None or need[b]:
            u[b, :n, :k] = s.uniforms(n, k)
    return u


class Drafter(ABC):
    """Draws chunks for a batch's sequences and keeps its own state in step with their responses."""

    wants_features = False  # whether the scoring pass hands it the target's composed features (observe)

    def observe(self, ys: list[list[int]], features: torch.Tensor) -> None:
        """The composed features of a round's scoring pass, [B, n, K+1, H], before its `commit` (only
        called when `wants_features`)."""
        raise NotImplementedError

    @abstractmethod
    def draft(
        self, seqs: list[Sequence], ks: list[int], n: int, u: torch.Tensor, alpha: list[float]
    ) -> Draft:
        """n chunks of k_b tokens per sequence from uniforms u [B, n, K]; alpha[b]: the target's
        plausibility, which the proposal is kept to."""

    @abstractmethod
    def commit(self, lengths: list[int], winners: list[int] | None = None) -> None: ...

    @abstractmethod
    def select(self, keep: list[int]) -> None: ...

    @abstractmethod
    def absorb(self, other: Drafter) -> None: ...

    @property
    @abstractmethod
    def forward_passes(self) -> int: ...

    @property
    def ready(self) -> bool:
        """Whether the drafter's own prefill is done (see `prefill`)."""
        return True

    def prefill(self, budget: int | None = None) -> int:
        """Feed at most `budget` more context tokens per row of its own cache; returns the columns fed."""
        return 0


def _by_settings(seqs: list[Sequence], alpha: list[float]) -> list[tuple[list[int], tuple]]:
    """Sequences of equal (temperature, top_p, alpha), for computing their proposals together."""
    by: dict[tuple, list[int]] = {}
    for b, s in enumerate(seqs):
        by.setdefault((s.settings.temperature, s.settings.top_p, alpha[b]), []).append(b)
    return [(bs, key) for key, bs in by.items()]


def _proposal(logits: torch.Tensor, seqs: list[Sequence], alpha: list[float]) -> torch.Tensor:
    """Each sequence's proposal log-probs under its own settings. logits: [B, ..., V] -> [B, ..., V]."""
    groups = _by_settings(seqs, alpha)
    if len(groups) == 1:
        return proposal_logprobs(logits, *groups[0][1])
    out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    for bs, key in groups:
        idx = torch.tensor(bs, device=logits.device)
        out[idx] = proposal_logprobs(logits[idx], *key)
    return out


def _ends(tokens: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """[B, n, T] whether each drafted token ends its sequence (its own end tokens)."""
    out = torch.zeros(tokens.shape, dtype=torch.bool)
    for b, s in enumerate(seqs):
        if s.settings.eos:
            out[b] = torch.isin(tokens[b], torch.tensor(sorted(s.settings.eos), dtype=torch.long))
    return out


class PolicyDrafter(Drafter):
    """Drafts from one policy per sequence (each its own row of a `MultiPolicyScorer`), one forward per
    drafted token for all sequences; candidates are branches of one cache."""

    def __init__(self, scorer: MultiPolicyScorer):
        self.scorer = scorer

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.scorer.groups)

    def _by_sequence(self, flat: torch.Tensor) -> torch.Tensor:
        """Flat rows [N, ...] -> [B, ...] (one row per sequence)."""
        rows = torch.tensor([r[0] for r in self.scorer.seq_rows()])  # [B]
        if torch.equal(rows, torch.arange(flat.shape[0])):
            return flat
        return flat[rows.to(flat.device)]

    def draft(self, seqs, ks, n, u, alpha) -> Draft:
        B, K = len(seqs), max(ks)
        ys = [s.y for s in seqs]
        logits = self._by_sequence(self.scorer.next_logits(ys))  # [B, V]
        q = _proposal(logits, seqs, alpha).unsqueeze(1).expand(B, n, -1)  # [B, n, V]
        toks, qs = [], []
        for t in range(K):
            tok = sample(q, u[:, :, t])  # [B, n]
            toks.append(tok)
            qs.append(q)
            done = torch.stack(toks, 2)  # [B, n, t+1]
            if t + 1 == K or bool(_ends(done, seqs).any(2).all()):
                break
            logits = self._by_sequence(self._extend(tok))  # [B, n, V]
            q = _proposal(logits, seqs, alpha)  # [B, n, V]
        toks = torch.stack(toks, 2)  # [B, n, T], T <= K
        is_end = _ends(toks, seqs)  # [B, n, T]
        first = torch.where(is_end.any(2), is_end.int().argmax(2) + 1, toks.shape[2])  # [B, n]
        lengths = torch.minimum(first, torch.tensor(ks).unsqueeze(1)).tolist()
        return Draft(toks, torch.stack(qs, 2), lengths)

    def _extend(self, tok: torch.Tensor) -> torch.Tensor:
        """One more token in every open branch: tok [B, n] -> flat logits [N, n, V]."""
        outs = [g.extend_branches(tok[g.row_seq]) for g in self.scorer.groups]
        return outs[0] if len(outs) == 1 else torch.cat([o.to(outs[0].device) for o in outs], 0)

    @property
    def ready(self) -> bool:
        return self.scorer.ready

    def prefill(self, budget=None) -> int:
        return self.scorer.prefill(budget)

    def commit(self, lengths, winners=None) -> None:
        self.scorer.commit(lengths, winners)

    def select(self, keep) -> None:
        self.scorer.select(keep)

    def absorb(self, other: Drafter) -> None:
        if not isinstance(other, PolicyDrafter):
            raise ValueError("drafters of different kinds cannot be joined")
        self.scorer.absorb(other.scorer)

    @property
    def forward_passes(self) -> int:
        return self.scorer.forward_passes
