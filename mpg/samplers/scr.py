"""scr: Speculative Chunk-level Rejection sampling (the MPG paper's sampler, SPEC section 3).

Draft a chunk from q, score it under every policy in one pass, accept it with probability
W(c) / M where log M is estimated online; otherwise salvage the longest prefix that passes with the
same uniform. Targets p_k; exact given a true fixed bound and no salvage.
"""
from __future__ import annotations

import torch

from ..distributions import sample
from .common import Sequence, draft, gather_tokens
from .thresholds import FixedBound, WindowBound


def new_bound(config):
    return FixedBound(config.threshold) if config.threshold is not None else WindowBound(config.window, config.margin)


def pilot(seq: Sequence, k: int) -> None:
    """Seed the threshold window: draft `pilot` chunks in parallel (forked caches), score them in one pass."""
    n = seq.config.pilot
    fork = seq.drafter.fork(n)
    toks, q, lengths = draft(fork, seq.y, k, seq)                     # [n, k], [n, k, V]
    seq.drafter.forward_passes += fork.forward_passes
    lp = seq.scorer.score_many(seq.y, toks)                           # [P, n, k+1, V]
    tok_lp = gather_tokens(lp[:, :, :k], toks)                        # [P, n, k]
    a = seq.target.chunk_log_weights(tok_lp, gather_tokens(q, toks), seq.temperature)  # [n, k]
    for i in range(n):
        seq.bound.observe(a[i, :lengths[i]])
    seq.stats.pilot_tokens += sum(lengths)


def scr_step(seq: Sequence) -> list[int]:
    cfg = seq.config
    if seq.bound is None:
        seq.bound = new_bound(cfg)
    k = min(cfg.chunk_size, seq.remaining)
    if not seq.bound.ready(k):
        pilot(seq, k)
    toks, q, lengths = draft(seq.drafter, seq.y, k, seq)
    L = lengths[0]
    chunk = toks[0, :L]                                                # [L]
    lp = seq.scorer.score(seq.y, chunk)                                # [P, L+1, V]
    tok_lp = gather_tokens(lp[:, :L], chunk)                           # [P, L]
    a = seq.target.chunk_log_weights(tok_lp, gather_tokens(q[0, :L], chunk), seq.temperature).cpu()  # [L]
    log_m = seq.bound.log_bounds(a)                                    # [L]
    seq.bound.observe(a)
    log_u = seq.uniforms(1).log()
    passes = log_u <= a - log_m                                        # [L]
    if passes[-1]:
        j = L
    elif cfg.salvage and passes[:-1].any():
        j = int(torch.nonzero(passes[:-1])[-1]) + 1
    else:
        j = 0
    st = seq.stats
    st.rounds += 1
    st.drafted_tokens += L
    st.accepted_tokens += j
    st.clips += int(bool((a > log_m).any()))
    new = chunk[:j].tolist()
    if j == 0:
        st.rejections += 1
        seq.empty_rounds += 1
        if seq.empty_rounds >= cfg.max_rejections:
            # Bounded work: one exact token-level (fused) draw here, from the pass already made.
            p = seq.target.token_logprobs(lp[:, :1], seq.temperature, seq.top_p)[0]  # [V]
            new = [int(sample(p, seq.uniforms(1))[0])]
            st.fallbacks += 1
            seq.empty_rounds = 0
    else:
        seq.empty_rounds = 0
    seq.append(new)
    return new
