"""fused: one batched scoring step of every policy per token, sample from p_1 (SPEC section 3)."""
from __future__ import annotations

from ..distributions import sample
from .common import Sequence


def fused_step(seq: Sequence) -> list[int]:
    lp = seq.scorer.score(seq.y)                                                  # [P, 1, V]
    p = seq.target.token_logprobs(lp, seq.temperature, seq.top_p)[0]              # [V]
    tok = int(sample(p, seq.uniforms(1))[0])
    seq.stats.rounds += 1
    seq.append([tok])
    return [tok]
