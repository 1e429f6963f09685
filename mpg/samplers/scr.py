"""scr: Speculative Chunk-level Rejection sampling (the MPG paper's sampler, SPEC section 3).

Draft a chunk from q, score it under every policy in one pass, accept it with probability
W(c) / M where log M is estimated online; otherwise salvage the longest prefix that passes with the
same uniform. Targets p_k; exact given a true fixed bound and no salvage.

`candidates` > 1 drafts several chunks at once (as branches of one cache, scored in one pass) and
takes the first one, in draft order, that yields tokens -- the same law as trying them one after
another, except that all candidates of a round are judged against the bound from before the round.
Every sequence of a batch runs its own rounds, bound and uniforms; they share the forward passes.
"""
from __future__ import annotations

import torch

from ..distributions import sample
from ..kernels.validation import chunk_weights, token_logprobs_reference
from .common import Batch, draft, gather_tokens
from .thresholds import FixedBound, WindowBound


def new_bound(config):
    return FixedBound(config.threshold) if config.threshold is not None else WindowBound(config.window, config.margin)


def propose(batch: Batch, ks: list[int], n: int):
    """Draft n chunks per sequence and weigh them.

    returns tokens [B, n, K], lengths [B][n], cumulative log-weights a [B, n, K] (valid up to each
    length) and the policies' logits [B, P, n, K+1, V].
    """
    toks, q, lengths = draft(batch, ks, n)                               # [B, n, K], [B, n, K, V]
    logits = batch.scorer.score(batch.ys, toks)                          # [B, P, n, K+1, V]
    K, t = toks.shape[2], batch.target
    q_tok = gather_tokens(q, toks)                                       # [B, n, K]
    # the reference (log_softmax + gather) measured faster on CPU than gather - logsumexp (benchmarks/speed.py)
    a = chunk_weights(token_logprobs_reference, logits[..., :K, :].movedim(1, 0), toks, q_tok, t.anchor, t.num, t.den,
                      t.weights.to(logits.device), t.aggregator, t.lam, batch.temperature)  # [B, n, K]
    return toks, lengths, a.cpu(), logits


def pilot(batch: Batch, ks: list[int], need: list[bool]) -> None:
    """Seed empty threshold windows: `pilot` drafts per sequence, scored in one pass, then thrown away."""
    _, lengths, a, _ = propose(batch, ks, batch.config.pilot)
    for b, s in enumerate(batch.seqs):
        if need[b]:
            for i, L in enumerate(lengths[b]):
                s.bound.observe(a[b, i, :L])
            s.stats.pilot_tokens += sum(lengths[b])
    batch.append([[] for _ in batch.seqs])                               # keep nothing of the drafts


def judge(a: torch.Tensor, log_m: torch.Tensor, log_u: torch.Tensor, salvage: bool) -> tuple[int, bool]:
    """Tokens kept from one chunk, and whether a bound that mattered was exceeded (a clip).

    a, log_m: [L] cumulative log-weights and their bounds; log_u: [] shared by the chunk and its prefixes.
    """
    L = a.numel()
    passes = log_u <= a - log_m                                        # [L]
    used = slice(0, L) if salvage else slice(L - 1, L)                 # positions the decision looks at
    clip = bool((a[used] > log_m[used]).any())
    if passes[-1]:
        return L, clip
    if salvage and passes[:-1].any():
        return int(torch.nonzero(passes[:-1])[-1]) + 1, clip
    return 0, clip


def scr_step(batch: Batch) -> list[list[int]]:
    cfg = batch.config
    for s in batch.seqs:
        if s.bound is None:
            s.bound = new_bound(cfg)
    ks = batch.chunk_sizes()
    need = [not s.bound.ready(k) for s, k in zip(batch.seqs, ks)]
    if any(need):
        pilot(batch, ks, need)
    n = cfg.candidates
    toks, lengths, a, logits = propose(batch, ks, n)
    new, winners = [], []
    for b, s in enumerate(batch.seqs):
        st = s.stats
        log_u = s.uniforms(n).log()                                    # [n]
        bounds = [s.bound.log_bounds(a[b, i, :L]) for i, L in enumerate(lengths[b])]  # all from before the round
        for i, L in enumerate(lengths[b]):
            s.bound.observe(a[b, i, :L])
        st.drafted_tokens += sum(lengths[b])
        out, winner = [], 0
        for i, L in enumerate(lengths[b]):
            j, clip = judge(a[b, i, :L], bounds[i], log_u[i], cfg.salvage)
            st.rounds += 1
            st.clips += int(clip)
            if j:
                out, winner = toks[b, i, :j].tolist(), i + 1
                st.accepted_tokens += j
                s.empty_rounds = 0
                break
            st.rejections += 1
            s.empty_rounds += 1
            if s.empty_rounds >= cfg.max_rejections:
                # Bounded work: one exact token-level (fused) draw here, from the pass already made.
                lp = torch.log_softmax(logits[b, :, 0, :1].float(), -1)              # [P, 1, V]
                p = batch.target.token_logprobs(lp, batch.temperature, batch.top_p)[0]  # [V]
                out = [int(sample(p, s.uniforms(1))[0])]
                st.fallbacks += 1
                s.empty_rounds = 0
                break
        new.append(out)
        winners.append(winner)
    batch.append(new, winners)
    return new
