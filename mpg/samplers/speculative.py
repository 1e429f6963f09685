"""speculative: draft k tokens from q, verify all policies in one pass, accept min(1, p_1/q).

Exactly p_1 (Leviathan et al. 2023): at the first rejection the position is redrawn from
norm(max(0, p_1 - q)); if every draft survives, one bonus token comes from p_1 at position k+1.
"""
from __future__ import annotations

from ..distributions import residual_logprobs, sample
from .common import Sequence, draft, gather_tokens


def speculative_step(seq: Sequence) -> list[int]:
    k = min(seq.config.chunk_size, seq.remaining)
    toks, q, lengths = draft(seq.drafter, seq.y, k, seq)
    L = lengths[0]
    chunk, q = toks[0, :L], q[0, :L]                                  # [L], [L, V]
    lp = seq.scorer.score(seq.y, chunk)                               # [P, L+1, V]
    p = seq.target.token_logprobs(lp, seq.temperature, seq.top_p)     # [L+1, V]
    u = seq.uniforms(L + 1)                                           # [L+1]
    log_ratio = gather_tokens(p[:L], chunk) - gather_tokens(q, chunk)  # [L]
    accepted = (u[:L].to(log_ratio.device).log() < log_ratio).int()   # u < p/q
    j = int(accepted.cumprod(0).sum())
    new = chunk[:j].tolist()
    if j < L:
        new.append(int(sample(residual_logprobs(p[j], q[j]), u[L:])[0]))
    elif new[-1] not in seq.eos and len(seq.y) + L < seq.max_new_tokens:
        new.append(int(sample(p[L], u[L:])[0]))                       # bonus token
    seq.stats.rounds += 1
    seq.stats.drafted_tokens += L
    seq.stats.accepted_tokens += j
    seq.append(new)
    return new
