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
from ..kernels.validation import chunk_weights, token_logprobs_reference
from .common import Advance, Batch, SamplerConfig, draft, gather_tokens
from .rules import scr_round
from .thresholds import FixedBound, WindowBound

__all__ = ["ScrState", "scr_step"]


@dataclass
class ScrState:
    """SCR's own state for one sequence: its threshold estimator and its run of empty candidates."""

    bound: FixedBound | WindowBound
    empty_rounds: int = 0

    @classmethod
    def new(cls, config: SamplerConfig) -> "ScrState":
        if config.threshold is not None:
            return cls(FixedBound(config.threshold))
        return cls(WindowBound(config.window, config.margin, config.quantile))


def propose(batch: Batch, ks: list[int], n: int, need: list[bool] | None = None):
    """Draft n chunks per sequence (need: as in `draft`) and weigh them.

    returns tokens [B, n, K], lengths [B][n], cumulative log-weights a [B, n, K] (valid up to each
    length) and the policies' logits [B, P, n, K+1, V].
    """
    toks, q, lengths = draft(batch, ks, n, need)  # [B, n, K], [B, n, K, V]
    logits = batch.scorer.score(batch.ys, toks)  # [B, P, n, K+1, V]
    K, t = toks.shape[2], batch.target
    q_tok = gather_tokens(q, toks)  # [B, n, K]
    # the reference (log_softmax + gather) measured faster on CPU than gather - logsumexp (benchmarks/speed.py)
    a = chunk_weights(
        token_logprobs_reference,
        logits[..., :K, :].movedim(1, 0),
        toks,
        q_tok,
        t.anchor,
        t.num,
        t.den,
        t.weights.to(logits.device),
        t.aggregator,
        t.lam,
        batch.temperature,
        t.plausibility,
    )  # [B, n, K]
    return toks, lengths, a.cpu(), logits


def pilot(batch: Batch, ks: list[int], need: list[bool]) -> list[int]:
    """Seed empty threshold windows: `pilot` drafts per sequence, scored in one pass, then thrown away.
    Returns the pilot tokens drafted per sequence (0 where the window was ready). Sequences whose
    window is ready take no uniforms, so a sequence's output does not depend on its batch-mates."""
    _, lengths, a, _ = propose(batch, ks, batch.config.pilot, need)
    drafted = []
    for b, s in enumerate(batch.seqs):
        drafted.append(sum(lengths[b]) if need[b] else 0)
        if need[b]:
            for i, L in enumerate(lengths[b]):
                s.state.bound.observe(a[b, i, :L])
    batch.commit()  # keep nothing of the drafts
    return drafted


def scr_step(batch: Batch) -> None:
    cfg = batch.config
    for s in batch.seqs:
        if s.state is None:
            s.state = ScrState.new(cfg)
    ks = batch.chunk_sizes()
    need = [not s.state.bound.ready(k) for s, k in zip(batch.seqs, ks)]
    pilot_tokens = pilot(batch, ks, need) if any(need) else [0] * len(batch.seqs)
    n = cfg.candidates
    toks, lengths, a, logits = propose(batch, ks, n)
    steps = []
    for b, s in enumerate(batch.seqs):
        state = s.state
        chunks = [a[b, i, :L] for i, L in enumerate(lengths[b])]  # [L_i] each
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
            lp = torch.log_softmax(logits[b, :, 0, :1].float(), -1)  # [P, 1, V]
            p = batch.target.token_logprobs(lp, batch.temperature, batch.top_p)[0]  # [V]
            out = [int(sample(p, s.uniforms(1))[0])]
        steps.append(
            Advance(
                out,
                rounds=r.judged,
                drafted=sum(lengths[b]),
                accepted=r.kept,
                pilot=pilot_tokens[b],
                rejections=r.rejections,
                clips=r.clips,
                fallbacks=int(r.fallback),
                winner=r.winner,
            )
        )
    batch.advance(steps)
