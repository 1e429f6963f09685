"""fused: one batched scoring step of every policy per token, sample from p_1 (SPEC section 3)."""

from __future__ import annotations

import torch

from ..distributions import sample
from .base import Sampler
from .batch import Batch
from .state import Advance

__all__ = ["Fused"]


class Fused(Sampler):
    name = "fused"
    drafts = False

    def step(self, batch: Batch) -> list[Advance]:
        logits = batch.scorer.score_rows(batch.ys, support=batch.support())  # [N, 1, 1, V]
        lp = torch.log_softmax(logits[:, 0].float(), -1)  # [N, 1, V]
        p = batch.target.token_logprobs(lp)[:, 0]  # [B, V]
        u = torch.cat([s.uniforms(1) for s in batch.seqs])  # [B]
        return [Advance([int(t)], winner=0) for t in sample(p, u)]
