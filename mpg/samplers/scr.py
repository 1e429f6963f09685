"""scr: Speculative Chunk-level Rejection sampling (the MPG paper's sampler, SPEC section 3).

Draft a chunk from q, score it under every policy in one pass, accept it with probability
W(c) / M where log M is estimated online; otherwise salvage the longest prefix that passes with the
same uniform (the decision: `rules.scr_round`). Targets p_k; exact given a true fixed bound and no
salvage.

`candidates` > 1 drafts several chunks at once (as branches of one cache, scored in one pass) and
takes the first one, in draft order, that yields tokens -- the same law as trying them one after
another, except that all candidates of a round are judged against the bound from before the round.
Every sequence of a batch runs its own rounds, bound and uniforms; they share the forward passes.

`adaptive_chunk` (common.next_chunk_size) changes each sequence's k between rounds: +2 after a round
whose drafts were all kept whole, else -1. The threshold windows are kept per prefix length t, so a
k longer than any seen so far needs windows at the new lengths: `WindowBound.ready(k)` is false and a
pilot batch (`pilot` drafts of k tokens) seeds them -- one pilot per new largest k, up to
`max_chunk_size` (shrinking reuses the windows it has). Windows at short t keep filling from every
round, those at long t only from the rounds that reach them, so long-t bounds are older and sparser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributions import sample
from ..kernels.validation import token_logprobs_reference
from .base import Sampler
from .batch import Batch
from .config import ScrConfig
from .drafting import draft_uniforms, gather_tokens
from .rules import scr_round
from .state import Advance
from .thresholds import FixedBound, WindowBound

__all__ = ["Scr", "ScrState"]


@dataclass
class ScrState:
    """SCR's own state for one sequence: its threshold estimator and its run of empty candidates."""

    bound: FixedBound | WindowBound
    empty_rounds: int = 0

    @classmethod
    def new(cls, config: ScrConfig) -> ScrState:
        if config.threshold is not None:
            return cls(FixedBound(config.threshold))
        return cls(WindowBound(config.window, config.margin, config.quantile))


def propose(batch: Batch, ks: list[int], ns: list[int], need: list[bool] | None = None):
    """Draft ns[b] chunks for sequence b (need: as in `draft_uniforms`) and weigh them.

    returns tokens [B, n, K], lengths [B][n], cumulative log-weights a [B, n, K] (valid up to each
    length) and the rows' logits [N, n, K+1, V]."""
    seqs = batch.seqs
    d = batch.drafter.draft(seqs, ks, max(ns), draft_uniforms(seqs, ks, ns, need), batch.alphas)
    logits = batch.score(d.tokens)  # [N, n, K+1, V]
    K = d.tokens.shape[2]
    lg = logits[:, :, :K]  # [N, n, K, V]
    # the reference (log_softmax + gather) measured faster on the CPU than gather - logsumexp
    # (benchmarks: speed.py --validation-kernels)
    tok_lp = token_logprobs_reference(lg, d.tokens[batch.scorer.row_seqs()])  # [N, n, K]
    a = batch.target.chunk_log_weights(tok_lp, gather_tokens(d.q, d.tokens), lg)  # [B, n, K]
    return d.tokens, d.lengths, a.cpu(), logits


def pilot(batch: Batch, ks: list[int], need: list[bool]) -> list[int]:
    """Seed empty threshold windows: `pilot` drafts per sequence, scored in one pass, then thrown away.
    Returns the pilot tokens drafted per sequence (0 where the window was ready). Sequences whose
    window is ready take no uniforms, so a sequence's output does not depend on its batch-mates."""
    ns = [s.config.scr.pilot for s in batch.seqs]
    _, lengths, a, _ = propose(batch, ks, ns, need)
    drafted = []
    for b, s in enumerate(batch.seqs):
        mine = lengths[b][: ns[b]]
        drafted.append(sum(mine) if need[b] else 0)
        if need[b]:
            for i, L in enumerate(mine):
                s.state.bound.observe(a[b, i, :L])
    batch.commit()  # keep nothing of the drafts
    return drafted


class Scr(Sampler):
    name = "scr"
    drafts = True

    def step(self, batch: Batch) -> list[Advance]:
        for s in batch.seqs:
            if s.state is None:
                s.state = ScrState.new(s.config.scr)
        ks = batch.draft_lengths()
        need = [not s.state.bound.ready(k) for s, k in zip(batch.seqs, ks)]
        pilot_tokens = pilot(batch, ks, need) if any(need) else [0] * len(batch.seqs)
        ns = [s.config.scr.candidates for s in batch.seqs]
        toks, lengths, a, logits = propose(batch, ks, ns)
        fallback_p = None
        steps = []
        for b, s in enumerate(batch.seqs):
            cfg, state, n = s.config.scr, s.state, ns[b]
            chunks = [a[b, i, :L] for i, L in enumerate(lengths[b][:n])]  # [L_i] each
            bounds = [state.bound.log_bounds(c) for c in chunks]  # all from before the round
            for c in chunks:
                state.bound.observe(c)
            r = scr_round(
                chunks,
                bounds,
                s.uniforms(n).log(),
                salvage=cfg.salvage,
                empty_rounds=state.empty_rounds,
                max_rejections=cfg.max_rejections,
            )
            state.empty_rounds = r.empty_rounds
            out = toks[b, r.winner - 1, : r.kept].tolist() if r.winner else []
            if r.fallback:
                # Bounded work: one exact token-level (fused) draw here, from the pass already made.
                if fallback_p is None:
                    lp = torch.log_softmax(logits[:, 0, :1].float(), -1)  # [N, 1, V]
                    fallback_p = batch.target.token_logprobs(lp)[:, 0]  # [B, V]
                out = [int(sample(fallback_p[b], s.uniforms(1))[0])]
            steps.append(
                Advance(
                    out,
                    rounds=r.judged,
                    drafted=sum(lengths[b][:n]),
                    accepted=r.kept,
                    pilot=pilot_tokens[b],
                    rejections=r.rejections,
                    clips=r.clips,
                    fallbacks=int(r.fallback),
                    winner=r.winner,
                )
            )
        return steps
