"""The acceptance rules, as pure functions of tensors and uniforms (no model, no cache, no state).

Each sampler's step scores its drafts and then hands the numbers to one of these; the unit tests in
tests/test_rules.py check them on cases worked out by hand.

- `speculative_sampling_rule`: Leviathan et al. 2023 / Chen et al. 2023. Accept drafted token t while
  u_t < p_1(c_t) / q(c_t); at the first rejection redraw from norm(max(0, p_1 - q)); if every draft
  survives, one bonus token from p_1. The result is distributed exactly as p_1.
- `scr_judge_chunk` and `scr_round`: the MPG paper's Speculative Chunk-level Rejection step. A chunk
  with cumulative log-weights a_t is accepted whole if log u <= a_L - log M_L; otherwise (salvage) its
  longest prefix with log u <= a_t - log M_t is kept. A round judges its candidates in draft order and
  stops at the first that keeps tokens; after `max_rejections` consecutive empty candidates it asks
  for one exact token instead (the fallback), so no input makes a sequence loop forever.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributions import residual_logprobs, sample

__all__ = ["ScrRound", "scr_judge_chunk", "scr_round", "speculative_sampling_rule"]


def speculative_sampling_rule(
    p: torch.Tensor, q: torch.Tensor, chunk: torch.Tensor, u: torch.Tensor, bonus: bool
) -> tuple[list[int], int]:
    """Tokens to append after verifying one drafted chunk, and how many drafted tokens were accepted.

    p: [L+1, V] target log-probs at each drafted position and after the last one
    q: [L, V] log-probs of the distributions the drafts were drawn from;  chunk: [L] drafted ids
    u: [L+1] uniforms (u[:L] accept/reject, u[L] the residual or bonus draw)
    bonus: whether a bonus token may follow a fully accepted chunk (not after EOS or the token budget)
    """
    L = chunk.numel()
    idx = chunk.to(p.device).unsqueeze(-1)  # [L, 1]
    log_ratio = p[:L].gather(-1, idx).squeeze(-1) - q.gather(-1, idx.to(q.device)).squeeze(-1).to(
        p.device
    )  # [L]
    accepted = (u[:L].to(p.device).log() < log_ratio).int()  # [L] u < p/q
    j = int(accepted.cumprod(0).sum())
    out = chunk[:j].tolist()
    if j < L:
        out.append(int(sample(residual_logprobs(p[j], q[j].to(p.device)), u[L:])[0]))
    elif bonus:
        out.append(int(sample(p[L], u[L:])[0]))
    return out, j


def scr_judge_chunk(
    a: torch.Tensor, log_m: torch.Tensor, log_u: torch.Tensor, salvage: bool
) -> tuple[int, bool]:
    """Tokens kept from one chunk, and whether a bound that mattered was exceeded (a clip).

    a, log_m: [L] cumulative log-weights and their bounds; log_u: [] shared by the chunk and its prefixes.
    A clip means the estimated bound was below the weight it judged, so that draw was over-accepted.
    """
    L = a.numel()
    passes = log_u <= a - log_m  # [L]
    used = slice(0, L) if salvage else slice(L - 1, L)  # positions the decision looks at
    clip = bool((a[used] > log_m[used]).any())
    if passes[-1]:
        return L, clip
    if salvage and passes[:-1].any():
        return int(torch.nonzero(passes[:-1])[-1]) + 1, clip
    return 0, clip


@dataclass(frozen=True)
class ScrRound:
    """The decision of one SCR round for one sequence."""

    winner: int  # 1-based candidate whose first `kept` tokens are appended; 0: none
    kept: int  # tokens kept from the winner
    judged: int  # candidates judged before the round stopped
    rejections: int  # judged candidates that kept nothing
    clips: int  # judged candidates whose decision used an exceeded bound
    fallback: bool  # max_rejections reached: emit one exact token-level draw instead
    empty_rounds: int  # consecutive empty candidates after this round (0 after tokens or a fallback)


def scr_round(
    a: list[torch.Tensor],
    log_m: list[torch.Tensor],
    log_u: torch.Tensor,
    *,
    salvage: bool,
    empty_rounds: int,
    max_rejections: int,
) -> ScrRound:
    """Judge the candidates in draft order; stop at the first that keeps tokens, or at the fallback.

    a[i], log_m[i]: [L_i] candidate i's cumulative log-weights and bounds; log_u: [n] one per candidate.
    empty_rounds: consecutive empty candidates before this round.
    """
    clips = rejections = 0
    for i, (a_i, m_i) in enumerate(zip(a, log_m)):
        kept, clip = scr_judge_chunk(a_i, m_i, log_u[i], salvage)
        clips += int(clip)
        if kept:
            return ScrRound(i + 1, kept, i + 1, rejections, clips, False, 0)
        rejections += 1
        empty_rounds += 1
        if empty_rounds >= max_rejections:
            return ScrRound(0, 0, i + 1, rejections, clips, True, 0)
    return ScrRound(0, 0, len(a), rejections, clips, False, empty_rounds)
