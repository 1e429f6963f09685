"""speculative: draft k tokens from q, verify all policies in one pass, accept min(1, p_1/q).

Exactly p_1 (Leviathan et al. 2023): at the first rejection the position is redrawn from
norm(max(0, p_1 - q)); if every draft survives, one bonus token comes from p_1 at position k+1.
Sequences of a batch accept different numbers of tokens; the scorer keeps each one's own.
"""
from __future__ import annotations

import torch

from ..distributions import residual_logprobs, sample
from .common import Batch, draft, gather_tokens


def speculative_step(batch: Batch) -> list[list[int]]:
    ks = batch.chunk_sizes()
    toks, q_all, lengths = draft(batch, ks, 1)                             # [B, 1, K], [B, 1, K, V]
    logits = batch.scorer.score(batch.ys, toks)                            # [B, P, 1, K+1, V]
    new = []
    for b, s in enumerate(batch.seqs):
        L = lengths[b][0]
        chunk, q = toks[b, 0, :L], q_all[b, 0, :L]                         # [L], [L, V]
        lp = torch.log_softmax(logits[b, :, 0, :L + 1].float(), -1)        # [P, L+1, V]
        p = batch.target.token_logprobs(lp, batch.temperature, batch.top_p)  # [L+1, V]
        u = s.uniforms(L + 1)                                              # [L+1]
        log_ratio = gather_tokens(p[:L], chunk) - gather_tokens(q, chunk)  # [L]
        accepted = (u[:L].to(log_ratio.device).log() < log_ratio).int()    # u < p/q
        j = int(accepted.cumprod(0).sum())
        out = chunk[:j].tolist()
        if j < L:
            out.append(int(sample(residual_logprobs(p[j], q[j]), u[L:])[0]))
        elif out[-1] not in batch.eos and len(s.y) + L < s.max_new_tokens:
            out.append(int(sample(p[L], u[L:])[0]))                         # bonus token
        s.stats.rounds += 1
        s.stats.drafted_tokens += L
        s.stats.accepted_tokens += j
        new.append(out)
    batch.append(new, winners=[1] * len(new))
    return new
