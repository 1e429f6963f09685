"""speculative: draft k tokens from q, verify all policies in one pass, accept min(1, p_1/q).

Exactly p_1 (Leviathan et al. 2023): the decision is `rules.speculative_sampling_batch`. Sequences of
a batch accept different numbers of tokens; the scorer keeps each one's own.
"""

from __future__ import annotations

import torch

from .base import Sampler
from .batch import Batch
from .drafting import draft_uniforms
from .rules import speculative_sampling_batch
from .state import Advance

__all__ = ["Speculative"]


class Speculative(Sampler):
    name = "speculative"
    drafts = True

    def step(self, batch: Batch) -> list[Advance]:
        seqs, ks = batch.seqs, batch.draft_lengths()
        d = batch.drafter.draft(seqs, ks, 1, draft_uniforms(seqs, ks, [1] * len(seqs)), batch.alphas)
        logits = batch.score(d.tokens, support=batch.support())  # [N, 1, K+1, V]
        lp = torch.log_softmax(logits[:, 0].float(), -1)  # [N, K+1, V]
        p = batch.target.token_logprobs(lp)  # [B, K+1, V]
        L = [n[0] for n in d.lengths]
        u = torch.zeros(len(seqs), d.tokens.shape[2] + 1)  # [B, K+1]
        for b, s in enumerate(seqs):
            u[b, : L[b] + 1] = s.uniforms(L[b] + 1)
        bonus = [
            int(d.tokens[b, 0, L[b] - 1]) not in s.settings.eos and len(s.y) + L[b] < s.max_new_tokens
            for b, s in enumerate(seqs)
        ]
        out, accepted = speculative_sampling_batch(p, d.q[:, 0], d.tokens[:, 0], L, u, bonus)
        return [Advance(o, drafted=n, accepted=a, winner=1) for o, n, a in zip(out, L, accepted)]
