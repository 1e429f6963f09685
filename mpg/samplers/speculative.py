"""speculative: draft k tokens from q, verify all policies in one pass, accept min(1, p_1/q).

Exactly p_1 (Leviathan et al. 2023): the decision is `rules.speculative_sampling_rule`. Sequences of
a batch accept different numbers of tokens; the scorer keeps each one's own.
"""

from __future__ import annotations

import torch

from .common import Advance, Batch, draft
from .rules import speculative_sampling_rule

__all__ = ["speculative_step"]


def speculative_step(batch: Batch) -> None:
    ks = batch.chunk_sizes()
    toks, q_all, lengths = draft(batch, ks, 1)  # [B, 1, K], [B, 1, K, V]
    logits = batch.scorer.score(batch.ys, toks, support=batch.support())  # [B, P, 1, K+1, V]
    steps = []
    for b, s in enumerate(batch.seqs):
        L = lengths[b][0]
        chunk, q = toks[b, 0, :L], q_all[b, 0, :L]  # [L], [L, V]
        lp = torch.log_softmax(logits[b, :, 0, : L + 1].float(), -1)  # [P, L+1, V]
        p = batch.target.token_logprobs(lp, batch.temperature, batch.top_p)  # [L+1, V]
        bonus = int(chunk[-1]) not in batch.eos and len(s.y) + L < s.max_new_tokens
        out, accepted = speculative_sampling_rule(p, q, chunk, s.uniforms(L + 1), bonus)
        steps.append(Advance(out, drafted=L, accepted=accepted, winner=1))
    batch.advance(steps)
