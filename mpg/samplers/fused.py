"""fused: one batched scoring step of every policy per token, sample from p_1 (SPEC section 3)."""

from __future__ import annotations

import torch

from ..distributions import sample
from .common import Advance, Batch

__all__ = ["fused_step"]


def fused_step(batch: Batch) -> None:
    logits = batch.scorer.score(batch.ys, support=batch.support())  # [B, P, 1, 1, V]
    steps = []
    for b, s in enumerate(batch.seqs):
        lp = torch.log_softmax(logits[b, :, 0].float(), -1)  # [P, 1, V]
        p = batch.target.token_logprobs(lp, batch.temperature, batch.top_p)[0]  # [V]
        steps.append(Advance([int(sample(p, s.uniforms(1))[0])], winner=0))
    batch.advance(steps)
