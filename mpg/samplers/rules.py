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

__all__ = [
    "ScrRound",
    "scr_judge_chunk",
    "scr_round",
    "speculative_sampling_batch",
    "speculative_sampling_rule",
]


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
    out, accepted = speculative_sampling_batch(
        p.unsqueeze(0), q.unsqueeze(0), chunk.unsqueeze(0), [L], u.unsqueeze(0), [bonus]
    )
    return out[0], accepted[0]


def speculative_sampling_batch(
    p: torch.Tensor,
    q: torch.Tensor,
    chunks: torch.Tensor,
    lengths: list[int],
    u: torch.Tensor,
    bonus: list[bool],
) -> tuple[list[list[int]], list[int]]:
    """`speculative_sampling_rule` for B sequences at once; sequence b drafted lengths[b] <= K tokens.

    p: [B, K+1, V] target log-probs; q: [B, K, V] draft log-probs; chunks: [B, K] drafted ids;
    u: [B, K+1] uniforms (sequence b's u[:L_b] accept/reject, u[L_b] the residual or bonus draw)
    returns each sequence's tokens to append and its number of accepted drafted tokens."""
    B, K = chunks.shape
    L = torch.tensor(lengths)  # [B]
    idx = chunks.to(p.device).unsqueeze(-1)  # [B, K, 1]
    log_ratio = p[:, :K].gather(-1, idx).squeeze(-1) - q.gather(-1, idx.to(q.device)).squeeze(-1).to(
        p.device
    )  # [B, K]
    drafted = torch.arange(K).unsqueeze(0) < L.unsqueeze(1)  # [B, K]
    ok = (u[:, :K].to(p.device).log() < log_ratio).cpu() & drafted  # [B, K] u < p/q
    j = ok.int().cumprod(1).sum(1)  # [B] accepted prefix
    rows = torch.arange(B)
    rejected = j < L  # [B]
    at = torch.minimum(j, L)  # [B] the position of the redraw (rejected) or the bonus (all kept)
    p_at = p[rows, at]  # [B, V]
    q_at = q[rows, torch.minimum(j, torch.tensor(K - 1))].to(p.device)  # [B, V] (unused when not rejected)
    law = torch.where(rejected.unsqueeze(1).to(p.device), residual_logprobs(p_at, q_at), p_at)  # [B, V]
    extra = sample(law, u[rows, L])  # [B]
    out = []
    for b in range(B):
        toks = chunks[b, : int(j[b])].tolist()
        if bool(rejected[b]) or bonus[b]:
            toks.append(int(extra[b]))
        out.append(toks)
    return out, j.tolist()


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
