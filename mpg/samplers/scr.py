"""scr: Speculative Chunk-level Rejection sampling (the MPG paper's sampler, SPEC section 3).

Draft a chunk from q, score it under every policy in one pass, accept it with probability
W(c) / M where log M is estimated online; otherwise salvage the longest prefix that passes with the
same uniform. Targets p_k; exact given a true fixed bound and no salvage.

`candidates` > 1 drafts several chunks at once (forked caches, one scoring pass for all) and takes
the first one, in draft order, that yields tokens -- the same law as trying them one after another,
except that all candidates of a round are judged against the bound from before the round.
"""
from __future__ import annotations

import torch

from ..distributions import sample
from .common import Sequence, draft, gather_tokens
from .thresholds import FixedBound, WindowBound


def new_bound(config):
    return FixedBound(config.threshold) if config.threshold is not None else WindowBound(config.window, config.margin)


def propose(seq: Sequence, k: int, n: int):
    """Draft n chunks and weigh them.

    n = 1 drafts and scores in the real caches; n > 1 in forks that the caller may adopt.
    returns tokens [n, K], lengths (each <= K), cumulative log-weights a [n, K] (valid up to each
    length), policy log-probs [P, n, K+1, V] and the forks (None for n = 1).
    """
    if n == 1:
        toks, q, lengths = draft(seq.drafter, seq.y, k, seq)           # [1, L], [1, L, V]
        lp = seq.scorer.score(seq.y, toks[0]).unsqueeze(1)               # [P, 1, L+1, V]
        forks = None
    else:
        dfork = seq.drafter.fork(n)
        toks, q, lengths = draft(dfork, seq.y, k, seq)                 # [n, k], [n, k, V]
        seq.drafter.forward_passes += dfork.forward_passes
        lp, sforks = seq.scorer.score_many(seq.y, toks)                 # [P, n, k+1, V]
        forks = (dfork, sforks)
    K = toks.shape[1]
    tok_lp = gather_tokens(lp[:, :, :K], toks)                          # [P, n, K]
    a = seq.target.chunk_log_weights(tok_lp, gather_tokens(q, toks), seq.temperature)  # [n, K]
    return toks, lengths, a.cpu(), lp, forks


def pilot(seq: Sequence, k: int) -> None:
    """Seed the threshold window: `pilot` drafts, scored in one pass, observed and thrown away."""
    _, lengths, a, _, _ = propose(seq, k, seq.config.pilot)
    for i, L in enumerate(lengths):
        seq.bound.observe(a[i, :L])
    seq.stats.pilot_tokens += sum(lengths)


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


def scr_step(seq: Sequence) -> list[int]:
    cfg, st = seq.config, seq.stats
    if seq.bound is None:
        seq.bound = new_bound(cfg)
    k = min(cfg.chunk_size, seq.remaining)
    if not seq.bound.ready(k):
        pilot(seq, k)
    n = cfg.candidates
    toks, lengths, a, lp, forks = propose(seq, k, n)
    log_u = seq.uniforms(n).log()                                      # [n]
    bounds = [seq.bound.log_bounds(a[i, :L]) for i, L in enumerate(lengths)]  # all from before the round
    for i, L in enumerate(lengths):
        seq.bound.observe(a[i, :L])
    st.drafted_tokens += sum(lengths)
    new, winner = [], None
    for i, L in enumerate(lengths):
        j, clip = judge(a[i, :L], bounds[i], log_u[i], cfg.salvage)
        st.rounds += 1
        st.clips += int(clip)
        if j:
            new, winner = toks[i, :j].tolist(), i
            st.accepted_tokens += j
            seq.empty_rounds = 0
            break
        st.rejections += 1
        seq.empty_rounds += 1
        if seq.empty_rounds >= cfg.max_rejections:
            # Bounded work: one exact token-level (fused) draw here, from the pass already made.
            p = seq.target.token_logprobs(lp[:, 0, :1], seq.temperature, seq.top_p)[0]  # [V]
            new = [int(sample(p, seq.uniforms(1))[0])]
            st.fallbacks += 1
            seq.empty_rounds = 0
            break
    if forks is not None and winner is not None:
        seq.drafter.adopt(forks[0], n, winner)
        seq.scorer.adopt(forks[1], n, winner)
    seq.append(new)
    return new
